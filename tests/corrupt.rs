//! Damaged snapshots: every fixture under `fixtures/corrupt/` makes every command exit with status 2
//! and say which file, which byte and what was wrong; random damage never panics.
//! `HEAPSNAP_BLESS=1 cargo test --test corrupt` rebuilds the fixtures from `fixtures/example.hsnap`.

mod common;

use common::heapsnap;

use std::path::{Path, PathBuf};

use heapsnap::analysis::Analysis;
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use heapsnap::report::Report;
use hsnap::{Edge, EdgeKind, Label, Node, Writer};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

const EXAMPLE: &str = "fixtures/example.hsnap";

/// The chunks of a snapshot: (offset, tag, payload).
fn chunks(bytes: &[u8]) -> Vec<(usize, [u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at < bytes.len() {
        let tag: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, tag, bytes[at + 8..at + 8 + len].to_vec()));
        at += 12 + len;
    }
    out
}

/// Reassembles a snapshot from a header and chunks, with correct CRCs.
fn assemble(header: &[u8], chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut out = header.to_vec();
    for (tag, payload) in chunks {
        let start = out.len();
        out.extend_from_slice(tag);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

fn recrc(bytes: &[u8], edit: impl FnOnce(&mut Vec<([u8; 4], Vec<u8>)>)) -> Vec<u8> {
    let mut list: Vec<([u8; 4], Vec<u8>)> = chunks(bytes).into_iter().map(|(_, t, p)| (t, p)).collect();
    edit(&mut list);
    assemble(&bytes[..16], &list)
}

fn written(fill: impl FnOnce(&mut Writer<'_, Vec<u8>>) -> std::io::Result<()>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    fill(&mut w).unwrap();
    w.finish().unwrap()
}

fn node(type_id: u32) -> Node {
    Node { identity: 1, address: 0x10, size: 8, type_id, stack: 0, flags: 0 }
}

/// Each damaged file, and what the error must say (offsets checked by hand against the bytes).
fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let example = std::fs::read(EXAMPLE).unwrap();
    let c = chunks(&example);
    let offset_of = |tag: &[u8; 4]| c.iter().find(|(_, t, _)| t == tag).unwrap().0;
    let node_at = offset_of(b"NODE");
    let done_at = offset_of(b"DONE");
    let mut bad_crc = example.clone();
    bad_crc[node_at + 10] ^= 0x40;
    let mut future = example.clone();
    future[8] = 2;
    let mut trailing = example.clone();
    trailing.extend_from_slice(b"junk");
    let one_type = |w: &mut Writer<'_, Vec<u8>>| {
        let s = w.string(b"t")?;
        w.type_(s).map(drop)
    };
    vec![
        ("empty.hsnap", Vec::new(), "byte 0: not an .hsnap snapshot"),
        // Looks like a V8 snapshot, so the V8 reader says what it lacks.
        ("json.hsnap", b"{\"snapshot\": {}}\n".to_vec(), "byte 13: expected `snapshot.meta`"),
        ("header-only.hsnap", example[..16].to_vec(), "byte 16: truncated: expected a DONE chunk"),
        ("cut-in-a-chunk.hsnap", example[..node_at + 20].to_vec(), "byte 588: truncated: chunk NODE declares 92"),
        ("no-done.hsnap", example[..done_at].to_vec(), "byte 763: truncated: expected a DONE chunk"),
        ("bad-crc.hsnap", bad_crc, "byte 588: chunk NODE is corrupt: checksum"),
        ("future-major.hsnap", future, "byte 8: format major version 2"),
        ("trailing-bytes.hsnap", trailing, "4 bytes after the DONE chunk"),
        (
            "unknown-critical-chunk.hsnap",
            recrc(&example, |l| l.insert(0, (*b"XTRA", vec![1, 2, 3]))),
            "byte 16: unknown critical chunk XTRA",
        ),
        ("dropped-chunk.hsnap", recrc(&example, |l| l.retain(|(t, _)| t != b"ROOT")), "the DONE chunk counts 3 roots"),
        (
            "count-lie.hsnap",
            recrc(&example, |l| {
                let done = l.iter_mut().find(|(t, _)| t == b"DONE").unwrap();
                done.1[5] = 0xff; // nodes: a 3-byte varint claiming about two million nodes
                done.1.splice(6..6, [0xff, 0x7f]);
            }),
            "byte 763: the DONE chunk counts 2097151 nodes and 11 edges, more than 92 bytes of node records",
        ),
        (
            "overlong-varint.hsnap",
            recrc(&example, |l| {
                let node = l.iter_mut().find(|(t, _)| t == b"NODE").unwrap();
                node.1.splice(0..1, [0xff; 11]);
            }),
            "varint longer than 64 bits",
        ),
        (
            "type-out-of-range.hsnap",
            written(|w| {
                one_type(w)?;
                w.node(&node(99)).map(drop)
            }),
            "type 99 out of range (the file has 1)",
        ),
        (
            "edge-out-of-range.hsnap",
            written(|w| {
                one_type(w)?;
                w.node(&node(0))?;
                w.edges(0, &[Edge { to: 1000, kind: EdgeKind::Strong, label: Label::None }])
            }),
            "edge target 1000 out of range (the file has 1 nodes)",
        ),
        (
            "root-out-of-range.hsnap",
            written(|w| {
                one_type(w)?;
                w.node(&node(0))?;
                w.root(&hsnap::Root { node: 7, kind: hsnap::RootKind::Global, interior: false, name: 0 })
            }),
            "root node index 7 out of range (the file has 1)",
        ),
    ]
}

fn corrupt_dir() -> PathBuf {
    PathBuf::from("fixtures/corrupt")
}

#[test]
fn fixtures_are_reproducible() {
    for (name, bytes, _) in cases() {
        let path = corrupt_dir().join(name);
        if std::env::var_os("HEAPSNAP_BLESS").is_some() {
            std::fs::create_dir_all(corrupt_dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}");
    }
}

#[test]
fn every_command_rejects_every_damaged_file_with_status_2() {
    for (name, _, expected) in cases() {
        let path = corrupt_dir().join(name);
        let path = path.to_str().unwrap();
        let commands: [&[&str]; 5] = [
            &["leaks", path],
            &["summary", path, "--format", "json"],
            &["top", path, "--by", "type"],
            &["path", path, "1"],
            &["dot", path, "1", "--backrefs"],
        ];
        for args in commands {
            let out = heapsnap(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.starts_with(&format!("heapsnap: {path}: byte ")), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: expected {expected:?} in {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert!(out.stdout.is_empty());
        }
    }
}

#[test]
fn a_missing_file_is_status_2_with_its_name() {
    let out = heapsnap(&["leaks", "no/such/file.hsnap"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("heapsnap: no/such/file.hsnap: No such file"));
}

/// Damage that keeps every CRC right reaches the record checks: whatever they let through must
/// analyse and report without panicking.
#[test]
fn random_damage_with_valid_checksums_never_panics() {
    let example = std::fs::read(EXAMPLE).unwrap();
    let mut rng = Pcg64Mcg::seed_from_u64(7);
    let (mut rejected, mut accepted) = (0, 0);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3000 {
        let damaged = recrc(&example, |list| {
            for _ in 0..rng.random_range(1..4) {
                let which = rng.random_range(0..list.len());
                let (_, payload) = &mut list[which];
                if payload.is_empty() {
                    continue;
                }
                let at = rng.random_range(0..payload.len());
                match rng.random_range(0..3) {
                    0 => payload[at] ^= 1 << rng.random_range(0..8),
                    1 => payload[at] = rng.random(),
                    _ => payload.truncate(at),
                }
            }
        });
        let path = dir.path().join(format!("d{round}.hsnap"));
        std::fs::write(&path, &damaged).unwrap();
        match load_and_report(&path) {
            Ok(()) => accepted += 1,
            Err(_) => rejected += 1,
        }
    }
    // Most damage is caught; some (a changed size or identity) is a different but valid heap.
    assert!(rejected > 1000 && accepted > 10, "rejected {rejected}, accepted {accepted}");
}

fn load_and_report(path: &Path) -> heapsnap::Result<()> {
    let file = SnapshotFile::open(path)?;
    let heap = Heap::load(&file, &Progress::hidden())?;
    let analysis = Analysis::of(&heap.graph, &Progress::hidden());
    let options = heapsnap::report::leaks::LeakOptions { limit: 10, members: true };
    heapsnap::report::leaks::LeakReport::build(&heap, &analysis, options).render(heapsnap::report::Format::Markdown);
    heapsnap::report::summary::SummaryReport::build(&heap, &analysis, 10).render(heapsnap::report::Format::Text);
    for by in [heapsnap::report::top::By::Object, heapsnap::report::top::By::Type, heapsnap::report::top::By::Site] {
        heapsnap::report::top::TopReport::build(&heap, &analysis, by, 5).render(heapsnap::report::Format::Json);
    }
    for v in 0..heap.graph.node_count() as u32 {
        heapsnap::report::path::PathReport::build(&heap, &analysis, v, 2).render(heapsnap::report::Format::Text);
        heapsnap::report::dot::dot(&heap, &analysis, v, heapsnap::report::dot::Direction::Backrefs, 2, 50);
    }
    Ok(())
}
