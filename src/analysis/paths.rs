//! Retainer paths: the shortest chains of retaining edges from a root to a node, as objgraph's
//! `find_backref_chain` and MAT's "path to GC roots" show them.

use std::collections::VecDeque;

use crate::graph::Graph;

const UNSEEN: u32 = u32::MAX;

/// Up to `max` chains `[start, ..., target]`, one per start node, nearest starts first. A start is a
/// node for which `is_start` holds (a root, or a leak group's leader). Breadth first backwards from
/// the target, so each chain is a shortest one from its start.
pub fn shortest_chains(graph: &Graph, target: u32, is_start: impl Fn(u32) -> bool, max: usize) -> Vec<Vec<u32>> {
    let mut next = vec![UNSEEN; graph.node_count()];
    next[target as usize] = target;
    let mut queue = VecDeque::from([target]);
    let mut chains = Vec::new();
    while let Some(v) = queue.pop_front() {
        if is_start(v) {
            let mut chain = vec![v];
            let mut at = v;
            while at != target {
                at = next[at as usize];
                chain.push(at);
            }
            chains.push(chain);
            if chains.len() == max {
                break;
            }
        }
        for &u in graph.retainers(v) {
            if next[u as usize] == UNSEEN {
                next[u as usize] = v;
                queue.push_back(u);
            }
        }
    }
    chains
}

#[cfg(test)]
mod tests {
    use hsnap::{EdgeKind::*, Root, RootKind};

    use super::*;

    #[test]
    fn nearest_roots_first_and_weak_edges_ignored() {
        // roots 0 and 5; 0 -> 1 -> 2 -> 3; 5 -> 4 -> 3; 0 -> 3 weak.
        let roots = [0, 5].map(|node| Root { node, kind: RootKind::Stack, interior: false, name: 0 }).to_vec();
        let edges = [(0, 1, Strong), (1, 2, Strong), (2, 3, Interior), (5, 4, Strong), (4, 3, Strong), (0, 3, Weak)];
        let g = Graph::from_edges(6, &edges, roots);
        let is_root = |v| g.root_nodes().contains(&v);
        assert_eq!(shortest_chains(&g, 3, is_root, 5), vec![vec![5, 4, 3], vec![0, 1, 2, 3]]);
        assert_eq!(shortest_chains(&g, 3, is_root, 1), vec![vec![5, 4, 3]]);
        assert_eq!(shortest_chains(&g, 0, is_root, 5), vec![vec![0]]);
    }
}
