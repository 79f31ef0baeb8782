//! The `heapsnap` command as users run it: exit statuses, output shapes, the cache.

mod common;

use common::{heapsnap, json};

use std::path::Path;

use heapsnap::analysis::Analysis;
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind};
use serde_json::Value;

const EXAMPLE: &str = "fixtures/example.hsnap";

#[test]
fn leaks_exits_0_and_with_fail_1() {
    let out = heapsnap(&["leaks", EXAMPLE]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("leaked in 2 groups (1 with cycles)"), "{text}");
    // Not a terminal: no progress bars, nothing on stderr.
    assert!(out.stderr.is_empty());
    assert_eq!(heapsnap(&["leaks", EXAMPLE, "--fail"]).status.code(), Some(1));
}

#[test]
fn a_heap_without_leaks_passes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clean.hsnap");
    heapsnap::atomic::write_snapshot(&path, |w| {
        let name = w.string(b"node")?;
        let t = w.type_(name)?;
        for i in 0..3 {
            w.node(&Node { identity: i, address: 0x100 + 16 * i, size: 16, type_id: t, stack: 0, flags: 0 })?;
        }
        w.edges(0, &[Edge { to: 1, kind: EdgeKind::Strong, label: Label::None }])?;
        w.edges(1, &[Edge { to: 2, kind: EdgeKind::Strong, label: Label::None }])?;
        w.root(&Root { node: 0, kind: RootKind::Global, interior: false, name: 0 })
    })
    .unwrap();
    let out = heapsnap(&["leaks", path.to_str().unwrap(), "--fail"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no leaks"));
}

#[test]
fn leaks_json_has_the_documented_fields() {
    let v = json(&["leaks", EXAMPLE, "--format", "json", "--members"]);
    for key in ["totals", "reachable", "leaked", "direct", "indirect", "possibly"] {
        assert!(v[key]["objects"].is_u64() && v[key]["bytes"].is_u64(), "{key}");
    }
    let group = &v["groups"][0];
    for key in ["leader", "objects", "bytes", "cycle", "types", "site"] {
        assert!(!group[key].is_null(), "{key}");
    }
    assert_eq!(group["members"], serde_json::json!([109, 110, 111]));
    assert_eq!(v["leaked"]["objects"], 4);
}

#[test]
fn top_json_lists_objects_with_identity_type_and_sizes() {
    let v = json(&["top", EXAMPLE, "-n", "3", "--format", "json"]);
    let objects = v["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["id"], 107);
    assert_eq!(objects[0]["type"], "struct request");
    assert_eq!((objects[0]["shallow"].as_u64(), objects[0]["retained"].as_u64()), (Some(64), Some(640)));
    let by_type = json(&["top", EXAMPLE, "--by", "type", "--format", "json"]);
    assert_eq!(by_type["types"][0]["name"], "struct request");
}

#[test]
fn path_finds_nodes_by_identity_and_by_address() {
    let by_id = json(&["path", EXAMPLE, "108", "--format", "json"]);
    let by_address = json(&["path", EXAMPLE, "0x5190", "--format", "json"]);
    assert_eq!(by_id, by_address, "0x5190 is inside the block at 0x5180");
    let chain = &by_id["chains"][0];
    assert_eq!(chain["start"], "stack root");
    assert_eq!(chain["steps"][1]["via"]["label"], "body");
    let out = heapsnap(&["path", EXAMPLE, "999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node 999"));
}

#[test]
fn dot_draws_references_and_referrers() {
    let refs = heapsnap(&["dot", EXAMPLE, "109"]);
    let text = String::from_utf8(refs.stdout).unwrap();
    assert!(text.starts_with("digraph heapsnap {") && text.contains("n8 -> n9 [label=\"conn\"]"), "{text}");
    let back = heapsnap(&["dot", EXAMPLE, "108", "--backrefs", "--depth", "1"]);
    let text = String::from_utf8(back.stdout).unwrap();
    assert!(text.contains("n6 -> n7 [label=\"body\"]") && !text.contains("n0"), "{text}");
}

#[test]
fn bad_usage_is_status_2() {
    assert_eq!(heapsnap(&["leaks"]).status.code(), Some(2));
    assert_eq!(heapsnap(&["top", EXAMPLE, "--by", "colour"]).status.code(), Some(2));
    assert_eq!(heapsnap(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn synth_then_leaks_agree_with_the_planted_truth() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("s.hsnap");
    let truth = dir.path().join("truth.json");
    let out =
        heapsnap(&["synth", "-o", snap.to_str().unwrap(), "--nodes", "30000", "--truth", truth.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth).unwrap()).unwrap();
    let leaks = json(&["leaks", snap.to_str().unwrap(), "--format", "json", "-n", "1000"]);
    for key in ["reachable", "possibly", "leaked", "direct", "indirect"] {
        assert_eq!(leaks[key], truth[key], "{key}");
    }
    assert_eq!(leaks["groups"].as_array().unwrap().len(), truth["groups"].as_array().unwrap().len());
}

fn analyse(path: &Path, cache: bool) -> Analysis {
    let file = SnapshotFile::open(path).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    heapsnap::cache::analyze(&heap, &Progress::hidden(), cache, 0)
}

#[test]
fn the_cache_is_written_reused_and_ignored_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("example.hsnap");
    std::fs::copy(EXAMPLE, &snap).unwrap();
    let cache = heapsnap::cache::path_for(&snap);
    let fresh = analyse(&snap, false);
    assert!(!cache.exists(), "--no-cache writes nothing");
    assert_eq!(analyse(&snap, true), fresh);
    let written = std::fs::read(&cache).unwrap();
    assert!(written.len() > 8);
    // A cache that decodes and fits is used as it is: prove it by planting a different one.
    let mut planted = fresh.clone();
    planted.retention.retained[0] += 1;
    let checksum = {
        let file = SnapshotFile::open(&snap).unwrap();
        let heap = Heap::load(&file, &Progress::hidden()).unwrap();
        heapsnap::cache::store(&snap, heap.snap.checksum(), &heap.graph, &planted).unwrap();
        heap.snap.checksum()
    };
    assert_eq!(analyse(&snap, true), planted);
    // Damaged or from another snapshot: ignored and rewritten.
    std::fs::write(&cache, &written[..written.len() / 2]).unwrap();
    assert_eq!(analyse(&snap, true), fresh);
    let file = SnapshotFile::open(&snap).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    assert!(heapsnap::cache::load(&snap, checksum ^ 1, &heap.graph).is_none());
    assert_eq!(heapsnap::cache::load(&snap, checksum, &heap.graph), Some(fresh));
}

/// A target that is not a regular file (here a pipe; `/dev/null` alike) is written to, not
/// renamed over: the pipe is still a pipe afterwards, and what came through it is the snapshot.
#[test]
fn a_pipe_as_output_is_written_to_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let pipe = common::Pipe::new(dir.path().join("out.fifo"));
    let out = heapsnap(&["synth", "--nodes", "2000", "--seed", "5", "-o", pipe.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = pipe.finish();
    let snap = hsnap::Snapshot::parse(&bytes).expect("the bytes through the pipe are a snapshot");
    assert_eq!(snap.nodes().count(), 2000);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("out.fifo")], "no temporary file left");
}
