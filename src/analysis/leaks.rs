//! Leaked nodes grouped as valgrind's memcheck groups lost blocks.
//!
//! The leaked nodes are split into strongly connected components over retaining edges. A
//! component that no other leaked node points to leads a group; its lowest-addressed node is the
//! *directly lost* block (memcheck's "definitely lost"), the one memcheck would meet first in its
//! address-ordered scan. Everything a leader reaches among leaked nodes that no earlier leader
//! claimed is *indirectly lost* in its group. A pure cycle is a component nobody else points to,
//! so it still has a leader. Counting one direct block per group makes our totals equal memcheck's
//! LEAK SUMMARY.

use fixedbitset::FixedBitSet;

use super::reach::Reachability;
use super::scc::strongly_connected;
use crate::graph::{Graph, Retaining};

/// One leader and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct LeakGroup {
    /// The directly lost node.
    pub leader: u32,
    /// Every node of the group, the leader first, then in breadth-first order from it.
    pub members: Vec<u32>,
    pub bytes: u64,
    /// The group holds a cycle: a component of two or more nodes, or a node pointing to itself.
    pub cycle: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Leaks {
    /// Largest first; equal sizes by leader address.
    pub groups: Vec<LeakGroup>,
}

impl Leaks {
    pub fn find(graph: &Graph, reach: &Reachability) -> Leaks {
        let leaked: Vec<u32> = (0..graph.node_count() as u32).filter(|&v| reach.is_leaked(v)).collect();
        if leaked.is_empty() {
            return Leaks::default();
        }
        let components = strongly_connected(&Retaining(graph), |v| reach.is_leaked(v));
        let comp = |v: u32| components.component[v as usize] as usize;
        let count = components.count as usize;
        let mut entered = vec![false; count];
        let mut cyclic = vec![false; count];
        let mut size = vec![0u32; count];
        let mut first = vec![u32::MAX; count];
        let by_address = |v: u32| (graph.address.get(v as usize), v);
        for &v in &leaked {
            let c = comp(v);
            size[c] += 1;
            if first[c] == u32::MAX || by_address(v) < by_address(first[c]) {
                first[c] = v;
            }
            for &w in graph.retaining(v) {
                if !reach.is_leaked(w) {
                    continue;
                }
                if comp(w) != c {
                    entered[comp(w)] = true;
                } else if w == v {
                    cyclic[c] = true;
                }
            }
        }
        for c in 0..count {
            cyclic[c] |= size[c] > 1;
        }
        let mut leaders: Vec<u32> = (0..count).filter(|&c| !entered[c]).map(|c| first[c]).collect();
        leaders.sort_unstable_by_key(|&v| by_address(v));

        let mut claimed = FixedBitSet::with_capacity(graph.node_count());
        let mut groups: Vec<LeakGroup> = leaders
            .into_iter()
            .map(|leader| {
                claimed.insert(leader as usize);
                let mut members = vec![leader];
                let mut next = 0;
                while next < members.len() {
                    let v = members[next];
                    next += 1;
                    for &w in graph.retaining(v) {
                        if reach.is_leaked(w) && !claimed.put(w as usize) {
                            members.push(w);
                        }
                    }
                }
                let bytes = members.iter().map(|&v| graph.size.get(v as usize)).sum();
                let cycle = members.iter().any(|&v| cyclic[comp(v)]);
                LeakGroup { leader, members, bytes, cycle }
            })
            .collect();
        groups.sort_by_key(|g| (std::cmp::Reverse(g.bytes), by_address(g.leader)));
        Leaks { groups }
    }
}

#[cfg(test)]
mod tests {
    use hsnap::{EdgeKind::*, Root, RootKind};

    use super::*;

    #[test]
    fn groups_lists_rings_and_shared_tails() {
        // Root 0. Leaked: list 1 -> 2 -> 3; ring 4 -> 5 -> 6 -> 4; 7 -> 8 <- 9 (two leaders share 8);
        // 10 -> 10 self loop; 11 points into reachable 0 (still leaked).
        let edges = [
            (1, 2, Strong),
            (2, 3, Strong),
            (4, 5, Strong),
            (5, 6, Interior),
            (6, 4, Strong),
            (7, 8, Strong),
            (9, 8, Strong),
            (10, 10, Strong),
            (11, 0, Strong),
            (0, 3, Weak),
        ];
        let g = Graph::from_edges(12, &edges, vec![Root { node: 0, kind: RootKind::Global, interior: false, name: 0 }]);
        let leaks = Leaks::find(&g, &Reachability::of(&g));
        let summary: Vec<(u32, Vec<u32>, bool)> =
            leaks.groups.iter().map(|g| (g.leader, g.members.clone(), g.cycle)).collect();
        assert_eq!(
            summary,
            vec![
                (1, vec![1, 2, 3], false),
                (4, vec![4, 5, 6], true),
                (7, vec![7, 8], false),
                (9, vec![9], false),
                (10, vec![10], true),
                (11, vec![11], false),
            ]
        );
    }
}
