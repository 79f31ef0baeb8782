//! `heapsnap diff` and `heapsnap check`: identity and cross-run diffs, memlab's three-snapshot
//! rule, suppressions, exit codes, and golden Markdown (`HEAPSNAP_BLESS=1` rewrites
//! `fixtures/diff/*`).

mod common;

use common::{heapsnap, json};

use std::path::{Path, PathBuf};

use heapsnap::atomic::write_snapshot;
use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind};
use serde_json::Value;

/// A small program's heap: `globals` (a root) holds a list of `items` and a cache (an array of
/// entries with the given identities); `cycles` session/connection pairs leaked as cycles.
#[derive(Clone)]
struct Model {
    pid: &'static str,
    /// Added to every identity: 0 for snapshots of one process, anything for another run.
    id_base: u64,
    addr_base: u64,
    items: u64,
    cache: Vec<u64>,
    cycles: u64,
    session_type: &'static str,
}

impl Model {
    fn new(pid: &'static str) -> Model {
        Model {
            pid,
            id_base: 0,
            addr_base: 0x10_0000,
            items: 10,
            cache: (1..=4).map(|k| 5000 + k).collect(),
            cycles: 1,
            session_type: "struct session",
        }
    }

    fn write(&self, path: &Path) {
        write_snapshot(path, |w| {
            w.meta(b"producer", b"heapsnap-tests")?;
            w.meta(b"capture", b"allocator")?;
            w.meta(b"process.id", self.pid.as_bytes())?;
            let types = ["globals", "struct item", "struct entry", self.session_type, "struct conn"]
                .map(|t| w.string(t.as_bytes()).and_then(|s| w.type_(s)).unwrap());
            let [items_f, cache_f, next_f, conn_f, session_f] =
                ["items", "cache", "next", "conn", "session"].map(|s| w.string(s.as_bytes()).unwrap());
            let sites = [
                ("main", "main.c", 5),
                ("list_push", "list.c", 10),
                ("cache_put", "vendor/cache.c", 20),
                ("session_open", "session.c", 42),
                ("conn_new", "conn.c", 7),
            ]
            .map(|(f, file, line)| {
                let (f, file) = (w.string(f.as_bytes()).unwrap(), w.string(file.as_bytes()).unwrap());
                w.frame_symbol(f, file, line, 0).unwrap()
            });
            let main = w.stack(0, sites[0])?;
            let stacks: Vec<u32> = sites[1..].iter().map(|&f| w.stack(main, f)).collect::<Result<_, _>>()?;
            let mut address = self.addr_base;
            let mut node = |w: &mut heapsnap::atomic::SnapshotWriter<'_>, id: u64, size: u64, t: usize, stack: u32| {
                let n = Node { identity: self.id_base + id, address, size, type_id: types[t], stack, flags: 0 };
                address += size + 16;
                w.node(&n)
            };
            let globals = node(w, 1, 64, 0, main)?;
            let first_item = globals + 1;
            for k in 0..self.items {
                node(w, 100 + k, 32, 1, stacks[0])?;
            }
            let first_entry = first_item + self.items as u32;
            for &id in &self.cache {
                node(w, id, 48, 2, stacks[1])?;
            }
            let first_leak = first_entry + self.cache.len() as u32;
            for k in 0..self.cycles {
                node(w, 10_000 + 2 * k, 128, 3, stacks[2])?;
                node(w, 10_001 + 2 * k, 96, 4, stacks[3])?;
            }
            let strong = |to: u32, label| Edge { to, kind: EdgeKind::Strong, label };
            let mut held = Vec::new();
            if self.items > 0 {
                held.push(strong(first_item, Label::Name(items_f)));
            }
            held.extend((0..self.cache.len() as u32).map(|i| strong(first_entry + i, Label::Index(i as u64))));
            let _ = cache_f;
            w.edges(globals, &held)?;
            for k in 1..self.items as u32 {
                w.edges(first_item + k - 1, &[strong(first_item + k, Label::Name(next_f))])?;
            }
            for k in 0..self.cycles as u32 {
                let (s, c) = (first_leak + 2 * k, first_leak + 2 * k + 1);
                w.edges(s, &[strong(c, Label::Name(conn_f))])?;
                w.edges(c, &[strong(s, Label::Name(session_f))])?;
            }
            w.root(&Root { node: globals, kind: RootKind::Global, interior: false, name: 0 })
        })
        .unwrap();
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes models to files in a fresh directory.
fn snapshots(models: &[(&str, &Model)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = models
        .iter()
        .map(|(name, m)| {
            let p = dir.path().join(name);
            m.write(&p);
            p
        })
        .collect();
    (dir, paths)
}

#[test]
fn identity_diff_of_one_process_finds_planted_growth() {
    let base = Model::new("42");
    // 25 more items, one cache entry replaced, one more leaked cycle.
    let mut new = base.clone();
    new.items = 35;
    new.cache = vec![5001, 5002, 5003, 6000];
    new.cycles = 2;
    let (_dir, p) = snapshots(&[("base.hsnap", &base), ("new.hsnap", &new)]);
    let v = json(&["diff", s(&p[0]), s(&p[1]), "--format", "json"]);
    assert_eq!(v["schema"], "heapsnap.diff/1");
    assert_eq!(v["matching"], "identity");
    assert!(v["matching_reason"].as_str().unwrap().contains("process.id 42"));
    let life = &v["lifetimes"];
    // Born: 25 items, entry 6000, one session and one connection.
    assert_eq!(life["born"]["objects"], 28);
    assert_eq!(life["born"]["bytes"], 25 * 32 + 48 + 128 + 96);
    assert_eq!(life["freed"]["objects"], 1);
    assert_eq!(life["freed"]["bytes"], 48);
    let top = &v["by_site"][0];
    assert_eq!(top["name"], "list_push (list.c:10)");
    assert_eq!(top["objects"], 25);
    assert_eq!(top["bytes"], 25 * 32);
    assert_eq!(top["retained"], 25 * 32);
    assert_eq!(top["born"]["objects"], 25);
    // The cache's entry was replaced, not added: no change in bytes, but one born.
    let cache = v["by_site"].as_array().unwrap().iter().find(|r| r["name"] == "cache_put (vendor/cache.c:20)").unwrap();
    assert_eq!((cache["bytes"].as_i64(), cache["born"]["objects"].as_u64()), (Some(0), Some(1)));
    let group = &v["leak_groups"][0];
    assert_eq!(
        (group["status"].as_str(), group["base"]["groups"].as_u64(), group["new"]["groups"].as_u64()),
        (Some("grew"), Some(1), Some(2))
    );
    assert_eq!(group["bytes"], 224);
    // The first new item is the outermost new retainer: it holds the other 24.
    assert_eq!(v["new_retainers"][0]["id"], 110);
    assert_eq!(v["new_retainers"][0]["retained"], 25 * 32);
    // Same bytes every time.
    let again = heapsnap(&["diff", s(&p[0]), s(&p[1]), "--format", "json"]);
    assert_eq!(
        serde_json::to_vec_pretty(&v).unwrap(),
        serde_json::from_slice::<Value>(&again.stdout).map(|v| serde_json::to_vec_pretty(&v).unwrap()).unwrap()
    );
}

#[test]
fn cross_run_diff_matches_by_type_and_site() {
    let base = Model::new("100");
    let mut new = Model::new("200");
    new.id_base = 1_000_000;
    new.addr_base = 0x7f00_0000;
    new.items = 14;
    let (_dir, p) = snapshots(&[("base.hsnap", &base), ("new.hsnap", &new)]);
    let v = json(&["diff", s(&p[0]), s(&p[1]), "--format", "json"]);
    assert_eq!(v["matching"], "key");
    assert!(v.get("lifetimes").is_none());
    let rows = v["by_type"].as_array().unwrap();
    // The items grew; the globals only retain more.
    assert_eq!(rows.len(), 2, "{rows:?}");
    let row = |r: &Value| {
        (r["name"].as_str().map(str::to_string), r["objects"].as_i64(), r["bytes"].as_i64(), r["retained"].as_i64())
    };
    assert_eq!(row(&rows[0]), (Some("struct item".to_string()), Some(4), Some(128), Some(128)));
    assert_eq!(row(&rows[1]), (Some("globals".to_string()), Some(0), Some(0), Some(128)));
    assert!(rows[0].get("born").is_none());
    assert_eq!(v["leak_groups"].as_array().unwrap().len(), 0);
    // Forcing identity on different runs: everything is born, nothing kept.
    let forced = json(&["diff", s(&p[0]), s(&p[1]), "--format", "json", "--by", "identity"]);
    assert_eq!(forced["lifetimes"]["kept"]["objects"], 0);
}

#[test]
fn three_snapshots_flag_the_leak_but_not_a_stable_cache() {
    // The cache holds 4 entries and replaces them all at every step; the list only grows.
    let mut m = Model::new("7");
    let mut steps = Vec::new();
    for step in 0..3u64 {
        m.items = 10 + 5 * step;
        m.cache = (1..=4).map(|k| 5000 + 10 * step + k).collect();
        steps.push(m.clone());
    }
    let (_dir, p) = snapshots(&[("a.hsnap", &steps[0]), ("b.hsnap", &steps[1]), ("c.hsnap", &steps[2])]);
    let v = json(&["diff", s(&p[0]), s(&p[1]), s(&p[2]), "--format", "json"]);
    assert_eq!(v["schema"], "heapsnap.candidates/1");
    // Items 110..=114 were born between a and b and are alive in c; no cache entry is.
    assert_eq!(v["candidates"]["objects"], 5);
    let sites = v["by_site"].as_array().unwrap();
    assert_eq!(sites.len(), 1);
    assert_eq!(sites[0]["site"], "list_push (list.c:10)");
    let paths = v["by_path"].as_array().unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0]["start"], "global root");
    assert_eq!(paths[0]["objects"], 5);
    let signature: Vec<&str> = paths[0]["signature"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(signature, ["globals", ".items → struct item", ".next → struct item"]);
    let example = paths[0]["example"].as_array().unwrap();
    assert_eq!(example.len(), 12, "globals, items 100..=110");
    assert_eq!(example.last().unwrap()["id"], 110);

    // A cache that stabilises and a list that stops growing: no candidates at all.
    let mut quiet = steps[1].clone();
    quiet.cache = (1..=4).map(|k| 7000 + k).collect();
    let (_dir2, q) = snapshots(&[("a.hsnap", &steps[0]), ("b.hsnap", &steps[1]), ("c.hsnap", &quiet)]);
    quiet.items = 10;
    let (_dir3, r) = snapshots(&[("a.hsnap", &steps[0]), ("b.hsnap", &steps[1]), ("c.hsnap", &quiet)]);
    let v = json(&["diff", s(&r[0]), s(&r[1]), s(&r[2]), "--format", "json"]);
    assert_eq!(v["candidates"]["objects"], 0, "{v}");
    let text = String::from_utf8(heapsnap(&["diff", s(&r[0]), s(&r[1]), s(&r[2])]).stdout).unwrap();
    assert!(text.contains("no leak candidates"), "{text}");
    // With the list still holding the items born between a and b, they are flagged.
    let v = json(&["diff", s(&q[0]), s(&q[1]), s(&q[2]), "--format", "json"]);
    assert_eq!(v["candidates"]["objects"], 5);
}

fn check(args: &[&str]) -> (Option<i32>, String) {
    let out = heapsnap(args);
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn check_budgets_and_exit_codes() {
    let base = Model::new("42");
    let mut new = base.clone();
    new.items = 110; // +3200 B
    let (dir, p) = snapshots(&[("base.hsnap", &base), ("new.hsnap", &new)]);
    let (snap, baseline) = (s(&p[1]), s(&p[0]));
    // Leaked: one cycle of 224 B.
    assert_eq!(check(&["check", snap, "--max-leaked", "224"]).0, Some(0));
    let (code, out) = check(&["check", snap, "--max-leaked", "223"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("biggest offender: struct session #10000"), "{out}");
    // Growth: 3200 B on 64 + 320 + 192 = 576 B reachable.
    assert_eq!(check(&["check", snap, "--baseline", baseline, "--max-growth", "4KiB"]).0, Some(0));
    let (code, out) = check(&["check", snap, "--baseline", baseline, "--max-growth", "5%"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("biggest growth: +3.12 KiB at list_push (list.c:10)"), "{out}");
    assert_eq!(check(&["check", baseline, "--baseline", baseline, "--max-growth", "0%"]).0, Some(0));
    // Bad input: exit 2 with the file and the reason.
    let (code, out) = check(&["check", snap, "--max-growth", "5%"]);
    assert_eq!((code, out.contains("--max-growth needs --baseline")), (Some(2), true), "{out}");
    assert_eq!(check(&["check", snap, "--max-leaked", "5 parsecs"]).0, Some(2));
    let (code, out) = check(&["check", "fixtures/corrupt/bad-crc.hsnap"]);
    assert_eq!((code, out.contains("bad-crc.hsnap")), (Some(2), true), "{out}");
    let bad = dir.path().join("bad.supp");
    std::fs::write(&bad, "# ok\nfun:malloc\n").unwrap();
    let (code, out) = check(&["check", snap, "--suppressions", s(&bad)]);
    assert_eq!((code, out.contains("bad.supp: line 2")), (Some(2), true), "{out}");
}

#[test]
fn suppressions_hide_known_leaks_and_unused_ones_are_reported() {
    let mut m = Model::new("1");
    m.cycles = 2;
    let (dir, p) = snapshots(&[("s.hsnap", &m)]);
    let supp = dir.path().join("known.supp");
    let report = dir.path().join("summary.md");
    for (rules, pass) in [
        ("leak:type:struct sess*\n", true),
        ("leak:function:session_?pen\n", true),
        ("leak:file:session.c\n", true),
        ("leak:session_open\n", true),
        ("# only the connection's site: the leader is the session\nleak:function:conn_new\n", false),
    ] {
        std::fs::write(&supp, format!("# known leaks\n{rules}leak:file:nothing/*\n")).unwrap();
        let out = heapsnap(&["check", s(&p[0]), "--max-leaked", "0", "--suppressions", s(&supp), "--format", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (out.status.code(), v["pass"].as_bool()),
            (Some(if pass { 0 } else { 1 }), Some(pass)),
            "{rules}: {v}"
        );
        let uses = v["suppressions"].as_array().unwrap();
        assert_eq!(uses.last().unwrap()["groups"], 0);
        if pass {
            assert_eq!(v["suppressed"]["bytes"], 448);
            assert_eq!(uses[0]["groups"], 2);
        }
    }
    // The Markdown report is appended, and names the unused suppression.
    std::fs::write(&report, "earlier step\n").unwrap();
    heapsnap(&["check", s(&p[0]), "--suppressions", s(&supp), "--report", s(&report)]);
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.starts_with("earlier step\n"));
    assert!(md.contains("Suppressions that matched nothing"), "{md}");
    assert!(md.contains("leak:file:nothing/\\*"), "{md}");
}

/// Relative, so reports name files the same way in every checkout.
fn golden(name: &str, actual: &str) {
    let path = Path::new("fixtures/diff").join(name);
    if std::env::var_os("HEAPSNAP_BLESS").is_some() {
        std::fs::create_dir_all("fixtures/diff").unwrap();
        let mut temp = tempfile::NamedTempFile::new_in("fixtures/diff").unwrap();
        std::io::Write::write_all(&mut temp, actual.as_bytes()).unwrap();
        temp.persist(&path).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(expected == actual, "{name} differs from the golden file; actual:\n{actual}");
}

#[test]
fn golden_markdown_with_hostile_names() {
    let hostile = "x|y`z<img src=x onerror=alert(1)>\"]\n```\nA[b] --> C #quot;";
    let mut base = Model::new("9");
    base.session_type = hostile;
    let mut new = base.clone();
    new.items = 13;
    new.cycles = 2;
    let dir = PathBuf::from("fixtures/diff");
    std::fs::create_dir_all(&dir).unwrap();
    // Written into a temporary directory, then the reports name them as fixtures do.
    let tmp = tempfile::tempdir().unwrap();
    let (b, n) = (tmp.path().join("base.hsnap"), tmp.path().join("new.hsnap"));
    base.write(&b);
    new.write(&n);
    let report = tmp.path().join("check.md");
    let out = heapsnap(&[
        "check",
        s(&n),
        "--baseline",
        s(&b),
        "--max-growth",
        "10%",
        "--max-leaked",
        "1KiB",
        "--report",
        s(&report),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let prefix = format!("{}/", tmp.path().display());
    let check_md = std::fs::read_to_string(&report).unwrap().replace(&prefix, "");
    let diff_md = String::from_utf8(heapsnap(&["diff", s(&b), s(&n), "--format", "markdown"]).stdout)
        .unwrap()
        .replace(&prefix, "");
    for md in [&check_md, &diff_md] {
        assert!(!md.contains("<img"), "HTML survived:\n{md}");
        for line in md.lines().filter(|l| l.starts_with('|') && !l.contains("---")) {
            assert_eq!(line.matches(" | ").count() + 2, line.matches('|').count(), "a cell holds a raw pipe: {line}");
        }
    }
    // The Mermaid block: labels quoted and escaped, the fence closed only once.
    let mermaid = check_md.split("```mermaid\n").nth(1).expect("a cycle is drawn");
    let mermaid = &mermaid[..mermaid.find("```").unwrap()];
    assert!(mermaid.contains("#quot;]") && mermaid.contains("#lt;img") && mermaid.contains("#35;quot;"), "{mermaid}");
    assert!(mermaid.lines().all(|l| l.matches('"').count() % 2 == 0), "{mermaid}");
    golden("check.md", &check_md);
    golden("diff.md", &diff_md);
}

/// The README's CI recipe, run as written on snapshots of a base and a head.
#[test]
fn ci_recipe_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("step-summary.md");
    let (base, head) = (dir.path().join("base.hsnap"), dir.path().join("head.hsnap"));
    // Same seed: the same heap, so the gate holds.
    for path in [&base, &head] {
        let out = heapsnap(&["synth", "-o", s(path), "--nodes", "2000", "--seed", "3"]);
        assert_eq!(out.status.code(), Some(0));
    }
    let gate = |head: &Path| {
        heapsnap(&["check", s(head), "--baseline", s(&base), "--max-growth", "5%", "--report", s(&summary)])
    };
    assert_eq!(gate(&head).status.code(), Some(0));
    // A head that holds 10% more.
    let grown = dir.path().join("grown.hsnap");
    heapsnap(&["synth", "-o", s(&grown), "--nodes", "2300", "--seed", "3"]);
    let out = gate(&grown);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let md = std::fs::read_to_string(&summary).unwrap();
    assert_eq!(md.matches("**heapsnap check ").count(), 2, "appended twice:\n{md}");
    assert!(md.contains("✅ **heapsnap check PASS") && md.contains("❌ **heapsnap check FAIL"));
}
