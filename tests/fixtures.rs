//! The fixtures under `fixtures/` are built here, and their reports are compared with the golden
//! files beside them. `HEAPSNAP_BLESS=1 cargo test --test fixtures` rewrites both; review the diff.

use std::path::{Path, PathBuf};

use heapsnap::analysis::Analysis;
use heapsnap::atomic::write_snapshot;
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use heapsnap::report::dot::{Direction, dot};
use heapsnap::report::leaks::{LeakOptions, LeakReport};
use heapsnap::report::path::PathReport;
use heapsnap::report::summary::SummaryReport;
use heapsnap::report::top::{By, TopReport};
use heapsnap::report::{Format, Report};
use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind};

/// Relative, so that reports name the file the same way in every checkout (tests run in the
/// package's directory).
fn fixtures() -> PathBuf {
    PathBuf::from("fixtures")
}

fn blessing() -> bool {
    std::env::var_os("HEAPSNAP_BLESS").is_some()
}

/// Compares `actual` with the file, or writes the file when blessing.
fn golden(name: &str, actual: &[u8]) {
    let path = fixtures().join(name);
    if blessing() {
        // Atomically: other tests may be reading the fixtures meanwhile.
        let mut temp = tempfile::NamedTempFile::new_in(fixtures()).unwrap();
        std::io::Write::write_all(&mut temp, actual).unwrap();
        temp.persist(&path).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(expected == actual, "{name} differs from the golden file; actual:\n{}", String::from_utf8_lossy(actual));
}

/// A small C server's heap: a global config, a cache list, a request on the stack, and what it
/// leaked: a session and its connection pointing at each other, with a buffer hanging off the
/// session; a lone header buffer; a block held only by a pointer into its middle.
fn write_example(path: &Path) {
    write_snapshot(path, |w| {
        w.meta(b"producer", b"heapsnap-fixtures")?;
        w.meta(b"capture", b"allocator")?;
        w.meta(b"pointer.width", b"8")?;
        w.meta(b"process.id", b"4242")?;
        w.meta(b"process.arg", b"./server")?;
        w.meta(b"process.arg", b"--port=8080")?;
        let mut s = |text: &str| w.string(text.as_bytes());
        let names = [
            "struct config",
            "char[]",
            "struct cache_entry",
            "struct request",
            "struct buffer",
            "struct session",
            "struct connection",
        ]
        .map(|n| s(n).unwrap());
        let fields =
            ["host", "logfile", "next", "body", "conn", "session", "pending", "observer"].map(|n| s(n).unwrap());
        let [host, logfile, next, body, conn, session, pending, observer] = fields;
        let sites = [
            ("main", "server.c", 88),
            ("config_load", "config.c", 31),
            ("cache_put", "cache.c", 58),
            ("request_new", "request.c", 17),
            ("buffer_new", "buffer.c", 9),
            ("session_open", "session.c", 42),
            ("conn_new", "conn.c", 25),
            ("parse_headers", "http.c", 77),
        ]
        .map(|(f, file, line)| (s(f).unwrap(), s(file).unwrap(), line));
        let g_config = s("g_config")?;
        let g_cache = s("g_cache")?;
        let types: Vec<u32> = names.iter().map(|&n| w.type_(n)).collect::<Result<_, _>>()?;
        let frames: Vec<u32> =
            sites.iter().map(|&(f, file, line)| w.frame_symbol(f, file, line, 0)).collect::<Result<_, _>>()?;
        let main = w.stack(0, frames[0])?;
        let config_load = w.stack(main, frames[1])?;
        let cache_put = w.stack(main, frames[2])?;
        let request_new = w.stack(main, frames[3])?;
        let buffer_new = w.stack(request_new, frames[4])?;
        let session_open = w.stack(main, frames[5])?;
        let conn_new = w.stack(session_open, frames[6])?;
        let parse_headers = w.stack(request_new, frames[7])?;
        // (identity, address, size, type, stack)
        let nodes = [
            (101, 0x5000, 96, 0, config_load),    // 0 config
            (102, 0x5060, 32, 1, config_load),    // 1 host string
            (103, 0x5080, 48, 1, config_load),    // 2 logfile string
            (104, 0x50b0, 40, 2, cache_put),      // 3 cache entry
            (105, 0x50e0, 40, 2, cache_put),      // 4
            (106, 0x5110, 40, 2, cache_put),      // 5
            (107, 0x5140, 64, 3, request_new),    // 6 request
            (108, 0x5180, 512, 4, buffer_new),    // 7 request body
            (109, 0x5380, 128, 5, session_open),  // 8 session (leaked)
            (110, 0x5400, 80, 6, conn_new),       // 9 connection (leaked)
            (111, 0x5460, 1024, 4, buffer_new),   // 10 pending buffer (leaked through the session)
            (112, 0x5860, 256, 4, parse_headers), // 11 header buffer (leaked alone)
            (113, 0x5960, 64, 4, buffer_new),     // 12 held only through an interior pointer
        ];
        for (identity, address, size, t, stack) in nodes {
            w.node(&Node { identity, address, size, type_id: types[t], stack, flags: 0 })?;
        }
        let e = |to, kind, label| Edge { to, kind, label };
        use EdgeKind::*;
        w.edges(
            0,
            &[e(1, Strong, Label::Name(host)), e(2, Strong, Label::Name(logfile)), e(8, Weak, Label::Name(observer))],
        )?;
        w.edges(3, &[e(4, Strong, Label::Name(next))])?;
        w.edges(4, &[e(5, Strong, Label::Name(next))])?;
        w.edges(6, &[e(7, Strong, Label::Name(body)), e(12, Interior, Label::Offset(24))])?;
        w.edges(8, &[e(9, Strong, Label::Name(conn)), e(10, Strong, Label::Name(pending))])?;
        w.edges(9, &[e(8, Strong, Label::Name(session)), e(6, Strong, Label::Offset(16))])?;
        w.root(&Root { node: 0, kind: RootKind::Global, interior: false, name: g_config })?;
        w.root(&Root { node: 3, kind: RootKind::Global, interior: false, name: g_cache })?;
        w.root(&Root { node: 6, kind: RootKind::Stack, interior: false, name: 0 })?;
        Ok(())
    })
    .unwrap();
}

/// Builds a fixture into a temporary file and checks it equals the committed one.
fn check_fixture(name: &str, write: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join(name);
    write(&built);
    golden(name, &std::fs::read(built).unwrap());
}

#[test]
fn example_fixture_is_reproducible() {
    check_fixture("example.hsnap", write_example);
}

/// Loads a fresh build of the example (the committed one may be being rewritten by a blessing
/// run), named as the committed one is, so the reports name the file the same way everywhere.
fn with_example<T>(f: impl FnOnce(&Heap<'_>, &Analysis) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("example.hsnap");
    write_example(&built);
    let file = SnapshotFile::open(&built).unwrap();
    let mut heap = Heap::load(&file, &Progress::hidden()).unwrap();
    heap.path = fixtures().join("example.hsnap");
    let analysis = Analysis::of(&heap.graph, &Progress::hidden());
    f(&heap, &analysis)
}

#[test]
fn example_reports_match_golden_files() {
    with_example(|heap, analysis| {
        let leaks = LeakReport::build(heap, analysis, LeakOptions { limit: 50, members: true });
        // The verdict, independent of any golden file: one cycle of three, one lone block.
        assert_eq!((leaks.direct.objects, leaks.direct.bytes), (2, 128 + 256));
        assert_eq!((leaks.indirect.objects, leaks.indirect.bytes), (2, 80 + 1024));
        assert_eq!((leaks.possibly.objects, leaks.possibly.bytes), (1, 64));
        assert_eq!(leaks.groups[0].members, Some(vec![109, 110, 111]));
        assert!(leaks.groups[0].cycle && !leaks.groups[1].cycle);
        assert_eq!(leaks.groups[0].site, "session_open (session.c:42)");
        for format in [Format::Text, Format::Markdown, Format::Json] {
            let ext = match format {
                Format::Text => "txt",
                Format::Markdown => "md",
                Format::Json => "json",
            };
            golden(&format!("example.leaks.{ext}"), leaks.render(format).as_bytes());
        }
        golden("example.summary.txt", SummaryReport::build(heap, analysis, 20).render(Format::Text).as_bytes());
        for by in [By::Object, By::Type, By::Site] {
            let name = format!("example.top-{by:?}.txt").to_lowercase();
            golden(&name, TopReport::build(heap, analysis, by, 10).render(Format::Text).as_bytes());
        }
        golden("example.top.json", TopReport::build(heap, analysis, By::Object, 10).render(Format::Json).as_bytes());
        let body = heap.find_node("108").unwrap();
        golden("example.path-108.txt", PathReport::build(heap, analysis, body, 3).render(Format::Text).as_bytes());
        let pending = heap.find_node("111").unwrap();
        golden("example.path-111.txt", PathReport::build(heap, analysis, pending, 3).render(Format::Text).as_bytes());
        let session = heap.find_node("0x5380").unwrap();
        golden("example.dot", dot(heap, analysis, session, Direction::Refs, 3, 100).as_bytes());
    });
}

#[test]
fn retained_sizes_of_the_example() {
    with_example(|heap, analysis| {
        let retained = |id: &str| analysis.retention.retained[heap.find_node(id).unwrap() as usize];
        // The config keeps its two strings; the weak edge to the session retains nothing.
        assert_eq!(retained("101"), 96 + 32 + 48);
        // The cache list retains down its chain.
        assert_eq!(retained("104"), 120);
        // The request retains its body and the block held only through its interior pointer.
        assert_eq!(retained("107"), 64 + 512 + 64);
        // A leader retains its group: freeing the session frees its connection and buffer; the
        // connection's pointer into the live request counts for nothing.
        assert_eq!(retained("109"), 128 + 80 + 1024);
        assert_eq!(retained("110"), 80);
        assert_eq!(retained("112"), 256);
    });
}

#[test]
fn readme_shows_the_real_output_of_its_first_command() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let output = std::fs::read_to_string(fixtures().join("example.leaks.txt")).unwrap();
    assert!(readme.contains("cargo run --release -- leaks fixtures/example.hsnap"));
    assert!(readme.contains(&output), "README's sample differs from fixtures/example.leaks.txt");
}
