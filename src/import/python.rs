//! Address-keyed snapshots (version 1.1: `PYBT`, `PYTY` and `PYEX` records, written by the
//! pure-Python exporter) resolved into a version 1.0 `.hsnap` of nodes, edges and roots, by the
//! rules of `formats/hsnap.md`, section 3.1, "Resolving". `META`, `STRS` and `TYPE` (and `MODS`,
//! `FRMS`, `STKS` when there are any) are copied record for record, so every id stays what it was.
//!
//! The work is a few passes over plain arrays, with two stable radix sorts and no hash map:
//!
//! 1. Every kind-0 source, leaf and kind-1 source becomes an (address, record) pair, made in
//!    that order of kinds and in file order within each. Sorted by address (stably), each
//!    address's records then come in the order the rules rank them: the first gives the node (a
//!    kind-0 source over a leaf, an earlier leaf over a later one), and behind a winning leaf the
//!    first kind-1 source gives the node's edges. Excluded addresses are skipped. Nodes are
//!    numbered as they come, so in increasing address order.
//! 2. Every target becomes an (address, position, how its source is used) triple, sorted the
//!    same way and merged with the node addresses: each target's node; each node's inside
//!    references, counted from the triples of its address; and for each node given by a leaf the
//!    occurrences of its address among the targets of its batch (one address's positions are
//!    increasing after the stable sort, so one batch's are a range found by two binary searches).
//! 3. Labels are laid out per target: dense labels, then sparse ones over them.
//! 4. Writing: the nodes in order, with the roots decided as they go, then each node's edges.
//!    This thread makes the records, a second one encodes and writes them.
//!
//! The nodes are in address order and their records in file order, so reading a node's record
//! (and finding its targets) misses the cache; those reads are made a chunk of nodes at a time,
//! in loops that do nothing else, so that many are in flight at once.
//!
//! Memory, besides the sorts' pairs (16 bytes each, twice while sorting): 29 bytes a node, 8 a
//! reference and 5 a source.

use std::io;
use std::path::Path;
use std::time::Instant;

use hsnap::python::{Batch, BatchKind, LEAF_FROZEN, TRAIT_REVERSED, TRAIT_SEQUENCE};
use hsnap::{Edge, EdgeKind, FormatError, Frame, HEADER_LEN, Label, MAGIC, Node, Root, RootKind, Snapshot, tag};

use crate::atomic::{SnapshotWriter, write_snapshot_synced};
use crate::error::{Error, Result};
use crate::graph::{Builder, Graph};
use crate::heap::SnapshotFile;
use crate::progress::Progress;

/// What a conversion read and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ConvertStats {
    pub nodes: u64,
    pub edges: u64,
    /// References of nodes to objects that are no node (excluded, or never described): dropped.
    pub dropped_references: u64,
    /// Nodes whose true count came out below zero and was taken as zero.
    pub clamped_counts: u64,
    pub roots: u64,
    /// `PYBT` records read.
    pub batches: u64,
    /// Time until the writing started: parsing the input and resolving the batches.
    pub resolve_seconds: f64,
    pub seconds: f64,
}

/// Whether `bytes` are an `.hsnap` of version 1.1 or later holding address-keyed records: the
/// header, then a walk over the chunk headers (not their payloads) until one of `PYBT`, `PYTY` or
/// `PYEX`. Damage is left for the parser to report.
pub fn looks_like(bytes: &[u8]) -> bool {
    let version = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC || version(8) != 1 || version(10) < 1 {
        return false;
    }
    let mut at = HEADER_LEN;
    while let Some(header) = bytes.get(at..at + 8) {
        match header[..4].try_into().expect("four bytes") {
            tag::PYBT | tag::PYTY | tag::PYEX => return true,
            tag::DONE => return false,
            _ => {}
        }
        let len = u32::from_le_bytes(header[4..].try_into().expect("four bytes")) as usize;
        at = at.saturating_add(12).saturating_add(len);
    }
    false
}

/// Converts the address-keyed snapshot `input` to the version 1.0 `.hsnap` `output` (written under
/// a temporary name and renamed when complete). Malformed input is an [`Error::Format`] naming
/// `input`, the byte offset and what was expected there; `output` is then left untouched.
pub fn convert(input: &Path, output: &Path, progress: &Progress) -> Result<ConvertStats> {
    Ok(convert_with(input, output, false, progress)?.0)
}

/// [`convert`] to a temporary file, building the graph at the same time: it is the graph
/// [`Graph::load`] would make of `output`, without decoding it again. The output is not synced to
/// disk (it dies with the process).
pub fn convert_and_build(input: &Path, output: &Path, progress: &Progress) -> Result<(ConvertStats, Graph)> {
    let (stats, graph) = convert_with(input, output, true, progress)?;
    Ok((stats, graph.expect("a graph was asked for")))
}

fn convert_with(
    input: &Path,
    output: &Path,
    build: bool,
    progress: &Progress,
) -> Result<(ConvertStats, Option<Graph>)> {
    let start = Instant::now();
    let file = SnapshotFile::open(input)?;
    let format = |source: FormatError| Error::Format { path: input.to_path_buf(), source };
    let snap = Snapshot::parse(file.bytes()).map_err(format)?;
    let c = snap.counts();
    if c.nodes > 0 || c.edges > 0 || c.roots > 0 {
        let what = "expected address-keyed records (PYBT, PYTY, PYEX): this snapshot holds nodes, edges and roots";
        return Err(format(FormatError::new(0, what)));
    }
    let resolved = Resolved::of(&snap).map_err(format)?;
    let mut stats = ConvertStats {
        batches: snap.python_batches().len() as u64,
        dropped_references: resolved.targets.dropped,
        resolve_seconds: start.elapsed().as_secs_f64(),
        ..ConvertStats::default()
    };
    let bar = progress.bar("converting", 2 * resolved.nodes.address.len() as u64);
    let builder = build.then(Builder::default);
    let graph = write_snapshot_synced(output, !build, |w| resolved.write(&snap, w, builder, &mut stats, &bar))?;
    bar.finish_and_clear();
    stats.seconds = start.elapsed().as_secs_f64();
    Ok((stats, graph))
}

/// No node, no source.
const NONE: u32 = u32::MAX;

/// A record that gives an address: its class, batch and position packed in a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A kind-0 source.
    Source = 0,
    Leaf = 1,
    /// A kind-1 source: a leaf's references.
    References = 2,
    /// A kind-2 source: more references of a source of an earlier record.
    Continuation = 3,
}

impl Record {
    /// At most 2^30 batches, and positions below 2^32 (a record is smaller than 4 GiB).
    const MAX_BATCHES: usize = 1 << 30;

    fn new(class: Class, batch: usize, position: usize) -> Record {
        Record((class as u64) << 62 | (batch as u64) << 32 | position as u64)
    }

    fn class(self) -> Class {
        match self.0 >> 62 {
            0 => Class::Source,
            1 => Class::Leaf,
            2 => Class::References,
            _ => Class::Continuation,
        }
    }

    fn batch(self) -> usize {
        (self.0 >> 32 & (Record::MAX_BATCHES as u64 - 1)) as usize
    }

    fn position(self) -> usize {
        self.0 as u32 as usize
    }
}

/// The nodes, in increasing address order.
#[derive(Default)]
struct Nodes {
    address: Vec<u64>,
    /// The record whose type, size, refcount and flags are the node's.
    record: Vec<Record>,
    /// The source (a global source number) whose references are the node's edges, or [`NONE`].
    supplier: Vec<u32>,
    /// (node, source) for each kind-2 source, by node and then in file order: more of the node's
    /// edges, after its supplier's.
    continued: Vec<(u32, u32)>,
}

/// Where each batch's sources and targets start in the numbering of all of them, in file order.
struct Layout {
    /// Per batch and one more: the global number of its first source.
    sources: Vec<u32>,
    /// Per source (global number) and one more: the global position of its first target.
    source_targets: Vec<u32>,
}

impl Layout {
    fn of(batches: &[Batch<'_>]) -> Result<Layout, FormatError> {
        if batches.len() > Record::MAX_BATCHES {
            return Err(FormatError::new(batches[Record::MAX_BATCHES].offset, "more than 2^30 PYBT records"));
        }
        let mut sources = Vec::with_capacity(batches.len() + 1);
        let total: usize = batches.iter().map(|b| b.sources()).sum();
        let mut source_targets = Vec::with_capacity(total + 1);
        let mut target = 0u64;
        source_targets.push(0);
        for batch in batches {
            sources.push((source_targets.len() - 1) as u32);
            if source_targets.len() + batch.sources() >= NONE as usize {
                return Err(FormatError::new(batch.offset, "more than 2^32 - 2 sources: more than heapsnap supports"));
            }
            for count in batch.reference_count.iter() {
                target += count;
                source_targets.push(target as u32);
            }
            if target >= NONE as u64 {
                return Err(FormatError::new(
                    batch.offset,
                    "more than 2^32 - 2 references: more than heapsnap supports",
                ));
            }
        }
        sources.push((source_targets.len() - 1) as u32);
        Ok(Layout { sources, source_targets })
    }

    fn source(&self, batch: usize, position: usize) -> u32 {
        self.sources[batch] + position as u32
    }

    /// The global positions of a batch's targets.
    fn targets(&self, batch: usize) -> std::ops::Range<u32> {
        let [first, end] = [batch, batch + 1].map(|b| self.source_targets[self.sources[b] as usize]);
        first..end
    }

    fn total_targets(&self) -> usize {
        *self.source_targets.last().expect("one more than the sources") as usize
    }
}

/// Per type: the `PYTY` trait bits this reader knows ([`TRAIT_SEQUENCE`], [`TRAIT_REVERSED`]) and
/// size floor.
struct Types {
    traits: Vec<u8>,
    floor: Vec<u64>,
}

impl Types {
    fn of(snap: &Snapshot<'_>) -> Types {
        let mut types = Types { traits: vec![0; snap.type_count()], floor: vec![0; snap.type_count()] };
        // The reader checked that each type id is in range and has one record at most.
        for t in snap.python_types() {
            types.traits[t.type_id as usize] = (t.traits & (TRAIT_SEQUENCE | TRAIT_REVERSED)) as u8;
            types.floor[t.type_id as usize] = t.size_floor;
        }
        types
    }
}

/// The batches resolved: the nodes, each target's node and label, each node's inside references.
struct Resolved<'s, 'a> {
    batches: &'s [Batch<'a>],
    layout: Layout,
    types: Types,
    nodes: Nodes,
    targets: Targets,
    /// Per target: its string label, 0 for none.
    target_label: Vec<u32>,
}

/// Records handed to the thread that writes them: nodes, then edges of consecutive sources (each
/// source with its number of edges).
#[derive(Default)]
struct Records {
    nodes: Vec<Node>,
    sources: Vec<(u32, u32)>,
    edges: Vec<Edge>,
}

impl Records {
    /// Records per batch: enough to keep the writer busy, few enough to stay in cache.
    const SIZE: usize = 1 << 14;

    fn write(&self, w: &mut SnapshotWriter<'_>) -> io::Result<()> {
        for node in &self.nodes {
            w.node(node)?;
        }
        let mut at = 0;
        for &(from, count) in &self.sources {
            w.edges(from, &self.edges[at..at + count as usize])?;
            at += count as usize;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.nodes.clear();
        self.sources.clear();
        self.edges.clear();
    }
}

impl<'s, 'a> Resolved<'s, 'a> {
    fn of(snap: &'s Snapshot<'a>) -> Result<Resolved<'s, 'a>, FormatError> {
        let batches = snap.python_batches();
        let layout = Layout::of(batches)?;
        let nodes = number_nodes(batches, &layout, snap.python_excluded())?;
        let targets = resolve_targets(batches, &layout, &nodes);
        let target_label = lay_out_labels(batches, &layout);
        Ok(Resolved { batches, layout, types: Types::of(snap), nodes, targets, target_label })
    }

    /// Writes the tables, then the nodes and edges on a second thread (encoding records,
    /// checksums, the file) while this one makes them, then the roots.
    fn write(
        &self,
        snap: &Snapshot<'_>,
        w: &mut SnapshotWriter<'_>,
        mut builder: Option<Builder>,
        stats: &mut ConvertStats,
        bar: &indicatif::ProgressBar,
    ) -> io::Result<Option<Graph>> {
        copy_tables(snap, w)?;
        let writing = &mut *w;
        let roots = std::thread::scope(|scope| {
            let (full, to_write) = std::sync::mpsc::sync_channel::<Records>(2);
            let (give_back, written) = std::sync::mpsc::channel::<Records>();
            let writer = scope.spawn(move || -> io::Result<()> {
                for records in to_write {
                    records.write(writing)?;
                    let _ = give_back.send(records);
                }
                Ok(())
            });
            let mut records = Records::default();
            // Hands over the records when there are enough (or `last`); false when the writer
            // has stopped on an error, which its join reports.
            let mut hand_over = |records: &mut Records, last: bool| {
                let len = records.nodes.len() + records.edges.len();
                if len == 0 || (len < Records::SIZE && !last) {
                    return true;
                }
                let mut next = written.try_recv().unwrap_or_default();
                next.clear();
                full.send(std::mem::replace(records, next)).is_ok()
            };
            let made = self.make_nodes(builder.as_mut(), stats, bar, &mut records, &mut hand_over);
            if let Some((_, traits)) = &made {
                self.make_edges(builder.as_mut(), traits, stats, bar, &mut records, &mut hand_over);
            }
            drop(full);
            writer.join().expect("the writer does not panic")?;
            Ok::<_, io::Error>(made.expect("the writer stopped on an error, reported above").0)
        })?;
        for root in &roots {
            w.root(root)?;
        }
        stats.roots = roots.len() as u64;
        Ok(builder.map(|b| b.finish(roots)))
    }

    /// Makes the nodes, in order; returns the roots and each node's type traits, or `None` when
    /// the writer stopped.
    fn make_nodes(
        &self,
        mut builder: Option<&mut Builder>,
        stats: &mut ConvertStats,
        bar: &indicatif::ProgressBar,
        records: &mut Records,
        hand_over: &mut impl FnMut(&mut Records, bool) -> bool,
    ) -> Option<(Vec<Root>, Vec<u8>)> {
        let mut roots = Vec::new();
        let nodes = &self.nodes;
        let mut traits = Vec::with_capacity(nodes.address.len());
        if let Some(builder) = builder.as_deref_mut() {
            builder.reserve_nodes(nodes.address.len());
        }
        // The records are read a chunk of nodes at a time, in a loop that does nothing else: they
        // lie in file order, the nodes in address order, and the loads miss the cache; so many
        // are in flight at once.
        let mut described = Vec::with_capacity(GATHER);
        for (v, &address) in nodes.address.iter().enumerate() {
            if v % GATHER == 0 {
                described.clear();
                let chunk = &nodes.record[v..(v + GATHER).min(nodes.record.len())];
                described.extend(chunk.iter().map(|&record| self.describe(record)));
            }
            let Described { type_id, size, refcount, frozen, held } = described[v % GATHER];
            let held = held as u128 + self.targets.occurrences[v] as u128;
            // Frozen and immortal objects are roots whatever references they have.
            let pinned = frozen || refcount >= 1 << 30;
            let true_count = (refcount as u128).checked_sub(held).unwrap_or_else(|| {
                stats.clamped_counts += 1;
                0
            });
            if pinned || true_count > self.targets.inside[v] as u128 {
                roots.push(Root { node: v as u32, kind: RootKind::GcRoot, interior: false, name: 0 });
            }
            traits.push(self.types.traits[type_id as usize]);
            let size = size.max(self.types.floor[type_id as usize]);
            let flags = if pinned { Node::IMMORTAL } else { 0 };
            let node = Node { identity: address, address, size, type_id, stack: 0, flags };
            records.nodes.push(node);
            if let Some(builder) = builder.as_deref_mut() {
                builder.node(&node);
            }
            if !hand_over(records, false) {
                return None;
            }
            if v % 65536 == 0 {
                bar.set_position(v as u64);
            }
        }
        stats.nodes = nodes.address.len() as u64;
        Some((roots, traits))
    }

    /// What the record of a node says of it.
    fn describe(&self, record: Record) -> Described {
        let batch = &self.batches[record.batch()];
        let i = record.position();
        match record.class() {
            Class::Source => Described {
                type_id: batch.source_type.get(i) as u32,
                size: batch.source_size.get(i),
                refcount: batch.source_refcount.get(i),
                frozen: false,
                held: batch.source_bias,
            },
            _ => Described {
                type_id: batch.leaf_type.get(i) as u32,
                size: batch.leaf_size.get(i),
                refcount: batch.leaf_refcount.get(i),
                frozen: batch.leaf_flags.get(i) as u8 & LEAF_FROZEN != 0,
                held: batch.leaf_bias,
            },
        }
    }

    /// Makes each node's edges, in node order.
    fn make_edges(
        &self,
        mut builder: Option<&mut Builder>,
        traits: &[u8],
        stats: &mut ConvertStats,
        bar: &indicatif::ProgressBar,
        records: &mut Records,
        hand_over: &mut impl FnMut(&mut Records, bool) -> bool,
    ) {
        let n = self.nodes.address.len();
        if let Some(builder) = builder.as_deref_mut() {
            builder.start_edges(self.layout.total_targets());
        }
        let continued = &self.nodes.continued;
        let mut next_continued = 0;
        // Where each node's targets are, a chunk of nodes at a time, as the records are read.
        let mut spans = Vec::with_capacity(GATHER);
        for (v, (&supplier, &traits)) in self.nodes.supplier.iter().zip(traits).enumerate() {
            if v % GATHER == 0 {
                spans.clear();
                let chunk = &self.nodes.supplier[v..(v + GATHER).min(n)];
                spans.extend(chunk.iter().map(|&s| match s {
                    NONE => (0, 0),
                    s => {
                        let first = self.layout.source_targets[s as usize];
                        // Read now, so that the lines are in the cache when the edges are made.
                        std::hint::black_box(self.targets.node.get(first as usize).copied());
                        std::hint::black_box(self.target_label.get(first as usize).copied());
                        (first, self.layout.source_targets[s as usize + 1])
                    }
                }));
            }
            if supplier == NONE {
                continue;
            }
            let (first, end) = spans[v % GATHER];
            let start = records.edges.len();
            let more_from = next_continued;
            while continued.get(next_continued).is_some_and(|&(node, _)| node == v as u32) {
                next_continued += 1;
            }
            let more = &continued[more_from..next_continued];
            // A source over several records gets no element indexes (spec: "Resolving").
            let index_order =
                (traits as u64 & TRAIT_SEQUENCE != 0 && more.is_empty()).then_some(traits as u64 & TRAIT_REVERSED != 0);
            self.push_edges(records, first as usize..end as usize, index_order);
            for &(_, source) in more {
                let s = source as usize;
                let range = self.layout.source_targets[s] as usize..self.layout.source_targets[s + 1] as usize;
                self.push_edges(records, range, None);
            }
            let made = records.edges.len() - start;
            if made > 0 {
                records.sources.push((v as u32, made as u32));
                if let Some(builder) = builder.as_deref_mut() {
                    builder.edges(v as u32, &records.edges[start..]);
                }
                stats.edges += made as u64;
            }
            if !hand_over(records, v + 1 == n) {
                return;
            }
            if v % 65536 == 0 {
                bar.set_position((n + v) as u64);
            }
        }
        hand_over(records, true);
    }
}

impl Resolved<'_, '_> {
    /// The edges to the nodes of the targets in `range` (dropped ones left out), labelled by their
    /// names, or when `index_order` is `Some(reversed)` unnamed ones by their element index.
    fn push_edges(&self, records: &mut Records, range: std::ops::Range<usize>, index_order: Option<bool>) {
        let count = range.len() as u64;
        let targets = self.targets.node[range.clone()].iter().zip(&self.target_label[range]);
        for (i, (&to, &label)) in targets.enumerate() {
            if to == NONE {
                continue;
            }
            let label = match (label, index_order) {
                (0, Some(true)) => Label::Index(count - 1 - i as u64),
                (0, Some(false)) => Label::Index(i as u64),
                (0, None) => Label::None,
                (name, _) => Label::Name(name),
            };
            records.edges.push(Edge { to, kind: EdgeKind::Strong, label });
        }
    }
}

/// Nodes whose records are read at once.
const GATHER: usize = 1024;

/// What a node's record says of it: type, size, refcount, frozen flag, and the bias its refcount
/// holds (the occurrences among its batch's targets not counted).
#[derive(Debug, Clone, Copy)]
struct Described {
    type_id: u32,
    size: u64,
    refcount: u64,
    frozen: bool,
    held: u64,
}

/// Step 1: the nodes, from every record that gives an address, sorted by address.
fn number_nodes(batches: &[Batch<'_>], layout: &Layout, excluded: &[u64]) -> Result<Nodes, FormatError> {
    let records = records_by_address(batches)?;
    let mut excluded = excluded.to_vec();
    excluded.sort_unstable();
    let mut excluded = excluded.into_iter().peekable();
    let mut nodes = Nodes::default();
    let source = |r: Record| layout.source(r.batch(), r.position());
    let mut at = 0;
    while at < records.len() {
        let address = records[at].0;
        let run = records[at..].iter().position(|&(a, _)| a != address).unwrap_or(records.len() - at);
        let run = &records[at..at + run];
        at += run.len();
        while excluded.next_if(|&e| e < address).is_some() {}
        if excluded.peek() == Some(&address) {
            continue;
        }
        let first = run[0].1;
        let references = run.iter().map(|&(_, r)| r).find(|r| r.class() == Class::References);
        let supplier = match first.class() {
            Class::References => return Err(no_leaf(batches, first)),
            Class::Continuation => return Err(continues_nothing(batches, first)),
            Class::Source => {
                if let Some(&(_, second)) = run.get(1).filter(|(_, r)| r.class() == Class::Source) {
                    let what = format!(
                        "address {address:#x} given by a second kind-0 source (the first is at byte {})",
                        address_offset(batches, first)
                    );
                    return Err(FormatError::new(address_offset(batches, second), what));
                }
                // Kind-1 records of the address are ignored, if it was given as a leaf too.
                if let Some(r) = references.filter(|_| run.iter().all(|(_, r)| r.class() != Class::Leaf)) {
                    return Err(no_leaf(batches, r));
                }
                source(first)
            }
            Class::Leaf => references.map_or(NONE, source),
        };
        let supplied_by = if first.class() == Class::Source { Some(first) } else { references };
        for &(_, r) in run.iter().filter(|(_, r)| r.class() == Class::Continuation) {
            match supplied_by {
                Some(s) if s.batch() < r.batch() => nodes.continued.push((nodes.address.len() as u32, source(r))),
                _ => return Err(continues_nothing(batches, r)),
            }
        }
        nodes.address.push(address);
        nodes.record.push(first);
        nodes.supplier.push(supplier);
    }
    Ok(nodes)
}

/// (address, record) for every kind-0 source, every leaf and every kind-1 and kind-2 source,
/// stably sorted by address from the order of the rules: kind-0 sources, then leaves, then kind-1
/// sources, then kind-2 sources, each in file order.
fn records_by_address(batches: &[Batch<'_>]) -> Result<Vec<(u64, Record)>, FormatError> {
    let total: usize = batches.iter().map(|b| b.sources() + b.leaves()).sum();
    let nodes: usize = batches.iter().map(|b| b.leaves() + b.sources() * (b.kind == BatchKind::Objects) as usize).sum();
    if nodes >= NONE as usize - 1 {
        let what = format!("{nodes} kind-0 sources and leaves: more than the 2^32 - 2 nodes heapsnap supports");
        return Err(FormatError::new(batches.last().map_or(0, |b| b.offset), what));
    }
    let mut records = Vec::with_capacity(total);
    let classes = [
        (Class::Source, BatchKind::Objects),
        (Class::Leaf, BatchKind::Objects),
        (Class::References, BatchKind::References),
        (Class::Continuation, BatchKind::Continuation),
    ];
    for (class, kind) in classes {
        for (b, batch) in batches.iter().enumerate() {
            let addresses = match class {
                Class::Leaf => batch.leaf_address,
                _ if batch.kind == kind => batch.source_address,
                _ => continue,
            };
            records.extend(addresses.iter().enumerate().map(|(i, address)| (address, Record::new(class, b, i))));
        }
    }
    radsort::sort_by_key(&mut records, |&(address, _)| address);
    Ok(records)
}

/// Where the address of a record is in the file.
fn address_offset(batches: &[Batch<'_>], r: Record) -> u64 {
    let batch = &batches[r.batch()];
    match r.class() {
        Class::Leaf => batch.leaf_address.offset_of(r.position()),
        _ => batch.source_address.offset_of(r.position()),
    }
}

fn continues_nothing(batches: &[Batch<'_>], r: Record) -> FormatError {
    let address = batches[r.batch()].source_address.get(r.position());
    let what = format!(
        "kind-2 source {address:#x}: expected the address of a source whose references an earlier record of \
         kind 0 or 1 gives"
    );
    FormatError::new(address_offset(batches, r), what)
}

fn no_leaf(batches: &[Batch<'_>], r: Record) -> FormatError {
    let address = batches[r.batch()].source_address.get(r.position());
    let what = format!(
        "kind-1 source {address:#x}: expected the address of a leaf (a kind-1 record gives a leaf's references), \
         but no batch gives it as a leaf"
    );
    FormatError::new(address_offset(batches, r), what)
}

/// What step 2 finds.
struct Targets {
    /// Per target (global position): its node, or [`NONE`] when it is dropped.
    node: Vec<u32>,
    /// Per node given by a leaf: the occurrences of its address among its batch's targets.
    occurrences: Vec<u32>,
    /// Per node: its inside references, the edges to it from nodes given by kind-0 sources, and
    /// for a node given by a leaf from every node.
    inside: Vec<u32>,
    /// References of nodes to no node.
    dropped: u64,
}

/// How a target's source is used, carried beside the target's address while they are sorted.
const UNUSED: u8 = 0;
const FROM_SOURCE_NODE: u8 = 1;
const FROM_LEAF_NODE: u8 = 2;

/// Step 2: each target's node, and per node the occurrences of its address among the targets of
/// its batch (for a leaf) and its inside references. Every target is visited once, in address
/// order: its node written, nothing read but the sorted pairs.
fn resolve_targets(batches: &[Batch<'_>], layout: &Layout, nodes: &Nodes) -> Targets {
    let total = layout.total_targets();
    let mut uses = vec![UNUSED; layout.source_targets.len() - 1];
    for (&supplier, &record) in nodes.supplier.iter().zip(&nodes.record) {
        if supplier != NONE {
            let from_source = record.class() == Class::Source;
            uses[supplier as usize] = if from_source { FROM_SOURCE_NODE } else { FROM_LEAF_NODE };
        }
    }
    for &(v, source) in &nodes.continued {
        uses[source as usize] = uses[nodes.supplier[v as usize] as usize];
    }
    // (address, position, use of its source): 16 bytes, as (address, position) would be.
    let mut pairs: Vec<(u64, u32, u8)> = Vec::with_capacity(total);
    for (b, batch) in batches.iter().enumerate() {
        let mut addresses = batch.targets.iter();
        for (i, count) in batch.reference_count.iter().enumerate() {
            let used = uses[layout.source(b, i) as usize];
            for address in addresses.by_ref().take(count as usize) {
                pairs.push((address, pairs.len() as u32, used));
            }
        }
    }
    drop(uses);
    radsort::sort_by_key(&mut pairs, |&(address, _, _)| address);
    let n = nodes.address.len();
    let mut targets = Targets { node: vec![NONE; total], occurrences: vec![0; n], inside: vec![0; n], dropped: 0 };
    let mut v = 0;
    let mut at = 0;
    while at < pairs.len() {
        let address = pairs[at].0;
        let run = pairs[at..].iter().position(|&(a, _, _)| a != address).unwrap_or(pairs.len() - at);
        let run = &pairs[at..at + run];
        at += run.len();
        while nodes.address.get(v).is_some_and(|&a| a < address) {
            v += 1;
        }
        if nodes.address.get(v) != Some(&address) {
            targets.dropped += run.iter().filter(|&&(_, _, used)| used != UNUSED).count() as u64;
            continue;
        }
        let record = nodes.record[v];
        let leaf = record.class() == Class::Leaf;
        let mut inside = 0;
        for &(_, position, used) in run {
            inside += (used == FROM_SOURCE_NODE || (leaf && used == FROM_LEAF_NODE)) as u32;
            targets.node[position as usize] = v as u32;
        }
        targets.inside[v] = inside;
        if leaf {
            let batch = layout.targets(record.batch());
            let first = run.partition_point(|&(_, p, _)| p < batch.start);
            let end = run.partition_point(|&(_, p, _)| p < batch.end);
            targets.occurrences[v] = (end - first) as u32;
        }
    }
    targets
}

/// Step 3: each target's string label, 0 for none: dense labels, then sparse ones over them.
fn lay_out_labels(batches: &[Batch<'_>], layout: &Layout) -> Vec<u32> {
    let mut labels = vec![0u32; layout.total_targets()];
    // Where each source's targets start in its batch.
    let mut starts: Vec<u32> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        if batch.dense_sources.is_empty() && batch.sparse_source.is_empty() {
            continue;
        }
        let base = layout.targets(b).start as usize;
        starts.clear();
        starts.push(0);
        let mut sum = 0u32;
        for count in batch.reference_count.iter() {
            sum += count as u32;
            starts.push(sum);
        }
        // The reader checked that the dense labels are exactly the dense sources' references. A
        // label applies where its reference is to the object it names.
        let mut dense = batch.dense_labels.iter().zip(batch.dense_targets.iter());
        for source in batch.dense_sources.iter() {
            let span = starts[source as usize] as usize..starts[source as usize + 1] as usize;
            for (k, (label, named)) in span.clone().zip(&mut dense) {
                if batch.targets.get(k) == named {
                    labels[base + k] = label as u32;
                }
            }
        }
        let sparse = batch.sparse_source.iter().zip(batch.sparse_index.iter()).zip(batch.sparse_label.iter());
        for ((source, index), label) in sparse {
            labels[base + starts[source as usize] as usize + index as usize] = label as u32;
        }
    }
    labels
}

/// Copies the tables the nodes refer to, record for record, so that every id stays.
fn copy_tables(snap: &Snapshot<'_>, w: &mut SnapshotWriter<'_>) -> io::Result<()> {
    for &(key, value) in snap.meta() {
        w.meta(key, value)?;
    }
    for s in snap.strings() {
        w.string(s)?;
    }
    for t in 0..snap.type_count() as u32 {
        w.type_(snap.type_name_id(t))?;
    }
    for m in snap.modules() {
        w.module(m.path, m.build_id, m.load_bias, &m.ranges)?;
    }
    let mut frame = 0;
    while let Some(f) = snap.frame(frame) {
        match f {
            Frame::InModule { module, offset } => w.frame_in_module(module, offset)?,
            Frame::Absolute(address) => w.frame_absolute(address)?,
            Frame::Symbol { function, file, line, column } => w.frame_symbol(function, file, line, column)?,
        };
        frame += 1;
    }
    for stack in 1..=snap.stack_count() as u32 {
        let innermost = snap.stack_frames(stack).next().expect("a stack has a frame");
        w.stack(snap.stack_parent(stack), innermost)?;
    }
    Ok(())
}
