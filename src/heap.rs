//! A snapshot file opened for analysis: the mapped bytes, the parsed tables, the graph, and the
//! names of things for reports.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsnap::{EdgeKind, Label, Snapshot};
use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::progress::Progress;
use crate::symbolize::{LogicalFrame, SearchPath, Symbolizer};

/// The bytes of a snapshot file, mapped read-only.
pub struct SnapshotFile {
    path: PathBuf,
    map: Option<Mmap>,
}

impl SnapshotFile {
    pub fn open(path: &Path) -> Result<SnapshotFile> {
        let file = File::open(path).map_err(Error::io(path))?;
        let len = file.metadata().map_err(Error::io(path))?.len();
        let map = if len == 0 {
            None // mmap refuses empty files; an empty file is reported by the parser as truncated.
        } else {
            // SAFETY: the map is read-only and private to this process. If another process truncates
            // the file while we read it, access faults (SIGBUS); we accept that, as every tool that
            // maps its input does, for not copying gigabytes.
            Some(unsafe { Mmap::map(&file) }.map_err(Error::io(path))?)
        };
        Ok(SnapshotFile { path: path.to_path_buf(), map })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Gives back the memory of the mapped bytes `range` (whole pages inside it): they stop
    /// counting in this process's resident set, and are read from the file again if touched. Done
    /// behind a pass over a large file, and once the graph holds what reports need, so that the
    /// file's pages do not add to the peak. Advice only: a failure changes nothing.
    pub fn release(&self, range: std::ops::Range<usize>) {
        let Some(map) = &self.map else { return };
        let page = page_size();
        let start = range.start.div_ceil(page) * page;
        let end = if range.end >= map.len() { map.len() } else { range.end / page * page };
        if start >= end {
            return;
        }
        // SAFETY: the map is read-only and private, and nothing ever writes through it, so
        // MADV_DONTNEED only drops clean copies of file pages: a later read maps the same bytes
        // from the file again (the file is not changed while mapped, as for every read here).
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
    }

    /// [`SnapshotFile::release`] of the whole file.
    pub fn release_all(&self) {
        self.release(0..self.bytes().len());
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// A loaded snapshot: its tables, its graph, and where it came from.
pub struct Heap<'a> {
    pub path: PathBuf,
    pub snap: Snapshot<'a>,
    pub graph: Graph,
    /// Names frames on demand: nothing is opened until a report asks for a name.
    symbols: Symbolizer,
}

impl<'a> Heap<'a> {
    pub fn load(file: &'a SnapshotFile, progress: &Progress) -> Result<Heap<'a>> {
        Heap::load_with(file, None, progress)
    }

    /// [`Heap::load`], with the graph already built (by a conversion that wrote `file`) if
    /// `graph` is given: the file's tables are parsed and checked, its nodes and edges not decoded.
    pub fn load_with(file: &'a SnapshotFile, graph: Option<Graph>, progress: &Progress) -> Result<Heap<'a>> {
        let format_error = |source| Error::Format { path: file.path().to_path_buf(), source };
        let (snap, graph) = match graph {
            // The file was just written from the same records as the graph.
            Some(graph) => (Snapshot::parse_own(file.bytes()).map_err(format_error)?, graph),
            None => {
                let snap = Snapshot::parse(file.bytes()).map_err(format_error)?;
                let graph = Graph::load(&snap, progress).map_err(format_error)?;
                (snap, graph)
            }
        };
        // The graph holds what the analyses need; names and labels are read again from the file
        // when a report asks for them.
        file.release_all();
        let symbols = Symbolizer::new(SearchPath::from_env(&[]));
        Ok(Heap { path: file.path().to_path_buf(), snap, graph, symbols })
    }

    pub fn type_name(&self, node: u32) -> Cow<'a, str> {
        String::from_utf8_lossy(self.snap.type_name(self.graph.type_id[node as usize]))
    }

    pub fn string(&self, id: u32) -> Cow<'a, str> {
        String::from_utf8_lossy(self.snap.string(id))
    }

    /// Where binaries and debug files are looked for when frames are named, besides the recorded
    /// paths, `HEAPSNAP_DEBUG_PATH` and `/usr/lib/debug` (see [`SearchPath::from_env`]).
    pub fn with_debug_dirs(mut self, dirs: &[PathBuf]) -> Heap<'a> {
        self.symbols = Symbolizer::new(SearchPath::from_env(dirs));
        self
    }

    /// The symbolizer of this snapshot's frames: why some modules could not be symbolized, how
    /// many were opened.
    pub fn symbols(&self) -> &Symbolizer {
        &self.symbols
    }

    /// The logical frames of one recorded frame, innermost first (inlined calls expand one return
    /// address into several).
    pub fn logical_frames(&self, frame: u32) -> Arc<[LogicalFrame]> {
        self.symbols.frames(&self.snap, frame)
    }

    /// One frame as people read it (its innermost logical frame): `function (file:line)`,
    /// `function+0x1a (libc.so.6)` from a symbol table, `module+0xoffset` or `0xaddress`.
    pub fn frame_name(&self, frame: u32) -> String {
        self.logical_frames(frame).first().map_or_else(|| "??".to_string(), |f| f.name.to_string())
    }

    /// An allocation site: the innermost logical frame of a stack that is not allocator plumbing
    /// (the recorder, the malloc family, `operator new`, the standard libraries: see
    /// [`crate::symbolize::plumbing`]); the innermost frame when every frame is plumbing. Stable
    /// across runs: module offsets and source lines do not move with the load address.
    pub fn site_name(&self, stack: u32) -> String {
        self.symbols.site(&self.snap, stack)
    }

    /// Every logical frame of a stack, innermost first.
    pub fn stack_names(&self, stack: u32) -> Vec<String> {
        self.symbols.stack(&self.snap, stack).into_iter().map(|f| f.name.to_string()).collect()
    }

    pub fn label_name(&self, label: Label) -> Option<String> {
        match label {
            Label::None => None,
            Label::Name(s) => Some(self.string(s).into_owned()),
            Label::Index(i) => Some(format!("[{i}]")),
            Label::Offset(o) => Some(format!("+{o:#x}")),
        }
    }

    /// Labels of the edges leaving `sources`, by `(from, to, kind)`, the first of parallel edges.
    /// The graph keeps no labels (they would cost 4 to 8 bytes an edge); the few that reports
    /// show are found again by one pass over the edge records.
    pub fn labels(&self, sources: &[u32]) -> HashMap<(u32, u32, EdgeKind), Label> {
        let mut wanted: Vec<u32> = sources.to_vec();
        wanted.sort_unstable();
        let mut labels = HashMap::new();
        // The graph was built from these same records, so they decode without error.
        let _ = self.snap.edges().visit(|from, edge| {
            if wanted.binary_search(&from).is_ok() {
                labels.entry((from, edge.to, edge.kind)).or_insert(edge.label);
            }
        });
        labels
    }

    /// Finds a node by identity (decimal) or by address (`0x…`, the block that contains it).
    pub fn find_node(&self, spec: &str) -> Result<u32> {
        let g = &self.graph;
        let not_found = || Error::Usage(format!("{}: no node {spec}", self.path.display()));
        if let Some(hex) = spec.strip_prefix("0x").or_else(|| spec.strip_prefix("0X")) {
            let address = u64::from_str_radix(hex, 16).map_err(|_| Error::Usage(format!("bad address {spec}")))?;
            let inside = |v: usize| {
                g.address.get(v) <= address && address < g.address.get(v).saturating_add(g.size.get(v).max(1))
            };
            return (0..g.node_count())
                .find(|&v| g.address.get(v) == address)
                .or_else(|| (0..g.node_count()).find(|&v| inside(v)))
                .map(|v| v as u32)
                .ok_or_else(not_found);
        }
        let identity: u64 = spec.parse().map_err(|_| {
            Error::Usage(format!("NODE must be an identity (decimal) or an address (0x…), not {spec:?}"))
        })?;
        g.identity.iter().position(|i| i == identity).map(|v| v as u32).ok_or_else(not_found)
    }
}
