//! Parsing a snapshot held in memory. Strings and build ids are borrowed from the input; nodes and
//! edges, the bulk of a file, are decoded by iterators on demand rather than into tables here.

use nom::Parser;
use nom::bytes::complete::take;
use nom::number::complete::{le_u16, le_u32, u8 as byte};

use crate::varint::{self, VarintError, unzigzag};
use crate::{
    Allocation, Counts, Edge, EdgeKind, FormatError, HEADER_LEN, Label, MAGIC, Node, Root, RootKind, Tag, VERSION, tag,
};

use crate::parse::{Fail, In, Res, fail, failure};
use crate::python::{self, Batch, TypeTraits};

pub(crate) fn uvarint(i: In<'_>) -> Res<'_, u64> {
    match varint::get_u(i) {
        Ok((value, n)) => Ok((&i[n..], value)),
        Err(VarintError::Truncated) => fail(i, "expected a varint, found the end of the record"),
        Err(VarintError::Overlong) => fail(i, "varint longer than 64 bits"),
    }
}

fn svarint(i: In<'_>) -> Res<'_, i64> {
    let (rest, v) = uvarint(i)?;
    Ok((rest, unzigzag(v)))
}

/// A varint that must fit in 32 bits: an id or an index.
fn id(i: In<'_>) -> Res<'_, u32> {
    let (rest, v) = uvarint(i)?;
    match u32::try_from(v) {
        Ok(v) => Ok((rest, v)),
        Err(_) => fail(i, format!("expected an id below 2^32, found {v}")),
    }
}

fn bytes(i: In<'_>) -> Res<'_, &[u8]> {
    let (rest, len) = uvarint(i)?;
    if len > rest.len() as u64 {
        return fail(i, format!("expected {len} bytes, the record has {} left", rest.len()));
    }
    take(len as usize).parse(rest)
}

fn one_byte(i: In<'_>) -> Res<'_, u8> {
    byte.parse(i).or_else(|_: nom::Err<Fail<'_>>| fail(i, "expected a byte, found the end of the record"))
}

/// A chunk: tag, payload, and the CRC it carries (checked by the caller, which knows the offset).
fn chunk(i: In<'_>) -> Res<'_, (Tag, In<'_>, u32)> {
    if i.len() < 8 {
        return fail(i, format!("truncated: expected a chunk header (8 bytes), the file has {} left", i.len()));
    }
    let (rest, tag) = take(4usize).parse(i)?;
    let (rest, len) = le_u32.parse(rest)?;
    if !tag.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'!') {
        return fail(i, format!("expected a chunk tag (four letters), found {:02x?}", tag));
    }
    if (len as u64) + 4 > rest.len() as u64 {
        let name = String::from_utf8_lossy(tag);
        return fail(
            i,
            format!(
                "truncated: chunk {name} declares {len} payload bytes and a checksum, the file has {} left",
                rest.len()
            ),
        );
    }
    let (rest, payload) = take(len as usize).parse(rest)?;
    let (rest, crc) = le_u32.parse(rest)?;
    Ok((rest, (tag.try_into().expect("four bytes"), payload, crc)))
}

/// A module of the captured process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module<'a> {
    /// A string id.
    pub path: u32,
    pub build_id: &'a [u8],
    pub load_bias: u64,
    pub ranges: Vec<(u64, u64)>,
}

/// One frame of an allocation stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    InModule {
        module: u32,
        offset: u64,
    },
    Absolute(u64),
    /// `function` and `file` are string ids, 0 when unknown; so are `line` and `column`.
    Symbol {
        function: u32,
        file: u32,
        line: u32,
        column: u32,
    },
}

/// A parsed snapshot borrowing from the bytes of the file.
#[derive(Debug)]
pub struct Snapshot<'a> {
    data: &'a [u8],
    version: (u16, u16),
    meta: Vec<(&'a [u8], &'a [u8])>,
    /// The string table, index 0 being the empty "none" string.
    strings: Strings<'a>,
    types: Vec<u32>,
    modules: Vec<Module<'a>>,
    frames: Vec<Frame>,
    /// `(parent, frame)`; index 0 is the empty stack.
    stacks: Vec<(u32, u32)>,
    roots: Vec<Root>,
    /// `aloc` records, by increasing node.
    allocations: Vec<Allocation>,
    node_chunks: Vec<In<'a>>,
    edge_chunks: Vec<In<'a>>,
    /// Version 1.1's address-keyed records.
    python: python::Records<'a>,
    /// Where the first chunk holding `NODE`, `EDGE` or `ROOT` records is, and the first holding
    /// address-keyed ones: a file may hold one kind or the other.
    first_graph_chunk: Option<u64>,
    first_python_chunk: Option<u64>,
    counts: Counts,
    done_offset: u64,
    checksum: u64,
}

/// The string table, without a slice per string (16 bytes each, and a heap of a few million
/// objects names millions of strings): where every [`Strings::STRIDE`]-th record starts, and the
/// others found by skipping records from there. Records never span chunks, so a skip that reaches
/// the end of a `STRS` chunk goes on at the start of the next.
#[derive(Debug, Default)]
struct Strings<'a> {
    chunks: Vec<In<'a>>,
    /// Per `STRIDE` records: the chunk (index in `chunks`) and the offset in it of the first.
    marks: Vec<(u32, u32)>,
    /// Records, not counting the "none" string.
    count: usize,
}

impl<'a> Strings<'a> {
    const STRIDE: usize = 16;

    /// Ids, counting the "none" string: ids below this are valid.
    fn len(&self) -> usize {
        self.count + 1
    }

    /// Files the record starting at `record`, a suffix of the chunk payload `chunk`.
    fn push(&mut self, chunk: In<'a>, record: In<'a>) {
        if self.chunks.last().is_none_or(|last| last.as_ptr() != chunk.as_ptr()) {
            self.chunks.push(chunk);
        }
        if self.count % Self::STRIDE == 0 {
            let offset = chunk.len() - record.len();
            self.marks.push((self.chunks.len() as u32 - 1, offset as u32));
        }
        self.count += 1;
    }

    /// String `id`; the empty string for 0 and unknown ids.
    fn get(&self, id: u32) -> &'a [u8] {
        let Some(k) = (id as usize).checked_sub(1).filter(|&k| k < self.count) else { return &[] };
        let (mut chunk, offset) = self.marks[k / Self::STRIDE];
        let mut rest = &self.chunks[chunk as usize][offset as usize..];
        // The parser checked every record, so these decode.
        let mut record = || {
            while rest.is_empty() {
                chunk += 1;
                rest = self.chunks[chunk as usize];
            }
            let (after, s) = bytes(rest).expect("string records were checked when parsed");
            rest = after;
            s
        };
        for _ in 0..k % Self::STRIDE {
            record();
        }
        record()
    }
}

/// String references met while parsing, checked once the string table is complete.
#[derive(Default)]
struct Pending {
    strrefs: Vec<(u32, u64)>,
    frame_modules: Vec<(u32, u64)>,
    stack_frames: Vec<(u32, u64)>,
    root_nodes: Vec<(u32, u64)>,
    allocation_nodes: Vec<(u32, u64)>,
}

impl<'a> Snapshot<'a> {
    /// Parses and checks the framing, every CRC and every table but nodes and edges, whose records
    /// are checked as [`Snapshot::nodes`] and [`Snapshot::edges`] decode them.
    pub fn parse(data: &'a [u8]) -> Result<Snapshot<'a>, FormatError> {
        Snapshot::parse_checking(data, true)
    }

    /// [`Snapshot::parse`] of a file this process has just written (a conversion's temporary
    /// output), without recomputing the CRCs of `NODE` and `EDGE` chunks: they are most of the file,
    /// and reading them only to check what was just computed would bring every page of it into
    /// memory. Everything else is checked as by `parse`, and records as they are decoded.
    pub fn parse_own(data: &'a [u8]) -> Result<Snapshot<'a>, FormatError> {
        Snapshot::parse_checking(data, false)
    }

    fn parse_checking(data: &'a [u8], bulk_crcs: bool) -> Result<Snapshot<'a>, FormatError> {
        let mut snap = Snapshot {
            data,
            version: (0, 0),
            meta: Vec::new(),
            strings: Strings::default(),
            types: Vec::new(),
            modules: Vec::new(),
            frames: Vec::new(),
            stacks: vec![(0, 0)],
            roots: Vec::new(),
            allocations: Vec::new(),
            node_chunks: Vec::new(),
            edge_chunks: Vec::new(),
            python: python::Records::default(),
            first_graph_chunk: None,
            first_python_chunk: None,
            counts: Counts::default(),
            done_offset: 0,
            checksum: 0xcbf2_9ce4_8422_2325,
        };
        let mut pending = Pending::default();
        snap.read_all(&mut pending, bulk_crcs).map_err(|e| snap.error(e))?;
        snap.check_references(&pending)?;
        Ok(snap)
    }

    fn error(&self, e: nom::Err<Fail<'_>>) -> FormatError {
        match e {
            nom::Err::Error(f) | nom::Err::Failure(f) => FormatError::new(self.offset_of(f.at), f.what),
            nom::Err::Incomplete(_) => FormatError::new(self.data.len() as u64, "truncated"),
        }
    }

    fn offset_of(&self, at: In<'_>) -> u64 {
        (at.as_ptr() as usize).wrapping_sub(self.data.as_ptr() as usize) as u64
    }

    fn read_all(&mut self, pending: &mut Pending, bulk_crcs: bool) -> Result<(), nom::Err<Fail<'a>>> {
        let data = self.data;
        let (mut rest, ()) = header(data)?;
        self.version = (1, u16::from_le_bytes([data[10], data[11]]));
        loop {
            if rest.is_empty() {
                return Err(failure(rest, "truncated: expected a DONE chunk, found the end of the file"));
            }
            let (after, (tag, payload, crc)) = chunk(rest)?;
            let bulk = tag == tag::NODE || tag == tag::EDGE;
            let computed =
                if bulk && !bulk_crcs { crc } else { crc32fast::hash(&rest[..rest.len() - after.len() - 4]) };
            if computed != crc {
                let name = String::from_utf8_lossy(&tag);
                return Err(failure(
                    rest,
                    format!("chunk {name} is corrupt: checksum {crc:08x}, computed {computed:08x}"),
                ));
            }
            self.checksum = (self.checksum ^ crc as u64).wrapping_mul(0x0100_0000_01b3);
            self.checksum = (self.checksum ^ payload.len() as u64).wrapping_mul(0x0100_0000_01b3);
            if tag == tag::DONE {
                self.done_offset = self.offset_of(rest);
                self.counts = done(payload, self.version.1)?.1;
                if !after.is_empty() {
                    return Err(failure(after, format!("{} bytes after the DONE chunk", after.len())));
                }
                return Ok(());
            }
            self.read_chunk(tag, payload, pending)?;
            rest = after;
        }
    }

    fn read_chunk(&mut self, tag: Tag, payload: In<'a>, pending: &mut Pending) -> Result<(), nom::Err<Fail<'a>>> {
        self.check_record_kinds(tag, payload)?;
        let mut i = payload;
        macro_rules! each_record {
            ($body:expr) => {
                while !i.is_empty() {
                    let at = self.offset_of(i);
                    let f: &mut dyn FnMut(In<'a>, u64) -> Res<'a, ()> = &mut $body;
                    i = f(i, at)?.0;
                }
            };
        }
        match tag {
            tag::META => each_record!(|i, _| {
                let (i, key) = bytes(i)?;
                let (i, value) = bytes(i)?;
                self.meta.push((key, value));
                Ok((i, ()))
            }),
            tag::STRS => each_record!(|i, _| {
                let (after, _) = bytes(i)?;
                self.strings.push(payload, i);
                Ok((after, ()))
            }),
            tag::TYPE => each_record!(|i, at| {
                let (i, name) = id(i)?;
                pending.strrefs.push((name, at));
                self.types.push(name);
                Ok((i, ()))
            }),
            tag::MODS => each_record!(|i, at| {
                let (i, m) = module(i)?;
                pending.strrefs.push((m.path, at));
                self.modules.push(m);
                Ok((i, ()))
            }),
            tag::FRMS => each_record!(|i, at| {
                let (i, f) = frame(i)?;
                match f {
                    Frame::InModule { module, .. } => pending.frame_modules.push((module, at)),
                    Frame::Symbol { function, file, .. } => {
                        pending.strrefs.push((function, at));
                        pending.strrefs.push((file, at));
                    }
                    Frame::Absolute(_) => {}
                }
                self.frames.push(f);
                Ok((i, ()))
            }),
            tag::STKS => each_record!(|i, at| {
                let own = self.stacks.len() as u64;
                let (after, delta) = uvarint(i)?;
                if delta == 0 || delta > own {
                    return fail(i, format!("stack {own}: parent delta {delta} must be between 1 and {own}"));
                }
                let (after, frame) = id(after)?;
                pending.stack_frames.push((frame, at));
                self.stacks.push(((own - delta) as u32, frame));
                Ok((after, ()))
            }),
            tag::ROOT => each_record!(|i, at| {
                let (i, node) = id(i)?;
                let (i, kind) = one_byte(i)?;
                let (i, flags) = uvarint(i)?;
                let (i, name) = id(i)?;
                pending.strrefs.push((name, at));
                pending.root_nodes.push((node, at));
                self.roots.push(Root { node, kind: RootKind::from_byte(kind), interior: flags & 1 != 0, name });
                Ok((i, ()))
            }),
            tag::ALOC => each_record!(|i, at| {
                let next = self.allocations.last().map_or(0, |a| a.node as u64 + 1);
                let (i, delta) = uvarint(i)?;
                let (i, usable) = uvarint(i)?;
                let (i, thread) = uvarint(i)?;
                let node = match next.checked_add(delta) {
                    Some(node) if node < u32::MAX as u64 => node as u32,
                    _ => return fail(i, format!("aloc record: node index {next} + {delta} out of range")),
                };
                pending.allocation_nodes.push((node, at));
                self.allocations.push(Allocation { node, usable, thread });
                Ok((i, ()))
            }),
            tag::NODE => self.node_chunks.push(payload),
            tag::EDGE => self.edge_chunks.push(payload),
            tag::PYBT => each_record!(|i, _| {
                let (i, batch) = python::batch(i, self.data)?;
                self.python.batches.push(batch);
                Ok((i, ()))
            }),
            tag::PYTY => each_record!(|i, at| {
                let (i, traits) = python::type_traits(i)?;
                self.python.types.push(traits);
                self.python.type_offsets.push(at);
                Ok((i, ()))
            }),
            tag::PYEX => each_record!(|i, _| {
                let (i, address) = uvarint(i)?;
                self.python.excluded.push(address);
                Ok((i, ()))
            }),
            _ if tag[0].is_ascii_lowercase() => {}
            _ => {
                let name = String::from_utf8_lossy(&tag);
                let what = format!("unknown critical chunk {name}: written by a newer heapsnap?");
                return Err(failure(self.chunk_start(payload), what));
            }
        }
        Ok(())
    }

    /// The chunk whose payload is `payload`, from its tag.
    fn chunk_start(&self, payload: In<'a>) -> In<'a> {
        &self.data[self.offset_of(payload) as usize - 8..]
    }

    /// Address-keyed records only in a version 1.1 file, and never beside `NODE`, `EDGE` or
    /// `ROOT` records.
    fn check_record_kinds(&mut self, tag: Tag, payload: In<'a>) -> Result<(), nom::Err<Fail<'a>>> {
        let python = matches!(tag, tag::PYBT | tag::PYTY | tag::PYEX);
        let graph = matches!(tag, tag::NODE | tag::EDGE | tag::ROOT);
        let name = String::from_utf8_lossy(&tag);
        if python && self.version.1 < 1 {
            let what = format!("chunk {name} in a version 1.{} file: address-keyed records need 1.1", self.version.1);
            return Err(failure(self.chunk_start(payload), what));
        }
        if payload.is_empty() || !(python || graph) {
            return Ok(());
        }
        let start = self.offset_of(payload) - 8;
        let (this, other) = if python {
            (&mut self.first_python_chunk, self.first_graph_chunk)
        } else {
            (&mut self.first_graph_chunk, self.first_python_chunk)
        };
        this.get_or_insert(start);
        if let Some(other) = other {
            let what = format!(
                "chunk {name}: a file holds NODE, EDGE and ROOT records or address-keyed ones (PYBT, PYTY, \
                 PYEX), not both (the other kind starts at byte {other})"
            );
            return Err(failure(self.chunk_start(payload), what));
        }
        Ok(())
    }

    fn check_references(&self, pending: &Pending) -> Result<(), FormatError> {
        let c = &self.counts;
        let py = &self.python;
        let checks: [(&str, u64, u64); 9] = [
            ("strings", self.strings.len() as u64 - 1, c.strings),
            ("types", self.types.len() as u64, c.types),
            ("modules", self.modules.len() as u64, c.modules),
            ("frames", self.frames.len() as u64, c.frames),
            ("stacks", self.stacks.len() as u64 - 1, c.stacks),
            ("roots", self.roots.len() as u64, c.roots),
            ("PYBT records", py.batches.len() as u64, c.python_batches),
            ("PYTY records", py.types.len() as u64, c.python_types),
            ("PYEX records", py.excluded.len() as u64, c.python_excluded),
        ];
        for (what, found, expected) in checks {
            if found != expected {
                return Err(FormatError::new(
                    self.done_offset,
                    format!("the DONE chunk counts {expected} {what}, the file holds {found}: a chunk is missing"),
                ));
            }
        }
        if c.nodes >= u32::MAX as u64 - 1 {
            return Err(FormatError::new(
                self.done_offset,
                format!("{} nodes: more than this reader supports", c.nodes),
            ));
        }
        // Every node record takes 6 bytes at least and every edge 1: a count beyond that is a lie
        // that must not size an allocation.
        let node_bytes = self.node_bytes() as u64;
        let edge_bytes: u64 = self.edge_chunks.iter().map(|c| c.len() as u64).sum();
        if c.nodes > node_bytes / 6 || c.edges > edge_bytes {
            let what = format!(
                "the DONE chunk counts {} nodes and {} edges, more than {node_bytes} bytes of node records and {edge_bytes} of edge records can hold",
                c.nodes, c.edges
            );
            return Err(FormatError::new(self.done_offset, what));
        }
        let bound = |list: &[(u32, u64)], limit: usize, what: &str| match list
            .iter()
            .find(|&&(id, _)| id as usize >= limit)
        {
            Some(&(id, at)) => Err(FormatError::new(at, format!("{what} {id} out of range (the file has {limit})"))),
            None => Ok(()),
        };
        bound(&pending.strrefs, self.strings.len(), "string id")?;
        bound(&pending.frame_modules, self.modules.len(), "module id")?;
        bound(&pending.stack_frames, self.frames.len(), "frame id")?;
        bound(&pending.root_nodes, c.nodes as usize, "root node index")?;
        bound(&pending.allocation_nodes, c.nodes as usize, "aloc node index")?;
        self.python.check_references(self.types.len(), self.strings.len())
    }

    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Metadata entries in file order.
    pub fn meta(&self) -> &[(&'a [u8], &'a [u8])] {
        &self.meta
    }

    /// The first value of a metadata key.
    pub fn meta_value(&self, key: &str) -> Option<&'a [u8]> {
        self.meta.iter().find(|(k, _)| *k == key.as_bytes()).map(|&(_, v)| v)
    }

    /// A string by id; id 0 and unknown ids give the empty string.
    pub fn string(&self, id: u32) -> &'a [u8] {
        self.strings.get(id)
    }

    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// The string id of a type's name; 0 for unknown types.
    pub fn type_name_id(&self, type_id: u32) -> u32 {
        self.types.get(type_id as usize).copied().unwrap_or(0)
    }

    pub fn type_name(&self, type_id: u32) -> &'a [u8] {
        self.types.get(type_id as usize).map_or(&[], |&name| self.string(name))
    }

    pub fn modules(&self) -> &[Module<'a>] {
        &self.modules
    }

    pub fn frame(&self, id: u32) -> Option<Frame> {
        self.frames.get(id as usize).copied()
    }

    pub fn stack_count(&self) -> usize {
        self.stacks.len() - 1
    }

    /// The frames of a stack, innermost (the allocation site) first.
    pub fn stack_frames(&self, stack: u32) -> impl Iterator<Item = u32> + '_ {
        let mut at = stack;
        std::iter::from_fn(move || {
            if at == 0 || at as usize >= self.stacks.len() {
                return None;
            }
            let (parent, frame) = self.stacks[at as usize];
            at = parent;
            Some(frame)
        })
    }

    /// The caller's stack, 0 at the outermost frame.
    pub fn stack_parent(&self, stack: u32) -> u32 {
        self.stacks.get(stack as usize).map_or(0, |s| s.0)
    }

    /// What the allocator recorded of each block (usable size, allocating thread), by increasing
    /// node index; empty when the producer wrote none.
    pub fn allocations(&self) -> &[Allocation] {
        &self.allocations
    }

    /// The allocation record of `node`, if any.
    pub fn allocation(&self, node: u32) -> Option<Allocation> {
        let at = self.allocations.binary_search_by_key(&node, |a| a.node).ok()?;
        Some(self.allocations[at])
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Every string in id order, from id 1: the table read once, where [`Snapshot::string`] of
    /// each id would skip records from the nearest mark.
    pub fn strings(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.strings.chunks.iter().flat_map(|&chunk| {
            let mut rest = chunk;
            std::iter::from_fn(move || {
                if rest.is_empty() {
                    return None;
                }
                // The parser checked every record, so these decode.
                let (after, s) = bytes(rest).expect("string records were checked when parsed");
                rest = after;
                Some(s)
            })
        })
    }

    /// Whether the file holds address-keyed records (version 1.1, section 3.1 of the
    /// specification) instead of nodes, edges and roots.
    pub fn is_address_keyed(&self) -> bool {
        !self.python.is_empty()
    }

    /// The `PYBT` records in file order, their framing checked and their ids in range.
    pub fn python_batches(&self) -> &[Batch<'a>] {
        &self.python.batches
    }

    /// The `PYTY` records in file order, at most one per type.
    pub fn python_types(&self) -> &[TypeTraits] {
        &self.python.types
    }

    /// The addresses of the `PYEX` records in file order.
    pub fn python_excluded(&self) -> &[u64] {
        &self.python.excluded
    }

    /// The counts the `DONE` chunk declares; nodes and edges are confirmed as they are decoded.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// A digest of every chunk's CRC and length: equal files have equal checksums.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// Payload bytes of all `NODE` chunks: a bound on how many nodes there can be.
    pub fn node_bytes(&self) -> usize {
        self.node_chunks.iter().map(|c| c.len()).sum()
    }

    pub fn len_bytes(&self) -> usize {
        self.data.len()
    }

    pub fn nodes(&self) -> NodeIter<'_, 'a> {
        NodeIter {
            snap: self,
            records: Stream::new(&self.node_chunks),
            seen: 0,
            identity: 0,
            address: 0,
            failed: false,
        }
    }

    pub fn edges(&self) -> EdgeIter<'_, 'a> {
        EdgeIter { snap: self, records: Stream::new(&self.edge_chunks), seen: 0, from: 0, left: 0, failed: false }
    }

    fn count_mismatch(&self, what: &str, expected: u64, found: u64) -> FormatError {
        FormatError::new(
            self.done_offset,
            format!("the DONE chunk counts {expected} {what}, the file holds {found}: a chunk is missing"),
        )
    }
}

fn header(i: In<'_>) -> Res<'_, ()> {
    if i.len() < HEADER_LEN || i[..8] != MAGIC {
        return fail(i, "not an .hsnap snapshot: expected the magic bytes 89 48 53 4E 41 50 0D 0A");
    }
    let (rest, _) = take(8usize).parse(i)?;
    let (after, major) = le_u16.parse(rest)?;
    if major != VERSION.0 {
        return fail(rest, format!("format major version {major}; this reader knows {}", VERSION.0));
    }
    let (after, _minor) = le_u16.parse(after)?;
    let (after, _reserved) = le_u32.parse(after)?;
    Ok((after, ()))
}

/// The `DONE` record: eight counts in a version 1.0 file, eleven from version 1.1 on.
fn done(i: In<'_>, minor: u16) -> Res<'_, Counts> {
    let mut values = [0u64; 11];
    let mut rest = i;
    let read = if minor == 0 { 8 } else { 11 };
    for v in &mut values[..read] {
        (rest, *v) = uvarint(rest)?;
    }
    let [strings, types, modules, frames, stacks, nodes, edges, roots, batches, python_types, excluded] = values;
    let counts = Counts {
        strings,
        types,
        modules,
        frames,
        stacks,
        nodes,
        edges,
        roots,
        python_batches: batches,
        python_types,
        python_excluded: excluded,
    };
    Ok((rest, counts))
}

fn module(i: In<'_>) -> Res<'_, Module<'_>> {
    let (i, path) = id(i)?;
    let (i, build_id) = bytes(i)?;
    let (i, load_bias) = uvarint(i)?;
    let (mut i, count) = uvarint(i)?;
    if count > i.len() as u64 / 2 {
        return fail(i, format!("module declares {count} ranges, the record has room for fewer"));
    }
    let mut ranges = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (after, start) = uvarint(i)?;
        let (after, length) = uvarint(after)?;
        ranges.push((start, length));
        i = after;
    }
    Ok((i, Module { path, build_id, load_bias, ranges }))
}

fn frame(i: In<'_>) -> Res<'_, Frame> {
    let (rest, form) = one_byte(i)?;
    match form {
        0 => {
            let (rest, module) = id(rest)?;
            let (rest, offset) = uvarint(rest)?;
            Ok((rest, Frame::InModule { module, offset }))
        }
        1 => {
            let (rest, address) = uvarint(rest)?;
            Ok((rest, Frame::Absolute(address)))
        }
        2 => {
            let (rest, function) = id(rest)?;
            let (rest, file) = id(rest)?;
            let (rest, line) = id(rest)?;
            let (rest, column) = id(rest)?;
            Ok((rest, Frame::Symbol { function, file, line, column }))
        }
        _ => fail(i, format!("unknown frame form {form} (expected 0, 1 or 2)")),
    }
}

/// The records of one kind of chunk as one stream: the unread part of the current chunk, then the
/// chunks after it.
struct Stream<'s, 'a> {
    chunks: &'s [In<'a>],
    rest: In<'a>,
}

impl<'s, 'a> Stream<'s, 'a> {
    fn new(chunks: &'s [In<'a>]) -> Stream<'s, 'a> {
        Stream { chunks, rest: &[] }
    }

    /// Whether records remain, moving to the next chunk when this one is used up.
    fn more(&mut self) -> bool {
        while self.rest.is_empty() {
            let Some((first, others)) = self.chunks.split_first() else { return false };
            (self.rest, self.chunks) = (first, others);
        }
        true
    }
}

/// The next varint of `rest`, which moves past it.
#[inline(always)]
fn next_varint(rest: &mut &[u8]) -> Option<u64> {
    let (value, n) = varint::get_u(rest).ok()?;
    *rest = &rest[n..];
    Some(value)
}

/// Decodes node records in file order, checking each, and at the end their number.
pub struct NodeIter<'s, 'a> {
    snap: &'s Snapshot<'a>,
    records: Stream<'s, 'a>,
    seen: u64,
    identity: u64,
    address: u64,
    failed: bool,
}

impl NodeIter<'_, '_> {
    fn record(&mut self) -> Result<Node, FormatError> {
        let snap = self.snap;
        let parse = |i| -> Res<'_, Node> {
            let (i, identity) = svarint(i)?;
            let (i, address) = svarint(i)?;
            let (i, size) = uvarint(i)?;
            let (after, type_id) = id(i)?;
            if type_id as usize >= snap.types.len() {
                return fail(i, format!("type {type_id} out of range (the file has {})", snap.types.len()));
            }
            let (i, stack) = id(after)?;
            if stack as usize >= snap.stacks.len() {
                return fail(after, format!("stack {stack} out of range (the file has {})", snap.stacks.len() - 1));
            }
            let (i, flags) = uvarint(i)?;
            let node =
                Node { identity: identity as u64, address: address as u64, size, type_id, stack, flags: flags as u32 };
            Ok((i, node))
        };
        let (rest, mut node) = parse(self.records.rest).map_err(|e| snap.error(e))?;
        self.records.rest = rest;
        self.identity = self.identity.wrapping_add(node.identity);
        self.address = self.address.wrapping_add(node.address);
        node.identity = self.identity;
        node.address = self.address;
        self.seen += 1;
        if self.seen > snap.counts.nodes {
            return Err(snap.count_mismatch("nodes", snap.counts.nodes, self.seen));
        }
        Ok(node)
    }
}

impl Iterator for NodeIter<'_, '_> {
    type Item = Result<Node, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.records.more() {
            self.failed = true;
            let (expected, seen) = (self.snap.counts.nodes, self.seen);
            return (seen != expected).then(|| Err(self.snap.count_mismatch("nodes", expected, seen)));
        }
        let item = self.record();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Decodes edges in file order as `(source, edge)`, checking each, and at the end their number.
pub struct EdgeIter<'s, 'a> {
    snap: &'s Snapshot<'a>,
    records: Stream<'s, 'a>,
    seen: u64,
    from: u32,
    /// Edges left in the current record.
    left: u64,
    failed: bool,
}

impl<'a> EdgeIter<'_, 'a> {
    fn record_head(&mut self, i: In<'a>) -> Res<'a, ()> {
        let nodes = self.snap.counts.nodes;
        let (rest, delta) = svarint(i)?;
        let from = (self.from as i64).wrapping_add(delta);
        if from < 0 || from as u64 >= nodes {
            return fail(i, format!("edge source {from} out of range (the file has {nodes} nodes)"));
        }
        let (after, count) = uvarint(rest)?;
        if count == 0 || count > after.len() as u64 {
            return fail(rest, format!("edge record declares {count} edges, expected 1 to {}", after.len()));
        }
        self.from = from as u32;
        self.left = count;
        Ok((after, ()))
    }

    fn edge(&self, i: In<'a>) -> Res<'a, Edge> {
        let nodes = self.snap.counts.nodes;
        let (rest, head) = uvarint(i)?;
        let to = self.from as i64 + unzigzag(head >> 3);
        if to < 0 || to as u64 >= nodes {
            return fail(i, format!("edge target {to} out of range (the file has {nodes} nodes)"));
        }
        let Some(kind) = EdgeKind::from_bits(head >> 1 & 3) else {
            return fail(i, "edge kind 3 is reserved");
        };
        if head & 1 == 0 {
            return Ok((rest, Edge { to: to as u32, kind, label: Label::None }));
        }
        let (after, label) = uvarint(rest)?;
        let label = match label & 3 {
            0 => match u32::try_from(label >> 2) {
                Ok(s) if (s as usize) < self.snap.strings.len() => Label::Name(s),
                _ => return fail(rest, format!("label string id {} out of range", label >> 2)),
            },
            1 => Label::Index(label >> 2),
            2 => Label::Offset(label >> 2),
            _ => return fail(rest, "label kind 3 is reserved"),
        };
        Ok((after, Edge { to: to as u32, kind, label }))
    }

    /// Calls `f` with every remaining edge: the same checks as iterating, in a tighter loop.
    pub fn visit(mut self, mut f: impl FnMut(u32, Edge)) -> Result<(), FormatError> {
        loop {
            while let Some((from, edge)) = self.fast() {
                f(from, edge);
            }
            match self.next() {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok((from, edge))) => f(from, edge),
            }
        }
    }

    /// The common case, decoded with plain varints and no error plumbing: an edge inside a
    /// well-formed record. Anything unusual returns `None` with no state changed, and
    /// [`EdgeIter::next_edge`] decodes it again on the careful path that explains failures.
    #[inline(always)]
    fn fast(&mut self) -> Option<(u32, Edge)> {
        let nodes = self.snap.counts.nodes;
        let mut rest = self.records.rest;
        let (mut from, mut left) = (self.from, self.left);
        if left == 0 {
            let f = (from as i64).wrapping_add(unzigzag(next_varint(&mut rest)?));
            left = next_varint(&mut rest)?;
            if f < 0 || f as u64 >= nodes || left == 0 {
                return None;
            }
            from = f as u32;
        }
        let head = next_varint(&mut rest)?;
        let to = (from as i64).wrapping_add(unzigzag(head >> 3));
        let kind = EdgeKind::from_bits(head >> 1 & 3)?;
        if to < 0 || to as u64 >= nodes {
            return None;
        }
        let label = if head & 1 == 0 {
            Label::None
        } else {
            let label = next_varint(&mut rest)?;
            match label & 3 {
                0 if (label >> 2) < self.snap.strings.len() as u64 => Label::Name((label >> 2) as u32),
                1 => Label::Index(label >> 2),
                2 => Label::Offset(label >> 2),
                _ => return None,
            }
        };
        left -= 1;
        if (left > 0 && rest.is_empty()) || self.seen >= self.snap.counts.edges {
            return None;
        }
        (self.records.rest, self.from, self.left) = (rest, from, left);
        self.seen += 1;
        Some((from, Edge { to: to as u32, kind, label }))
    }

    fn next_edge(&mut self) -> Result<(u32, Edge), FormatError> {
        if let Some(item) = self.fast() {
            return Ok(item);
        }
        if self.left == 0 {
            let (rest, ()) = self.record_head(self.records.rest).map_err(|e| self.snap.error(e))?;
            self.records.rest = rest;
        }
        let (rest, edge) = self.edge(self.records.rest).map_err(|e| self.snap.error(e))?;
        self.records.rest = rest;
        self.left -= 1;
        self.seen += 1;
        if self.left > 0 && self.records.rest.is_empty() {
            return Err(FormatError::new(self.snap.offset_of(rest), "edge record ends before its last edge"));
        }
        if self.seen > self.snap.counts.edges {
            return Err(self.snap.count_mismatch("edges", self.snap.counts.edges, self.seen));
        }
        Ok((self.from, edge))
    }
}

impl Iterator for EdgeIter<'_, '_> {
    type Item = Result<(u32, Edge), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.records.more() {
            self.failed = true;
            let (expected, seen) = (self.snap.counts.edges, self.seen);
            return (seen != expected).then(|| Err(self.snap.count_mismatch("edges", expected, seen)));
        }
        let item = self.next_edge();
        self.failed = item.is_err();
        Some(item)
    }
}
