//! The `.hsnap` heap snapshot format, version 1.1: the specification is `formats/hsnap.md`.
//!
//! [`Writer`] streams a snapshot through one caller-provided buffer and never allocates, so it can
//! run inside a malloc hook. [`Snapshot`] parses a whole file held in memory (usually a mapped file)
//! without copying strings, checks every chunk's CRC, and reports any damage with its byte offset.
//! The address-keyed records of version 1.1 (section 3.1) are read as views of their columns
//! ([`python`]); resolving them into nodes and edges is the analyzer's business.

mod error;
pub mod parse;
pub mod python;
mod read;
pub mod varint;
mod write;

pub use error::FormatError;
pub use read::{EdgeIter, Frame, Module, NodeIter, Snapshot};
pub use write::{Sink, Writer};

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"\x89HSNAP\r\n";
/// The newest format version this crate reads. [`Writer::new`] writes version 1.0 files, and
/// [`Writer::with_minor_version`] 1.1 files with address-keyed records.
pub const VERSION: (u16, u16) = (1, 1);
/// Bytes before the first chunk.
pub const HEADER_LEN: usize = 16;

/// A chunk's four-letter tag.
pub type Tag = [u8; 4];

pub mod tag {
    use super::Tag;
    pub const META: Tag = *b"META";
    pub const STRS: Tag = *b"STRS";
    pub const TYPE: Tag = *b"TYPE";
    pub const MODS: Tag = *b"MODS";
    pub const FRMS: Tag = *b"FRMS";
    pub const STKS: Tag = *b"STKS";
    pub const NODE: Tag = *b"NODE";
    pub const EDGE: Tag = *b"EDGE";
    pub const ROOT: Tag = *b"ROOT";
    /// Version 1.1: a batch of objects keyed by address, and their references.
    pub const PYBT: Tag = *b"PYBT";
    /// Version 1.1: what a type's references are, and its size floor.
    pub const PYTY: Tag = *b"PYTY";
    /// Version 1.1: addresses of the writer's own objects, left out of the graph.
    pub const PYEX: Tag = *b"PYEX";
    /// Ancillary: what an allocator knows of a node's block.
    pub const ALOC: Tag = *b"aloc";
    pub const DONE: Tag = *b"DONE";
}

/// One node record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Node {
    /// Stable across snapshots of one process (allocation serial number, V8 node id, `id()`).
    pub identity: u64,
    pub address: u64,
    pub size: u64,
    pub type_id: u32,
    /// Allocation stack id; 0 for none.
    pub stack: u32,
    pub flags: u32,
}

impl Node {
    pub const DETACHED: u32 = 1;
    pub const IMMORTAL: u32 = 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum EdgeKind {
    Strong = 0,
    Weak = 1,
    Interior = 2,
}

impl EdgeKind {
    pub fn from_bits(bits: u64) -> Option<EdgeKind> {
        match bits {
            0 => Some(EdgeKind::Strong),
            1 => Some(EdgeKind::Weak),
            2 => Some(EdgeKind::Interior),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::Strong => "strong",
            EdgeKind::Weak => "weak",
            EdgeKind::Interior => "interior",
        }
    }
}

/// What an edge is called in its source: a field, an element, a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Label {
    #[default]
    None,
    /// A string id.
    Name(u32),
    Index(u64),
    Offset(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edge {
    /// Target node index.
    pub to: u32,
    pub kind: EdgeKind,
    pub label: Label,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum RootKind {
    Global = 0,
    Stack = 1,
    Register = 2,
    ThreadLocal = 3,
    GcRoot = 4,
    Other = 5,
}

impl RootKind {
    /// Unknown values read as `Other`, as the specification asks.
    pub fn from_byte(byte: u8) -> RootKind {
        match byte {
            0 => RootKind::Global,
            1 => RootKind::Stack,
            2 => RootKind::Register,
            3 => RootKind::ThreadLocal,
            4 => RootKind::GcRoot,
            _ => RootKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RootKind::Global => "global",
            RootKind::Stack => "stack",
            RootKind::Register => "register",
            RootKind::ThreadLocal => "thread-local",
            RootKind::GcRoot => "gc-root",
            RootKind::Other => "other",
        }
    }
}

/// What an allocator knows of a node's block (an ancillary `aloc` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Allocation {
    pub node: u32,
    /// The usable size (`malloc_usable_size`), 0 when unknown.
    pub usable: u64,
    /// The id of the thread that allocated the block, 0 when unknown.
    pub thread: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Root {
    pub node: u32,
    pub kind: RootKind,
    /// The root points into the middle of the node.
    pub interior: bool,
    /// A string id; 0 for none.
    pub name: u32,
}

/// How many records of each kind a snapshot holds, as written in its `DONE` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub strings: u64,
    pub types: u64,
    pub modules: u64,
    pub frames: u64,
    pub stacks: u64,
    pub nodes: u64,
    pub edges: u64,
    pub roots: u64,
    /// Version 1.1: `PYBT`, `PYTY` and `PYEX` records (always 0 in a version 1.0 file).
    pub python_batches: u64,
    pub python_types: u64,
    pub python_excluded: u64,
}

impl Counts {
    /// Every count, in the order of the `DONE` record: a version 1.0 file has the first eight.
    fn fields(&self) -> [(&'static str, u64); 11] {
        [
            ("strings", self.strings),
            ("types", self.types),
            ("modules", self.modules),
            ("frames", self.frames),
            ("stacks", self.stacks),
            ("nodes", self.nodes),
            ("edges", self.edges),
            ("roots", self.roots),
            ("PYBT records", self.python_batches),
            ("PYTY records", self.python_types),
            ("PYEX records", self.python_excluded),
        ]
    }
}
