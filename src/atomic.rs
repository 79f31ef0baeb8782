//! Files are written under a temporary name in the target's directory and renamed over the target
//! when complete, so a crash never leaves half a file under the final name.

use std::io::{BufWriter, Write};
use std::path::Path;

use hsnap::Writer;
use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// The writer a snapshot is streamed through.
pub type SnapshotWriter<'b> = Writer<'b, BufWriter<NamedTempFile>>;

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
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let io = Error::io(path);
    let temp = NamedTempFile::new_in(dir).map_err(Error::io(path))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut writer = Writer::new(BufWriter::with_capacity(1 << 20, temp), &mut buffer).map_err(Error::io(path))?;
    let value = fill(&mut writer).map_err(Error::io(path))?;
    let mut sink = writer.finish().map_err(Error::io(path))?;
    sink.flush().map_err(Error::io(path))?;
    let temp = sink.into_inner().map_err(|e| e.into_error()).map_err(Error::io(path))?;
    if sync {
        temp.as_file().sync_all().map_err(Error::io(path))?;
    }
    temp.persist(path).map_err(|e| e.error).map_err(io)?;
    Ok(value)
}
