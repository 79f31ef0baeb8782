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
    offsets: Vec<u32>,
    targets: Vec<u32>,
    kinds: Vec<EdgeKind>,
    /// Retaining edges turned around: who keeps each node alive.
    retainers: Csr,
    roots: Vec<Root>,
    /// Nodes that at least one root references, each once, in increasing order.
    root_nodes: Vec<u32>,
}

/// Rank of an edge kind in a node's edge list.
fn rank(kind: EdgeKind) -> u8 {
    match kind {
        EdgeKind::Strong => 0,
        EdgeKind::Interior => 1,
        EdgeKind::Weak => 2,
    }
}

impl Graph {
    /// Decodes every node and edge of `snap`, checking them as it goes.
    pub fn load(snap: &Snapshot<'_>, progress: &Progress) -> Result<Graph, FormatError> {
        let mut graph = Graph::default();
        graph.load_nodes(snap, progress)?;
        graph.load_edges(snap, progress)?;
        graph.set_roots(snap.roots().to_vec());
        Ok(graph)
    }

    fn load_nodes(&mut self, snap: &Snapshot<'_>, progress: &Progress) -> Result<(), FormatError> {
        // Bounded by the bytes present, not by the count the file claims: a node takes 6 bytes at least.
        let capacity = (snap.counts().nodes as usize).min(snap.node_bytes() / 6);
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

    /// Two passes over the edge records, counting then placing: the CSR arrays are the only
    /// allocation, never a temporary edge list.
    fn load_edges(&mut self, snap: &Snapshot<'_>, progress: &Progress) -> Result<(), FormatError> {
        let n = self.identity.len();
        if snap.counts().edges > u32::MAX as u64 {
            return Err(FormatError::new(0, format!("{} edges: more than this reader supports", snap.counts().edges)));
        }
        let bar = progress.bar("edges", snap.counts().edges * 2);
        let mut offsets = vec![0u32; n + 1];
        for (i, edge) in snap.edges().enumerate() {
            let (from, _) = edge?;
            offsets[from as usize + 1] += 1;
            if i % 65536 == 0 {
                bar.set_position(i as u64);
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let m = offsets[n] as usize;
        let mut next = offsets[..n].to_vec();
        let mut targets = vec![0u32; m];
        let mut kinds = vec![EdgeKind::Strong; m];
        for (i, edge) in snap.edges().enumerate() {
            let (from, edge) = edge?;
            let slot = &mut next[from as usize];
            targets[*slot as usize] = edge.to;
            kinds[*slot as usize] = edge.kind;
            *slot += 1;
            if i % 65536 == 0 {
                bar.set_position((m + i) as u64);
            }
        }
        drop(next);
        for v in 0..n {
            let range = offsets[v] as usize..offsets[v + 1] as usize;
            sort_by_kind(&mut targets[range.clone()], &mut kinds[range]);
        }
        bar.finish_and_clear();
        self.offsets = offsets;
        self.targets = targets;
        self.kinds = kinds;
        self.retainers = Csr::reversed(&Retaining(self));
        Ok(())
    }

    fn set_roots(&mut self, roots: Vec<Root>) {
        let mut root_nodes: Vec<u32> = roots.iter().map(|r| r.node).collect();
        root_nodes.sort_unstable();
        root_nodes.dedup();
        self.roots = roots;
        self.root_nodes = root_nodes;
    }

    /// A graph from plain lists, for tests and synthetic heaps: every node of size 1, type 0.
    pub fn from_edges(node_count: usize, edges: &[(u32, u32, EdgeKind)], roots: Vec<Root>) -> Graph {
        let mut sorted = edges.to_vec();
        sorted.sort_by_key(|&(from, _, kind)| (from, rank(kind)));
        let mut offsets = vec![0u32; node_count + 1];
        for &(from, _, _) in &sorted {
            offsets[from as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut graph = Graph {
            identity: (1..=node_count as u64).collect(),
            address: (0..node_count as u64).map(|i| 0x1000 + 16 * i).collect(),
            size: vec![1; node_count],
            type_id: vec![0; node_count],
            stack: vec![0; node_count],
            flags: vec![0; node_count],
            offsets,
            targets: sorted.iter().map(|e| e.1).collect(),
            kinds: sorted.iter().map(|e| e.2).collect(),
            ..Graph::default()
        };
        graph.retainers = Csr::reversed(&Retaining(&graph));
        graph.set_roots(roots);
        graph
    }

    pub fn node_count(&self) -> usize {
        self.identity.len()
    }

    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// Every out-edge of `v`: targets and kinds, strong first, then interior, then weak.
    pub fn edges(&self, v: u32) -> (&[u32], &[EdgeKind]) {
        let range = self.offsets[v as usize] as usize..self.offsets[v as usize + 1] as usize;
        (&self.targets[range.clone()], &self.kinds[range])
    }

    /// Targets of `v`'s edges that are strong (pointers to a block's start).
    pub fn strong(&self, v: u32) -> &[u32] {
        let (targets, kinds) = self.edges(v);
        &targets[..kinds.partition_point(|&k| k == EdgeKind::Strong)]
    }

    /// Targets of `v`'s edges that keep their target alive: strong and interior.
    pub fn retaining(&self, v: u32) -> &[u32] {
        let (targets, kinds) = self.edges(v);
        &targets[..kinds.partition_point(|&k| k != EdgeKind::Weak)]
    }

    /// Nodes with a retaining edge to `v`, in increasing order, with repeats for parallel edges.
    pub fn retainers(&self, v: u32) -> &[u32] {
        self.retainers.neighbors(v)
    }

    /// The kind of the first retaining edge from `from` to `to`, if there is one.
    pub fn retaining_kind(&self, from: u32, to: u32) -> Option<EdgeKind> {
        let (targets, kinds) = self.edges(from);
        targets.iter().zip(kinds).find(|&(&t, &k)| t == to && k != EdgeKind::Weak).map(|(_, &k)| k)
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
            + self.offsets.capacity() * 4
            + self.targets.capacity() * 5
            + self.retainers.heap_bytes()
    }
}

/// Orders one node's edges strong, interior, weak, keeping file order within a kind.
fn sort_by_kind(targets: &mut [u32], kinds: &mut [EdgeKind]) {
    if kinds.windows(2).all(|w| rank(w[0]) <= rank(w[1])) {
        return;
    }
    let mut pairs: Vec<(u32, EdgeKind)> = targets.iter().copied().zip(kinds.iter().copied()).collect();
    pairs.sort_by_key(|&(_, k)| rank(k));
    for (i, (t, k)) in pairs.into_iter().enumerate() {
        targets[i] = t;
        kinds[i] = k;
    }
}
