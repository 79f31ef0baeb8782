//! The heap as a compact graph: node attributes in parallel arrays indexed by `u32`, edges in CSR
//! form, no allocation per node.
//!
//! Each node's out-edges are ordered strong, interior, weak. So "strong edges only" (what keeps a
//! block *still reachable*), "retaining edges" (strong and interior: what keeps a block alive at
//! all) and "every edge" are three prefixes of one slice, and algorithms take whichever view they
//! need as an [`Adjacency`] without copying.

pub mod csr;
mod visit;

pub use csr::{Adjacency, Csr};
pub use visit::{Retainers, Retaining};

use std::sync::OnceLock;

use hsnap::{EdgeKind, FormatError, Root, Snapshot};

use crate::progress::Progress;

/// Nodes and edges of one snapshot.
#[derive(Debug, Default)]
pub struct Graph {
    pub identity: Vec<u64>,
    pub address: Vec<u64>,
    pub size: Vec<u64>,
    pub type_id: Vec<u32>,
    pub stack: Vec<u32>,
    pub flags: Vec<u32>,
    /// Where each node's edges are in `targets`, one more than there are nodes.
    spans: Vec<Span>,
    targets: Vec<u32>,
    /// Retaining edges turned around: who keeps each node alive. Built on first use: only
    /// retainer paths and drawings need it, and it costs a pass and 4 bytes an edge.
    retainers: OnceLock<Csr>,
    roots: Vec<Root>,
    /// Nodes that at least one root references, each once, in increasing order.
    root_nodes: Vec<u32>,
}

/// A node's edges are `targets[start..next.start]`: strong ones up to `strong_end`, interior ones
/// up to `retaining_end`, weak ones after. Kinds are known from positions, so none are stored,
/// and every view is a slice found without a search.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    strong_end: u32,
    retaining_end: u32,
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

/// A node's edge spans and the edge targets they index.
type Edges = (Vec<Span>, Vec<u32>);

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
    let mut spans = vec![Span { start: UNSEEN, strong_end: 0, retaining_end: 0 }; node_count + 1];
    let mut targets: Vec<u32> = Vec::with_capacity(total);
    // The current node's interior and weak edges; its strong ones go straight to `targets`.
    let (mut interior, mut weak) = (Vec::new(), Vec::new());
    let mut current: Option<u32> = None;
    let mut in_order = true;
    let mut count = 0u32;
    let finish = |span: &mut Span, targets: &mut Vec<u32>, interior: &mut Vec<u32>, weak: &mut Vec<u32>| {
        span.strong_end = targets.len() as u32;
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
                Some(node) => finish(&mut spans[node as usize], &mut targets, &mut interior, &mut weak),
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
        finish(&mut spans[node as usize], &mut targets, &mut interior, &mut weak);
    }
    // Nodes without edges start where the next node with edges does.
    let mut next = targets.len() as u32;
    for span in spans.iter_mut().rev() {
        if span.start == UNSEEN {
            *span = Span { start: next, strong_end: next, retaining_end: next };
        } else {
            next = span.start;
        }
    }
    Ok(Some((spans, targets)))
}

/// Edges being laid out by source and kind with one counting sort: [`lay_out`] feeds every edge
/// through [`Layout::emit`] twice, once to count and once to place.
pub struct Layout {
    spans: Vec<Span>,
    targets: Vec<u32>,
    placing: bool,
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
    let mut layout = Layout { spans: vec![Span::default(); node_count + 1], targets: Vec::new(), placing: false };
    visit(&mut layout)?;
    let mut next = 0u32;
    for span in &mut layout.spans {
        let (strong, interior, weak) = (span.start, span.strong_end, span.retaining_end);
        let start = next;
        next = next.checked_add(strong + interior + weak).expect("at most u32::MAX edges");
        *span = Span { start, strong_end: start + strong, retaining_end: start + strong + interior };
    }
    layout.targets = vec![0u32; next as usize];
    layout.placing = true;
    visit(&mut layout)?;
    let Layout { mut spans, targets, .. } = layout;
    let mut end = 0;
    for span in &mut spans {
        let node_end = span.retaining_end;
        *span = Span { start: end, strong_end: span.start, retaining_end: span.strong_end };
        end = node_end;
    }
    Ok((spans, targets))
}

impl Graph {
    /// Decodes every node and edge of `snap`, checking them as it goes.
    ///
    /// Nodes and edges are decoded on two threads. The edges are laid out for the node count the
    /// file declares; the node decoder fails unless it finds exactly that many.
    pub fn load(snap: &Snapshot<'_>, progress: &Progress) -> Result<Graph, FormatError> {
        let mut graph = Graph::default();
        let declared = snap.counts().nodes as usize;
        let edges = std::thread::scope(|scope| {
            let edges = scope.spawn(|| load_edges(snap, declared, progress));
            graph.load_nodes(snap, progress)?;
            edges.join().expect("the edge decoder does not panic")
        });
        let (spans, targets) = edges?;
        graph.spans = spans;
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
            self.flags.push(node.flags);
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
        let (spans, targets) = lay_out::<()>(node_count, |layout| {
            for &(from, to, kind) in edges {
                layout.emit(from, to, kind);
            }
            Ok(())
        })
        .expect("infallible");
        let mut graph = Graph {
            identity: (1..=node_count as u64).collect(),
            address: (0..node_count as u64).map(|i| 0x1000 + 16 * i).collect(),
            size: vec![1; node_count],
            type_id: vec![0; node_count],
            stack: vec![0; node_count],
            flags: vec![0; node_count],
            spans,
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

    fn span(&self, v: u32) -> (Span, u32) {
        (self.spans[v as usize], self.spans[v as usize + 1].start)
    }

    /// Every out-edge of `v` with its kind: strong first, then interior, then weak.
    pub fn edges(&self, v: u32) -> impl Iterator<Item = (u32, EdgeKind)> + '_ {
        let (span, end) = self.span(v);
        let kind = move |slot: u32| match slot {
            s if s < span.strong_end => EdgeKind::Strong,
            s if s < span.retaining_end => EdgeKind::Interior,
            _ => EdgeKind::Weak,
        };
        (span.start..end).map(move |slot| (self.targets[slot as usize], kind(slot)))
    }

    /// Targets of `v`'s strong edges (pointers to a block's start).
    pub fn strong(&self, v: u32) -> &[u32] {
        let span = self.spans[v as usize];
        &self.targets[span.start as usize..span.strong_end as usize]
    }

    /// Targets of `v`'s interior edges (pointers into the middle of a block).
    pub fn interior(&self, v: u32) -> &[u32] {
        let span = self.spans[v as usize];
        &self.targets[span.strong_end as usize..span.retaining_end as usize]
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
        self.identity.capacity() * 8 * 3
            + self.type_id.capacity() * 4 * 3
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.targets.capacity() * 4
            + self.retainers.get().map_or(0, Csr::heap_bytes)
    }
}
