mod common;

use hsnap::{Edge, EdgeKind, Frame, Label, Node, Root, RootKind, Snapshot, Writer};

/// The two-block cycle of the specification's worked example.
fn two_cycle(buf: &mut [u8]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), buf).unwrap();
    let name = w.string(b"node").unwrap();
    let ty = w.type_(name).unwrap();
    let a = w.node(&Node { identity: 1, address: 0x1000, size: 16, type_id: ty, ..Node::default() }).unwrap();
    let b = w.node(&Node { identity: 2, address: 0x1010, size: 16, type_id: ty, ..Node::default() }).unwrap();
    let strong = |to| Edge { to, kind: EdgeKind::Strong, label: Label::None };
    w.edges(a, &[strong(b)]).unwrap();
    w.edges(b, &[strong(a)]).unwrap();
    w.finish().unwrap()
}

#[test]
fn worked_example_matches_the_specification_and_the_fixture() {
    let bytes = two_cycle(&mut [0u8; 4096]);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" ");
    // The listing in formats/hsnap.md, section 6, without the CRCs.
    assert_eq!(hex(&bytes[..16]), "89 48 53 4E 41 50 0D 0A 01 00 00 00 00 00 00 00");
    assert_eq!(hex(&bytes[16..29]), "53 54 52 53 05 00 00 00 04 6E 6F 64 65");
    assert_eq!(hex(&bytes[33..42]), "54 59 50 45 01 00 00 00 01");
    assert_eq!(hex(&bytes[46..67]), "4E 4F 44 45 0D 00 00 00 02 80 40 10 00 00 00 02 20 10 00 00 00");
    assert_eq!(hex(&bytes[71..85]), "45 44 47 45 06 00 00 00 00 01 10 02 01 08");
    assert_eq!(hex(&bytes[89..105]), "44 4F 4E 45 08 00 00 00 01 01 00 00 00 02 02 00");
    assert_eq!(bytes.len(), 109);
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/two-cycle.hsnap")).unwrap();
    assert_eq!(bytes, fixture, "fixtures/two-cycle.hsnap is the worked example");
}

#[test]
fn everything_written_reads_back() {
    let mut buf = [0u8; 300];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    w.meta(b"producer", b"test").unwrap();
    let long_arg = vec![b'x'; 5000];
    w.meta(b"process.arg", &long_arg).unwrap();
    let s_path = w.string(b"/usr/lib/libc.so.6").unwrap();
    let s_fn = w.string(b"make_list").unwrap();
    let s_file = w.string(b"list.c").unwrap();
    let s_next = w.string(b"next").unwrap();
    let big = w.string(&vec![b'y'; 1000]).unwrap();
    let ty_list = w.type_(s_fn).unwrap();
    let ty_big = w.type_(big).unwrap();
    let m = w
        .module(s_path, &[0xab; 20], 0x7f00_0000_0000, &[(0x7f00_0000_0000, 0x1000), (0x7f00_0000_2000, 0x3000)])
        .unwrap();
    let f0 = w.frame_in_module(m, 0x1234).unwrap();
    let f1 = w.frame_absolute(0xdead_beef).unwrap();
    let f2 = w.frame_symbol(s_fn, s_file, 42, 7).unwrap();
    let st1 = w.stack(0, f0).unwrap();
    let st2 = w.stack(st1, f1).unwrap();
    let st3 = w.stack(st2, f2).unwrap();
    let n = 1000u32;
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = Node {
            identity: 1_000_000 - i as u64 * 3,
            address: 0x5555_0000 + (i as u64 * 48) % 7777,
            size: i as u64 % 300,
            type_id: if i % 2 == 0 { ty_list } else { ty_big },
            stack: [0, st1, st2, st3][i as usize % 4],
            flags: i % 3,
        };
        assert_eq!(w.node(&node).unwrap(), i);
        nodes.push(node);
    }
    let mut edges = Vec::new();
    for from in (0..n).rev().step_by(7) {
        let list: Vec<Edge> = (0..(from % 90))
            .map(|k| Edge {
                to: (from * 31 + k * 17) % n,
                kind: [EdgeKind::Strong, EdgeKind::Weak, EdgeKind::Interior][k as usize % 3],
                label: [Label::None, Label::Name(s_next), Label::Index(k as u64), Label::Offset(1 << 40)]
                    [k as usize % 4],
            })
            .collect();
        w.edges(from, &list).unwrap();
        edges.extend(list.into_iter().map(|e| (from, e)));
    }
    w.root(&Root { node: 5, kind: RootKind::Global, interior: false, name: s_next }).unwrap();
    w.root(&Root { node: 6, kind: RootKind::Register, interior: true, name: 0 }).unwrap();
    let bytes = w.finish().unwrap();

    let snap = Snapshot::parse(&bytes).unwrap();
    assert_eq!(snap.meta_value("producer"), Some(&b"test"[..]));
    assert_eq!(snap.meta()[1].1, &long_arg[..]);
    assert_eq!(snap.type_name(ty_big), &vec![b'y'; 1000][..]);
    assert_eq!(snap.modules()[0].ranges, vec![(0x7f00_0000_0000, 0x1000), (0x7f00_0000_2000, 0x3000)]);
    assert_eq!(snap.modules()[0].build_id, &[0xab; 20]);
    assert_eq!(snap.stack_frames(st3).collect::<Vec<_>>(), vec![f2, f1, f0]);
    assert_eq!(snap.frame(f2), Some(Frame::Symbol { function: s_fn, file: s_file, line: 42, column: 7 }));
    let read_nodes: Vec<Node> = snap.nodes().collect::<Result<_, _>>().unwrap();
    assert_eq!(read_nodes, nodes);
    let read_edges: Vec<(u32, Edge)> = snap.edges().collect::<Result<_, _>>().unwrap();
    assert_eq!(read_edges, edges);
    assert_eq!(snap.roots().len(), 2);
    assert!(snap.roots()[1].interior);
    assert_eq!(snap.counts().edges, edges.len() as u64);
}

/// Every way of reading the whole file: what the analyzer does.
fn read_fully(bytes: &[u8]) -> Result<(), hsnap::FormatError> {
    let snap = Snapshot::parse(bytes)?;
    for node in snap.nodes() {
        node?;
    }
    for edge in snap.edges() {
        edge?;
    }
    Ok(())
}

#[test]
fn every_truncation_is_an_error_with_an_offset() {
    let bytes = two_cycle(&mut [0u8; 4096]);
    for len in 0..bytes.len() {
        let err = read_fully(&bytes[..len]).expect_err("a cut file must not read");
        assert!(err.offset <= len as u64, "offset {} beyond the cut {len}", err.offset);
    }
    read_fully(&bytes).unwrap();
}

#[test]
fn every_flipped_bit_is_caught() {
    let bytes = two_cycle(&mut [0u8; 4096]);
    for at in 0..bytes.len() {
        // The minor version and reserved field may hold anything.
        if (10..16).contains(&at) {
            continue;
        }
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[at] ^= 1 << bit;
            assert!(read_fully(&bad).is_err(), "flip of bit {bit} at byte {at} went unnoticed");
        }
    }
}

#[test]
fn a_dropped_chunk_is_caught_by_the_counts() {
    let bytes = two_cycle(&mut [0u8; 4096]);
    // Remove the EDGE chunk (bytes 71..89): every remaining CRC is still right.
    let mut cut = bytes[..71].to_vec();
    cut.extend_from_slice(&bytes[89..]);
    let err = read_fully(&cut).unwrap_err();
    assert!(err.what.contains("edges"), "{err}");
}

#[test]
fn unknown_ancillary_chunks_are_skipped_and_critical_ones_rejected() {
    let bytes = two_cycle(&mut [0u8; 4096]);
    let with_chunk = |tag: &[u8; 4]| {
        let mut chunk = tag.to_vec();
        chunk.extend_from_slice(&3u32.to_le_bytes());
        chunk.extend_from_slice(b"abc");
        let crc = common::crc32(&chunk);
        chunk.extend_from_slice(&crc.to_le_bytes());
        let mut out = bytes[..16].to_vec();
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&bytes[16..]);
        out
    };
    read_fully(&with_chunk(b"xtra")).unwrap();
    let err = read_fully(&with_chunk(b"XTRA")).unwrap_err();
    assert_eq!(err.offset, 16);
    assert!(err.what.contains("unknown critical chunk XTRA"), "{err}");
}

#[test]
fn allocation_records_read_back_and_are_checked() {
    let write = |nodes: u32, records: &[(u32, u64, u64)]| {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
        for i in 0..nodes {
            w.node(&Node { identity: i as u64 + 1, size: 8, ..Node::default() }).unwrap();
        }
        for &(node, usable, thread) in records {
            w.allocation(node, usable, thread).unwrap();
        }
        w.finish().unwrap()
    };
    let records = [(0, 24, 4242), (3, 40, 4243), (1000, 8, 0)];
    let bytes = write(1001, &records);
    let snap = Snapshot::parse(&bytes).unwrap();
    let read: Vec<(u32, u64, u64)> = snap.allocations().iter().map(|a| (a.node, a.usable, a.thread)).collect();
    assert_eq!(read, records);
    assert_eq!(snap.allocation(3).map(|a| a.thread), Some(4243));
    assert_eq!(snap.allocation(2), None);

    // A record for a node the file does not have is an error with its offset.
    let bytes = write(2, &[(5, 8, 1)]);
    let err = Snapshot::parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("aloc node index 5 out of range"), "{err}");
    // The writer keeps the records in node order.
    let mut buf = [0u8; 256];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    w.allocation(4, 8, 1).unwrap();
    assert!(w.allocation(4, 8, 1).is_err());
}
