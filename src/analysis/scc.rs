//! Strongly connected components of an induced subgraph, without recursion.
//!
//! Algorithm: D. J. Pearce, "A space-efficient algorithm for finding strongly connected
//! components", Information Processing Letters 116(1), 2016 — Tarjan's algorithm where one
//! array `rindex` holds the DFS index (lowered to the lowlink as edges are scanned) of a node
//! still in progress and the final component of a finished one. Indices are reused when a
//! component is emitted, and components count down from `n`, so every finished value is above
//! every live index and no "on stack" flag is needed. The call stack is an explicit `Vec`.

use crate::graph::Adjacency;

/// `component` value of a node outside the subgraph.
pub const EXCLUDED: u32 = u32::MAX;

/// `rindex` value of a node not visited yet (live indices start at 1).
const UNVISITED: u32 = 0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    /// Component of each node (len = node_count), EXCLUDED where `include` was false.
    pub component: Vec<u32>,
    /// Number of components.
    pub count: u32,
}

/// A node on the explicit DFS call stack.
struct Frame {
    node: u32,
    /// Position in `node`'s neighbors to resume scanning from.
    next_edge: u32,
    /// The DFS index `node` got; it is a component root iff its rindex is still this.
    index: u32,
}

/// Components of the subgraph induced by the nodes where `include(v)` is true (edges to
/// excluded nodes are ignored). Components are numbered in reverse topological order: if an
/// edge goes from component a to component b != a, then a > b (Tarjan's natural emission
/// order, sinks first).
pub fn strongly_connected(graph: &impl Adjacency, include: impl Fn(u32) -> bool) -> Components {
    let n = graph.node_count();
    assert!(n < EXCLUDED as usize, "too many nodes for u32 ids");
    let n32 = n as u32;

    let mut rindex: Vec<u32> = (0..n32).map(|v| if include(v) { UNVISITED } else { EXCLUDED }).collect();
    // Finished-but-not-emitted nodes (Tarjan's stack minus the call path).
    let mut stack: Vec<u32> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    // Live nodes hold indices in 1..next_index; with c = next_component, emitted components
    // hold values in c+1..=n. Each live node or emitted component accounts for a distinct node,
    // so (next_index - 1) + (n - c) <= n: live indices never reach emitted values.
    let mut next_index = 1u32;
    let mut next_component = n32;

    for start in 0..n32 {
        if rindex[start as usize] != UNVISITED {
            continue;
        }
        rindex[start as usize] = next_index;
        frames.push(Frame { node: start, next_edge: 0, index: next_index });
        next_index += 1;

        while let Some(frame) = frames.last_mut() {
            let v = frame.node;
            let edges = graph.neighbors(v);
            assert!(edges.len() < u32::MAX as usize, "node with 2^32 - 1 or more edges");
            let mut low = rindex[v as usize];
            let mut i = frame.next_edge as usize;
            let mut child = None;
            while i < edges.len() {
                let w = edges[i];
                i += 1;
                // EXCLUDED and emitted values are never below a live index.
                match rindex[w as usize] {
                    UNVISITED => {
                        child = Some(w);
                        break;
                    }
                    r => low = low.min(r),
                }
            }
            rindex[v as usize] = low;
            if let Some(w) = child {
                frame.next_edge = i as u32;
                rindex[w as usize] = next_index;
                frames.push(Frame { node: w, next_edge: 0, index: next_index });
                next_index += 1;
                continue;
            }

            let index = frame.index;
            frames.pop();
            if low == index {
                // v roots a component: it and everything pushed after it on `stack`.
                next_index -= 1;
                while let Some(&w) = stack.last() {
                    if rindex[w as usize] < index {
                        break;
                    }
                    stack.pop();
                    rindex[w as usize] = next_component;
                    next_index -= 1;
                }
                rindex[v as usize] = next_component;
                next_component -= 1;
            } else {
                stack.push(v);
            }
            if let Some(parent) = frames.last() {
                let p = parent.node as usize;
                rindex[p] = rindex[p].min(rindex[v as usize]);
            }
        }
    }
    debug_assert!(stack.is_empty());

    // Emitted values count down from n: the first component (a sink) becomes 0.
    for r in rindex.iter_mut() {
        if *r != EXCLUDED {
            *r = n32 - *r;
        }
    }
    Components { component: rindex, count: n32 - next_component }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Csr;
    use petgraph::graph::{Graph, NodeIndex};
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    /// The partition as sorted lists of sorted nodes.
    fn canonical(mut parts: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
        for p in &mut parts {
            p.sort_unstable();
        }
        parts.sort_unstable();
        parts
    }

    fn partition_of(c: &Components) -> Vec<Vec<u32>> {
        let mut parts = vec![Vec::new(); c.count as usize];
        for (v, &k) in c.component.iter().enumerate() {
            if k != EXCLUDED {
                parts[k as usize].push(v as u32);
            }
        }
        assert!(parts.iter().all(|p| !p.is_empty()), "unused component number");
        canonical(parts)
    }

    /// Compares with petgraph on the induced subgraph and checks the numbering.
    fn check(n: usize, edges: &[(u32, u32)], include: &[bool], use_tarjan: bool) {
        let graph = Csr::from_edges(n, edges);
        let result = strongly_connected(&graph, |v| include[v as usize]);
        assert_eq!(result.component.len(), n);
        for (&k, &included) in result.component.iter().zip(include) {
            assert_eq!(k == EXCLUDED, !included);
        }

        let mut g = Graph::<(), ()>::new();
        let nodes: Vec<NodeIndex> = (0..n).map(|_| g.add_node(())).collect();
        for &(a, b) in edges {
            if include[a as usize] && include[b as usize] {
                g.add_edge(nodes[a as usize], nodes[b as usize], ());
            }
        }
        let oracle = if use_tarjan { petgraph::algo::tarjan_scc(&g) } else { petgraph::algo::kosaraju_scc(&g) };
        let expected = canonical(
            oracle
                .into_iter()
                .map(|c| c.into_iter().map(|x| x.index() as u32).collect::<Vec<u32>>())
                .filter(|c| include[c[0] as usize])
                .collect(),
        );
        assert_eq!(partition_of(&result), expected, "edges={edges:?} include={include:?}");

        for &(a, b) in edges {
            if include[a as usize] && include[b as usize] {
                let (ca, cb) = (result.component[a as usize], result.component[b as usize]);
                assert!(ca >= cb, "edge {a}->{b} goes up from component {ca} to {cb}");
            }
        }
    }

    #[test]
    fn partition_matches_petgraph_on_random_graphs() {
        let mut rng = Pcg64Mcg::seed_from_u64(0x5CC0);
        for i in 0..4000 {
            let (n, edges) = crate::analysis::testing::random_edges(&mut rng);
            check(n, &edges, &vec![true; n], i % 2 == 0);
        }
    }

    #[test]
    fn partition_matches_petgraph_on_random_induced_subgraphs() {
        let mut rng = Pcg64Mcg::seed_from_u64(0x5CC1);
        for i in 0..4000 {
            let (n, edges) = crate::analysis::testing::random_edges(&mut rng);
            let keep = rng.random_range(0.2..1.0);
            let include: Vec<bool> = (0..n).map(|_| rng.random_bool(keep)).collect();
            check(n, &edges, &include, i % 2 == 0);
        }
    }

    #[test]
    fn small_examples() {
        // 0 <-> 1 -> 2 -> 3 -> 2, 4 alone with a self loop, 5 excluded on the path 1 -> 5 -> 4.
        let g = Csr::from_edges(6, &[(0, 1), (1, 0), (1, 2), (2, 3), (3, 2), (4, 4), (1, 5), (5, 4)]);
        let c = strongly_connected(&g, |v| v != 5);
        assert_eq!(c.count, 3);
        assert_eq!(c.component[0], c.component[1]);
        assert_eq!(c.component[2], c.component[3]);
        assert!(c.component[0] > c.component[2]);
        assert_eq!(c.component[5], EXCLUDED);

        let none = strongly_connected(&g, |_| false);
        assert_eq!((none.count, none.component), (0, vec![EXCLUDED; 6]));

        let empty = strongly_connected(&Csr::from_edges(0, &[]), |_| true);
        assert_eq!((empty.count, empty.component), (0, vec![]));
    }

    use crate::analysis::testing::{BIG, on_small_stack};

    #[test]
    fn chain_of_two_million_on_small_stack() {
        on_small_stack(|| {
            let edges: Vec<(u32, u32)> = (1..BIG).map(|i| (i - 1, i)).collect();
            let c = strongly_connected(&Csr::from_edges(BIG as usize, &edges), |_| true);
            assert_eq!(c.count, BIG);
            // Sinks first: the last node is component 0.
            assert!((0..BIG).all(|i| c.component[i as usize] == BIG - 1 - i));
        });
    }

    #[test]
    fn cycle_of_two_million_on_small_stack() {
        on_small_stack(|| {
            let edges: Vec<(u32, u32)> = (0..BIG).map(|i| (i, (i + 1) % BIG)).collect();
            let g = Csr::from_edges(BIG as usize, &edges);
            let c = strongly_connected(&g, |_| true);
            assert_eq!(c.count, 1);
            assert!(c.component.iter().all(|&k| k == 0));

            // Without node 0 the cycle is a chain 1 -> ... -> n-1.
            let c = strongly_connected(&g, |v| v != 0);
            assert_eq!(c.count, BIG - 1);
            assert_eq!(c.component[0], EXCLUDED);
            assert!((1..BIG).all(|i| c.component[i as usize] == BIG - 1 - i));
        });
    }
}
