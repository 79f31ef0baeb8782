//! Address-keyed snapshots (version 1.1, the Python exporter's): resolved by the rules of
//! `formats/hsnap.md` section 3.1, checked on a hand-made heap, against a brute-force oracle on
//! random ones, on damaged files, and through the command line.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use heapsnap::error::Error;
use heapsnap::import::{self, python, python_synth};
use heapsnap::progress::Progress;
use hsnap::python::{BatchColumns, LEAF_FROZEN, TRAIT_REVERSED, TRAIT_SEQUENCE};
use hsnap::{Label, Node, Snapshot, Writer};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

// ---------------------------------------------------------------------------------------------
// A test-only writer: tables, batches, type traits and exclusions, as the exporter writes them.

/// Labels are strings 1 to 6; types are named by strings 7 to 10.
const STRINGS: [&str; 10] = ["a", "b", "c", "d", "x", "y", "obj", "list", "tuple", "int"];
const OBJ: u32 = 0;
const LIST: u32 = 1;
const TUPLE: u32 = 2;
const INT: u32 = 3;
const TYPES: u32 = 4;
/// `PYTY`: lists are sequences, tuples reversed ones, ints take at least 32 bytes.
const TRAITS: [(u32, u64, u64); 3] =
    [(LIST, TRAIT_SEQUENCE, 0), (TUPLE, TRAIT_SEQUENCE | TRAIT_REVERSED, 0), (INT, 0, 32)];
const IMMORTAL: u64 = u32::MAX as u64;

#[derive(Default, Clone)]
struct PyHeap {
    batches: Vec<BatchColumns>,
    excluded: Vec<u64>,
}

impl PyHeap {
    fn bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut w = Writer::with_minor_version(Vec::new(), &mut buf, 1).unwrap();
        w.meta(b"capture", b"python").unwrap();
        for s in STRINGS {
            w.string(s.as_bytes()).unwrap();
        }
        for t in 0..TYPES {
            w.type_(7 + t).unwrap();
        }
        for (t, traits, floor) in TRAITS {
            w.python_type(t, traits, floor).unwrap();
        }
        let mut record = Vec::new();
        for b in &self.batches {
            let mut b = b.clone();
            b.fit_widths();
            record.clear();
            b.encode(&mut record);
            w.python_batch(&record).unwrap();
        }
        for &address in &self.excluded {
            w.python_excluded(address).unwrap();
        }
        w.finish().unwrap()
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.bytes()).unwrap();
        path.to_path_buf()
    }
}

fn objects(source_bias: u64, leaf_bias: u64) -> BatchColumns {
    BatchColumns { source_bias, leaf_bias, ..BatchColumns::default() }
}

fn references() -> BatchColumns {
    BatchColumns { kind: 1, leaf_bias: 1, ..BatchColumns::default() }
}

/// A resolved snapshot, by address: nodes, edges (in order) and the addresses of the roots.
#[derive(Debug, PartialEq)]
struct Resolved {
    /// address -> (type, size, flags)
    nodes: BTreeMap<u64, (u32, u64, u32)>,
    /// (from, to, label) in file order
    edges: Vec<(u64, u64, Label)>,
    roots: Vec<u64>,
}

impl Resolved {
    fn read(path: &Path) -> Resolved {
        let bytes = std::fs::read(path).unwrap();
        let snap = Snapshot::parse(&bytes).unwrap();
        assert_eq!(snap.version(), (1, 0), "the resolved form is a version 1.0 file");
        let nodes: Vec<Node> = snap.nodes().collect::<Result<_, _>>().unwrap();
        assert!(nodes.windows(2).all(|w| w[0].address < w[1].address), "nodes in increasing address order");
        for n in &nodes {
            assert_eq!((n.identity, n.stack), (n.address, 0));
        }
        let edges = snap.edges().map(|e| e.unwrap()).map(|(f, e)| {
            assert_eq!(e.kind, hsnap::EdgeKind::Strong);
            (nodes[f as usize].address, nodes[e.to as usize].address, e.label)
        });
        let edges = edges.collect();
        let roots = snap.roots().iter().map(|r| {
            assert_eq!((r.kind, r.interior, r.name), (hsnap::RootKind::GcRoot, false, 0));
            nodes[r.node as usize].address
        });
        let roots: Vec<u64> = roots.collect();
        assert!(roots.windows(2).all(|w| w[0] < w[1]), "one root a node, in node order");
        assert_eq!(snap.string(1), b"a", "strings keep their ids");
        assert_eq!(snap.type_name(TUPLE), b"tuple", "types keep their ids");
        let nodes = nodes.iter().map(|n| (n.address, (n.type_id, n.size, n.flags))).collect();
        Resolved { nodes, edges, roots }
    }
}

fn convert(input: &Path) -> (python::ConvertStats, Resolved) {
    let output = input.with_extension("resolved.hsnap");
    let stats = python::convert(input, &output, &Progress::hidden()).unwrap_or_else(|e| panic!("{e}"));
    (stats, Resolved::read(&output))
}

// ---------------------------------------------------------------------------------------------
// A hand-made heap.

const A: u64 = 0x1000;
const B: u64 = 0x2000;
const S: u64 = 0x3000;
const T: u64 = 0x4000;
const E: u64 = 0x5000;
const N: u64 = 0x7000;
const C: u64 = 0x8000;
const F: u64 = 0x9000;
const D: u64 = 0xA000;
const G: u64 = 0xB000;
const UNKNOWN: u64 = 0x9999;

/// Batch 0 (kind 0, source bias 2, leaf bias 1): A (obj, dense labels), B (a list with one sparse
/// label), E (excluded: the exporter's list); leaves S (int, 28 bytes), T (an untracked tuple), N
/// (immortal), D (given as a leaf here and as a kind-0 source in batch 1).
/// Batch 1 (kind 0): C (held from outside), D; leaves S again (later: loses), B (a kind-0 source:
/// loses), F (frozen), G (refcount below its bias).
/// Batch 2 (kind 1): T's references; T again (ignored); B (a kind-0 source: ignored).
fn hand_made() -> PyHeap {
    let mut b0 = objects(2, 1);
    b0.push_source(A, OBJ, 40, 4, &[B, S, S, UNKNOWN, E, D, N]);
    b0.dense_sources = vec![0];
    b0.dense_labels = vec![1, 2, 0, 4, 5, 3, 0];
    b0.push_source(B, LIST, 56, 5, &[A, S, T]);
    b0.push_sparse(1, 1, 6);
    b0.push_source(E, LIST, 88, 2, &[A]);
    // S: inside 5 (A twice, B, C, T), 3 occurrences here, 1 more held from outside: a root.
    b0.push_leaf(S, INT, 28, 10, 0);
    // T: inside 1 (B), 1 occurrence here: exactly its refcount, not a root.
    b0.push_leaf(T, TUPLE, 64, 3, 0);
    b0.push_leaf(N, INT, 28, IMMORTAL, 0);
    b0.push_leaf(D, INT, 8, 1, 0);
    let mut b1 = objects(2, 1);
    b1.push_source(C, OBJ, 48, 3, &[S, A, B, F, G]);
    b1.push_source(D, OBJ, 64, 3, &[]);
    b1.push_leaf(S, INT, 99, 50, 0);
    b1.push_leaf(B, INT, 999, 1, 0);
    b1.push_leaf(F, TUPLE, 72, 3, LEAF_FROZEN);
    b1.push_leaf(G, INT, 28, 0, 0);
    let mut b2 = references();
    b2.push_source(T, 0, 0, 0, &[S, A, UNKNOWN]);
    b2.push_source(T, 0, 0, 0, &[C]);
    b2.push_source(B, 0, 0, 0, &[C]);
    PyHeap { batches: vec![b0, b1, b2], excluded: vec![E] }
}

#[test]
fn a_hand_made_heap_resolves_by_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, got) = convert(&hand_made().write(&dir.path().join("heap.hsnap")));
    let immortal = Node::IMMORTAL;
    let nodes = BTreeMap::from([
        (A, (OBJ, 40, 0)),
        (B, (LIST, 56, 0)), // the kind-0 source, not the later leaf
        (S, (INT, 32, 0)),  // the first leaf, raised to the floor
        (T, (TUPLE, 64, 0)),
        (N, (INT, 32, immortal)), // immortal
        (C, (OBJ, 48, 0)),
        (F, (TUPLE, 72, immortal)), // frozen
        (D, (OBJ, 64, 0)),          // the kind-0 source, though a leaf came first
        (G, (INT, 32, 0)),
    ]);
    assert_eq!(got.nodes, nodes, "E is excluded, UNKNOWN never described");
    let name = Label::Name;
    let edges = vec![
        // A: dense labels; a label 0 of a type without traits is no label.
        (A, B, name(1)),
        (A, S, name(2)),
        (A, S, Label::None),
        (A, D, name(3)),
        (A, N, Label::None),
        // B, a list: element indices, the sparse label over index 1.
        (B, A, Label::Index(0)),
        (B, S, name(6)),
        (B, T, Label::Index(2)),
        // T, a reversed sequence of 3 (the dropped third keeps its index 0), from its first
        // kind-1 record.
        (T, S, Label::Index(2)),
        (T, A, Label::Index(1)),
        (C, S, Label::None),
        (C, A, Label::None),
        (C, B, Label::None),
        (C, F, Label::None),
        (C, G, Label::None),
    ];
    assert_eq!(got.edges, edges);
    // B: true 3 > inside 2 (A, C); S: true 6 > inside 5; N immortal; C: true 1 > 0; F frozen.
    // A: true 2 = inside 2 (B, C; not T, a leaf's, nor E, excluded); D, T: equal; G: clamped.
    assert_eq!(got.roots, [B, S, N, C, F]);
    assert_eq!((stats.nodes, stats.edges, stats.roots, stats.batches), (9, 15, 5, 3));
    assert_eq!((stats.dropped_references, stats.clamped_counts), (3, 1));
}

#[test]
fn each_rule_changes_the_verdict_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let roots_of = |heap: &PyHeap, name: &str| convert(&heap.write(&dir.path().join(name))).1.roots;
    // T with one reference more than its occurrences explain: a root.
    let mut heap = hand_made();
    heap.batches[0].leaf_refcount[1] += 1;
    assert_eq!(roots_of(&heap, "t.hsnap"), [B, S, T, N, C, F]);
    // A held by the excluded list: its reference was in A's count, now dropped, so A is a root.
    let mut heap = hand_made();
    heap.batches[0].source_refcount[0] += 1;
    assert_eq!(roots_of(&heap, "a.hsnap"), [A, B, S, N, C, F]);
    // Without the exclusion, E is a node (no root: its refcount is its bias) whose edge to A is
    // inside: the same roots as before.
    let mut heap = hand_made();
    heap.batches[0].source_refcount[0] += 1;
    heap.excluded.clear();
    assert_eq!(roots_of(&heap, "e.hsnap"), [B, S, N, C, F]);
    // Refcount 2^30: immortal.
    let mut heap = hand_made();
    heap.batches[1].source_refcount[1] = 1 << 30;
    let got = convert(&heap.write(&dir.path().join("d.hsnap"))).1;
    assert_eq!((got.roots, got.nodes[&D].2), (vec![B, S, N, C, F, D], Node::IMMORTAL));
}

// ---------------------------------------------------------------------------------------------
// Random heaps against an oracle written from the specification, one rule at a time.

/// One source or leaf record, with where it is (batch, position) and what it says.
struct Given {
    batch: usize,
    position: usize,
    type_id: u32,
    size: u64,
    refcount: u64,
    flags: u8,
}

/// The specification's "Resolving", in the most direct form: nested loops, no sorting tricks.
fn oracle(heap: &PyHeap) -> Resolved {
    let excluded = |a: u64| heap.excluded.contains(&a);
    let mut sources: Vec<(u64, Given)> = Vec::new();
    let mut leaves: Vec<(u64, Given)> = Vec::new();
    for (b, batch) in heap.batches.iter().enumerate() {
        for (i, &a) in batch.source_address.iter().enumerate() {
            if batch.kind == 0 {
                let (type_id, size, refcount) = (batch.source_type[i], batch.source_size[i], batch.source_refcount[i]);
                sources.push((a, Given { batch: b, position: i, type_id, size, refcount, flags: 0 }));
            }
        }
        for (i, &a) in batch.leaf_address.iter().enumerate() {
            let (type_id, size, refcount) = (batch.leaf_type[i], batch.leaf_size[i], batch.leaf_refcount[i]);
            leaves.push((a, Given { batch: b, position: i, type_id, size, refcount, flags: batch.leaf_flags[i] }));
        }
    }
    // Nodes: one per address given, not excluded; a kind-0 source wins, then the earliest leaf.
    let mut addresses: Vec<u64> = sources.iter().chain(&leaves).map(|(a, _)| *a).filter(|&a| !excluded(a)).collect();
    addresses.sort();
    addresses.dedup();
    let winner = |a: u64| -> (bool, &Given) {
        match sources.iter().find(|(s, _)| *s == a) {
            Some((_, g)) => (true, g),
            None => (false, &leaves.iter().find(|(l, _)| *l == a).unwrap().1),
        }
    };
    let traits = |t: u32| TRAITS.iter().find(|x| x.0 == t).map_or((0, 0), |x| (x.1, x.2));
    // Edges: a kind-0 source's targets, or the first kind-1 record of a leaf's address.
    let mut edges = Vec::new();
    for &a in &addresses {
        let (from_source, g) = winner(a);
        let (b, i) = if from_source {
            (g.batch, g.position)
        } else {
            let first = heap.batches.iter().enumerate().find_map(|(b, batch)| {
                let i = batch.source_address.iter().position(|&s| s == a)?;
                (batch.kind == 1).then_some((b, i))
            });
            match first {
                Some(found) => found,
                None => continue,
            }
        };
        // Kind-2 records of the address add their references; the node then has no indexes.
        let more: Vec<(usize, usize)> = heap
            .batches
            .iter()
            .enumerate()
            .filter(|(_, batch)| batch.kind == 2)
            .flat_map(|(b, batch)| {
                batch.source_address.iter().enumerate().filter(move |&(_, &s)| s == a).map(move |(i, _)| (b, i))
            })
            .collect();
        let (t, _) = traits(g.type_id);
        let indexes = t & TRAIT_SEQUENCE != 0 && more.is_empty();
        for (b, i) in std::iter::once((b, i)).chain(more) {
            let batch = &heap.batches[b];
            let start: usize = batch.reference_count[..i].iter().map(|&c| c as usize).sum();
            let count = batch.reference_count[i] as usize;
            for k in 0..count {
                let to = batch.targets[start + k];
                if !addresses.contains(&to) {
                    continue;
                }
                let mut label = 0;
                if let Some(d) = batch.dense_sources.iter().position(|&d| d as usize == i) {
                    let before: usize =
                        batch.dense_sources[..d].iter().map(|&s| batch.reference_count[s as usize] as usize).sum();
                    let named = batch.dense_targets.get(before + k).copied().unwrap_or(to);
                    if named == to {
                        label = batch.dense_labels[before + k];
                    }
                }
                for p in 0..batch.sparse_source.len() {
                    if batch.sparse_source[p] as usize == i && batch.sparse_index[p] as usize == k {
                        label = batch.sparse_label[p];
                    }
                }
                let label = match label {
                    0 if !indexes => Label::None,
                    0 if t & TRAIT_REVERSED != 0 => Label::Index((count - 1 - k) as u64),
                    0 => Label::Index(k as u64),
                    s => Label::Name(s),
                };
                edges.push((a, to, label));
            }
        }
    }
    // Roots: true count above the inside references, frozen, or immortal.
    let mut roots = Vec::new();
    let mut nodes = BTreeMap::new();
    for &a in &addresses {
        let (from_source, g) = winner(a);
        let batch = &heap.batches[g.batch];
        let held = if from_source {
            batch.source_bias as i128
        } else {
            batch.leaf_bias as i128 + batch.targets.iter().filter(|&&t| t == a).count() as i128
        };
        let true_count = (g.refcount as i128 - held).max(0);
        let inside = edges.iter().filter(|&&(f, t, _)| t == a && (winner(f).0 || !from_source)).count() as i128;
        let pinned = g.flags & LEAF_FROZEN != 0 || g.refcount >= 1 << 30;
        if true_count > inside || pinned {
            roots.push(a);
        }
        let flags = if pinned { Node::IMMORTAL } else { 0 };
        nodes.insert(a, (g.type_id, g.size.max(traits(g.type_id).1), flags));
    }
    Resolved { nodes, edges, roots }
}

/// A random heap of a few dozen addresses: kind-0 sources given once each, leaves given any
/// number of times (sources' addresses too), kind-1 records for given leaves (and some for
/// sources' addresses, and repeated), targets anywhere (also never described), labels, refcounts
/// near the true ones, some immortal, frozen or excluded.
fn random_heap(rng: &mut Pcg64Mcg) -> PyHeap {
    let pool: Vec<u64> = (0..rng.random_range(4..40)).map(|k| 0x10_0000 + 16 * k).collect();
    let mut unused_sources: Vec<u64> = pool.clone();
    let mut leaves_so_far: Vec<u64> = Vec::new();
    let mut supplied: Vec<u64> = Vec::new(); // addresses of kind-0 and kind-1 sources so far
    let mut heap = PyHeap::default();
    for _ in 0..rng.random_range(1..6) {
        let kind = match rng.random_range(0..10) {
            _ if leaves_so_far.is_empty() && supplied.is_empty() => 0,
            0..6 => 0,
            6..9 if !leaves_so_far.is_empty() => 1,
            _ if !supplied.is_empty() => 2,
            _ => 0,
        };
        let mut b = BatchColumns {
            kind,
            source_bias: rng.random_range(0..3),
            leaf_bias: rng.random_range(0..3),
            ..Default::default()
        };
        let sources = rng.random_range(0..6);
        for i in 0..sources {
            let address = if kind == 0 {
                if unused_sources.is_empty() {
                    break;
                }
                unused_sources.swap_remove(rng.random_range(0..unused_sources.len()))
            } else if kind == 1 {
                leaves_so_far[rng.random_range(0..leaves_so_far.len())]
            } else {
                supplied[rng.random_range(0..supplied.len())]
            };
            if kind < 2 {
                supplied.push(address);
            }
            let refs = rng.random_range(0..6);
            let targets: Vec<u64> = (0..refs)
                .map(|_| if rng.random_bool(0.9) { pool[rng.random_range(0..pool.len())] } else { 0xdead_0000 })
                .collect();
            let type_id = rng.random_range(0..TYPES);
            let refcount = if rng.random_bool(0.05) { IMMORTAL } else { rng.random_range(0..8) };
            b.push_source(address, type_id, rng.random_range(0..100), refcount, &targets);
            if rng.random_bool(0.3) {
                b.dense_sources.push(i as u32);
                b.dense_labels.extend((0..refs).map(|_| rng.random_range(0..7)));
            }
            if refs > 0 && rng.random_bool(0.3) {
                b.push_sparse(i as u32, rng.random_range(0..refs as u32), rng.random_range(0..7));
            }
        }
        if !b.dense_labels.is_empty() && rng.random_bool(0.5) {
            // Some dense labels name another object than their reference's: they do not apply.
            let mut named = BatchColumns { dense_targets: Vec::new(), ..b.clone() };
            named.dense_targets = dense_targets(&b);
            for t in &mut named.dense_targets {
                if rng.random_bool(0.3) {
                    *t = pool[rng.random_range(0..pool.len())];
                }
            }
            b.dense_targets = named.dense_targets;
        }
        for _ in 0..rng.random_range(0..5) {
            let address = pool[rng.random_range(0..pool.len())];
            let refcount = if rng.random_bool(0.05) { IMMORTAL } else { rng.random_range(0..10) };
            let flags = if rng.random_bool(0.1) { LEAF_FROZEN } else { 0 };
            b.push_leaf(address, rng.random_range(0..TYPES), rng.random_range(0..100), refcount, flags);
            leaves_so_far.push(address);
        }
        heap.batches.push(b);
    }
    heap.excluded = pool.iter().copied().filter(|_| rng.random_bool(0.1)).collect();
    heap
}

/// The targets of a batch's dense sources' references, in order.
fn dense_targets(b: &BatchColumns) -> Vec<u64> {
    let mut starts = vec![0usize];
    for &c in &b.reference_count {
        starts.push(starts.last().unwrap() + c as usize);
    }
    b.dense_sources.iter().flat_map(|&s| &b.targets[starts[s as usize]..starts[s as usize + 1]]).copied().collect()
}

/// The batch of the record that gives the edges of the node at `a` (spec: "Resolving").
fn supplier_batch(heap: &PyHeap, a: u64) -> Option<usize> {
    let of_kind = |k: u8| heap.batches.iter().position(|b| b.kind == k && b.source_address.contains(&a));
    match of_kind(0) {
        Some(b) => Some(b),
        None if heap.batches.iter().any(|b| b.leaf_address.contains(&a)) => of_kind(1),
        None => None,
    }
}

#[test]
fn random_heaps_resolve_as_the_oracle_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let (mut resolved, mut roots, mut rejected, mut continued) = (0, 0, 0, 0);
    for round in 0..400 {
        let heap = random_heap(&mut rng);
        let input = heap.write(&dir.path().join(format!("r{round}.hsnap")));
        let output = dir.path().join(format!("r{round}.out.hsnap"));
        // A kind-1 record of an address only a kind-0 source gives is an error; the oracle
        // does not model errors, so such heaps must be rejected and are skipped.
        let kind1_without_leaf = heap.batches.iter().any(|b| {
            b.kind == 1
                && b.source_address
                    .iter()
                    .any(|a| !heap.excluded.contains(a) && heap.batches.iter().all(|o| !o.leaf_address.contains(a)))
        });
        // A kind-2 record before the record giving its node's edges, or with none, is an error.
        let kind2_continues_nothing = heap.batches.iter().enumerate().any(|(b2, b)| {
            b.kind == 2
                && b.source_address
                    .iter()
                    .any(|&a| !heap.excluded.contains(&a) && supplier_batch(&heap, a).is_none_or(|s| s >= b2))
        });
        match python::convert(&input, &output, &Progress::hidden()) {
            Err(e) => {
                assert!(kind1_without_leaf || kind2_continues_nothing, "round {round}: {e}");
                if kind1_without_leaf {
                    rejected += 1;
                } else {
                    assert!(e.to_string().contains("kind-2 source"), "round {round}: {e}");
                }
            }
            Ok(_) => {
                assert!(!kind1_without_leaf, "round {round}: accepted a kind-1 record of no leaf");
                assert!(!kind2_continues_nothing, "round {round}: accepted a kind-2 record that continues nothing");
                continued += heap.batches.iter().any(|b| b.kind == 2) as usize;
                let got = Resolved::read(&output);
                assert_eq!(got, oracle(&heap), "round {round}");
                resolved += 1;
                roots += got.roots.len();
            }
        }
    }
    assert!(resolved > 300 && roots > 300, "the rounds exercise the rules: {resolved} resolved, {roots} roots");
    assert_eq!(rejected, 0, "the generator gives kind-1 records only for leaves");
    assert!(continued > 50, "the rounds exercise kind-2 records: {continued} resolved with them");
}

// ---------------------------------------------------------------------------------------------
// Damaged files: an error naming the file, the byte and what was expected; no output.

/// The payload offset of the first chunk tagged `tag`.
fn payload_of(bytes: &[u8], tag: &[u8; 4]) -> usize {
    let mut at = 16;
    loop {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if &bytes[at..at + 4] == tag {
            return at + 8;
        }
        at += 12 + len;
    }
}

/// Every chunk's CRC recomputed.
fn recrc(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut at = 16;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if at + 12 + len > bytes.len() {
            break; // a damaged length: the reader reports it
        }
        let crc = crc32fast::hash(&bytes[at..at + 8 + len]);
        bytes[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_le_bytes());
        at += 12 + len;
    }
    bytes
}

fn rejected(dir: &Path, bytes: &[u8]) -> hsnap::FormatError {
    let input = dir.join("bad.hsnap");
    let output = dir.join("bad.out.hsnap");
    std::fs::write(&input, bytes).unwrap();
    match python::convert(&input, &output, &Progress::hidden()) {
        Err(Error::Format { path, source }) => {
            assert_eq!(path, input);
            assert!(!output.exists(), "no output for a damaged input");
            source
        }
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(stats) => panic!("accepted a damaged file: {stats:?}"),
    }
}

/// One batch (kind 0): source 0x100 (dense labels) -> [0x200, 0x300]; source 0x200 -> [0x300]
/// with a sparse label; leaf 0x300. Header 9 bytes, then the columns at the offsets of [`at`].
fn small() -> PyHeap {
    let mut b = objects(0, 1);
    b.push_source(0x100, OBJ, 40, 1, &[0x200, 0x300]);
    b.push_source(0x200, LIST, 56, 1, &[0x300]);
    b.dense_sources = vec![0];
    b.dense_labels = vec![1, 2];
    b.push_sparse(1, 0, 3);
    b.push_leaf(0x300, INT, 28, 3, 0);
    PyHeap { batches: vec![b], excluded: vec![] }
}

mod at {
    pub const KIND: usize = 0;
    pub const WIDTHS: usize = 1;
    pub const TYPES: usize = 9 + 16;
    pub const COUNTS: usize = TYPES + 8 + 8 + 8;
    pub const DENSE_SOURCES: usize = COUNTS + 8 + 24;
    pub const DENSE_LABELS: usize = DENSE_SOURCES + 4;
    pub const DENSE_TARGETS: usize = DENSE_LABELS + 8;
    pub const SPARSE_SOURCE: usize = DENSE_TARGETS + 16;
    pub const SPARSE_INDEX: usize = SPARSE_SOURCE + 4;
    pub const LEAF_TYPE: usize = SPARSE_INDEX + 8 + 8;
    pub const END: usize = LEAF_TYPE + 4 + 4 + 4 + 1;
}

#[test]
fn damaged_files_are_errors_at_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let good = small().bytes();
    let record = payload_of(&good, b"PYBT");
    assert_eq!(u32::from_le_bytes(good[record - 4..record].try_into().unwrap()) as usize, at::END);
    let edit = |f: &dyn Fn(&mut [u8])| {
        let mut bytes = good.clone();
        f(&mut bytes[record..record + at::END]);
        recrc(bytes)
    };
    let u32_at = |at: usize, v: u32| move |r: &mut [u8]| r[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (edit(&|r| r[at::KIND] = 7), at::KIND, "unknown PYBT kind 7"),
        (edit(&|r| r[at::WIDTHS] = 0x10), at::WIDTHS, "width bits 0x10"),
        (edit(&u32_at(at::COUNTS, 1)), at::COUNTS, "the reference counts sum to 2"),
        (edit(&u32_at(at::TYPES, 4)), at::TYPES, "source type 4 out of range"),
        (edit(&u32_at(at::LEAF_TYPE, 77)), at::LEAF_TYPE, "leaf type 77 out of range"),
        (edit(&u32_at(at::DENSE_LABELS + 4, 11)), at::DENSE_LABELS + 4, "dense label string id 11"),
        (edit(&u32_at(at::DENSE_SOURCES, 2)), at::DENSE_SOURCES, "dense source position 2"),
        (edit(&u32_at(at::SPARSE_SOURCE, 5)), at::SPARSE_SOURCE, "sparse source position 5"),
        (edit(&u32_at(at::SPARSE_INDEX, 1)), at::SPARSE_INDEX, "sparse reference index 1: source 1 has 1"),
    ];
    for (bytes, offset, what) in cases {
        let err = rejected(dir.path(), &bytes);
        assert_eq!(err.offset, (record + offset) as u64, "{err}; wanted {what}");
        assert!(err.what.contains(what), "{err}; wanted {what}");
    }
    // A record cut short (its chunk's length and CRC fixed): the first column that does not fit.
    let mut cut = good[..record + at::LEAF_TYPE + 2].to_vec();
    cut.extend_from_slice(&[0; 4]);
    cut.extend_from_slice(&good[record + at::END + 4..]);
    cut[record - 4..record].copy_from_slice(&((at::LEAF_TYPE + 2) as u32).to_le_bytes());
    let err = rejected(dir.path(), &recrc(cut));
    assert_eq!(err.offset, (record + at::LEAF_TYPE) as u64, "{err}");
    assert!(err.what.contains("expected leaf types: 1 values of 4 bytes, the PYBT record has 2 bytes left"), "{err}");
    // The DONE record counts one PYBT record more than there are.
    let done = payload_of(&good, b"DONE");
    let mut bytes = good.clone();
    bytes[done + 8] += 1;
    let err = rejected(dir.path(), &recrc(bytes));
    assert_eq!(err.offset, done as u64 - 8, "{err}");
    assert!(err.what.contains("counts 2 PYBT records, the file holds 1"), "{err}");
}

#[test]
fn records_that_contradict_each_other_are_errors_at_the_record() {
    let dir = tempfile::tempdir().unwrap();
    // A second kind-0 source for one address.
    let mut heap = small();
    let mut b = objects(0, 0);
    b.push_source(0x400, OBJ, 8, 1, &[]);
    b.push_source(0x200, OBJ, 8, 1, &[]);
    heap.batches.push(b);
    let bytes = heap.bytes();
    // The second record follows the first in the same chunk; its second address is 17 bytes in.
    let second = payload_of(&bytes, b"PYBT") + at::END;
    let err = rejected(dir.path(), &bytes);
    assert_eq!(err.offset, (second + 9 + 8) as u64, "{err}");
    assert!(err.what.contains("address 0x200 given by a second kind-0 source"), "{err}");
    // A kind-1 record of an address no batch gives as a leaf (0x200 is a kind-0 source only).
    let mut heap = small();
    let mut b = references();
    b.push_source(0x300, 0, 0, 0, &[]);
    b.push_source(0x200, 0, 0, 0, &[0x100]);
    heap.batches.push(b);
    let bytes = heap.bytes();
    let record = payload_of(&bytes, b"PYBT") + at::END;
    let err = rejected(dir.path(), &bytes);
    assert_eq!(err.offset, (record + 9 + 8) as u64, "{err}");
    assert!(err.what.contains("kind-1 source 0x200: expected the address of a leaf"), "{err}");
    // The same record for an excluded address is dropped with it.
    heap.excluded.push(0x200);
    let (_, got) = convert(&heap.write(&dir.path().join("excluded.hsnap")));
    assert_eq!(got.nodes.keys().copied().collect::<Vec<_>>(), [0x100, 0x300]);
    // A kind-2 record of an address no kind-0 or kind-1 record gives, and one that comes before
    // the kind-0 source it would continue.
    for (address, before) in [(0x500u64, false), (0x200, true)] {
        let mut heap = small();
        let mut b = BatchColumns { kind: 2, ..BatchColumns::default() };
        b.push_source(address, 0, 0, 0, &[0x100]);
        heap.batches.insert(if before { 0 } else { 1 }, b);
        let bytes = heap.bytes();
        let record = payload_of(&bytes, b"PYBT") + if before { 0 } else { at::END };
        let err = rejected(dir.path(), &bytes);
        assert_eq!(err.offset, (record + 9) as u64, "{err}");
        assert!(err.what.contains(&format!("kind-2 source {address:#x}: expected the address of a source")), "{err}");
    }
}

#[test]
fn random_damage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = hand_made().bytes();
    let first = payload_of(&good, b"PYTY") - 8;
    let mut rng = Pcg64Mcg::seed_from_u64(3);
    let (input, output) = (dir.path().join("d.hsnap"), dir.path().join("d.out.hsnap"));
    let mut errors = 0;
    for _ in 0..500 {
        let mut bytes = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(first..bytes.len());
            bytes[at] = rng.random();
        }
        std::fs::write(&input, recrc(bytes)).unwrap();
        match python::convert(&input, &output, &Progress::hidden()) {
            Ok(_) => {}
            Err(Error::Format { source, .. }) => {
                assert!(source.offset <= good.len() as u64);
                errors += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(errors > 100, "most damage is noticed ({errors} of 500)");
}

// ---------------------------------------------------------------------------------------------
// Opening, the graph, the cache, the command line.

fn planted(dir: &Path) -> (PathBuf, python_synth::PyPlanted) {
    let path = dir.join("synth.hsnap");
    let planted = python_synth::write(&path, python_synth::PySynthOptions { instances: 3000, seed: 4 }).unwrap();
    (path, planted)
}

/// The synthetic heap's leaks are exactly the planted ones, and the graph the conversion builds
/// is the graph of the file it writes.
#[test]
fn open_any_resolves_python_snapshots_and_finds_the_planted_leak() {
    use heapsnap::graph::Graph;
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = planted(dir.path());
    assert!(python::looks_like(&std::fs::read(&path).unwrap()));
    assert!(!python::looks_like(&std::fs::read("fixtures/example.hsnap").unwrap()));
    let opened = import::open_any(&path, &Progress::hidden()).unwrap();
    let Some(import::Converted::Python(stats)) = opened.converted else { panic!("converted as Python") };
    assert_eq!((stats.nodes, stats.edges, stats.dropped_references), (planted.nodes, planted.edges, planted.dropped));
    let built = opened.take_graph().expect("a conversion builds the graph");
    let snap = Snapshot::parse(opened.file.bytes()).unwrap();
    let decoded = Graph::load(&snap, &Progress::hidden()).unwrap();
    let n = decoded.node_count();
    assert_eq!((built.node_count(), built.edge_count()), (n, decoded.edge_count()));
    assert_eq!((&built.identity, &built.address, &built.size), (&decoded.identity, &decoded.address, &decoded.size));
    assert_eq!((&built.type_id, &built.flags, built.roots()), (&decoded.type_id, &decoded.flags, decoded.roots()));
    for v in 0..n as u32 {
        assert_eq!(built.edges(v).collect::<Vec<_>>(), decoded.edges(v).collect::<Vec<_>>(), "node {v}");
    }
    let leaked = common::with_heap(&path, |heap, analysis| {
        let g = &heap.graph;
        let mut leaked: Vec<u64> = (0..g.node_count() as u32)
            .filter(|&v| analysis.reach.is_leaked(v))
            .map(|v| g.address.get(v as usize))
            .collect();
        leaked.sort_unstable();
        leaked
    });
    assert_eq!(leaked, planted.leaked);
    // The file itself, loaded as a plain snapshot, is refused rather than read as an empty heap.
    let raw = std::fs::read(&path).unwrap();
    let err = Graph::load(&Snapshot::parse(&raw).unwrap(), &Progress::hidden()).unwrap_err();
    assert!(err.what.contains("address-keyed"), "{err}");
}

#[test]
fn the_cache_works_for_python_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = planted(dir.path());
    let analyse = || {
        let opened = import::open_any(&path, &Progress::hidden()).unwrap();
        let heap = opened.load(&Progress::hidden()).unwrap();
        (heap.snap.checksum(), heapsnap::cache::analyze(&heap, &Progress::hidden(), true, 0))
    };
    let (checksum, fresh) = analyse();
    let cache = heapsnap::cache::path_for(&path);
    assert!(cache.exists(), "written beside the Python snapshot");
    // A planted cache is used as it is: the conversion is the same file each time.
    let mut planted = fresh.clone();
    planted.retention.retained[0] += 1;
    let opened = import::open_any(&path, &Progress::hidden()).unwrap();
    let heap = opened.load(&Progress::hidden()).unwrap();
    heapsnap::cache::store(&path, checksum, &heap.graph, &planted).unwrap();
    assert_eq!(analyse(), (checksum, planted));
}

#[test]
fn the_command_line_reads_and_converts_python_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = planted(dir.path());
    let path = path.to_str().unwrap();
    let leaks = common::json(&["leaks", path, "--format", "json", "--members"]);
    assert_eq!(leaks["leaked"]["objects"], planted.leaked.len());
    assert_eq!(leaks["groups"].as_array().unwrap().len(), 1, "one leaked cycle");
    let out = common::heapsnap(&["leaks", path, "--fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let by_address = common::json(&["path", path, &format!("{:#x}", planted.leaked[0]), "--format", "json"]);
    assert_eq!(by_address["status"], "leaked");
    assert_eq!(by_address["chains"][0]["start"], "leak leader");

    let resolved = dir.path().join("resolved.hsnap");
    let out = common::heapsnap(&["convert", path, "-o", resolved.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("{} nodes, {} edges", planted.nodes, planted.edges)), "{said}");
    let bytes = std::fs::read(&resolved).unwrap();
    let snap = Snapshot::parse(&bytes).unwrap();
    assert_eq!((snap.version(), snap.counts().nodes), ((1, 0), planted.nodes));
    // The resolved file reads the same as the Python one.
    let mut again = common::json(&["leaks", resolved.to_str().unwrap(), "--format", "json", "--members"]);
    again["snapshot"] = leaks["snapshot"].clone();
    assert_eq!(again, leaks);

    let damaged = dir.path().join("damaged.hsnap");
    let mut bytes = std::fs::read(path).unwrap();
    let pybt = payload_of(&bytes, b"PYBT");
    bytes[pybt] ^= 0xff;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = common::heapsnap(&["top", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("damaged.hsnap: byte") && said.contains("chunk PYBT is corrupt"), "{said}");
}
