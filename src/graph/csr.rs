//! Compressed sparse rows: the adjacency layout every analysis walks.
//!
//! A heap graph has tens of millions of nodes and million-long chains, so adjacency is two flat
//! arrays indexed by `u32` (no per-node allocation) and every traversal over it is iterative.

/// A directed graph seen through one choice of edges (all, retaining only, reversed, ...).
pub trait Adjacency {
    fn node_count(&self) -> usize;
    fn neighbors(&self, node: u32) -> &[u32];
}

/// Adjacency lists packed into one array: the neighbors of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Csr {
    offsets: Vec<u32>,
    targets: Vec<u32>,
}

impl Csr {
    /// Builds from an edge list; each node's neighbors keep the order they have in `edges`.
    pub fn from_edges(node_count: usize, edges: &[(u32, u32)]) -> Csr {
        Csr::build(node_count, |emit: &mut dyn FnMut(u32, u32)| {
            for &(from, to) in edges {
                emit(from, to);
            }
        })
    }

    /// The graph with every edge turned around. Neighbors of a node come in increasing order.
    pub fn reversed(graph: &impl Adjacency) -> Csr {
        let n = graph.node_count();
        Csr::build(n, |emit: &mut dyn FnMut(u32, u32)| {
            for from in 0..n as u32 {
                for &to in graph.neighbors(from) {
                    emit(to, from);
                }
            }
        })
    }

    /// Counting sort by source: `visit` is called twice and must emit the same edges each time,
    /// once to count and once to place them; that keeps peak memory at the size of the result.
    /// At most `u32::MAX` edges: the graph loader checks that before it builds anything.
    pub fn build(node_count: usize, visit: impl Fn(&mut dyn FnMut(u32, u32))) -> Csr {
        let mut offsets = vec![0u32; node_count + 1];
        visit(&mut |from, _| offsets[from as usize + 1] += 1);
        for i in 1..offsets.len() {
            offsets[i] = offsets[i].checked_add(offsets[i - 1]).expect("at most u32::MAX edges");
        }
        let mut next = offsets.clone();
        let mut targets = vec![0u32; offsets[node_count] as usize];
        visit(&mut |from, to| {
            let slot = &mut next[from as usize];
            targets[*slot as usize] = to;
            *slot += 1;
        });
        Csr { offsets, targets }
    }

    pub fn edge_count(&self) -> usize {
        self.targets.len()
    }

    /// Bytes held by the two arrays.
    pub fn heap_bytes(&self) -> usize {
        (self.offsets.capacity() + self.targets.capacity()) * 4
    }
}

impl Adjacency for Csr {
    fn node_count(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn neighbors(&self, node: u32) -> &[u32] {
        let v = node as usize;
        &self.targets[self.offsets[v] as usize..self.offsets[v + 1] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_edges_keeps_order_and_reversed_sorts() {
        let g = Csr::from_edges(3, &[(0, 2), (0, 1), (2, 0), (1, 0)]);
        assert_eq!(g.neighbors(0), &[2, 1]);
        assert_eq!(g.neighbors(1), &[0]);
        let r = Csr::reversed(&g);
        assert_eq!(r.neighbors(0), &[1, 2]);
        assert_eq!(r.neighbors(1), &[0]);
        assert_eq!(r.neighbors(2), &[0]);
        assert_eq!(r.edge_count(), 4);
    }
}
