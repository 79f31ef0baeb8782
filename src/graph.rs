//! The heap as a compact graph: node attributes in parallel arrays indexed by `u32`, edges in CSR
//! form, no allocation per node.
//!
//! Each node's out-edges are ordered strong, interior, weak. So "strong edges only" (what keeps a
//! block *still reachable*), "retaining edges" (strong and interior: what keeps a block alive at
//! all) and "every edge" are three prefixes of one slice, and algorithms take whichever view they
//! need as an [`Adjacency`] without copying.

mod column;
pub mod csr;
mod visit;

pub use column::Column;
pub use csr::{Adjacency, Csr};
pub use visit::{Retainers, Retaining};

use std::sync::OnceLock;

use hsnap::{EdgeKind, FormatError, Root, Snapshot};

use crate::progress::Progress;

/// Nodes and edges of one snapshot.
#[derive(Debug, Default)]
pub struct Graph {
    /// Node attributes. The three 64-bit ones and the flags are [`Column`]s, as narrow as their
    /// values allow (V8's addresses, all 0, take no memory).
    pub identity: Column,
    pub address: Column,
    pub size: Column,
    pub type_id: Vec<u32>,
    pub stack: Vec<u32>,
    pub flags: Column,
    /// Where each node's edges are in `targets`, one more than there are nodes.
    spans: Vec<Span>,
    /// Where each node's strong edges end; empty when no node has interior edges, and then every
    /// node's strong edges end where its retaining edges do.
    strong_ends: Vec<u32>,
    targets: Vec<u32>,
    /// Retaining edges turned around: who keeps each node alive. Built on first use: only
    /// retainer paths and drawings need it, and it costs a pass and 4 bytes an edge.
    retainers: OnceLock<Csr>,
    roots: Vec<Root>,
    /// Nodes that at least one root references, each once, in increasing order.
    root_nodes: Vec<u32>,
}

/// A node's edges are `targets[start..next.start]`: strong ones up to its strong end, interior
/// ones up to `retaining_end`, weak ones after. Kinds are known from positions, so none are
/// stored, and every view is a slice found without a search. The strong ends are kept apart (in
/// [`Graph`]'s `strong_ends`), and only when some node has interior edges: otherwise they are the
/// retaining ends, and V8's and Python's graphs pay 8 bytes a node, not 12.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    retaining_end: u32,
}

/// A node's edge spans, its strong ends (empty when every one is its retaining end), and the
/// edge targets they index.
type Edges = (Vec<Span>, Vec<u32>, Vec<u32>);

/// The strong ends, or nothing when no node has interior edges.
fn drop_if_no_interior(spans: &[Span], strong_ends: Vec<u32>) -> Vec<u32> {
    if strong_ends.iter().zip(spans).all(|(&end, span)| end == span.retaining_end) { Vec::new() } else { strong_ends }
}

/// Two passes over the edge records, counting then placing: the CSR arrays are the only
/// allocation, never a temporary edge list.
fn load_edges(snap: &Snapshot<'_>, node_count: usize, progress: &Progress) -> Result<Edges, FormatError> {
    let total = snap.counts().edges;
    if total > u32::MAX as u64 {
        return Err(FormatError::new(0, format!("{total} edges: more than this reader supports")));
    }
    let bar = progress.bar("edges", total * 2);
    if let Some(laid_out) = lay_out_in_order(snap, node_count, total as usize, &bar)? {
        bar.finish_and_clear();
        return Ok(laid_out);
    }
    let laid_out = lay_out(node_count, |layout| {
        let mut count = 0u32;
        snap.edges().visit(|from, edge| {
            layout.emit(from, edge.to, edge.kind);
            count = count.wrapping_add(1);
            if count % 65536 == 0 {
                bar.inc(65536);
            }
        })
    });
    bar.finish_and_clear();
    laid_out
}

/// The common case in one pass: every writer we know lists edges by increasing source, so each
/// node's edges arrive together and go straight to their place, only its own edges held back to be
/// ordered by kind. `None` when the file lists them in another order (then the counting sort runs).
fn lay_out_in_order(
    snap: &Snapshot<'_>,
    node_count: usize,
    total: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Option<Edges>, FormatError> {
    const UNSEEN: u32 = u32::MAX;
    let mut spans = vec![Span { start: UNSEEN, retaining_end: 0 }; node_count + 1];
    let mut strong_ends = vec![0u32; node_count];
    let mut targets: Vec<u32> = Vec::with_capacity(total);
    // The current node's interior and weak edges; its strong ones go straight to `targets`.
    let (mut interior, mut weak) = (Vec::new(), Vec::new());
    let mut current: Option<u32> = None;
    let mut in_order = true;
    let mut count = 0u32;
    let finish = |span: &mut Span,
                  strong_end: &mut u32,
                  targets: &mut Vec<u32>,
                  interior: &mut Vec<u32>,
                  weak: &mut Vec<u32>| {
        *strong_end = targets.len() as u32;
        targets.append(interior);
        span.retaining_end = targets.len() as u32;
        targets.append(weak);
    };
    snap.edges().visit(|from, edge| {
        count = count.wrapping_add(1);
        if count % 65536 == 0 {
            bar.inc(131072);
        }
        if !in_order {
            return;
        }
        if current != Some(from) {
            match current {
                Some(node) if node > from => {
                    in_order = false;
                    return;
                }
                Some(node) => {
                    let n = node as usize;
                    finish(&mut spans[n], &mut strong_ends[n], &mut targets, &mut interior, &mut weak)
                }
                None => {}
            }
            current = Some(from);
            spans[from as usize].start = targets.len() as u32;
        }
        match edge.kind {
            EdgeKind::Strong => targets.push(edge.to),
            EdgeKind::Interior => interior.push(edge.to),
            EdgeKind::Weak => weak.push(edge.to),
        }
    })?;
    if !in_order {
        return Ok(None);
    }
    if let Some(node) = current {
        let n = node as usize;
        finish(&mut spans[n], &mut strong_ends[n], &mut targets, &mut interior, &mut weak);
    }
    // Nodes without edges start where the next node with edges does.
    let mut next = targets.len() as u32;
    for (v, span) in spans.iter_mut().enumerate().rev() {
        if span.start == UNSEEN {
            *span = Span { start: next, retaining_end: next };
            if let Some(end) = strong_ends.get_mut(v) {
                *end = next;
            }
        } else {
            next = span.start;
        }
    }
    let strong_ends = drop_if_no_interior(&spans, strong_ends);
    Ok(Some((spans, strong_ends, targets)))
}

/// Edges being laid out by source and kind with one counting sort: [`lay_out`] feeds every edge
/// through [`Layout::emit`] twice, once to count and once to place.
pub struct Layout {
    spans: Vec<Counts>,
    targets: Vec<u32>,
    placing: bool,
}

/// Per node, while edges are laid out: counts per kind, then cursors per kind.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    start: u32,
    strong_end: u32,
    retaining_end: u32,
}

impl Layout {
    // While counting, the spans hold counts per kind; while placing, cursors per kind. Each
    // cursor starts at its section and ends at the next one, so after placing, `start` has become
    // the strong end, `strong_end` the retaining end, and `retaining_end` the node's end.
    #[inline]
    pub fn emit(&mut self, from: u32, to: u32, kind: EdgeKind) {
        let span = &mut self.spans[from as usize];
        let slot = match kind {
            EdgeKind::Strong => &mut span.start,
            EdgeKind::Interior => &mut span.strong_end,
            EdgeKind::Weak => &mut span.retaining_end,
        };
        if self.placing {
            self.targets[*slot as usize] = to;
        }
        *slot += 1;
    }
}

/// Lays edges out by source and kind. `visit` is called twice and must emit the same edges each
/// time; the arrays of the result are the only allocation, never a temporary edge list.
fn lay_out<E>(node_count: usize, visit: impl Fn(&mut Layout) -> Result<(), E>) -> Result<Edges, E> {
    let mut layout = Layout { spans: vec![Counts::default(); node_count + 1], targets: Vec::new(), placing: false };
    visit(&mut layout)?;
    let mut next = 0u32;
    for span in &mut layout.spans {
        let (strong, interior, weak) = (span.start, span.strong_end, span.retaining_end);
        let start = next;
        next = next.checked_add(strong + interior + weak).expect("at most u32::MAX edges");
        *span = Counts { start, strong_end: start + strong, retaining_end: start + strong + interior };
    }
    layout.targets = vec![0u32; next as usize];
    layout.placing = true;
    visit(&mut layout)?;
    let Layout { spans: cursors, targets, .. } = layout;
    let mut spans = Vec::with_capacity(cursors.len());
    let mut strong_ends = Vec::with_capacity(node_count);
    let mut end = 0;
    for cursor in &cursors {
        spans.push(Span { start: end, retaining_end: cursor.strong_end });
        strong_ends.push(cursor.start);
        end = cursor.retaining_end;
    }
    strong_ends.truncate(node_count);
    let strong_ends = drop_if_no_interior(&spans, strong_ends);
    Ok((spans, strong_ends, targets))
}

/// Builds a [`Graph`] from nodes and edges as a converter reads them, so that a snapshot just
/// converted need not be decoded again: nodes in order, then each node's edges at once, by
/// increasing source. The result is the graph [`Graph::load`] makes of the written file.
#[derive(Debug, Default)]
pub struct Builder {
    graph: Graph,
    /// Filled, like `Graph::strong_ends`, only once some node has interior edges.
    strong_ends: Vec<u32>,
    has_interior: bool,
    /// Nodes whose edges are placed: the next source must not be below it.
    next_source: u32,
    interior: Vec<u32>,
    weak: Vec<u32>,
}

impl Builder {
    /// Room for `nodes` more nodes.
    pub fn reserve_nodes(&mut self, nodes: usize) {
        let g = &mut self.graph;
        for column in [&mut g.identity, &mut g.address, &mut g.size, &mut g.flags] {
            column.reserve_exact(nodes);
        }
        g.type_id.reserve_exact(nodes);
        g.stack.reserve_exact(nodes);
    }

    pub fn node(&mut self, node: &hsnap::Node) {
        let g = &mut self.graph;
        g.identity.push(node.identity);
        g.address.push(node.address);
        g.size.push(node.size);
        g.type_id.push(node.type_id);
        g.stack.push(node.stack);
        g.flags.push(node.flags as u64);
    }

    /// Ends the nodes; `edges` is how many edges will follow (a capacity, not a promise).
    pub fn start_edges(&mut self, edges: usize) {
        let n = self.graph.node_count();
        self.graph.spans = Vec::with_capacity(n + 1);
        self.graph.targets = Vec::with_capacity(edges);
    }

    /// The edges of `from`, all of them, after those of every smaller source.
    pub fn edges(&mut self, from: u32, edges: &[hsnap::Edge]) {
        assert!(from >= self.next_source && (from as usize) < self.graph.node_count(), "edges by increasing source");
        self.close_until(from);
        let g = &mut self.graph;
        let start = g.targets.len() as u32;
        for edge in edges {
            match edge.kind {
                EdgeKind::Strong => g.targets.push(edge.to),
                EdgeKind::Interior => self.interior.push(edge.to),
                EdgeKind::Weak => self.weak.push(edge.to),
            }
        }
        let strong_end = g.targets.len() as u32;
        if !self.interior.is_empty() && !self.has_interior {
            // The first interior edge: every node before had its strong edges end with its retaining ones.
            self.strong_ends = g.spans.iter().map(|span| span.retaining_end).collect();
            self.has_interior = true;
        }
        g.targets.append(&mut self.interior);
        let retaining_end = g.targets.len() as u32;
        g.targets.append(&mut self.weak);
        g.spans.push(Span { start, retaining_end });
        if self.has_interior {
            self.strong_ends.push(strong_end);
        }
        self.next_source = from + 1;
    }

    /// Gives the nodes below `until` that had no edges their empty spans.
    fn close_until(&mut self, until: u32) {
        let g = &mut self.graph;
        let here = g.targets.len() as u32;
        for _ in self.next_source..until {
            g.spans.push(Span { start: here, retaining_end: here });
            if self.has_interior {
                self.strong_ends.push(here);
            }
        }
        self.next_source = until;
    }

    pub fn finish(mut self, roots: Vec<Root>) -> Graph {
        let n = self.graph.node_count() as u32;
        self.close_until(n);
        let end = self.graph.targets.len() as u32;
        self.graph.spans.push(Span { start: end, retaining_end: end });
        self.graph.strong_ends = self.strong_ends;
        self.graph.set_roots(roots);
        self.graph
    }
}

impl Graph {
    /// Decodes every node and edge of `snap`, checking them as it goes.
    ///
    /// Nodes and edges are decoded on two threads. The edges are laid out for the node count the
    /// file declares; the node decoder fails unless it finds exactly that many.
    pub fn load(snap: &Snapshot<'_>, progress: &Progress) -> Result<Graph, FormatError> {
        if snap.is_address_keyed() {
            let what = "an address-keyed snapshot (version 1.1): its records are resolved into nodes and edges \
                        by import::open_any or `heapsnap convert` first";
            return Err(FormatError::new(10, what));
        }
        let mut graph = Graph::default();
        let declared = snap.counts().nodes as usize;
        let edges = std::thread::scope(|scope| {
            let edges = scope.spawn(|| load_edges(snap, declared, progress));
            graph.load_nodes(snap, progress)?;
            edges.join().expect("the edge decoder does not panic")
        });
        let (spans, strong_ends, targets) = edges?;
        graph.spans = spans;
        graph.strong_ends = strong_ends;
        graph.targets = targets;
        graph.set_roots(snap.roots().to_vec());
        Ok(graph)
    }

    fn load_nodes(&mut self, snap: &Snapshot<'_>, progress: &Progress) -> Result<(), FormatError> {
        // The parser has checked the count against the bytes present.
        let capacity = snap.counts().nodes as usize;
        self.identity.reserve_exact(capacity);
        self.address.reserve_exact(capacity);
        self.size.reserve_exact(capacity);
        self.type_id.reserve_exact(capacity);
        self.stack.reserve_exact(capacity);
        self.flags.reserve_exact(capacity);
        let bar = progress.bar("nodes", snap.counts().nodes);
        for (i, node) in snap.nodes().enumerate() {
            let node = node?;
            self.identity.push(node.identity);
            self.address.push(node.address);
            self.size.push(node.size);
            self.type_id.push(node.type_id);
            self.stack.push(node.stack);
            self.flags.push(node.flags as u64);
            if i % 65536 == 0 {
                bar.set_position(i as u64);
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    fn set_roots(&mut self, roots: Vec<Root>) {
        let mut root_nodes: Vec<u32> = roots.iter().map(|r| r.node).collect();
        root_nodes.sort_unstable();
        root_nodes.dedup();
        self.roots = roots;
        self.root_nodes = root_nodes;
    }

    /// A graph from plain lists, for tests: node `i` has identity `i + 1`, size 1, type 0.
    pub fn from_edges(node_count: usize, edges: &[(u32, u32, EdgeKind)], roots: Vec<Root>) -> Graph {
        let (spans, strong_ends, targets) = lay_out::<()>(node_count, |layout| {
            for &(from, to, kind) in edges {
                layout.emit(from, to, kind);
            }
            Ok(())
        })
        .expect("infallible");
        let mut graph = Graph {
            identity: (1..=node_count as u64).collect(),
            address: (0..node_count as u64).map(|i| 0x1000 + 16 * i).collect(),
            size: std::iter::repeat_n(1, node_count).collect(),
            type_id: vec![0; node_count],
            stack: vec![0; node_count],
            flags: Column::Zero(node_count),
            spans,
            strong_ends,
            targets,
            ..Graph::default()
        };
        graph.set_roots(roots);
        graph
    }

    pub fn node_count(&self) -> usize {
        self.identity.len()
    }

    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    fn strong_end(&self, v: u32) -> u32 {
        match self.strong_ends.get(v as usize) {
            Some(&end) => end,
            None => self.spans[v as usize].retaining_end,
        }
    }

    /// Every out-edge of `v` with its kind: strong first, then interior, then weak.
    pub fn edges(&self, v: u32) -> impl Iterator<Item = (u32, EdgeKind)> + '_ {
        let (span, end) = (self.spans[v as usize], self.spans[v as usize + 1].start);
        let strong_end = self.strong_end(v);
        let kind = move |slot: u32| match slot {
            s if s < strong_end => EdgeKind::Strong,
            s if s < span.retaining_end => EdgeKind::Interior,
            _ => EdgeKind::Weak,
        };
        (span.start..end).map(move |slot| (self.targets[slot as usize], kind(slot)))
    }

    /// Targets of `v`'s strong edges (pointers to a block's start).
    pub fn strong(&self, v: u32) -> &[u32] {
        let span = self.spans[v as usize];
        &self.targets[span.start as usize..self.strong_end(v) as usize]
    }

    /// Targets of `v`'s interior edges (pointers into the middle of a block).
    pub fn interior(&self, v: u32) -> &[u32] {
        let span = self.spans[v as usize];
        &self.targets[self.strong_end(v) as usize..span.retaining_end as usize]
    }

    /// Targets of `v`'s edges that keep their target alive: strong and interior.
    pub fn retaining(&self, v: u32) -> &[u32] {
        let span = self.spans[v as usize];
        &self.targets[span.start as usize..span.retaining_end as usize]
    }

    /// Nodes with a retaining edge to `v`, in increasing order, with repeats for parallel edges.
    pub fn retainers(&self, v: u32) -> &[u32] {
        self.retainers.get_or_init(|| Csr::reversed(&Retaining(self))).neighbors(v)
    }

    /// The kind of the first retaining edge from `from` to `to`, if there is one.
    pub fn retaining_kind(&self, from: u32, to: u32) -> Option<EdgeKind> {
        self.edges(from).find(|&(t, k)| t == to && k != EdgeKind::Weak).map(|(_, k)| k)
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// Distinct nodes that roots reference.
    pub fn root_nodes(&self) -> &[u32] {
        &self.root_nodes
    }

    /// Bytes of memory the graph holds.
    pub fn heap_bytes(&self) -> usize {
        self.identity.heap_bytes()
            + self.address.heap_bytes()
            + self.size.heap_bytes()
            + self.flags.heap_bytes()
            + self.type_id.capacity() * 4 * 2
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.strong_ends.capacity() * 4
            + self.targets.capacity() * 4
            + self.retainers.get().map_or(0, Csr::heap_bytes)
    }
}

#[cfg(test)]
mod tests {
    use hsnap::{Edge, EdgeKind, Label, Root, RootKind};

    use super::*;

    #[test]
    fn builder_makes_the_graph_of_a_counting_sort() {
        use EdgeKind::*;
        // Node 1 has no edges, node 2's interior edge comes after nodes without any, node 4 none.
        let edges = [(0, 2, Weak), (0, 1, Strong), (2, 3, Interior), (2, 0, Strong), (3, 3, Weak), (3, 1, Strong)];
        let roots = vec![Root { node: 0, kind: RootKind::Global, interior: false, name: 0 }];
        let expected = Graph::from_edges(5, &edges, roots.clone());
        let mut builder = Builder::default();
        for v in 0..5 {
            let node = hsnap::Node {
                identity: expected.identity.get(v),
                address: expected.address.get(v),
                size: expected.size.get(v),
                type_id: 0,
                stack: 0,
                flags: 0,
            };
            builder.node(&node);
        }
        builder.start_edges(edges.len());
        for from in [0, 2, 3] {
            let out: Vec<Edge> = edges
                .iter()
                .filter(|e| e.0 == from)
                .map(|&(_, to, kind)| Edge { to, kind, label: Label::None })
                .collect();
            builder.edges(from, &out);
        }
        let built = builder.finish(roots);
        for v in 0..5 {
            assert_eq!(built.edges(v).collect::<Vec<_>>(), expected.edges(v).collect::<Vec<_>>(), "node {v}");
            assert_eq!((built.strong(v), built.interior(v)), (expected.strong(v), expected.interior(v)));
        }
        assert_eq!(built.interior(2), [3]);
        assert_eq!(built.retaining(3), [1]);
        assert_eq!((built.identity, built.roots), (expected.identity, expected.roots));
    }
}
