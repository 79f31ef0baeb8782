//! Files are written under a temporary name in the target's directory and renamed over the target
//! when complete, so a crash never leaves half a file under the final name. A target that exists
//! and is not a regular file (`/dev/null`, a pipe, a terminal) is written to directly: renaming
//! over it would replace the device itself.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hsnap::Writer;
use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// The writer a snapshot is streamed through.
pub type SnapshotWriter<'b> = Writer<'b, BufWriter<Target>>;

/// Where a snapshot's bytes go: a temporary file renamed when complete, or the target itself.
pub enum Target {
    Temporary(NamedTempFile),
    Direct(File),
}

impl Write for Target {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Target::Temporary(file) => file.write(bytes),
            Target::Direct(file) => file.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Target::Temporary(file) => file.flush(),
            Target::Direct(file) => file.flush(),
        }
    }
}

/// Whether `path` names something other than a regular file (or nothing), which must not be
/// replaced by a rename.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file() && !m.is_dir())
}

/// Streams a snapshot to `path` through `fill`; the file appears only when `fill` and the final
/// flush succeed.
pub fn write_snapshot<T>(path: &Path, fill: impl FnOnce(&mut SnapshotWriter<'_>) -> std::io::Result<T>) -> Result<T> {
    write_snapshot_synced(path, true, fill)
}

/// [`write_snapshot`], waiting for the data to reach the disk before the rename only if `sync`:
/// a temporary file that dies with the process needs no such wait (for a V8 conversion of 300 MB
/// it is a good part of a second).
pub fn write_snapshot_synced<T>(
    path: &Path,
    sync: bool,
    fill: impl FnOnce(&mut SnapshotWriter<'_>) -> std::io::Result<T>,
) -> Result<T> {
    let target = if is_special(path) {
        Target::Direct(File::options().write(true).open(path).map_err(Error::io(path))?)
    } else {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Target::Temporary(NamedTempFile::new_in(dir).map_err(Error::io(path))?)
    };
    let mut buffer = vec![0u8; 1 << 20];
    let mut writer = Writer::new(BufWriter::with_capacity(1 << 20, target), &mut buffer).map_err(Error::io(path))?;
    let value = fill(&mut writer).map_err(Error::io(path))?;
    let mut sink = writer.finish().map_err(Error::io(path))?;
    sink.flush().map_err(Error::io(path))?;
    let target = sink.into_inner().map_err(|e| e.into_error()).map_err(Error::io(path))?;
    if let Target::Temporary(temp) = target {
        if sync {
            temp.as_file().sync_all().map_err(Error::io(path))?;
        }
        temp.persist(path).map_err(|e| e.error).map_err(Error::io(path))?;
    }
    Ok(value)
}
