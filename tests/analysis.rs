//! The analyses end to end: synthetic heaps whose verdict is known from how they were built,
//! petgraph's algorithms run on our graph through its visit traits as oracles, and a ten-million
//! node list analysed on a thread with a small stack.

use std::collections::{BTreeSet, HashMap};

use heapsnap::analysis::Analysis;
use heapsnap::analysis::dominators::{UNREACHED, VIRTUAL_ROOT};
use heapsnap::analysis::scc::strongly_connected;
use heapsnap::graph::{Graph, Retaining};
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use heapsnap::report::leaks::{LeakOptions, LeakReport};
use heapsnap::synth::{self, SynthOptions};
use hsnap::{EdgeKind, Root, RootKind};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

#[test]
fn synthetic_heaps_give_exactly_the_planted_verdict() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, nodes, far) in [(1, 500, 0.05), (2, 5_000, 0.2), (3, 50_000, 0.05), (4, 200_000, 0.5), (5, 64, 0.0)] {
        let path = dir.path().join(format!("s{seed}.hsnap"));
        let options = SynthOptions { nodes, seed, far_fraction: far, ..SynthOptions::default() };
        let planted = synth::write(&path, options).unwrap();
        let file = SnapshotFile::open(&path).unwrap();
        let heap = Heap::load(&file, &Progress::hidden()).unwrap();
        assert_eq!((heap.graph.node_count() as u64, heap.graph.edge_count() as u64), (planted.nodes, planted.edges));
        let analysis = Analysis::of(&heap.graph, &Progress::hidden());
        let report = LeakReport::build(&heap, &analysis, LeakOptions { limit: usize::MAX, members: false });
        let seen = (report.reachable, report.possibly, report.leaked, report.direct, report.indirect);
        let want = (planted.reachable, planted.possibly, planted.leaked, planted.direct, planted.indirect);
        assert_eq!(seen, want, "seed {seed}: totals");

        let found: BTreeSet<(u64, u64, u64, bool)> =
            report.groups.iter().map(|g| (g.leader, g.objects, g.bytes, g.cycle)).collect();
        let expected: BTreeSet<(u64, u64, u64, bool)> =
            planted.groups.iter().map(|g| (g.leader, g.objects, g.bytes, g.cycle)).collect();
        assert_eq!(found, expected, "seed {seed}: groups");
        for g in &report.groups {
            let plant = planted.groups.iter().find(|p| p.leader == g.leader).unwrap();
            assert!(g.site.starts_with(plant.site), "{} from {}", g.site, plant.site);
        }
        // A leader retains its whole group unless it shares its tail with another leader.
        for (group, plant) in analysis.leaks.groups.iter().zip(&report.groups) {
            let retained = analysis.retention.retained[group.leader as usize];
            let shared = planted.groups.iter().any(|p| p.leader == plant.leader && p.shape.contains("sharing"));
            assert!(shared || retained == plant.bytes, "leader {} retains {retained} of {}", plant.leader, plant.bytes);
        }
    }
}

fn random_graph(rng: &mut Pcg64Mcg) -> Graph {
    let n = rng.random_range(1..80);
    let m = rng.random_range(0..n * 3);
    let kinds = [EdgeKind::Strong, EdgeKind::Strong, EdgeKind::Interior, EdgeKind::Weak];
    let edges: Vec<(u32, u32, EdgeKind)> = (0..m)
        .map(|_| (rng.random_range(0..n as u32), rng.random_range(0..n as u32), kinds[rng.random_range(0..4)]))
        .collect();
    let roots = (0..rng.random_range(1..4))
        .map(|_| Root {
            node: rng.random_range(0..n as u32),
            kind: RootKind::Stack,
            interior: rng.random_bool(0.2),
            name: 0,
        })
        .collect();
    Graph::from_edges(n, &edges, roots)
}

/// petgraph's `simple_fast` and `kosaraju_scc` run on our graph directly, through the visit
/// traits of its retaining view.
#[test]
fn petgraph_on_our_graph_agrees_with_our_dominators_and_components() {
    let mut rng = Pcg64Mcg::seed_from_u64(42);
    for _ in 0..2000 {
        let g = random_graph(&mut rng);
        let analysis = Analysis::of(&g, &Progress::hidden());
        let idom = &analysis.retention.idom;
        // With one root, petgraph's tree is ours with the root in place of the virtual root.
        if let [root] = g.root_nodes() {
            let theirs = petgraph::algo::dominators::simple_fast(Retaining(&g), *root);
            for v in 0..g.node_count() as u32 {
                let expected = match theirs.immediate_dominator(v) {
                    Some(d) => d,
                    None if v == *root => VIRTUAL_ROOT,
                    None => UNREACHED,
                };
                assert_eq!(idom[v as usize], expected, "node {v}");
            }
        }
        let ours = strongly_connected(&Retaining(&g), |_| true);
        let mut by_component: HashMap<u32, BTreeSet<u32>> = HashMap::new();
        for v in 0..g.node_count() as u32 {
            by_component.entry(ours.component[v as usize]).or_default().insert(v);
        }
        let ours: BTreeSet<BTreeSet<u32>> = by_component.into_values().collect();
        let theirs: BTreeSet<BTreeSet<u32>> =
            petgraph::algo::kosaraju_scc(Retaining(&g)).into_iter().map(|c| c.into_iter().collect()).collect();
        assert_eq!(ours, theirs);
    }
}

/// Runs `f` on a thread with a 256 KiB stack: any recursion over a long chain would overflow it.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new().stack_size(256 * 1024).spawn(f).unwrap().join().unwrap();
}

const LONG: usize = 10_000_000;

#[test]
fn ten_million_node_list_held_by_a_root() {
    on_small_stack(|| {
        let edges: Vec<(u32, u32, EdgeKind)> = (0..LONG as u32 - 1).map(|v| (v, v + 1, EdgeKind::Strong)).collect();
        let root = Root { node: 0, kind: RootKind::Global, interior: false, name: 0 };
        let g = Graph::from_edges(LONG, &edges, vec![root]);
        drop(edges);
        let a = Analysis::of(&g, &Progress::hidden());
        assert!(a.leaks.groups.is_empty());
        assert_eq!(a.retention.retained[0], LONG as u64);
        assert_eq!(a.retention.retained[LONG - 1], 1);
        assert_eq!(a.retention.idom[LONG - 1], LONG as u32 - 2);
        assert_eq!(a.retention.top(1), vec![0]);
        let chains = heapsnap::analysis::paths::shortest_chains(&g, LONG as u32 - 1, |v| v == 0, 1);
        assert_eq!(chains[0].len(), LONG);
    });
}

#[test]
fn ten_million_node_leaked_ring() {
    on_small_stack(|| {
        let n = LONG as u32;
        let edges: Vec<(u32, u32, EdgeKind)> = (0..n).map(|v| (v, (v + 1) % n, EdgeKind::Strong)).collect();
        let g = Graph::from_edges(LONG, &edges, Vec::new());
        drop(edges);
        let a = Analysis::of(&g, &Progress::hidden());
        assert_eq!(a.leaks.groups.len(), 1);
        let group = &a.leaks.groups[0];
        assert_eq!((group.leader, group.members.len(), group.cycle), (0, LONG, true));
        assert_eq!(a.retention.retained[0], LONG as u64);
    });
}

/// Loading takes one pass when edges come by increasing source and a counting sort otherwise:
/// both give the same adjacency, kinds in order, for the same edges.
#[test]
fn edges_in_any_order_load_to_the_same_graph() {
    let mut rng = Pcg64Mcg::seed_from_u64(9);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..50 {
        let n = rng.random_range(1..300u32);
        let kinds = [EdgeKind::Strong, EdgeKind::Interior, EdgeKind::Weak];
        let lists: Vec<Vec<hsnap::Edge>> = (0..n)
            .map(|_| {
                let degree = if rng.random_bool(0.3) { 0 } else { rng.random_range(1..8) };
                (0..degree)
                    .map(|_| hsnap::Edge {
                        to: rng.random_range(0..n),
                        kind: kinds[rng.random_range(0..3)],
                        label: hsnap::Label::None,
                    })
                    .collect()
            })
            .collect();
        let write = |path: &std::path::Path, order: &[u32]| {
            heapsnap::atomic::write_snapshot(path, |w| {
                let t = w.string(b"t")?;
                let t = w.type_(t)?;
                for i in 0..n {
                    w.node(&hsnap::Node {
                        identity: i as u64,
                        address: 16 * i as u64,
                        size: 8,
                        type_id: t,
                        ..Default::default()
                    })?;
                }
                for &v in order {
                    let edges = &lists[v as usize];
                    // Split each list in two records, as a writer with a small buffer may.
                    let half = edges.len() / 2;
                    w.edges(v, &edges[..half])?;
                    w.edges(v, &edges[half..])?;
                }
                w.root(&Root { node: 0, kind: RootKind::Global, interior: false, name: 0 })
            })
            .unwrap();
        };
        let sorted_path = dir.path().join(format!("sorted{round}.hsnap"));
        let shuffled_path = dir.path().join(format!("shuffled{round}.hsnap"));
        let in_order: Vec<u32> = (0..n).collect();
        let reversed: Vec<u32> = (0..n).rev().collect();
        write(&sorted_path, &in_order);
        write(&shuffled_path, &reversed);
        let adjacency = |path: &std::path::Path| {
            let file = SnapshotFile::open(path).unwrap();
            let heap = Heap::load(&file, &Progress::hidden()).unwrap();
            (0..n).map(|v| heap.graph.edges(v).collect::<Vec<_>>()).collect::<Vec<_>>()
        };
        let sorted = adjacency(&sorted_path);
        assert_eq!(sorted, adjacency(&shuffled_path), "round {round}");
        for (v, edges) in sorted.iter().enumerate() {
            let mut expected: Vec<(u32, EdgeKind)> = lists[v].iter().map(|e| (e.to, e.kind)).collect();
            let rank =
                |k: EdgeKind| [EdgeKind::Strong, EdgeKind::Interior, EdgeKind::Weak].iter().position(|&x| x == k);
            expected.sort_by_key(|&(_, k)| rank(k));
            assert_eq!(edges, &expected, "node {v}");
        }
    }
}
