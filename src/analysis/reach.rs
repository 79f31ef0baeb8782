//! Which nodes the roots keep alive, classified as valgrind's memcheck does.
//!
//! A node is *reachable* when a chain of strong edges (pointers to a block's start) leads to it
//! from a root that points to a node's start; *possibly lost* when only chains that contain an
//! interior edge (or start at an interior root) lead to it; *leaked* when no chain of retaining
//! edges leads to it at all. Weak edges never retain.

use serde::{Deserialize, Serialize};

use crate::graph::{Adjacency, Graph, Retaining};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, bincode::Encode, bincode::Decode,
)]
#[repr(u8)]
pub enum Class {
    Reachable = 0,
    Possibly = 1,
    Leaked = 2,
}

/// The class of every node.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Reachability {
    pub class: Vec<Class>,
}

/// The graph through strong edges only.
struct StrongEdges<'g>(&'g Graph);

impl Adjacency for StrongEdges<'_> {
    fn node_count(&self) -> usize {
        self.0.node_count()
    }

    fn neighbors(&self, node: u32) -> &[u32] {
        self.0.strong(node)
    }
}

impl Reachability {
    pub fn of(graph: &Graph) -> Reachability {
        let mut class = vec![Class::Leaked; graph.node_count()];
        let start_roots = graph.roots().iter().filter(|r| !r.interior).map(|r| r.node);
        mark(&StrongEdges(graph), start_roots, &mut class, Class::Reachable);
        // Strong edges out of reachable nodes lead to reachable nodes, so only their interior
        // edges and the interior roots can lead to possibly lost ones.
        let interior_roots = graph.roots().iter().filter(|r| r.interior).map(|r| r.node);
        let through_interior = (0..graph.node_count() as u32)
            .filter(|&v| class[v as usize] == Class::Reachable)
            .flat_map(|v| graph.interior(v).iter().copied());
        let seeds: Vec<u32> =
            interior_roots.chain(through_interior).filter(|&v| class[v as usize] == Class::Leaked).collect();
        mark(&Retaining(graph), seeds.into_iter(), &mut class, Class::Possibly);
        Reachability { class }
    }

    pub fn is_leaked(&self, v: u32) -> bool {
        self.class[v as usize] == Class::Leaked
    }
}

/// Gives `to` to every still-leaked node reached from `seeds` (seeds included), breadth first.
///
/// The queue is taken a batch at a time, and each batch's adjacency is loaded before any of it
/// is scanned: the cache misses of a batch then overlap instead of coming one after another,
/// which on a heap larger than the cache is most of the time a traversal takes.
fn mark(graph: &impl Adjacency, seeds: impl Iterator<Item = u32>, class: &mut [Class], to: Class) {
    const BATCH: usize = 64;
    let mut queue: Vec<u32> = Vec::new();
    for seed in seeds {
        if class[seed as usize] == Class::Leaked {
            class[seed as usize] = to;
            queue.push(seed);
        }
    }
    let mut head = 0;
    while head < queue.len() {
        let batch = head..(head + BATCH).min(queue.len());
        let mut any = 0;
        for &v in &queue[batch.clone()] {
            any ^= graph.neighbors(v).first().copied().unwrap_or(0);
        }
        std::hint::black_box(any);
        for i in batch.clone() {
            for &w in graph.neighbors(queue[i]) {
                if class[w as usize] == Class::Leaked {
                    class[w as usize] = to;
                    queue.push(w);
                }
            }
        }
        head = batch.end;
        // Scanned entries are dropped once they are half the queue: it then holds about the
        // frontier, not every node reached (40 MB at ten million nodes, beside the dominators).
        if head >= 1 << 16 && 2 * head >= queue.len() {
            queue.drain(..head);
            head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use hsnap::{EdgeKind::*, Root, RootKind};

    use super::*;

    fn root(node: u32, interior: bool) -> Root {
        Root { node, kind: RootKind::Global, interior, name: 0 }
    }

    #[test]
    fn classes_follow_memcheck() {
        // 0 -> 1 strong; 1 -> 2 interior; 2 -> 3 strong (3 is possibly: its chain has an interior
        // link); 0 -> 4 weak (4 leaked); 5 <-> 6 leaked cycle; interior root at 7.
        let edges = [(0, 1, Strong), (1, 2, Interior), (2, 3, Strong), (0, 4, Weak), (5, 6, Strong), (6, 5, Strong)];
        let g = Graph::from_edges(8, &edges, vec![root(0, false), root(7, true)]);
        let r = Reachability::of(&g);
        use Class::*;
        assert_eq!(r.class, vec![Reachable, Reachable, Possibly, Possibly, Leaked, Leaked, Leaked, Possibly]);
    }

    #[test]
    fn a_start_pointer_chain_wins_over_an_interior_one() {
        let edges = [(0, 1, Interior), (0, 2, Strong), (2, 1, Strong)];
        let g = Graph::from_edges(3, &edges, vec![root(0, false)]);
        assert_eq!(Reachability::of(&g).class, vec![Class::Reachable; 3]);
    }
}
