//! Snapshots in other formats, converted to `.hsnap` so that every command reads them.
//!
//! [`v8`] converts V8's `.heapsnapshot` JSON (Chrome DevTools, Node's `v8.writeHeapSnapshot`).
//! [`open_any`] opens a file of any supported format: a `.hsnap` as it is, anything else converted
//! to a temporary `.hsnap` first, which lives as long as the returned [`Opened`].

pub mod v8;
pub mod v8_synth;

use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::heap::{Heap, SnapshotFile};
use crate::progress::Progress;

/// A snapshot opened for loading, converted first when it was not a `.hsnap`.
pub struct Opened {
    /// The `.hsnap` bytes: the file itself, or the converted temporary file.
    pub file: SnapshotFile,
    /// The path the user gave, which reports and error messages name.
    pub path: PathBuf,
    /// What the conversion found, when there was one.
    pub converted: Option<v8::ConvertStats>,
    /// Deletes the temporary `.hsnap` when dropped (after `file`, whose map stays valid on Unix
    /// even after the file is gone).
    _temp: Option<TempPath>,
}

impl Opened {
    /// Loads the graph, naming the user's path (not the temporary file's) in the heap and in errors.
    pub fn load(&self, progress: &Progress) -> Result<Heap<'_>> {
        let mut heap = Heap::load(&self.file, progress).map_err(|e| match e {
            Error::Format { source, .. } => Error::Format { path: self.path.clone(), source },
            other => other,
        })?;
        heap.path = self.path.clone();
        Ok(heap)
    }
}

/// Opens `path` whatever its format: a V8 `.heapsnapshot` (recognised by its content, not its
/// name) is converted to a temporary `.hsnap` in the temporary directory (`TMPDIR`), any other file
/// is mapped as a `.hsnap` and its errors are reported when it is loaded.
pub fn open_any(path: &Path, progress: &Progress) -> Result<Opened> {
    let file = SnapshotFile::open(path)?;
    if !v8::looks_like(file.bytes()) {
        return Ok(Opened { file, path: path.to_path_buf(), converted: None, _temp: None });
    }
    drop(file);
    let temp = tempfile::Builder::new()
        .prefix("heapsnap-")
        .suffix(".hsnap")
        .tempfile()
        .map_err(Error::io(std::env::temp_dir()))?
        .into_temp_path();
    let stats = v8::convert(path, &temp, progress)?;
    let file = SnapshotFile::open(&temp)?;
    Ok(Opened { file, path: path.to_path_buf(), converted: Some(stats), _temp: Some(temp) })
}
