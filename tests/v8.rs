//! The V8 `.heapsnapshot` importer: hand-written fixtures with exact expectations, real snapshots
//! written by Node (`tests/v8/make-heap.js`), retained sizes compared with memlab's
//! (`tests/v8/memlab-retained.js`, which needs `npm ci --prefix tests/v8`; the test runs it when
//! `tests/v8/node_modules` is missing), and damaged inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use heapsnap::Error;
use heapsnap::analysis::Analysis;
use heapsnap::graph::Column;
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::import::{open_any, v8};
use heapsnap::progress::Progress;
use hsnap::{EdgeKind, Label, Node, RootKind};

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scripts() -> PathBuf {
    manifest().join("tests/v8")
}

fn tiny() -> PathBuf {
    manifest().join("fixtures/v8/tiny.heapsnapshot")
}

fn convert(input: &Path, dir: &Path) -> (PathBuf, v8::ConvertStats) {
    let output = dir.join("out.hsnap");
    let stats = v8::convert(input, &output, &Progress::hidden()).unwrap_or_else(|e| panic!("{e}"));
    (output, stats)
}

/// Runs `node SCRIPT ARGS…` in `tests/v8` and returns its stdout.
fn node(script: &str, args: &[&str]) -> String {
    let output = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(scripts())
        .output()
        .unwrap_or_else(|e| panic!("node (Node.js) is needed for this test: {e}"));
    assert!(output.status.success(), "node {script} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A snapshot of the known heap of `make-heap.js`, in `dir`.
fn node_snapshot(dir: &Path) -> PathBuf {
    let path = dir.join("heap.heapsnapshot");
    node("make-heap.js", &[path.to_str().unwrap()]);
    path
}

/// The node count in a snapshot's `snapshot.node_count` (read with serde_json: this is the test).
fn v8_node_count(path: &Path) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let fields = value["snapshot"]["meta"]["node_fields"].as_array().unwrap().len() as u64;
    let nodes = value["nodes"].as_array().unwrap().len() as u64;
    assert_eq!(nodes % fields, 0);
    assert_eq!(value["snapshot"]["node_count"].as_u64(), Some(nodes / fields));
    nodes / fields
}

#[test]
fn tiny_fixture_converts_with_exact_types_edges_and_retained_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (output, stats) = convert(&tiny(), dir.path());
    assert_eq!((stats.nodes, stats.edges, stats.weak_edges, stats.locations), (10, 12, 3, 1));

    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let g = &heap.graph;
    assert_eq!(g.node_count(), 10);
    assert_eq!(g.identity.iter().collect::<Vec<_>>(), [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]);
    assert_eq!(g.size.iter().collect::<Vec<_>>(), [0, 0, 10, 20, 30, 40, 50, 60, 70, 80]);
    assert_eq!(g.address, Column::Zero(10), "V8 addresses are all 0, stored as nothing");
    let types: Vec<String> = (0..10).map(|v| heap.type_name(v).into_owned()).collect();
    let expected = [
        "(synthetic)",
        "(GC roots)",
        "global",
        "Foo",
        "(string)",
        "(system)",
        "Key",
        "Val",
        "(closure)",
        "Detached <div>",
    ];
    assert_eq!(types, expected);
    assert_eq!(g.flags.get(9), Node::DETACHED as u64);
    assert!(g.flags.iter().take(9).all(|f| f == 0));

    // Node 0 is the one root.
    assert_eq!(g.roots().len(), 1);
    let root = g.roots()[0];
    assert_eq!((root.node, root.kind, heap.string(root.name).as_ref()), (0, RootKind::GcRoot, "(root)"));

    // Non-essential edges are weak: the shortcut from Foo (not from the root), the weak edge, and
    // the WeakMap table's edge to the value; the key's edge to the value retains.
    let kind = |from: u32, to: u32| g.edges(from).find(|&(t, _)| t == to).map(|(_, k)| k);
    assert_eq!(kind(0, 2), Some(EdgeKind::Strong)); // shortcut from the root
    assert_eq!(kind(3, 7), Some(EdgeKind::Weak)); // shortcut
    assert_eq!(kind(3, 8), Some(EdgeKind::Weak)); // weak
    assert_eq!(kind(5, 7), Some(EdgeKind::Weak)); // WeakMap table -> value
    assert_eq!(kind(6, 7), Some(EdgeKind::Strong)); // WeakMap key -> value
    let labels = heap.labels(&[0, 3]);
    assert_eq!(labels[&(0, 1, EdgeKind::Strong)], Label::Index(1));
    let name = |label: Label| heap.label_name(label).unwrap();
    assert_eq!(name(labels[&(0, 2, EdgeKind::Strong)]), "global");
    assert_eq!(labels[&(3, 4, EdgeKind::Strong)], Label::Index(0));
    assert_eq!(name(labels[&(3, 7, EdgeKind::Weak)]), "s😀");
    assert_eq!(name(labels[&(3, 9, EdgeKind::Strong)]), "dé");

    // The location: object 3, script 4, line 9, column 2 (0-based).
    assert_eq!(heap.site_name(g.stack[3]), "script 4");
    assert!(g.stack.iter().enumerate().all(|(v, &s)| (v == 3) == (s != 0)));
    assert_eq!(heap.snap.meta_value("producer"), Some(&b"tiny \"hand-written\" heap"[..]));
    assert_eq!(heap.snap.meta_value("capture"), Some(&b"v8"[..]));

    let analysis = Analysis::of(g, &Progress::hidden());
    let retained = &analysis.retention.retained;
    assert_eq!(retained[..8], [290, 0, 290, 130, 30, 40, 110, 60]);
    assert_eq!(retained[9], 80);
    // Reached only through a weak edge: leaked for heapsnap (memlab hangs it under the root).
    assert!(analysis.reach.is_leaked(8));
    assert_eq!((retained[8], (0..10).filter(|&v| analysis.reach.is_leaked(v)).count()), (70, 1));
}

#[test]
fn open_any_converts_v8_and_passes_hsnap_through() {
    let opened = open_any(&tiny(), &Progress::hidden()).unwrap();
    assert_eq!(opened.converted.map(|c| c.nodes()), Some(10));
    assert!(matches!(opened.converted, Some(heapsnap::import::Converted::V8(_))));
    let heap = opened.load(&Progress::hidden()).unwrap();
    assert_eq!((heap.graph.node_count(), heap.path.as_path()), (10, tiny().as_path()));

    let example = manifest().join("fixtures/example.hsnap");
    let opened = open_any(&example, &Progress::hidden()).unwrap();
    assert!(opened.converted.is_none());
    assert_eq!(opened.load(&Progress::hidden()).unwrap().path, example);
    assert!(!v8::looks_like(&std::fs::read(&example).unwrap()));
}

/// Every damaged input is an `Error::Format` naming the input and an offset inside it, and the
/// output is not created.
fn assert_rejected(dir: &Path, text: &[u8], expect: Option<&str>) -> String {
    let input = dir.join("bad.heapsnapshot");
    let output = dir.join("bad.hsnap");
    std::fs::write(&input, text).unwrap();
    let error = v8::convert(&input, &output, &Progress::hidden());
    let shown = match error {
        Err(Error::Format { path, source }) => {
            assert_eq!(path, input);
            assert!(source.offset <= text.len() as u64, "{source} is past the end");
            source.to_string()
        }
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(stats) => panic!("accepted a damaged snapshot ({stats:?}):\n{}", String::from_utf8_lossy(text)),
    };
    assert!(!output.exists());
    if let Some(expect) = expect {
        assert!(shown.contains(expect), "{shown:?} does not mention {expect:?}");
    }
    shown
}

#[test]
fn truncated_snapshots_are_rejected_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read(tiny()).unwrap();
    // Every prefix that is not the whole object (the trailing newline may go).
    let end = text.iter().rposition(|&c| c == b'}').unwrap();
    for len in 0..=end {
        assert_rejected(dir.path(), &text[..len], None);
    }
}

#[test]
fn wrong_values_are_rejected_with_their_offset() {
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(std::fs::read(tiny()).unwrap()).unwrap();
    let cases: &[(&str, &str, &str)] = &[
        (r#""nodes":[0,9,1,2"#, r#""nodes":{"a":1},"x":[0,9,1,2"#, "expected `[`"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80,2,\"0\"]", "expected a non-negative integer"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80,2,-1]", "expected a non-negative integer"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80.5,2,0]", "expected a non-negative integer"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80,2]", "records of 7 numbers"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80,2,0,1,2]", "records of 7 numbers"),
        (",9,8,19,0,80,2,0]", ",9,8,19,0,80,2,0,1,2,3,4,5,6,7]", "the nodes' edge counts say"),
        (",9,8,19,0,80,2,0]", ",20,8,19,0,80,2,0]", "expected a node name"),
        (",9,8,19,0,80,2,0]", ",9,15,19,0,80,2,0]", "expected a node type"),
        (",9,8,19,0,80,2,0]", ",9,8,19,1,80,2,0]", "expected an edge: the nodes' edge counts"),
        ("\n,49,3,16],", "\n,49,3,16,7,1,1],", "more edges than"),
        ("\n,49,3,16],", "\n,70,3,16],", "expected an edge's to_node"),
        ("\n,49,3,16],", "\n,50,3,16],", "expected an edge's to_node"),
        ("\n,49,3,16],", "\n,49,7,16],", "expected an edge type"),
        ("\n,49,3,16],", "\n,49,3,17],", "expected an edge name"),
        ("[21,4,9,2]", "[22,4,9,2]", "object_index"),
        ("[21,4,9,2]", "[70,4,9,2]", "every location's object_index"),
        ("[21,4,9,2]", "[21,4,9]", "records of 4 numbers"),
        (r#""d\u00e9""#, r#""d\u00g9""#, "four hex digits"),
        (r#""d\u00e9""#, r#""d\x""#, "after `\\`"),
        (r#""d\u00e9""#, "\"d\u{1}\"", "control character"),
        ("\"a\",\"t\"", "\"a\" \"t\"", "expected `,` or `]`"),
        ("\"edge_fields\"", "\"edge_fieldz\"", "expected `meta.edge_fields`"),
        ("[\"to_node\",\"type\",\"name_or_index\"]", "[\"to_node\",\"type\",\"name\"]", "`name_or_index`"),
        ("\"node_types\":[\"string\",[", "\"node_types\":[\"string\",[1,", "expected a string in"),
        ("\"node_types\":[\"string\",[", "\"node_types\":[\"string\",{\"a\":1},[", "an array of strings"),
        ("\"locations\":", "\"nodes\":[],\"locations\":", "repeated"),
        ("{\"deep\"", "{\"deep\" 1", "expected `:`"),
        ("\"edges\":[", "\"edgez\":[", "expected a `edges` member"),
    ];
    for &(from, to, expect) in cases {
        assert_eq!(text.matches(from).count(), 1, "{from:?} is not unique in the fixture");
        assert_rejected(dir.path(), text.replacen(from, to, 1).as_bytes(), Some(expect));
    }
    // Trailing garbage, an empty snapshot, a JSON document of another kind.
    assert_rejected(dir.path(), format!("{text}x").as_bytes(), Some("expected the end of the file"));
    assert_rejected(dir.path(), b"{}", Some("expected a `snapshot` member"));
    assert_rejected(dir.path(), b"[1, 2]", Some("expected `{`"));
    let shown = assert_rejected(dir.path(), b"{\"snapshot\": {\"meta\": {}}, \"nodes\": [1, x]}", None);
    assert!(shown.starts_with("byte 27:") || shown.contains("expected"), "{shown}");
    // Deep nesting in skipped members is no stack overflow; too deep in `snapshot` is an error.
    let deep = format!("{{\"x\":{}{}, {}", "[".repeat(100_000), "]".repeat(100_000), &text[1..]);
    convert(
        &{
            let path = dir.path().join("deep.heapsnapshot");
            std::fs::write(&path, deep).unwrap();
            path
        },
        dir.path(),
    );
    let nested = format!("{{\"snapshot\":{{\"x\":{}1{}}}}}", "[".repeat(20), "]".repeat(20));
    assert_rejected(dir.path(), nested.as_bytes(), Some("nested no deeper"));
}

#[test]
fn node_snapshot_keeps_every_node_and_finds_the_map_and_the_closure() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = node_snapshot(dir.path());
    let start = Instant::now();
    let (output, stats) = convert(&snapshot, dir.path());
    let converted = start.elapsed();
    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let analysis = Analysis::of(&heap.graph, &Progress::hidden());
    eprintln!(
        "{}: {} bytes, {} nodes, {} edges: converted in {:.3} s, loaded and analysed in {:.3} s",
        snapshot.display(),
        std::fs::metadata(&snapshot).unwrap().len(),
        stats.nodes,
        stats.edges,
        converted.as_secs_f64(),
        (start.elapsed() - converted).as_secs_f64()
    );
    assert_eq!(heap.graph.node_count() as u64, v8_node_count(&snapshot));

    let leaked = (0..heap.graph.node_count() as u32).filter(|&v| analysis.reach.is_leaked(v)).count();
    assert_eq!(leaked, 0, "Node's snapshots hold only what the root reaches");

    let top = analysis.retention.top(12);
    let retained = |v: u32| analysis.retention.retained[v as usize];
    let described: Vec<String> = top
        .iter()
        .map(|&v| format!("{} #{} {}", heap.type_name(v), heap.graph.identity.get(v as usize), retained(v)))
        .collect();
    // 2000 Leaky instances of 16 elements each; 200000 doubles in the closure's context.
    let map = top.iter().find(|&&v| heap.type_name(v) == "Map");
    assert!(map.is_some_and(|&v| retained(v) > 2000 * 16 * 8), "no Map among {described:#?}");
    let closure = top.iter().find(|&&v| heap.type_name(v) == "(closure)");
    assert!(closure.is_some_and(|&v| retained(v) > 1_600_000), "no closure among {described:#?}");
    let leaky = (0..heap.graph.node_count() as u32).filter(|&v| heap.type_name(v) == "Leaky").count();
    assert_eq!(leaky, 2000);
}

/// memlab's `node_modules`, installed from the lock file when missing.
fn ensure_memlab() {
    if scripts().join("node_modules/@memlab/core/package.json").exists() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix"])
        .arg(scripts())
        .status()
        .unwrap_or_else(|e| panic!("npm is needed to install memlab: {e}"));
    assert!(status.success(), "npm ci --prefix tests/v8 failed");
}

#[test]
fn retained_sizes_agree_with_memlab_on_the_1000_largest() {
    ensure_memlab();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = node_snapshot(dir.path());
    let (output, _) = convert(&snapshot, dir.path());
    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let analysis = Analysis::of(&heap.graph, &Progress::hidden());

    let memlab = node("memlab-retained.js", &[snapshot.to_str().unwrap(), "1000"]);
    let (compared, differ) = compare_with_memlab(&heap, &analysis, &memlab);
    assert_eq!(compared, 1000);
    assert!(differ.is_empty(), "{} of 1000 differ:\n{}", differ.len(), differ.join("\n"));
}

/// Compares memlab's `{id, retainedSize}` lines with heapsnap's retained sizes: how many were
/// compared, and the differences.
fn compare_with_memlab(heap: &Heap<'_>, analysis: &Analysis, memlab: &str) -> (usize, Vec<String>) {
    let by_identity: HashMap<u64, u32> = heap.graph.identity.iter().enumerate().map(|(v, id)| (id, v as u32)).collect();
    let mut differ = Vec::new();
    let mut compared = 0;
    for line in memlab.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = entry["id"].as_u64().unwrap();
        let theirs = entry["retainedSize"].as_u64().unwrap();
        let v = by_identity[&id];
        let ours = analysis.retention.retained[v as usize];
        if ours != theirs {
            differ.push(format!("#{id} {}: heapsnap {ours}, memlab {theirs}", heap.type_name(v)));
        }
        compared += 1;
    }
    (compared, differ)
}

/// More nodes than 2^24 (where DevTools is said to stop): a synthetic snapshot streamed to disk,
/// whose chain starts below node 2^24 and ends above it, converted and analysed with exact results.
#[test]
fn more_than_2_pow_24_nodes_convert_with_exact_results() {
    use heapsnap::import::v8_synth::{self, FIXED_NODES, KEY_SIZE, LEAKED_SIZE, LINK_SIZE, V8SynthOptions, VALUE_SIZE};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.heapsnapshot");
    let (nodes, chain) = ((1u64 << 24) + 100_000, 200_000);
    let start = Instant::now();
    let planted = v8_synth::write(&input, V8SynthOptions { nodes, chain, seed: 3, extra_edges: false }).unwrap();
    let written = start.elapsed();
    let (output, stats) = convert(&input, dir.path());
    let converted = start.elapsed() - written;
    std::fs::remove_file(&input).unwrap();

    // The body is a tree (one edge into each node but its first); the fixed nodes have 2 + 1 + 4 +
    // 1 + 3 + 1 + 0 edges, the chain one less than its links, the cycle 3.
    let body = nodes - FIXED_NODES - chain;
    let edges = (body - 1) + (2 + 1 + 4 + 1 + 3 + 1) + (chain - 1) + 3;
    assert_eq!((stats.nodes, stats.edges, planted.edges), (nodes, edges, edges));
    // The table's two weak slots and its ephemeron edge to the value.
    assert_eq!(stats.weak_edges, 3);

    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let g = &heap.graph;
    assert_eq!((g.node_count() as u64, g.edge_count() as u64), (nodes, edges));
    let analysis = Analysis::of(g, &Progress::hidden());
    eprintln!(
        "{nodes} nodes, {} bytes: written in {:.1} s, converted in {:.1} s, loaded and analysed in {:.1} s",
        planted.bytes,
        written.as_secs_f64(),
        converted.as_secs_f64(),
        (start.elapsed() - written - converted).as_secs_f64()
    );

    let (head, tail) = (planted.chain_head as u32, planted.chain_tail as u32);
    assert!(u64::from(head) < 1 << 24 && u64::from(tail) > 1 << 24);
    let last = (nodes - 1) as u32;
    assert_eq!(g.identity.get(last as usize), v8_synth::node_id(nodes - 1));
    assert_eq!((heap.type_name(last), heap.type_name(tail)), ("LeakedCycle".into(), "ChainLink".into()));
    let retained = &analysis.retention.retained;
    assert_eq!(retained[head as usize], chain * LINK_SIZE);
    assert_eq!(retained[tail as usize], LINK_SIZE);
    assert_eq!(retained[(tail - 100_000) as usize], 100_001 * LINK_SIZE);

    // The WeakMap: its key retains the value, its table does not.
    let (table, key, value) = (planted.weakmap_table as u32, planted.weakmap_key as u32, planted.weakmap_value);
    assert_eq!(retained[key as usize], KEY_SIZE + VALUE_SIZE);
    assert_eq!(retained[table as usize], g.size.get(table as usize));
    assert_eq!(analysis.retention.idom[value as usize], key);

    // The one leak: the cycle of three, beyond 2^24.
    let leaked: Vec<u64> = (0..nodes as u32).filter(|&v| analysis.reach.is_leaked(v)).map(u64::from).collect();
    assert_eq!(leaked, planted.leaked);
    assert_eq!(analysis.leaks.groups.len(), 1);
    assert_eq!((analysis.leaks.groups[0].bytes, analysis.leaks.groups[0].cycle), (3 * LEAKED_SIZE, true));
    // The root retains everything else.
    let total: u64 = g.size.iter().sum();
    assert_eq!(retained[0], total - 3 * LEAKED_SIZE);
}

/// V8's ephemeron edges in a snapshot, read with serde_json (independently of the converter): for
/// each `N / part of key (K @k) -> value (V @v) pair in WeakMap (table @t)` internal edge, its
/// source, target, and whether the source is the table (the node whose id is t).
struct Ephemeron {
    from: u32,
    to: u32,
    from_table: bool,
    name: String,
}

/// The snapshot as JSON, and its ephemeron edges with each one's position in `edges`.
fn ephemerons(path: &Path) -> (serde_json::Value, Vec<(usize, Ephemeron)>) {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let meta = &value["snapshot"]["meta"];
    let field = |list: &str, name: &str| {
        meta[list].as_array().unwrap().iter().position(|f| f == name).unwrap_or_else(|| panic!("no {name}"))
    };
    let (node_width, edge_width) = (meta["node_fields"].as_array().unwrap().len(), 3);
    let (id_at, edges_at) = (field("node_fields", "id"), field("node_fields", "edge_count"));
    let (type_at, name_at, to_at) =
        (field("edge_fields", "type"), field("edge_fields", "name_or_index"), field("edge_fields", "to_node"));
    let internal = meta["edge_types"][0].as_array().unwrap().iter().position(|t| t == "internal").unwrap() as u64;
    let nodes: Vec<u64> = value["nodes"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    let edges: Vec<u64> = value["edges"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    let strings = value["strings"].as_array().unwrap();
    let mut found = Vec::new();
    let mut e = 0;
    for (from, node) in nodes.chunks(node_width).enumerate() {
        for _ in 0..node[edges_at] {
            let edge = &edges[e..e + edge_width];
            let name = strings[edge[name_at] as usize].as_str().unwrap_or("");
            if edge[type_at] == internal && name.contains(" / part of key (") {
                let table: u64 =
                    name.rsplit_once("pair in WeakMap (table @").unwrap().1.trim_end_matches(')').parse().unwrap();
                let (to, from_table) = ((edge[to_at] as usize / node_width) as u32, node[id_at] == table);
                found.push((e, Ephemeron { from: from as u32, to, from_table, name: name.to_string() }));
            }
            e += edge_width;
        }
    }
    (value, found)
}

/// DevTools does not let a WeakMap's table retain its values; memlab 2.0.5 does. On a Node snapshot
/// of WeakMaps (`tests/v8/make-weakmap.js`): each value is retained by its key, never by the table
/// (checked against V8's ephemeron edge names); and heapsnap agrees with memlab on the 1000 largest
/// nodes of either except exactly the nodes whose retained sizes change when the table's edges are
/// made to retain (by rewriting them as `property` edges in a copy of the snapshot).
#[test]
fn weakmap_values_are_retained_by_their_keys_not_by_the_table() {
    ensure_memlab();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("weakmap.heapsnapshot");
    node("make-weakmap.js", &[snapshot.to_str().unwrap()]);
    let (mut json, found) = ephemerons(&snapshot);
    // Node's own WeakMaps have entries too (empty slots: the hole as key and value); ours are the
    // WMKey ones. The dead keys' entries were collected with their values before the snapshot.
    assert!(!found.iter().any(|(_, e)| e.name.contains("WMDead")));
    let ours = found.iter().map(|(_, e)| e).filter(|e| e.name.contains("part of key (WMKey @"));
    let (from_table, from_key): (Vec<_>, Vec<_>) = ours.partition(|e| e.from_table);
    // 40 live entries, each with an edge from the key and one from the table.
    assert_eq!((from_key.len(), from_table.len()), (40, 40));
    assert!(from_key.iter().chain(&from_table).all(|e| e.name.contains("-> value (WMValue @")));

    let (output, _) = convert(&snapshot, dir.path());
    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let g = &heap.graph;
    let analysis = Analysis::of(g, &Progress::hidden());
    let retention = &analysis.retention;
    let kind = |from: u32, to: u32| g.edges(from).find(|&(t, _)| t == to).map(|(_, k)| k);
    for e in &from_table {
        assert_eq!(kind(e.from, e.to), Some(EdgeKind::Weak), "{}", e.name);
    }
    for e in &from_key {
        assert_eq!((heap.type_name(e.from), heap.type_name(e.to)), ("WMKey".into(), "WMValue".into()));
        assert_eq!(kind(e.from, e.to), Some(EdgeKind::Strong), "{}", e.name);
        // The key is the value's only essential retainer: it dominates it and retains it.
        assert_eq!(retention.idom[e.to as usize], e.from, "{}", e.name);
        let (key, value) = (e.from as usize, e.to as usize);
        assert_eq!(retention.retained[key], g.size.get(key) + retention.retained[value]);
        assert!(retention.retained[value] > 4000 * 8, "the value holds 4000 doubles");
    }

    // The same snapshot with the table's ephemeron edges made `property` edges: memlab's rule.
    let property = json["snapshot"]["meta"]["edge_types"][0].as_array().unwrap().iter().position(|t| t == "property");
    for (at, e) in &found {
        if e.from_table {
            json["edges"][*at] = property.unwrap().into();
        }
    }
    let memlab_rule = dir.path().join("memlab-rule.heapsnapshot");
    std::fs::write(&memlab_rule, serde_json::to_vec(&json).unwrap()).unwrap();
    let rule_dir = dir.path().join("memlab-rule");
    std::fs::create_dir(&rule_dir).unwrap();
    let (output, _) = convert(&memlab_rule, &rule_dir);
    let file = SnapshotFile::open(&output).unwrap();
    let other = Heap::load(&file, &Progress::hidden()).unwrap();
    assert_eq!(other.graph.identity, g.identity);
    let with_table = Analysis::of(&other.graph, &Progress::hidden()).retention;
    for e in &from_key {
        assert_ne!(with_table.idom[e.to as usize], e.from, "with the table's edge, the key no longer dominates");
    }

    let memlab: HashMap<u64, u64> = node("memlab-retained.js", &[snapshot.to_str().unwrap(), "all"])
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            (entry["id"].as_u64().unwrap(), entry["retainedSize"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(memlab.len(), g.node_count());
    let mut theirs: Vec<(u64, u64)> = memlab.iter().map(|(&id, &size)| (size, id)).collect();
    theirs.sort_unstable_by(|a, b| b.cmp(a));
    let by_identity: HashMap<u64, u32> = g.identity.iter().enumerate().map(|(v, id)| (id, v as u32)).collect();
    let mut compared: Vec<u32> = retention.top(1000);
    compared.extend(theirs[..1000].iter().map(|&(_, id)| by_identity[&id]));
    compared.sort_unstable();
    compared.dedup();
    let memlab_of = |v: u32| memlab[&g.identity.get(v as usize)];
    let describe = |v: u32| format!("#{} {}", g.identity.get(v as usize), heap.type_name(v));
    let rule_differs: Vec<String> =
        compared.iter().filter(|&&v| with_table.retained[v as usize] != memlab_of(v)).map(|&v| describe(v)).collect();
    assert!(rule_differs.is_empty(), "with memlab's rule, these still differ: {rule_differs:#?}");
    let differ: Vec<u32> =
        compared.iter().copied().filter(|&v| retention.retained[v as usize] != memlab_of(v)).collect();
    let explained: Vec<u32> = compared
        .iter()
        .copied()
        .filter(|&v| retention.retained[v as usize] != with_table.retained[v as usize])
        .collect();
    assert_eq!(differ, explained);
    // Among them every key, which memlab credits with its own size only.
    for e in &from_key {
        assert!(differ.contains(&e.from), "{} is not among the differences", describe(e.from));
        assert_eq!(memlab_of(e.from), g.size.get(e.from as usize));
    }
    eprintln!("{} nodes compared with memlab, {} differ, all by the WeakMap rule", compared.len(), differ.len());
}

/// memlab reads the synthetic writer's snapshots, and its retained sizes equal heapsnap's on the
/// 1000 largest nodes of either except two: the WeakMap's key, which retains the value for DevTools
/// and heapsnap but not for memlab, and the root, under which memlab hangs the leaked cycle.
#[test]
fn synthetic_snapshots_agree_with_memlab_except_the_weakmap_key_and_the_root() {
    use heapsnap::import::v8_synth::{self, KEY_SIZE, LEAKED_SIZE, V8SynthOptions, VALUE_SIZE};
    ensure_memlab();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("synthetic.heapsnapshot");
    let options = V8SynthOptions { nodes: 30_000, chain: 500, seed: 5, extra_edges: true };
    let planted = v8_synth::write(&snapshot, options).unwrap();
    let (output, stats) = convert(&snapshot, dir.path());
    assert_eq!((stats.nodes, stats.edges), (planted.nodes, planted.edges));
    let file = SnapshotFile::open(&output).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let g = &heap.graph;
    let analysis = Analysis::of(g, &Progress::hidden());
    let retained = &analysis.retention.retained;

    let memlab: HashMap<u64, u64> = node("memlab-retained.js", &[snapshot.to_str().unwrap(), "all"])
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            (entry["id"].as_u64().unwrap(), entry["retainedSize"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(memlab.len() as u64, planted.nodes);
    let mut theirs: Vec<(u64, u64)> = memlab.iter().map(|(&id, &size)| (size, id)).collect();
    theirs.sort_unstable_by(|a, b| b.cmp(a));
    let mut compared: Vec<u32> = analysis.retention.top(1000);
    compared.extend(theirs[..1000].iter().map(|&(_, id)| ((id - 1) / 2) as u32));
    compared.sort_unstable();
    compared.dedup();
    // The leaked cycle is its own group for heapsnap.
    compared.retain(|&v| !analysis.reach.is_leaked(v));
    let differ: Vec<u32> =
        compared.iter().copied().filter(|&v| retained[v as usize] != memlab[&g.identity.get(v as usize)]).collect();
    let key = planted.weakmap_key as u32;
    assert_eq!(differ, [0, key]);
    // The root: memlab's counts the cycle it hangs under it.
    assert_eq!(memlab[&g.identity.get(0)], retained[0] + 3 * LEAKED_SIZE);
    assert_eq!((retained[key as usize], memlab[&v8_synth::node_id(key.into())]), (KEY_SIZE + VALUE_SIZE, KEY_SIZE));
    let head = planted.chain_head as usize;
    assert_eq!(memlab[&g.identity.get(head)], retained[head]);
}

/// The graph a conversion builds as it writes is the one decoding the written file gives.
#[test]
fn the_graph_built_while_converting_is_the_graph_of_the_file() {
    use heapsnap::graph::Graph;
    use heapsnap::import::v8_synth::{self, V8SynthOptions};
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("synthetic.heapsnapshot");
    v8_synth::write(&snapshot, V8SynthOptions { nodes: 20_000, chain: 300, seed: 9, extra_edges: true }).unwrap();
    for input in [tiny(), snapshot] {
        let opened = open_any(&input, &Progress::hidden()).unwrap();
        let built = opened.take_graph().expect("a conversion builds the graph");
        assert!(opened.take_graph().is_none(), "taken once; later loads decode the file");
        let snap = hsnap::Snapshot::parse(opened.file.bytes()).unwrap();
        let decoded = Graph::load(&snap, &Progress::hidden()).unwrap();
        let n = decoded.node_count();
        assert_eq!((built.node_count(), built.edge_count()), (n, decoded.edge_count()));
        assert_eq!(
            (&built.identity, &built.address, &built.size),
            (&decoded.identity, &decoded.address, &decoded.size)
        );
        assert_eq!((&built.type_id, &built.stack, &built.flags), (&decoded.type_id, &decoded.stack, &decoded.flags));
        assert_eq!(built.roots(), decoded.roots());
        for v in 0..n as u32 {
            assert_eq!(built.edges(v).collect::<Vec<_>>(), decoded.edges(v).collect::<Vec<_>>(), "node {v}");
        }
        assert!(built.edges(0).count() > 0 && (0..n as u32).any(|v| built.edges(v).any(|(_, k)| k == EdgeKind::Weak)));
    }
}
