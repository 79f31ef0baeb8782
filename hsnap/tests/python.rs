//! Version 1.1's address-keyed records (`PYBT`, `PYTY`, `PYEX`): written, read back as column
//! views, and every damage the specification lists reported at its byte offset.

mod common;

use hsnap::python::{BatchColumns, BatchKind, TRAIT_REVERSED, TRAIT_SEQUENCE};
use hsnap::{Node, Snapshot, Writer};

/// Strings `name`, `tuple`, `x` (ids 1, 2, 3), types `name` and `tuple` (ids 0, 1).
fn tables(w: &mut Writer<'_, Vec<u8>>) {
    for s in [&b"name"[..], b"tuple", b"x"] {
        w.string(s).unwrap();
    }
    w.type_(1).unwrap();
    w.type_(2).unwrap();
}

/// A kind-0 batch of two sources and a leaf, every column used: source 0x100 (dense labels)
/// references 0x200 and the leaf 0x300; source 0x200 (a sparse label on its second reference)
/// references 0x300 twice.
fn objects() -> BatchColumns {
    let mut b = BatchColumns { source_bias: 2, leaf_bias: 1, ..BatchColumns::default() };
    b.push_source(0x100, 0, 56, 3, &[0x200, 0x300]);
    b.push_source(0x200, 1, 48, 5, &[0x300, 0x300]);
    b.dense_sources = vec![0];
    b.dense_labels = vec![3, 0];
    b.push_sparse(1, 1, 3);
    b.push_leaf(0x300, 0, 28, 1 << 40, 1);
    b.fit_widths();
    b
}

/// A kind-1 batch: the leaf 0x300 references 0x100.
fn references() -> BatchColumns {
    let mut b = BatchColumns { kind: 1, ..BatchColumns::default() };
    b.push_source(0x300, 0, 0, 0, &[0x100]);
    b
}

/// A kind-2 batch: more references of 0x200.
fn continuation() -> BatchColumns {
    let mut b = BatchColumns { kind: 2, ..BatchColumns::default() };
    b.push_source(0x200, 0, 0, 0, &[0x100, 0x300]);
    b
}

fn file(batches: &[BatchColumns]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::with_minor_version(Vec::new(), &mut buf, 1).unwrap();
    tables(&mut w);
    for b in batches {
        let mut record = Vec::new();
        b.encode(&mut record);
        w.python_batch(&record).unwrap();
    }
    w.python_type(1, TRAIT_SEQUENCE | TRAIT_REVERSED, 40).unwrap();
    w.python_excluded(0x999).unwrap();
    w.finish().unwrap()
}

/// The chunks of a file: (offset, tag, payload range).
fn chunks(bytes: &[u8]) -> Vec<(usize, [u8; 4], std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at + 8 <= bytes.len() {
        let tag: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, tag, at + 8..at + 8 + len));
        at += 12 + len;
    }
    out
}

/// `bytes` with every chunk's CRC recomputed: damage that only the records show.
fn recrc(mut bytes: Vec<u8>) -> Vec<u8> {
    for (at, _, payload) in chunks(&bytes) {
        let crc = common::crc32(&bytes[at..payload.end]);
        bytes[payload.end..payload.end + 4].copy_from_slice(&crc.to_le_bytes());
    }
    bytes
}

/// The payload offset of the first chunk tagged `tag`.
fn payload_of(bytes: &[u8], tag: &[u8; 4]) -> usize {
    chunks(bytes).into_iter().find(|(_, t, _)| t == tag).expect("chunk present").2.start
}

#[test]
fn batches_types_and_exclusions_read_back() {
    let bytes = file(&[objects(), references(), continuation()]);
    assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1, "minor version 1");
    let snap = Snapshot::parse(&bytes).unwrap();
    assert!(snap.is_address_keyed());
    assert_eq!(snap.version(), (1, 1));
    let c = snap.counts();
    assert_eq!((c.python_batches, c.python_types, c.python_excluded, c.nodes), (3, 1, 1, 0));
    assert_eq!(snap.nodes().count(), 0);

    let [b0, b1, b2] = snap.python_batches() else { panic!("three batches") };
    assert_eq!((b0.kind, b1.kind, b2.kind), (BatchKind::Objects, BatchKind::References, BatchKind::Continuation));
    assert_eq!((b0.source_bias, b0.leaf_bias), (2, 1));
    let all = |c: &hsnap::python::Column<'_>| c.iter().collect::<Vec<_>>();
    assert_eq!(all(&b0.source_address), [0x100, 0x200]);
    assert_eq!(all(&b0.source_type), [0, 1]);
    assert_eq!((all(&b0.source_size), b0.source_size.width()), (vec![56, 48], 4));
    assert_eq!((all(&b0.source_refcount), b0.source_refcount.width()), (vec![3, 5], 8));
    assert_eq!(all(&b0.reference_count), [2, 2]);
    assert_eq!(all(&b0.targets), [0x200, 0x300, 0x300, 0x300]);
    assert_eq!((all(&b0.dense_sources), all(&b0.dense_labels)), (vec![0], vec![3, 0]));
    assert_eq!(all(&b0.dense_targets), [0x200, 0x300], "by default, the targets the labels lie beside");
    assert_eq!((all(&b0.sparse_source), all(&b0.sparse_index), all(&b0.sparse_label)), (vec![1], vec![1], vec![3]));
    assert_eq!((all(&b0.leaf_address), all(&b0.leaf_type), all(&b0.leaf_size)), (vec![0x300], vec![0], vec![28]));
    assert_eq!((all(&b0.leaf_refcount), all(&b0.leaf_flags)), (vec![1 << 40], vec![1]));
    assert_eq!(b0.leaf_refcount.get(0), 1 << 40);
    // Offsets point into the file: the first source address is 9 bytes into the record.
    let record = payload_of(&bytes, b"PYBT") as u64;
    assert_eq!((b0.offset, b0.source_address.offset_of(0)), (record, record + 9));
    assert_eq!(u64::from_le_bytes(bytes[record as usize + 17..][..8].try_into().unwrap()), 0x200);
    assert!(b1.source_type.is_empty() && b1.source_refcount.is_empty());
    assert_eq!((all(&b1.source_address), all(&b1.targets)), (vec![0x300], vec![0x100]));
    assert!(b2.source_type.is_empty() && b2.source_size.is_empty());
    assert_eq!((all(&b2.source_address), all(&b2.targets)), (vec![0x200], vec![0x100, 0x300]));

    let [t] = snap.python_types() else { panic!("one PYTY record") };
    assert_eq!((t.type_id, t.size_floor, t.is_sequence(), t.is_reversed()), (1, 40, true, true));
    assert_eq!(snap.python_excluded(), [0x999]);
    assert_eq!(snap.strings().collect::<Vec<_>>(), [&b"name"[..], b"tuple", b"x"]);
}

#[test]
fn a_version_1_0_file_reads_as_before() {
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    w.node(&Node { identity: 1, ..Node::default() }).unwrap();
    assert!(w.python_excluded(1).is_err(), "a 1.0 writer writes no address-keyed records");
    let bytes = w.finish().unwrap();
    assert_eq!(&bytes[8..12], [1, 0, 0, 0]);
    let snap = Snapshot::parse(&bytes).unwrap();
    assert!(!snap.is_address_keyed() && snap.python_batches().is_empty());
    assert_eq!(snap.nodes().count(), 1);
}

/// Parses `bytes` and returns the error, which must lie inside the file.
fn rejected(bytes: &[u8]) -> hsnap::FormatError {
    let err = Snapshot::parse(bytes).expect_err("damaged file accepted");
    assert!(err.offset <= bytes.len() as u64, "{err} past the end");
    err
}

#[test]
fn the_version_and_the_record_kinds_are_checked() {
    let bytes = file(&[objects()]);
    // A version 1.0 header: the PYBT chunk is not allowed there.
    let mut old = bytes.clone();
    old[10] = 0;
    let err = rejected(&old);
    let pybt = payload_of(&bytes, b"PYBT") - 8;
    assert_eq!(err.offset, pybt as u64, "{err}");
    assert!(err.what.contains("need 1.1"), "{err}");

    // NODE records beside address-keyed ones: reported at the later chunk.
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::with_minor_version(Vec::new(), &mut buf, 1).unwrap();
    tables(&mut w);
    w.node(&Node::default()).unwrap();
    w.python_excluded(5).unwrap();
    let mixed = w.finish().unwrap();
    let err = rejected(&mixed);
    assert_eq!(err.offset, payload_of(&mixed, b"PYEX") as u64 - 8, "{err}");
    assert!(err.what.contains("not both"), "{err}");

    // A dropped PYEX chunk: every CRC is right, the DONE count is not.
    let (at, _, payload) = chunks(&bytes).into_iter().find(|(_, t, _)| t == b"PYEX").unwrap();
    let mut cut = bytes[..at].to_vec();
    cut.extend_from_slice(&bytes[payload.end + 4..]);
    let err = rejected(&cut);
    assert!(err.what.contains("1 PYEX records, the file holds 0"), "{err}");
    // A 1.1 DONE record with the eight counts of 1.0 only.
    let done = payload_of(&bytes, b"DONE");
    let mut short = bytes[..done - 8].to_vec();
    short.extend_from_slice(b"DONE");
    short.extend_from_slice(&8u32.to_le_bytes());
    short.extend_from_slice(&bytes[done..done + 8]);
    short.extend_from_slice(&[0; 4]);
    let err = rejected(&recrc(short));
    assert_eq!(err.offset, done as u64 + 8, "{err}");
}

/// The file of one [`objects`] batch, with `edit` applied to the record's bytes (CRCs fixed).
fn edited(edit: impl FnOnce(&mut Vec<u8>, usize)) -> Vec<u8> {
    let mut bytes = file(&[objects()]);
    let record = payload_of(&bytes, b"PYBT");
    edit(&mut bytes, record);
    recrc(bytes)
}

/// Offsets of the columns of [`objects`]'s record, from its start (header: 9 bytes).
mod at {
    pub const WIDTHS: usize = 1;
    pub const TYPES: usize = 9 + 16;
    pub const REFERENCE_COUNTS: usize = TYPES + 8 + 8 + 16;
    pub const TARGETS: usize = REFERENCE_COUNTS + 8;
    pub const DENSE_SOURCES: usize = TARGETS + 32;
    pub const DENSE_LABELS: usize = DENSE_SOURCES + 4;
    pub const DENSE_TARGETS: usize = DENSE_LABELS + 8;
    pub const SPARSE_SOURCE: usize = DENSE_TARGETS + 16;
    pub const SPARSE_INDEX: usize = SPARSE_SOURCE + 4;
    pub const SPARSE_LABEL: usize = SPARSE_INDEX + 4;
    pub const LEAF_TYPE: usize = SPARSE_LABEL + 4 + 8;
    pub const END: usize = LEAF_TYPE + 4 + 4 + 8 + 1;
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

#[test]
fn damaged_batches_are_reported_where_the_damage_is() {
    // The layout the offsets assume.
    let mut record = Vec::new();
    objects().encode(&mut record);
    assert_eq!(record.len(), at::END);

    let cases: Vec<(Vec<u8>, usize, &str)> = vec![
        (edited(|b, r| b[r] = 3), 0, "unknown PYBT kind 3"),
        (edited(|b, r| b[r + at::WIDTHS] |= 4), at::WIDTHS, "width bits 0x06"),
        (edited(|b, r| put_u32(b, r + at::REFERENCE_COUNTS, 3)), at::REFERENCE_COUNTS, "sum to 5"),
        (edited(|b, r| put_u32(b, r + at::DENSE_SOURCES, 2)), at::DENSE_SOURCES, "dense source position 2"),
        (edited(|b, r| put_u32(b, r + at::SPARSE_SOURCE, 7)), at::SPARSE_SOURCE, "sparse source position 7"),
        (edited(|b, r| put_u32(b, r + at::SPARSE_INDEX, 2)), at::SPARSE_INDEX, "index 2: source 1 has 2"),
        (edited(|b, r| put_u32(b, r + at::TYPES + 4, 2)), at::TYPES + 4, "source type 2 out of range"),
        (edited(|b, r| put_u32(b, r + at::LEAF_TYPE, 9)), at::LEAF_TYPE, "leaf type 9 out of range"),
        (edited(|b, r| put_u32(b, r + at::DENSE_LABELS, 4)), at::DENSE_LABELS, "dense label string id 4"),
        (edited(|b, r| put_u32(b, r + at::SPARSE_LABEL, 80)), at::SPARSE_LABEL, "sparse label string id 80"),
    ];
    for (bytes, offset, what) in cases {
        let err = rejected(&bytes);
        let record = payload_of(&bytes, b"PYBT");
        assert_eq!((err.offset, err.what.contains(what)), ((record + offset) as u64, true), "{err}; wanted {what}");
    }
    // Dense positions must increase.
    let mut b = objects();
    b.dense_sources = vec![1, 1];
    b.dense_labels = vec![0; 4];
    let err = rejected(&file(&[b]));
    assert!(err.what.contains("dense source position 1: expected increasing"), "{err}");
}

#[test]
fn counts_beyond_the_record_are_errors_before_any_allocation() {
    // The sources count says 2^60: far more than the record holds.
    let bytes = edited(|b, r| {
        let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10];
        let mut record = b[r..r + at::END].to_vec();
        record.splice(2..3, huge);
        b.splice(r..r + at::END, record);
        let len = (at::END + 8) as u32;
        b[r - 4..r].copy_from_slice(&len.to_le_bytes());
    });
    let err = rejected(&bytes);
    let record = payload_of(&bytes, b"PYBT");
    assert_eq!(err.offset, (record + 17) as u64, "{err}");
    assert!(err.what.contains("expected source addresses: 1152921504606846976 values of 8 bytes"), "{err}");
}

#[test]
fn every_cut_of_a_batch_is_an_error() {
    // Records cut short inside the chunk (the chunk length and CRC fixed): each column's end.
    let bytes = file(&[objects()]);
    let record = payload_of(&bytes, b"PYBT");
    for len in 1..at::END {
        let mut cut = bytes[..record + len].to_vec();
        cut.extend_from_slice(&[0; 4]);
        cut.extend_from_slice(&bytes[record + at::END + 4..]);
        cut[record - 4..record].copy_from_slice(&(len as u32).to_le_bytes());
        let err = rejected(&recrc(cut));
        assert!(err.offset >= record as u64 && err.offset <= (record + len) as u64, "cut at {len}: {err}");
    }
    // And the file cut anywhere.
    for len in 0..bytes.len() {
        let err = Snapshot::parse(&bytes[..len]).expect_err("a cut file must not read");
        assert!(err.offset <= len as u64);
    }
}

#[test]
fn every_flipped_bit_is_caught() {
    let bytes = file(&[objects(), references()]);
    for at in (0..bytes.len()).filter(|at| !(10..16).contains(at)) {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            assert!(Snapshot::parse(&bad).is_err(), "flip of bit {bit} at byte {at} went unnoticed");
        }
    }
}

#[test]
fn type_records_are_checked() {
    let with_types = |records: &[(u32, u64, u64)]| {
        let mut buf = vec![0u8; 4096];
        let mut w = Writer::with_minor_version(Vec::new(), &mut buf, 1).unwrap();
        tables(&mut w);
        for &(t, traits, floor) in records {
            w.python_type(t, traits, floor).unwrap();
        }
        w.finish().unwrap()
    };
    let ok = with_types(&[(0, 0, 32), (1, TRAIT_SEQUENCE | 8, 0)]);
    let snap = Snapshot::parse(&ok).unwrap();
    assert_eq!(snap.python_types()[1].traits, 9, "reserved bits are kept, and ignored");
    let bad = with_types(&[(0, 0, 32), (2, 0, 0)]);
    let err = rejected(&bad);
    assert_eq!(err.offset, payload_of(&bad, b"PYTY") as u64 + 3, "{err}");
    assert!(err.what.contains("PYTY type 2 out of range"), "{err}");
    let twice = with_types(&[(1, 0, 32), (1, 1, 0)]);
    let err = rejected(&twice);
    assert!(err.what.contains("a second PYTY record for type 1"), "{err}");
}
