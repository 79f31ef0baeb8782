//! Retained sizes from the dominator tree, and rankings of nodes, types and sites by them.
//!
//! The tree is built over retaining edges under a virtual root joined to every root: a node's
//! retained size is what would be freed if it were, that is its shallow size plus that of every
//! node it dominates.

use super::dominators::{DominatorTree, UNREACHED, VIRTUAL_ROOT, dominators};
use super::leaks::Leaks;
use crate::graph::{Adjacency, Csr, Graph, Retaining};

#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Retention {
    /// Immediate dominator, or [`UNREACHED`] / [`VIRTUAL_ROOT`].
    pub idom: Vec<u32>,
    /// Retained bytes. For a leaked node, what it retains among the leaked nodes of its group
    /// (see [`Retention::add_leaked`]).
    pub retained: Vec<u64>,
}

/// Objects, shallow and retained bytes of one type or site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyTotal {
    pub key: u32,
    pub objects: u64,
    pub shallow: u64,
    /// Retained bytes of the key's nodes, counting each dominator subtree once: a node whose
    /// dominator chain holds another node of the same key is inside that one's retained size.
    pub retained: u64,
}

impl Retention {
    pub fn of(graph: &Graph) -> Retention {
        let tree = dominators(&Retaining(graph), graph.root_nodes());
        let retained = tree.retained_sizes(|v| graph.size.get(v as usize));
        let DominatorTree { idom, .. } = tree;
        Retention { idom, retained }
    }

    /// Gives leaked nodes their retained sizes: what freeing each would free, from a dominator
    /// tree of the leaked nodes alone under their groups' leaders. (The main tree cannot hold
    /// them: joining leaders to the virtual root would let leaked nodes' pointers into the live
    /// heap change live nodes' dominators.)
    pub fn add_leaked(&mut self, graph: &Graph, leaks: &Leaks) {
        let mut leaked: Vec<u32> = leaks.groups.iter().flat_map(|g| g.members.iter().copied()).collect();
        leaked.sort_unstable();
        let local = |v: u32| leaked.binary_search(&v).ok().map(|i| i as u32);
        let subgraph = Csr::build(leaked.len(), |emit: &mut dyn FnMut(u32, u32)| {
            for (i, &v) in leaked.iter().enumerate() {
                for &w in graph.retaining(v) {
                    if let Some(j) = local(w) {
                        emit(i as u32, j);
                    }
                }
            }
        });
        let leaders: Vec<u32> = leaks.groups.iter().filter_map(|g| local(g.leader)).collect();
        let sizes = dominators(&subgraph, &leaders).retained_sizes(|i| graph.size.get(leaked[i as usize] as usize));
        for (&v, size) in leaked.iter().zip(sizes) {
            self.retained[v as usize] = size;
        }
    }

    /// The `n` nodes that retain most, largest first, ties by node index.
    pub fn top(&self, n: usize) -> Vec<u32> {
        let mut nodes: Vec<u32> = (0..self.idom.len() as u32).filter(|&v| self.idom[v as usize] != UNREACHED).collect();
        let order = |&v: &u32| (std::cmp::Reverse(self.retained[v as usize]), v);
        if nodes.len() > n {
            nodes.select_nth_unstable_by_key(n, order);
            nodes.truncate(n);
        }
        nodes.sort_unstable_by_key(order);
        nodes
    }

    /// Totals per key (type id, stack id) over reachable nodes, largest retained first.
    pub fn by_key(&self, graph: &Graph, key: &[u32]) -> Vec<KeyTotal> {
        let key_count = key.iter().max().map_or(0, |&k| k as usize + 1);
        let mut totals: Vec<KeyTotal> =
            (0..key_count as u32).map(|key| KeyTotal { key, ..KeyTotal::default() }).collect();
        for v in 0..graph.node_count() {
            if self.idom[v] != UNREACHED {
                let t = &mut totals[key[v] as usize];
                t.objects += 1;
                t.shallow += graph.size.get(v);
            }
        }
        self.walk_tree(
            |v, outermost| {
                if outermost {
                    totals[key[v as usize] as usize].retained += self.retained[v as usize];
                }
            },
            key,
            key_count,
        );
        totals.retain(|t| t.objects > 0);
        totals.sort_by_key(|t| (std::cmp::Reverse(t.retained), std::cmp::Reverse(t.shallow), t.key));
        totals
    }

    /// Visits the dominator tree depth first, telling for each node whether it is the outermost of
    /// its key on its dominator chain.
    fn walk_tree(&self, mut visit: impl FnMut(u32, bool), key: &[u32], key_count: usize) {
        let n = self.idom.len();
        let virtual_root = n as u32;
        let parent = |v: u32| match self.idom[v as usize] {
            VIRTUAL_ROOT => virtual_root,
            d => d,
        };
        let reached = |v: &u32| self.idom[*v as usize] != UNREACHED;
        let children = Csr::build(n + 1, |emit: &mut dyn FnMut(u32, u32)| {
            for v in (0..n as u32).filter(reached) {
                emit(parent(v), v);
            }
        });
        let mut active = vec![0u32; key_count];
        // (node, entered): a node is pushed to be entered, then again to be left.
        let mut stack: Vec<(u32, bool)> = children.neighbors(virtual_root).iter().map(|&v| (v, false)).collect();
        while let Some((v, entered)) = stack.pop() {
            let k = key[v as usize] as usize;
            if entered {
                active[k] -= 1;
                continue;
            }
            visit(v, active[k] == 0);
            active[k] += 1;
            stack.push((v, true));
            stack.extend(children.neighbors(v).iter().map(|&w| (w, false)));
        }
    }
}

#[cfg(test)]
mod tests {
    use hsnap::{EdgeKind::*, Root, RootKind};

    use super::*;

    #[test]
    fn type_totals_count_each_subtree_once() {
        // root 0 -> 1 -> 2 -> 3; types: 0:A 1:B 2:B 3:A; sizes 1 each.
        let mut g = Graph::from_edges(
            4,
            &[(0, 1, Strong), (1, 2, Strong), (2, 3, Strong)],
            vec![Root { node: 0, kind: RootKind::Global, interior: false, name: 0 }],
        );
        g.type_id = vec![0, 1, 1, 0];
        let r = Retention::of(&g);
        assert_eq!(r.retained, vec![4, 3, 2, 1]);
        let totals = r.by_key(&g, &g.type_id.clone());
        // A: node 0 retains 4 and node 3 is inside it. B: node 1 retains 3, node 2 inside it.
        assert_eq!(
            totals.iter().map(|t| (t.key, t.objects, t.retained)).collect::<Vec<_>>(),
            vec![(0, 2, 4), (1, 2, 3)]
        );
        assert_eq!(r.top(2), vec![0, 1]);
    }
}
