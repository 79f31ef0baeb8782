//! Dominator tree of the heap graph under a virtual root whose children are the GC roots.
//!
//! Algorithm: T. Lengauer and R. E. Tarjan, "A Fast Algorithm for Finding Dominators in a
//! Flowgraph", TOPLAS 1(1), 1979, with simple linking and path compression (O(m log n)), arranged
//! as L. Georgiadis describes it in "Linear-Time Algorithms for Dominators and Related Problems"
//! (PhD thesis, Princeton, 2005) and as rustc's `graph::dominators` does: everything runs on
//! preorder numbers (the virtual root is 0), so "is a candidate" is a compare.
//!
//! 1. An iterative depth-first search numbers the reached nodes, records tree parents and sorts
//!    every edge it meets, `v -> w` in preorder numbers. A tree or forward edge (`v < w`) makes
//!    `v` a semidominator candidate of `w` at once. A back or cross edge (`v > w`) needs the
//!    smallest semidominator on the tree path above `v`, known only later: it is kept as a pair
//!    `(w, v)`, filed by blocks of `w` as it is found.
//! 2. In reverse preorder, each `w` takes its kept pairs (they are in cache: a block of `w` is
//!    sorted when the walk reaches it) and evaluates them with Lengauer-Tarjan's link-eval forest.
//!    Then `idom(w)` comes from the same forest: when `semi(w)` is reached, `eval(w)` yields
//!    either `semi(w)` itself (the answer) or a relative `y` with `idom(w) = idom(y)`, resolved by
//!    one final pass in preorder. (Semi-NCA's walk up the tree instead would be quadratic on a
//!    long linked list whose entries an array also holds.)
//!
//! Nothing recurses, and nothing reads the graph backwards: the predecessors that matter were
//! met by the search, in an order that keeps phase 2's reads sequential. On a heap of ten million
//! nodes that halves the time, which goes to cache misses.

use fixedbitset::FixedBitSet;

use crate::graph::Adjacency;

/// `idom` value of a node no root reaches.
pub const UNREACHED: u32 = u32::MAX;
/// `idom` value of a node dominated only by the virtual root (every root, and nodes reached
/// from two roots' disjoint paths).
pub const VIRTUAL_ROOT: u32 = u32::MAX - 1;

/// End of an intrusive list / "no node" in the scratch arrays (never a preorder number).
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DominatorTree {
    /// Immediate dominator of each node (len = node_count), or UNREACHED / VIRTUAL_ROOT.
    pub idom: Vec<u32>,
    /// The reached nodes in depth-first preorder from the virtual root: every node comes after
    /// its immediate dominator.
    pub preorder: Vec<u32>,
}

/// The dominator tree of `succ` under a virtual root whose children are `roots` (duplicates and
/// any order allowed).
///
/// Panics if a root is not a node of the graph or the graph has `u32::MAX - 1` nodes or more.
pub fn dominators(succ: &impl Adjacency, roots: &[u32]) -> DominatorTree {
    let n = succ.node_count();
    assert!(n < VIRTUAL_ROOT as usize, "too many nodes for u32 ids");
    let Search { node_of, mut forest, deferred } = search(succ, roots);
    let reached = node_of.len();

    // `idom[w]` holds, in turn: the head of the bucket of nodes whose semidominator is w (until
    // w is processed), the next pointer of w's own bucket entry (until that bucket is
    // processed), and finally the immediate dominator or a relative whose idom it shares
    // (`relative` tells which).
    let mut idom = vec![NIL; reached];
    let mut relative = FixedBitSet::with_capacity(reached);
    let (mut sources, mut ends) = (Vec::new(), Vec::new());
    for block in (0..deferred.block_count()).rev() {
        deferred.take(block, &mut sources, &mut ends);
        let mut next_pair = 0;
        let low = (block << Deferred::SHIFT).max(1);
        let high = ((block + 1) << Deferred::SHIFT).min(reached);
        for w in (low..high).rev() {
            let w32 = w as u32;
            let first_linked = w32 + 1;

            // Nodes semidominated by w: everything above them up to w is linked now, so eval
            // gives the node y of least semidominator strictly between w and v.
            let mut v = idom[w];
            while v != NIL {
                let next = idom[v as usize];
                let (y, y_semi) = eval(&mut forest, first_linked, v);
                if y_semi < w32 {
                    idom[v as usize] = y;
                    relative.insert(v as usize);
                } else {
                    idom[v as usize] = w32;
                }
                v = next;
            }

            // Until w is linked, which is now, its forest entry is untouched by `eval`: the
            // ancestor is still the tree parent and `label_semi` the search's semidominator.
            let Link { ancestor: tree_parent, label_semi: mut s, .. } = forest[w];
            let end = ends[w & Deferred::MASK] as usize;
            if s != 0 {
                for &v in &sources[next_pair..end] {
                    s = s.min(eval(&mut forest, first_linked, v).1);
                }
            }
            next_pair = end;
            forest[w].label = w32;
            forest[w].label_semi = s;

            if s == 0 || s == tree_parent {
                // The semidominator is the virtual root or the tree parent: it is the idom.
                idom[w] = s;
            } else {
                idom[w] = idom[s as usize];
                idom[s as usize] = w32;
            }
        }
    }
    drop(forest);
    drop(deferred);

    // In preorder: replace each relative by its (already final) immediate dominator.
    for w in relative.ones() {
        idom[w] = idom[idom[w] as usize];
    }
    drop(relative);

    // Back to node ids.
    let mut result = vec![UNREACHED; n];
    for p in 1..reached {
        let d = idom[p];
        result[node_of[p] as usize] = if d == 0 { VIRTUAL_ROOT } else { node_of[d as usize] };
    }
    drop(idom);
    let mut preorder = node_of;
    preorder.remove(0);
    DominatorTree { idom: result, preorder }
}

/// What the depth-first search leaves for phase 2, indexed by preorder number.
struct Search {
    /// The node of each preorder number; 0 is the virtual root.
    node_of: Vec<u32>,
    /// Per preorder number: the tree parent as `ancestor`, and as `label_semi` the smallest tree
    /// or forward edge source into it (the link-eval forest before anything is linked).
    forest: Vec<Link>,
    /// Back and cross edges.
    deferred: Deferred,
}

/// Iterative depth-first search from the virtual root (preorder number 0). `path` holds, for each
/// node on the path from the root to the current node, the part of its edge list not yet scanned:
/// coming back to a node after a deep subtree costs one load, and the memory is the depth of the
/// search, not the size of the graph.
fn search(succ: &impl Adjacency, roots: &[u32]) -> Search {
    let n = succ.node_count();
    let mut pre_of = vec![UNREACHED; n];
    let mut node_of: Vec<u32> = Vec::with_capacity(n + 1);
    let mut forest: Vec<Link> = Vec::with_capacity(n + 1);
    let mut deferred = Deferred::new(n + 1);
    node_of.push(VIRTUAL_ROOT);
    forest.push(Link { ancestor: 0, label: 0, label_semi: 0 });
    let mut path: Vec<&[u32]> = vec![roots];
    let mut current = 0u32;
    while let Some(rest) = path.last_mut() {
        let mut edges = rest.iter();
        let mut found = NIL;
        for &t in edges.by_ref() {
            match pre_of[t as usize] {
                UNREACHED => {
                    found = t;
                    break;
                }
                w if w > current => {
                    let semi = &mut forest[w as usize].label_semi;
                    *semi = (*semi).min(current);
                }
                w if w < current => deferred.push(w, current),
                _ => {} // a self edge: no candidate
            }
        }
        *rest = edges.as_slice();
        if found != NIL {
            let p = node_of.len() as u32;
            pre_of[found as usize] = p;
            node_of.push(found);
            forest.push(Link { ancestor: current, label: 0, label_semi: current });
            path.push(succ.neighbors(found));
            current = p;
        } else {
            path.pop();
            current = forest[current as usize].ancestor;
        }
    }
    Search { node_of, forest, deferred }
}

/// Pairs `(w, v)` of back and cross edges `v -> w`, filed by blocks of `2^SHIFT` values of `w` as
/// the search finds them, in fixed-size pages so that no block is ever copied as it grows. A pair
/// takes 6 bytes: `v`, and the low bits of `w` (its block has the others).
struct Deferred {
    sources: Vec<u32>,
    low_targets: Vec<u16>,
    /// Per block, its pages in order.
    blocks: Vec<Vec<u32>>,
    /// Per block, where its next pair goes in the pages; a multiple of `PAGE` when its last page
    /// is full (or it has none).
    tail: Vec<u32>,
}

impl Deferred {
    const SHIFT: usize = 12;
    const MASK: usize = (1 << Self::SHIFT) - 1;
    const PAGE: usize = 512;

    fn new(preorder_bound: usize) -> Deferred {
        let count = (preorder_bound >> Self::SHIFT) + 1;
        Deferred { sources: Vec::new(), low_targets: Vec::new(), blocks: vec![Vec::new(); count], tail: vec![0; count] }
    }

    fn block_count(&self) -> usize {
        self.blocks.len()
    }

    #[inline]
    fn push(&mut self, w: u32, v: u32) {
        let b = w as usize >> Self::SHIFT;
        let mut at = self.tail[b] as usize;
        if at % Self::PAGE == 0 {
            at = self.sources.len();
            assert!(at + Self::PAGE <= u32::MAX as usize, "more than 2^32 back edges");
            self.blocks[b].push((at / Self::PAGE) as u32);
            self.sources.resize(at + Self::PAGE, 0);
            self.low_targets.resize(at + Self::PAGE, 0);
        }
        self.sources[at] = v;
        self.low_targets[at] = (w as usize & Self::MASK) as u16;
        self.tail[b] = at as u32 + 1;
    }

    /// The sources of one block's pairs into `out`, grouped by `w`, decreasing; `ends[w & MASK]`
    /// is where the group of `w` ends (and the next smaller one starts). A counting sort on the low
    /// bits of `w`: a block holds `2^SHIFT` values of it, so `ends` stays in cache.
    fn take(&self, block: usize, out: &mut Vec<u32>, ends: &mut Vec<u32>) {
        let pages = &self.blocks[block];
        let filled = |k: usize| {
            let start = pages[k] as usize * Self::PAGE;
            let end = if k + 1 == pages.len() { self.tail[block] as usize } else { start + Self::PAGE };
            start..end
        };
        ends.clear();
        ends.resize(1 << Self::SHIFT, 0);
        let mut total = 0;
        for k in 0..pages.len() {
            for &low in &self.low_targets[filled(k)] {
                ends[low as usize] += 1;
                total += 1;
            }
        }
        // Where each value of `w` starts, the largest first.
        let mut at = 0;
        for slot in ends.iter_mut().rev() {
            let count = *slot;
            *slot = at;
            at += count;
        }
        out.clear();
        out.resize(total, 0);
        for k in 0..pages.len() {
            let range = filled(k);
            for (&low, &v) in self.low_targets[range.clone()].iter().zip(&self.sources[range]) {
                let slot = &mut ends[low as usize];
                out[*slot as usize] = v;
                *slot += 1;
            }
        }
    }
}

/// A node of the link-eval forest.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// Tree parent at first, then a (compressed) forest ancestor.
    ancestor: u32,
    /// The node of least semidominator on the path compressed into this one.
    label: u32,
    /// That node's semidominator.
    label_semi: u32,
}

/// The linked node of least semidominator on the forest path from `v` (a linked node) up to,
/// not including, its first unlinked ancestor, with its semidominator; compresses that path.
#[inline]
fn eval(forest: &mut [Link], first_linked: u32, v: u32) -> (u32, u32) {
    if forest[v as usize].ancestor >= first_linked {
        compress(forest, first_linked, v);
    }
    let link = forest[v as usize];
    (link.label, link.label_semi)
}

/// Path compression without recursion or a stack: walk up reversing the ancestor pointers,
/// then walk back down propagating the best label and pointing everything at the forest root.
fn compress(forest: &mut [Link], first_linked: u32, v: u32) {
    let mut below = NIL;
    let mut x = v;
    let root = loop {
        let a = forest[x as usize].ancestor;
        if a < first_linked {
            break a;
        }
        forest[x as usize].ancestor = below;
        below = x;
        x = a;
    };
    // `x` is the topmost linked node; its ancestor already is `root` and its label is final.
    let mut top = forest[x as usize];
    while below != NIL {
        let child = &mut forest[below as usize];
        below = child.ancestor;
        if top.label_semi < child.label_semi {
            child.label = top.label;
            child.label_semi = top.label_semi;
        }
        child.ancestor = root;
        top = *child;
    }
}

impl DominatorTree {
    /// Retained size of every node: its shallow size plus that of everything it dominates.
    /// Unreached nodes get 0 (and `shallow` is only called on reached nodes).
    pub fn retained_sizes(&self, shallow: impl Fn(u32) -> u64) -> Vec<u64> {
        let mut sizes = vec![0u64; self.idom.len()];
        for &v in &self.preorder {
            sizes[v as usize] = shallow(v);
        }
        for &v in self.preorder.iter().rev() {
            let d = self.idom[v as usize];
            if d != VIRTUAL_ROOT {
                sizes[d as usize] += sizes[v as usize];
            }
        }
        sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Csr;
    use petgraph::graph::{Graph, NodeIndex};
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64Mcg;

    /// A random graph: (node count, edges, roots); 0 to 4 roots, possibly repeated, in random order.
    fn random_graph(rng: &mut Pcg64Mcg) -> (usize, Vec<(u32, u32)>, Vec<u32>) {
        let (n, edges) = crate::analysis::testing::random_edges(rng);
        let root_count = [0, 1, 1, 1, 2, 2, 3, 4][rng.random_range(0..8)];
        let roots = (0..root_count).map(|_| rng.random_range(0..n as u32)).collect();
        (n, edges, roots)
    }

    /// Nodes reachable from `roots` without passing through `removed`.
    fn reachable(g: &Csr, roots: &[u32], removed: Option<u32>) -> Vec<bool> {
        let mut seen = vec![false; g.node_count()];
        let mut stack: Vec<u32> = roots.iter().copied().filter(|&r| Some(r) != removed).collect();
        while let Some(v) = stack.pop() {
            if !std::mem::replace(&mut seen[v as usize], true) {
                stack.extend(g.neighbors(v).iter().filter(|&&w| Some(w) != removed));
            }
        }
        seen
    }

    /// idom from petgraph, with an extra node `n` joined to every root.
    fn petgraph_idom(n: usize, edges: &[(u32, u32)], roots: &[u32]) -> Vec<u32> {
        let mut g = Graph::<(), ()>::new();
        let nodes: Vec<NodeIndex> = (0..=n).map(|_| g.add_node(())).collect();
        for &(a, b) in edges {
            g.add_edge(nodes[a as usize], nodes[b as usize], ());
        }
        for &r in roots {
            g.add_edge(nodes[n], nodes[r as usize], ());
        }
        let doms = petgraph::algo::dominators::simple_fast(&g, nodes[n]);
        (0..n)
            .map(|v| match doms.immediate_dominator(nodes[v]) {
                None => UNREACHED,
                Some(d) if d.index() == n => VIRTUAL_ROOT,
                Some(d) => d.index() as u32,
            })
            .collect()
    }

    fn compute(n: usize, edges: &[(u32, u32)], roots: &[u32]) -> (Csr, DominatorTree) {
        let succ = Csr::from_edges(n, edges);
        let tree = dominators(&succ, roots);
        (succ, tree)
    }

    /// Checks `preorder` lists exactly the reached nodes, once, each after its idom.
    fn check_preorder(tree: &DominatorTree) {
        let mut position = vec![usize::MAX; tree.idom.len()];
        for (i, &v) in tree.preorder.iter().enumerate() {
            assert_eq!(position[v as usize], usize::MAX, "{v} twice in preorder");
            position[v as usize] = i;
        }
        for (v, &d) in tree.idom.iter().enumerate() {
            assert_eq!(position[v] == usize::MAX, d == UNREACHED, "node {v}");
            if d != UNREACHED && d != VIRTUAL_ROOT {
                assert!(position[d as usize] < position[v], "idom {d} after {v}");
            }
        }
    }

    #[test]
    fn idom_matches_petgraph_on_random_graphs() {
        let mut rng = Pcg64Mcg::seed_from_u64(0xD0);
        let mut nontrivial = 0;
        for _ in 0..4000 {
            let (n, edges, roots) = random_graph(&mut rng);
            let (_, tree) = compute(n, &edges, &roots);
            let expected = petgraph_idom(n, &edges, &roots);
            assert_eq!(tree.idom, expected, "n={n} edges={edges:?} roots={roots:?}");
            check_preorder(&tree);
            nontrivial += tree.idom.iter().filter(|&&d| d < VIRTUAL_ROOT).count().min(1);
        }
        assert!(nontrivial > 2000, "too few graphs with real dominators: {nontrivial}");
    }

    #[test]
    fn dominance_and_retained_sizes_match_brute_force() {
        let mut rng = Pcg64Mcg::seed_from_u64(0xD1);
        for _ in 0..1500 {
            let (n, edges, roots) = random_graph(&mut rng);
            let (succ, tree) = compute(n, &edges, &roots);
            let shallow = |v: u32| u64::from(v) * 7 + 3;
            let sizes = tree.retained_sizes(shallow);

            let reached = reachable(&succ, &roots, None);
            // dominated[v][w]: v dominates w (reflexive), by removing v.
            let dominated: Vec<Vec<bool>> = (0..n as u32)
                .map(|v| {
                    let without = reachable(&succ, &roots, Some(v));
                    (0..n).map(|w| reached[w] && (w == v as usize || !without[w])).collect()
                })
                .collect();
            for w in 0..n {
                if !reached[w] {
                    assert_eq!(tree.idom[w], UNREACHED);
                    assert_eq!(sizes[w], 0);
                    continue;
                }
                let expected: u64 = (0..n).filter(|&x| dominated[w][x]).map(|x| shallow(x as u32)).sum();
                assert_eq!(sizes[w], expected, "retained size of {w}, edges={edges:?}");
                // The idom is the strict dominator dominated by all the others: the deepest one.
                let strict: Vec<usize> = (0..n).filter(|&d| d != w && dominated[d][w]).collect();
                let idom = strict
                    .iter()
                    .copied()
                    .find(|&d| strict.iter().all(|&e| dominated[e][d]))
                    .map_or(VIRTUAL_ROOT, |d| d as u32);
                assert_eq!(tree.idom[w], idom, "idom of {w}, edges={edges:?} roots={roots:?}");
            }
        }
    }

    #[test]
    fn edges_out_of_unreached_nodes_change_nothing() {
        let mut rng = Pcg64Mcg::seed_from_u64(0xD2);
        let mut extra_edges = 0;
        for _ in 0..1000 {
            let (n, mut edges, roots) = random_graph(&mut rng);
            let reached = reachable(&Csr::from_edges(n, &edges), &roots, None);
            let (_, before) = compute(n, &edges, &roots);
            for _ in 0..n {
                let from = rng.random_range(0..n as u32);
                let to = rng.random_range(0..n as u32);
                if !reached[from as usize] {
                    edges.push((from, to));
                    extra_edges += 1;
                }
            }
            let (_, after) = compute(n, &edges, &roots);
            assert_eq!(after, before);
            assert_eq!(after.idom, petgraph_idom(n, &edges, &roots));
        }
        assert!(extra_edges > 1000);
    }

    #[test]
    fn small_examples() {
        // Diamond under root 0, plus a node 4 only reachable from the second root 5.
        //   0 -> 1 -> 3, 0 -> 2 -> 3, 5 -> 4 -> 3
        let edges = [(0, 1), (0, 2), (1, 3), (2, 3), (5, 4), (4, 3)];
        let (_, tree) = compute(7, &edges, &[5, 0, 5]);
        assert_eq!(tree.idom, [VIRTUAL_ROOT, 0, 0, VIRTUAL_ROOT, 5, VIRTUAL_ROOT, UNREACHED]);
        assert_eq!(tree.preorder, [5, 4, 3, 0, 1, 2]);
        let sizes = tree.retained_sizes(|_| 1);
        assert_eq!(sizes, [3, 1, 1, 1, 1, 2, 0]);

        // A root reached first through another root still hangs off the virtual root.
        let (_, tree) = compute(3, &[(0, 1), (1, 2)], &[0, 1]);
        assert_eq!(tree.idom, [VIRTUAL_ROOT, VIRTUAL_ROOT, 1]);

        let (_, tree) = compute(3, &[(0, 1)], &[]);
        assert_eq!(tree.idom, [UNREACHED; 3]);
        assert!(tree.preorder.is_empty());

        let (_, tree) = compute(0, &[], &[]);
        assert!(tree.idom.is_empty() && tree.preorder.is_empty());
    }

    use crate::analysis::testing::{BIG, on_small_stack};

    #[test]
    fn chain_of_two_million_on_small_stack() {
        on_small_stack(|| {
            let edges: Vec<(u32, u32)> = (1..BIG).map(|i| (i - 1, i)).collect();
            let (_, tree) = compute(BIG as usize, &edges, &[0]);
            assert_eq!(tree.idom[0], VIRTUAL_ROOT);
            assert!((1..BIG).all(|i| tree.idom[i as usize] == i - 1));
            assert!(tree.preorder.iter().copied().eq(0..BIG));
            let sizes = tree.retained_sizes(|_| 1);
            assert!((0..BIG).all(|i| sizes[i as usize] == u64::from(BIG - i)));
        });
    }

    #[test]
    fn cycle_of_two_million_on_small_stack() {
        on_small_stack(|| {
            // The ring 0 -> 1 -> ... -> n-1 -> 0 from root 0: idom of i is i - 1.
            let ring: Vec<(u32, u32)> = (0..BIG).map(|i| (i, (i + 1) % BIG)).collect();
            let (_, tree) = compute(BIG as usize, &ring, &[0]);
            assert_eq!(tree.idom[0], VIRTUAL_ROOT);
            assert!((1..BIG).all(|i| tree.idom[i as usize] == i - 1));
            let sizes = tree.retained_sizes(|_| 2);
            assert!((0..BIG).all(|i| sizes[i as usize] == 2 * u64::from(BIG - i)));

            // Doubly linked, every node is reached both ways round from 0: only 0 dominates.
            let mut edges = ring;
            edges.extend((0..BIG).map(|i| ((i + 1) % BIG, i)));
            let (_, tree) = compute(BIG as usize, &edges, &[0]);
            assert_eq!(tree.idom[0], VIRTUAL_ROOT);
            assert!((1..BIG).all(|i| tree.idom[i as usize] == 0));
        });
    }

    #[test]
    fn linked_list_held_by_an_array_on_small_stack() {
        // A linked hash map: root 0 -> list head 1 -> 2 -> ... -> m, root 0 -> array a, and
        // entry i is held by list node i and by the array. The DFS descends the list first, so
        // every entry's semidominator is far above its parent (quadratic for a naive NCA walk).
        on_small_stack(|| {
            let m = BIG / 2 - 1;
            let array = 2 * m + 1;
            let entry = |i: u32| m + i;
            let mut edges = vec![(0, 1), (0, array)];
            edges.extend((1..m).map(|i| (i, i + 1)));
            edges.extend((1..=m).map(|i| (i, entry(i))));
            edges.extend((1..=m).map(|i| (array, entry(i))));
            let (_, tree) = compute(array as usize + 1, &edges, &[0]);
            assert_eq!(tree.idom[0], VIRTUAL_ROOT);
            assert_eq!(tree.idom[1], 0);
            assert!((2..=m).all(|i| tree.idom[i as usize] == i - 1));
            assert!((1..=m).all(|i| tree.idom[entry(i) as usize] == 0));
            assert_eq!(tree.idom[array as usize], 0);
            assert_eq!(tree.preorder[..3], [0, 1, 2]);
        });
    }
}
