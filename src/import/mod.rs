//! Snapshots in other formats, converted to `.hsnap` so that every command reads them.
//!
//! [`v8`] converts V8's `.heapsnapshot` JSON (Chrome DevTools, Node's `v8.writeHeapSnapshot`).
//! [`open_any`] opens a file of any supported format: a `.hsnap` as it is, anything else converted
//! to a temporary `.hsnap` first, which lives as long as the returned [`Opened`]; the conversion
//! builds the graph as it writes, so loading it then only parses the file's tables.

pub mod v8;
pub mod v8_synth;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::graph::Graph;
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
    /// The graph the conversion built, until the first load takes it (later loads decode the file).
    graph: Cell<Option<Graph>>,
    /// Deletes the temporary `.hsnap` when dropped (after `file`, whose map stays valid on Unix
    /// even after the file is gone).
    _temp: Option<TempPath>,
}

impl Opened {
    /// Loads the graph, naming the user's path (not the temporary file's) in the heap and in errors.
    pub fn load(&self, progress: &Progress) -> Result<Heap<'_>> {
        let mut heap = Heap::load_with(&self.file, self.take_graph(), progress).map_err(|e| match e {
            Error::Format { source, .. } => Error::Format { path: self.path.clone(), source },
            other => other,
        })?;
        heap.path = self.path.clone();
        Ok(heap)
    }

    /// The graph built while converting, once: what [`Graph::load`] would make of `file`.
    pub fn take_graph(&self) -> Option<Graph> {
        self.graph.take()
    }
}

/// Opens `path` whatever its format: a V8 `.heapsnapshot` (recognised by its content, not its
/// name) is converted to a temporary `.hsnap` in the temporary directory (`TMPDIR`), any other file
/// is mapped as a `.hsnap` and its errors are reported when it is loaded.
pub fn open_any(path: &Path, progress: &Progress) -> Result<Opened> {
    let file = SnapshotFile::open(path)?;
    if !v8::looks_like(file.bytes()) {
        return Ok(Opened { file, path: path.to_path_buf(), converted: None, graph: Cell::new(None), _temp: None });
    }
    drop(file);
    let temp = tempfile::Builder::new()
        .prefix("heapsnap-")
        .suffix(".hsnap")
        .tempfile()
        .map_err(Error::io(std::env::temp_dir()))?
        .into_temp_path();
    let (stats, graph) = v8::convert_and_build(path, &temp, progress)?;
    let file = SnapshotFile::open(&temp)?;
    let graph = Cell::new(Some(graph));
    Ok(Opened { file, path: path.to_path_buf(), converted: Some(stats), graph, _temp: Some(temp) })
}
