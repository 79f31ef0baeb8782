//! A streaming snapshot writer that never allocates.
//!
//! Records are appended to one caller-provided buffer; the buffer is flushed as a chunk when the kind
//! of record changes or it is full. A record larger than the buffer becomes a chunk of its own,
//! written straight from the caller's memory. So the writer runs inside a malloc hook with a static
//! buffer and a raw file descriptor behind [`Sink`].

use std::io;

use crate::varint::{self, len_u, put_u, zigzag};
use crate::{Counts, Edge, EdgeKind, HEADER_LEN, Label, MAGIC, Node, Root, Tag, tag};

/// Where the bytes go. Implemented for every `io::Write`; an allocator implements it on a raw fd.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl<W: io::Write> Sink for W {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }
}

const CHUNK_HEADER: usize = 8;
/// The smallest buffer: a chunk header plus the largest fixed-size record (an edge record with one
/// labelled edge, or a node) with room to spare.
pub const MIN_BUFFER: usize = 256;
/// Chunks are kept at most this large, as the specification asks.
const MAX_CHUNK: usize = 64 << 20;

/// Streams one snapshot. Call the record methods in any order, then [`Writer::finish`].
pub struct Writer<'b, S: Sink> {
    sink: S,
    /// `buf[..8]` is reserved for the chunk header; the payload follows.
    buf: &'b mut [u8],
    used: usize,
    open: Option<Tag>,
    counts: Counts,
    /// The minor version in the header: 1 allows address-keyed records and writes their counts.
    minor: u16,
    previous_identity: u64,
    previous_address: u64,
    previous_from: u32,
    last_allocation: Option<u32>,
}

impl<'b, S: Sink> Writer<'b, S> {
    /// Writes the header of a version 1.0 file. `buf` must hold at least [`MIN_BUFFER`] bytes.
    pub fn new(sink: S, buf: &'b mut [u8]) -> io::Result<Writer<'b, S>> {
        Writer::with_minor_version(sink, buf, 0)
    }

    /// Writes the header of a version 1.`minor` file: 0, or 1 for a file of address-keyed
    /// records ([`Writer::python_batch`] and the two after it).
    pub fn with_minor_version(mut sink: S, buf: &'b mut [u8], minor: u16) -> io::Result<Writer<'b, S>> {
        if buf.len() < MIN_BUFFER {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "hsnap buffer too small"));
        }
        if minor > 1 {
            return Err(invalid("this writer writes versions 1.0 and 1.1"));
        }
        let limit = buf.len().min(MAX_CHUNK + CHUNK_HEADER);
        let buf = &mut buf[..limit];
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&1u16.to_le_bytes());
        header[10..12].copy_from_slice(&minor.to_le_bytes());
        sink.put(&header)?;
        Ok(Writer {
            sink,
            buf,
            used: 0,
            open: None,
            counts: Counts::default(),
            minor,
            previous_identity: 0,
            previous_address: 0,
            previous_from: 0,
            last_allocation: None,
        })
    }

    /// What has been written so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// One metadata entry; well-known keys are listed in the specification.
    pub fn meta(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let size = bytes_len(key) + bytes_len(value);
        self.record(tag::META, size, |w| {
            w.bytes(key)?;
            w.bytes(value)
        })
    }

    /// Adds a string and returns its id (ids start at 1).
    pub fn string(&mut self, text: &[u8]) -> io::Result<u32> {
        self.record(tag::STRS, bytes_len(text), |w| w.bytes(text))?;
        self.counts.strings += 1;
        Ok(self.counts.strings as u32)
    }

    /// Adds a type named by a string id and returns its type id (ids start at 0).
    pub fn type_(&mut self, name: u32) -> io::Result<u32> {
        let mut rec = Scratch::new();
        rec.u(name as u64);
        self.small(tag::TYPE, &rec)?;
        self.counts.types += 1;
        Ok(self.counts.types as u32 - 1)
    }

    /// Adds a module and returns its id (ids start at 0).
    pub fn module(&mut self, path: u32, build_id: &[u8], load_bias: u64, ranges: &[(u64, u64)]) -> io::Result<u32> {
        let ranges_len: usize = ranges.iter().map(|&(s, l)| len_u(s) + len_u(l)).sum();
        let size =
            len_u(path as u64) + bytes_len(build_id) + len_u(load_bias) + len_u(ranges.len() as u64) + ranges_len;
        self.record(tag::MODS, size, |w| {
            w.u(path as u64)?;
            w.bytes(build_id)?;
            w.u(load_bias)?;
            w.u(ranges.len() as u64)?;
            for &(start, length) in ranges {
                w.u(start)?;
                w.u(length)?;
            }
            Ok(())
        })?;
        self.counts.modules += 1;
        Ok(self.counts.modules as u32 - 1)
    }

    /// A return address as an offset into a module; returns the frame id (ids start at 0).
    pub fn frame_in_module(&mut self, module: u32, offset: u64) -> io::Result<u32> {
        let mut rec = Scratch::new();
        rec.byte(0);
        rec.u(module as u64);
        rec.u(offset);
        self.frame(&rec)
    }

    /// A return address outside any known module.
    pub fn frame_absolute(&mut self, address: u64) -> io::Result<u32> {
        let mut rec = Scratch::new();
        rec.byte(1);
        rec.u(address);
        self.frame(&rec)
    }

    /// A resolved location; `function` and `file` are string ids, 0 for unknown.
    pub fn frame_symbol(&mut self, function: u32, file: u32, line: u32, column: u32) -> io::Result<u32> {
        let mut rec = Scratch::new();
        rec.byte(2);
        for v in [function, file, line, column] {
            rec.u(v as u64);
        }
        self.frame(&rec)
    }

    fn frame(&mut self, rec: &Scratch) -> io::Result<u32> {
        self.small(tag::FRMS, rec)?;
        self.counts.frames += 1;
        Ok(self.counts.frames as u32 - 1)
    }

    /// Adds a stack: `frame` called from the stack `parent` (0: outermost). Returns its id (from 1).
    pub fn stack(&mut self, parent: u32, frame: u32) -> io::Result<u32> {
        let id = self.counts.stacks + 1;
        if parent as u64 >= id {
            return Err(invalid("stack parent must be written before its child"));
        }
        let mut rec = Scratch::new();
        rec.u(id - parent as u64);
        rec.u(frame as u64);
        self.small(tag::STKS, &rec)?;
        self.counts.stacks = id;
        Ok(id as u32)
    }

    /// Adds a node and returns its index (from 0).
    pub fn node(&mut self, node: &Node) -> io::Result<u32> {
        if self.counts.nodes >= u32::MAX as u64 - 1 {
            return Err(invalid("too many nodes"));
        }
        let mut rec = Scratch::new();
        rec.s(node.identity.wrapping_sub(self.previous_identity) as i64);
        rec.s(node.address.wrapping_sub(self.previous_address) as i64);
        rec.u(node.size);
        rec.u(node.type_id as u64);
        rec.u(node.stack as u64);
        rec.u(node.flags as u64);
        self.small(tag::NODE, &rec)?;
        self.previous_identity = node.identity;
        self.previous_address = node.address;
        self.counts.nodes += 1;
        Ok(self.counts.nodes as u32 - 1)
    }

    /// Adds edges leaving `from`, as one record or several when they do not fit the buffer.
    pub fn edges(&mut self, from: u32, edges: &[Edge]) -> io::Result<()> {
        let mut rest = edges;
        while !rest.is_empty() {
            let head = len_u(zigzag(from as i64 - self.previous_from as i64));
            let fits = |room: usize| {
                let mut size = head + 1;
                let mut n = 0;
                for edge in rest {
                    let more = edge_len(from, edge) + usize::from(len_u(n as u64 + 1) > len_u(n as u64));
                    if size + more > room {
                        break;
                    }
                    size += more;
                    n += 1;
                }
                (n, size)
            };
            let (mut n, mut size) = fits(self.room(tag::EDGE));
            if n == 0 {
                self.flush()?;
                (n, size) = fits(self.buf.len() - CHUNK_HEADER);
            }
            let (now, later) = rest.split_at(n);
            let previous = self.previous_from;
            self.record(tag::EDGE, size, |w| {
                w.s(from as i64 - previous as i64)?;
                w.u(now.len() as u64)?;
                for edge in now {
                    w.edge(from, edge)?;
                }
                Ok(())
            })?;
            self.previous_from = from;
            self.counts.edges += now.len() as u64;
            rest = later;
        }
        Ok(())
    }

    pub fn root(&mut self, root: &Root) -> io::Result<()> {
        let mut rec = Scratch::new();
        rec.u(root.node as u64);
        rec.byte(root.kind as u8);
        rec.u(root.interior as u64);
        rec.u(root.name as u64);
        self.small(tag::ROOT, &rec)?;
        self.counts.roots += 1;
        Ok(())
    }

    /// What an allocator knows of node `node`'s block (an ancillary `aloc` record): its usable size
    /// (0 when unknown) and the id of the thread that allocated it (0 when unknown). Records must
    /// come in increasing node order.
    pub fn allocation(&mut self, node: u32, usable: u64, thread: u64) -> io::Result<()> {
        let previous = self.last_allocation.map_or(0, |n| n + 1);
        if node < previous {
            return Err(invalid("aloc records must come in increasing node order"));
        }
        let mut rec = Scratch::new();
        rec.u((node - previous) as u64);
        rec.u(usable);
        rec.u(thread);
        self.small(tag::ALOC, &rec)?;
        self.last_allocation = Some(node);
        Ok(())
    }

    /// One `PYBT` record, as [`crate::python::BatchColumns::encode`] makes it (written as it is;
    /// the reader checks it). Version 1.1 only.
    pub fn python_batch(&mut self, record: &[u8]) -> io::Result<()> {
        self.address_keyed()?;
        self.record(tag::PYBT, record.len(), |w| w.raw(record))?;
        self.counts.python_batches += 1;
        Ok(())
    }

    /// One `PYTY` record: the traits of type `type_id` ([`crate::python::TRAIT_SEQUENCE`], …)
    /// and its size floor (0 for none). Version 1.1 only.
    pub fn python_type(&mut self, type_id: u32, traits: u64, size_floor: u64) -> io::Result<()> {
        self.address_keyed()?;
        let mut rec = Scratch::new();
        rec.u(type_id as u64);
        rec.u(traits);
        rec.u(size_floor);
        self.small(tag::PYTY, &rec)?;
        self.counts.python_types += 1;
        Ok(())
    }

    /// One `PYEX` record: an object of the writer's own, left out of the graph. Version 1.1 only.
    pub fn python_excluded(&mut self, address: u64) -> io::Result<()> {
        self.address_keyed()?;
        let mut rec = Scratch::new();
        rec.u(address);
        self.small(tag::PYEX, &rec)?;
        self.counts.python_excluded += 1;
        Ok(())
    }

    fn address_keyed(&self) -> io::Result<()> {
        match self.minor {
            0 => Err(invalid("address-keyed records need a version 1.1 writer")),
            _ => Ok(()),
        }
    }

    /// Writes the `DONE` chunk and returns the sink; the caller flushes it and renames the file.
    pub fn finish(mut self) -> io::Result<S> {
        self.flush()?;
        let mut rec = Scratch::new();
        let fields = if self.minor == 0 { 8 } else { 11 };
        for (_, count) in &self.counts.fields()[..fields] {
            rec.u(*count);
        }
        self.small(tag::DONE, &rec)?;
        self.flush()?;
        Ok(self.sink)
    }

    /// Free payload bytes in the open chunk if it is of kind `tag`, else in a fresh one.
    fn room(&self, tag: Tag) -> usize {
        let capacity = self.buf.len() - CHUNK_HEADER;
        if self.open == Some(tag) { capacity - self.used } else { capacity }
    }

    fn small(&mut self, tag: Tag, rec: &Scratch) -> io::Result<()> {
        self.record(tag, rec.len, |w| w.raw(rec.bytes()))
    }

    /// Writes one record of exactly `size` bytes through `fill`.
    fn record(
        &mut self,
        tag: Tag,
        size: usize,
        fill: impl FnOnce(&mut Out<'_, '_, 'b, S>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.open != Some(tag) || size > self.room(tag) {
            self.flush()?;
        }
        if size > self.buf.len() - CHUNK_HEADER {
            if size > MAX_CHUNK {
                return Err(invalid("record larger than a chunk may be"));
            }
            let mut header = [0u8; CHUNK_HEADER];
            header[..4].copy_from_slice(&tag);
            header[4..].copy_from_slice(&(size as u32).to_le_bytes());
            let mut crc = crc32fast::Hasher::new();
            crc.update(&header);
            self.sink.put(&header)?;
            let mut out = Out { writer: self, direct: Some(&mut crc), written: 0 };
            fill(&mut out)?;
            debug_assert_eq!(out.written, size);
            return self.sink.put(&crc.finalize().to_le_bytes());
        }
        self.open = Some(tag);
        let mut out = Out { writer: self, direct: None, written: 0 };
        fill(&mut out)?;
        debug_assert_eq!(out.written, size);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(tag) = self.open.take() else {
            return Ok(());
        };
        let end = CHUNK_HEADER + self.used;
        self.buf[..4].copy_from_slice(&tag);
        self.buf[4..8].copy_from_slice(&(self.used as u32).to_le_bytes());
        let crc = crc32fast::hash(&self.buf[..end]);
        self.sink.put(&self.buf[..end])?;
        self.sink.put(&crc.to_le_bytes())?;
        self.used = 0;
        Ok(())
    }
}

/// Where one record's bytes go: the open chunk's buffer, or straight to the sink.
struct Out<'o, 'c, 'b, S: Sink> {
    writer: &'o mut Writer<'b, S>,
    direct: Option<&'c mut crc32fast::Hasher>,
    written: usize,
}

impl<S: Sink> Out<'_, '_, '_, S> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len();
        match &mut self.direct {
            Some(crc) => {
                crc.update(bytes);
                self.writer.sink.put(bytes)
            }
            None => {
                let w = &mut *self.writer;
                let at = CHUNK_HEADER + w.used;
                w.buf[at..at + bytes.len()].copy_from_slice(bytes);
                w.used += bytes.len();
                Ok(())
            }
        }
    }

    #[inline]
    fn u(&mut self, value: u64) -> io::Result<()> {
        // Most records go to the buffer: the varint is encoded in place there (a converter writes
        // tens of millions of them), not copied from a scratch array.
        if self.direct.is_none() {
            let w = &mut *self.writer;
            let at = CHUNK_HEADER + w.used;
            if let Some(room) = w.buf.get_mut(at..at + varint::MAX_LEN) {
                let n = put_u(room, value);
                w.used += n;
                self.written += n;
                return Ok(());
            }
        }
        let mut tmp = [0u8; varint::MAX_LEN];
        let n = put_u(&mut tmp, value);
        self.raw(&tmp[..n])
    }

    fn s(&mut self, value: i64) -> io::Result<()> {
        self.u(zigzag(value))
    }

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.u(bytes.len() as u64)?;
        self.raw(bytes)
    }

    fn edge(&mut self, from: u32, edge: &Edge) -> io::Result<()> {
        let (head, label) = edge_fields(from, edge);
        self.u(head)?;
        if let Some(label) = label {
            self.u(label)?;
        }
        Ok(())
    }
}

/// A small record assembled on the stack.
struct Scratch {
    buf: [u8; 64],
    len: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { buf: [0; 64], len: 0 }
    }

    fn u(&mut self, value: u64) {
        self.len += put_u(&mut self.buf[self.len..], value);
    }

    fn s(&mut self, value: i64) {
        self.u(zigzag(value));
    }

    fn byte(&mut self, value: u8) {
        self.buf[self.len] = value;
        self.len += 1;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn bytes_len(bytes: &[u8]) -> usize {
    len_u(bytes.len() as u64) + bytes.len()
}

/// The edge's head varint and, when it has one, its label varint.
fn edge_fields(from: u32, edge: &Edge) -> (u64, Option<u64>) {
    let label = match edge.label {
        Label::None => None,
        Label::Name(id) => Some((id as u64) << 2),
        Label::Index(i) => Some(i << 2 | 1),
        Label::Offset(o) => Some(o << 2 | 2),
    };
    let delta = zigzag(edge.to as i64 - from as i64);
    let kind = match edge.kind {
        EdgeKind::Strong => 0,
        EdgeKind::Weak => 1,
        EdgeKind::Interior => 2,
    };
    (delta << 3 | kind << 1 | label.is_some() as u64, label)
}

fn edge_len(from: u32, edge: &Edge) -> usize {
    let (head, label) = edge_fields(from, edge);
    len_u(head) + label.map_or(0, len_u)
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}
