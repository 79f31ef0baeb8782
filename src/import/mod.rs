//! Snapshots in other formats, converted to `.hsnap` so that every command reads them.
//!
//! [`v8`] converts V8's `.heapsnapshot` JSON (Chrome DevTools, Node's `v8.writeHeapSnapshot`);
//! [`python`] resolves the address-keyed records of a version 1.1 `.hsnap` (the pure-Python
//! exporter's) into nodes, edges and roots. [`open_any`] opens a file of any supported format: a
//! plain `.hsnap` as it is, anything else converted to a temporary `.hsnap` first, which lives as
//! long as the returned [`Opened`]; the conversion builds the graph as it writes, so loading it
//! then only parses the file's tables.

pub mod python;
pub mod python_synth;
pub mod v8;
pub mod v8_synth;

use std::cell::Cell;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::heap::{Heap, SnapshotFile};
use crate::progress::Progress;

/// A snapshot opened for loading, converted first when it was not a plain `.hsnap`.
pub struct Opened {
    /// The `.hsnap` bytes: the file itself, or the converted temporary file.
    pub file: SnapshotFile,
    /// The path the user gave, which reports and error messages name.
    pub path: PathBuf,
    /// What the conversion found, when there was one.
    pub converted: Option<Converted>,
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

/// What a conversion found, by the format it converted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Converted {
    V8(v8::ConvertStats),
    Python(python::ConvertStats),
}

impl Converted {
    pub fn nodes(&self) -> u64 {
        match self {
            Converted::V8(s) => s.nodes,
            Converted::Python(s) => s.nodes,
        }
    }

    pub fn edges(&self) -> u64 {
        match self {
            Converted::V8(s) => s.edges,
            Converted::Python(s) => s.edges,
        }
    }

    /// One line for people: what was written.
    pub fn summary(&self) -> String {
        match self {
            Converted::V8(s) => format!("{} nodes, {} edges", s.nodes, s.edges),
            Converted::Python(s) => {
                let mut text = format!(
                    "{} nodes, {} edges, {} roots ({} batches resolved; {} references to no node dropped",
                    s.nodes, s.edges, s.roots, s.batches, s.dropped_references
                );
                if s.clamped_counts > 0 {
                    // Only a heap that changed while it was written gives counts below the writer's own.
                    text += &format!("; {} reference counts below the exporter's own, taken as 0", s.clamped_counts);
                }
                text + ")"
            }
        }
    }
}

/// The formats that are converted before they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Foreign {
    V8,
    Python,
}

impl Foreign {
    /// Recognised by content, not by name.
    fn of(bytes: &[u8]) -> Option<Foreign> {
        if v8::looks_like(bytes) {
            Some(Foreign::V8)
        } else if python::looks_like(bytes) {
            Some(Foreign::Python)
        } else {
            None
        }
    }
}

/// Converts `input` to the `.hsnap` `output`: an address-keyed `.hsnap` (recognised by its
/// content) is resolved, anything else is read as a V8 heap snapshot.
pub fn convert(input: &Path, output: &Path, progress: &Progress) -> Result<Converted> {
    let foreign = Foreign::of(SnapshotFile::open(input)?.bytes());
    match foreign {
        Some(Foreign::Python) => python::convert(input, output, progress).map(Converted::Python),
        _ => v8::convert(input, output, progress).map(Converted::V8),
    }
}

/// Opens `path` whatever its format: a V8 `.heapsnapshot` or an address-keyed `.hsnap`
/// (recognised by their content, not their names) is converted to a temporary `.hsnap` in the
/// temporary directory (`TMPDIR`), any other file is mapped as a `.hsnap` and its errors are
/// reported when it is loaded.
pub fn open_any(path: &Path, progress: &Progress) -> Result<Opened> {
    let file = SnapshotFile::open(path)?;
    let Some(foreign) = Foreign::of(file.bytes()) else {
        return Ok(Opened { file, path: path.to_path_buf(), converted: None, graph: Cell::new(None), _temp: None });
    };
    drop(file);
    let temp = tempfile::Builder::new()
        .prefix("heapsnap-")
        .suffix(".hsnap")
        .tempfile()
        .map_err(Error::io(std::env::temp_dir()))?
        .into_temp_path();
    let (converted, graph) = match foreign {
        Foreign::V8 => v8::convert_and_build(path, &temp, progress).map(|(s, g)| (Converted::V8(s), g))?,
        Foreign::Python => python::convert_and_build(path, &temp, progress).map(|(s, g)| (Converted::Python(s), g))?,
    };
    let file = SnapshotFile::open(&temp)?;
    let graph = Cell::new(Some(graph));
    Ok(Opened { file, path: path.to_path_buf(), converted: Some(converted), graph, _temp: Some(temp) })
}
