//! Offline symbolization of recorded return addresses, end to end.
//!
//! Each test compiles a small program with `gcc -g -O1` (or `g++`), finds with `objdump -d` the
//! return address after a call it knows (`strdup` from `main`, `malloc` inside an inlined function),
//! reads the binary's build id with `object`, and writes an `.hsnap` whose `MODS` point at the
//! binary (and at the test process's own libc) and whose frames are those return addresses, as a
//! recorder would write them. The reports must then name function, file and line, expand the
//! inlined call, skip the allocator plumbing when choosing the site, and fall back to
//! `module+0xoffset` with a message when the binary is missing or is another build.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use heapsnap::analysis::Analysis;
use heapsnap::heap::{Heap, SnapshotFile};
use heapsnap::progress::Progress;
use heapsnap::report::leaks::{LeakOptions, LeakReport};
use hsnap::{Node, Writer};
use object::{Object, ObjectSymbol};

const C_PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *kept[2];

static inline __attribute__((always_inline)) char *make_buffer(int n) {
    char *p = malloc(n); /* LINE:inline-malloc */
    p[0] = (char)n;
    return p;
}

int main(int argc, char **argv) {
    kept[0] = strdup(argv[0]); /* LINE:strdup */
    kept[1] = make_buffer(argc + 16); /* LINE:inline-call */
    printf("%s %d\n", kept[0], kept[1][0]);
    return 0;
}
"#;

const CPP_PROGRAM: &str = r#"#include <cstdio>

namespace shop {
struct Widget {
    int n;
    explicit Widget(int n) : n(n) {}
};

__attribute__((noinline)) Widget *make_widget(int n) {
    return new Widget(n); /* LINE:new */
}
}

int main(int argc, char **) {
    shop::Widget *w = shop::make_widget(argc); /* LINE:call */
    std::printf("%d\n", w->n);
    return 0;
}
"#;

/// The 1-based line of the source that carries `/* LINE:marker */`.
fn line_of(source: &str, marker: &str) -> u32 {
    let tag = format!("LINE:{marker} ");
    source.lines().position(|l| l.contains(&tag)).expect("marker in the source") as u32 + 1
}

fn compile(compiler: &str, source: &str, name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, source).unwrap();
    let exe = dir.join(name.split('.').next().unwrap());
    let out = Command::new(compiler)
        .args(["-g", "-O1"])
        .args(extra)
        .arg("-o")
        .arg(&exe)
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(out.status.success(), "{compiler} {name}: {}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// The address of the instruction after the first call to `callee` inside `function`: the return
/// address a stack walk would find there. Read from `objdump -d`, so it is the real instruction
/// boundary whatever the compiler emitted.
fn return_after_call(exe: &Path, function: &str, callee: &str) -> u64 {
    let out = Command::new("objdump").args(["-d", "-w", "--no-show-raw-insn"]).arg(exe).output().expect("objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("<{function}>:");
    let mut inside = false;
    let mut called = false;
    for line in text.lines() {
        if line.ends_with(':') && line.contains(" <") {
            inside = line.ends_with(&header);
            continue;
        }
        let address = line.trim_start().split(':').next().and_then(|a| u64::from_str_radix(a, 16).ok());
        if let (true, true, Some(address)) = (inside, called, address) {
            return address;
        }
        if inside
            && line.contains("call")
            && (line.contains(&format!("<{callee}@")) || line.contains(&format!("<{callee}>")))
        {
            called = true;
        }
    }
    panic!("no call to {callee} in {function} of {}:\n{text}", exe.display());
}

fn build_id(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    object::File::parse(&*data).unwrap().build_id().unwrap().expect("a build id").to_vec()
}

/// A function symbol's address in a shared library (its dynamic symbol table).
fn symbol_address(path: &Path, name: &str) -> u64 {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    file.dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.name() == Ok(name) && s.address() != 0)
        .unwrap_or_else(|| panic!("{name} in {}", path.display()))
        .address()
}

/// The C library this test process runs with.
fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with("libc.so") || f.starts_with("libc-")))
        .map(PathBuf::from)
        .expect("libc mapped")
}

/// A module of a fake snapshot.
struct Module {
    path: PathBuf,
    build_id: Vec<u8>,
    load_bias: u64,
}

/// A frame of a fake snapshot: in module `.0` at offset `.1`, or absolute when `.0` is `None`.
type RawFrame = (Option<u32>, u64);

/// Writes a snapshot of leaked blocks (no roots, no edges), one per stack; each stack is listed
/// innermost frame first.
fn write_snapshot(path: &Path, process: u32, modules: &[Module], stacks: &[Vec<RawFrame>]) {
    let mut buf = vec![0u8; 1 << 16];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    w.meta(b"capture", b"allocator").unwrap();
    w.meta(b"process.id", process.to_string().as_bytes()).unwrap();
    let type_name = w.string(b"block").unwrap();
    let type_id = w.type_(type_name).unwrap();
    for m in modules {
        let path = w.string(m.path.to_str().unwrap().as_bytes()).unwrap();
        w.module(path, &m.build_id, m.load_bias, &[(m.load_bias, 0x10_0000)]).unwrap();
    }
    let mut frames: BTreeMap<RawFrame, u32> = BTreeMap::new();
    let mut stack_ids = Vec::new();
    for stack in stacks {
        let mut parent = 0;
        for &frame in stack.iter().rev() {
            let id = match frames.get(&frame) {
                Some(&id) => id,
                None => {
                    let id = match frame {
                        (Some(module), offset) => w.frame_in_module(module, offset).unwrap(),
                        (None, address) => w.frame_absolute(address).unwrap(),
                    };
                    frames.insert(frame, id);
                    id
                }
            };
            parent = w.stack(parent, id).unwrap();
        }
        stack_ids.push(parent);
    }
    for (i, &stack) in stack_ids.iter().enumerate() {
        let node =
            Node { identity: i as u64 + 1, address: 0x1000 * (i as u64 + 1), size: 24, type_id, stack, flags: 0 };
        w.node(&node).unwrap();
    }
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

const RECORDER_OFFSET: u64 = 0x1234;

/// The C program, built once per test, with what a recorder would have seen.
struct CFixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    exe: PathBuf,
    libc: PathBuf,
    /// Return addresses in `main`: after `strdup`, after the inlined `malloc`.
    after_strdup: u64,
    after_malloc: u64,
}

impl CFixture {
    fn new(extra: &[&str]) -> CFixture {
        let dir = tempfile::tempdir().unwrap();
        let exe = compile("gcc", C_PROGRAM, "prog.c", dir.path(), extra);
        let after_strdup = return_after_call(&exe, "main", "strdup");
        let after_malloc = return_after_call(&exe, "main", "malloc");
        CFixture { dir: dir.path().to_path_buf(), _dir: dir, exe, libc: libc_path(), after_strdup, after_malloc }
    }

    fn modules(&self, exe_path: &Path, build_id: Vec<u8>, load_bias: u64) -> Vec<Module> {
        vec![
            Module { path: exe_path.to_path_buf(), build_id, load_bias },
            Module { path: self.libc.clone(), build_id: build_id_of(&self.libc), load_bias: 0x7f00_0000_0000 },
            Module {
                path: "/opt/gone/libheapsnap_recorder.so".into(),
                build_id: Vec::new(),
                load_bias: 0x7f10_0000_0000,
            },
        ]
    }

    /// Two stacks as the recorder sees them: recorder hook, libc's strdup, main; and recorder
    /// hook, main (at the inlined malloc). `_start` is an absolute address outside any module.
    fn stacks(&self, main_delta: u64) -> Vec<Vec<RawFrame>> {
        let strdup = symbol_address(&self.libc, "strdup");
        vec![
            vec![
                (Some(2), RECORDER_OFFSET),
                (Some(1), strdup + 0x10),
                (Some(0), self.after_strdup.wrapping_add(main_delta)),
                (None, 0x1000),
            ],
            vec![(Some(2), RECORDER_OFFSET), (Some(0), self.after_malloc.wrapping_add(main_delta)), (None, 0x1000)],
        ]
    }

    fn snapshot(&self, name: &str, exe_path: &Path, build_id: Vec<u8>, load_bias: u64) -> PathBuf {
        let path = self.dir.join(name);
        write_snapshot(&path, 1, &self.modules(exe_path, build_id, load_bias), &self.stacks(0));
        path
    }
}

fn build_id_of(path: &Path) -> Vec<u8> {
    build_id(path)
}

fn leaks(snapshot: &Path, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec!["--quiet", "--no-cache", "leaks", "--format", "json", snapshot.to_str().unwrap()];
    args.extend(extra);
    let out = common::heapsnap(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_slice(&out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `(site, stack)` of each leak group, by site.
fn groups(report: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let stack = g["stack"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
            (g["site"].as_str().unwrap().to_string(), stack)
        })
        .collect();
    groups.sort();
    groups
}

#[test]
fn frames_are_named_by_function_file_and_line_with_inlined_calls_expanded() {
    let c = CFixture::new(&[]);
    let snapshot = c.snapshot("ok.hsnap", &c.exe, build_id(&c.exe), 0x5555_5555_4000);
    let (strdup_line, malloc_line, call_line) =
        (line_of(C_PROGRAM, "strdup"), line_of(C_PROGRAM, "inline-malloc"), line_of(C_PROGRAM, "inline-call"));

    // The library: nothing is opened until a name is asked for.
    let file = SnapshotFile::open(&snapshot).unwrap();
    let heap = Heap::load(&file, &Progress::hidden()).unwrap();
    let analysis = Analysis::of(&heap.graph, &Progress::hidden());
    assert_eq!(heap.symbols().modules_tried(), 0, "loading and analysing open no binary");
    let report = LeakReport::build(&heap, &analysis, LeakOptions { limit: 10, members: false });
    assert_eq!(heap.symbols().modules_tried(), 3);
    assert!(
        heap.symbols().notes().iter().all(|n| n.contains("libheapsnap_recorder.so")),
        "{:?}",
        heap.symbols().notes()
    );
    let mut sites: Vec<&str> = report.groups.iter().map(|g| g.site.as_str()).collect();
    sites.sort();
    let main_site = format!("main (prog.c:{strdup_line})");
    let inline_site = format!("make_buffer (prog.c:{malloc_line})");
    assert_eq!(sites, [main_site.as_str(), inline_site.as_str()]);

    // The CLI: the full stacks, plumbing included, inlined frames expanded innermost first.
    let (json, _) = leaks(&snapshot, &[]);
    let groups = groups(&json);
    let (site, stack) = &groups[1];
    assert_eq!(site, &inline_site);
    assert_eq!(
        stack,
        &[
            format!("libheapsnap_recorder.so+{RECORDER_OFFSET:#x}"),
            inline_site.clone(),
            format!("main (prog.c:{call_line})"),
            "0x1000".to_string()
        ]
    );
    let (site, stack) = &groups[0];
    assert_eq!(site, &main_site);
    assert_eq!(stack.len(), 4, "{stack:?}");
    assert_eq!(stack[0], format!("libheapsnap_recorder.so+{RECORDER_OFFSET:#x}"));
    // libc's strdup, from its DWARF if its debug file is installed, else from its symbol table
    // (`strdup+0x10 (libc.so.6)`): plumbing either way, so not the site.
    assert!(stack[1].contains("strdup"), "{stack:?}");
    let libc_id = heapsnap::symbolize::binary::hex(&build_id(&c.libc));
    let system_debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &libc_id[..2], &libc_id[2..]);
    if Path::new(&system_debug).is_file() {
        // libc6-dbg is installed: its DWARF, found by build id, gives the file and line.
        assert!(stack[1].contains("strdup.c:"), "{stack:?}");
    } else {
        assert!(stack[1].starts_with("strdup+0x10 (libc.so"), "{stack:?}");
    }
    assert_eq!(stack[2], main_site);
    assert_eq!(stack[3], "0x1000");
}

#[test]
fn a_binary_of_another_build_is_refused_once_and_frames_fall_back_to_module_offsets() {
    let c = CFixture::new(&[]);
    let mut wrong = build_id(&c.exe);
    wrong.iter_mut().for_each(|b| *b ^= 0xff);
    let snapshot = c.snapshot("wrong.hsnap", &c.exe, wrong.clone(), 0x5555_5555_4000);
    let (json, stderr) = leaks(&snapshot, &[]);
    let refusals: Vec<&str> = stderr.lines().filter(|l| l.contains(c.exe.to_str().unwrap())).collect();
    assert_eq!(refusals.len(), 1, "one message for the module, not one per frame:\n{stderr}");
    let expected_ids = format!(
        "the file there has build id {}, the snapshot {}: another build, not used",
        heapsnap::symbolize::binary::hex(&build_id(&c.exe)),
        heapsnap::symbolize::binary::hex(&wrong)
    );
    assert!(refusals[0].contains(&expected_ids), "{stderr}");
    assert!(refusals[0].contains("shown as prog+0xOFFSET"), "{stderr}");
    let sites: Vec<String> = groups(&json).into_iter().map(|(site, _)| site).collect();
    let mut expected = vec![format!("prog+{:#x}", c.after_malloc), format!("prog+{:#x}", c.after_strdup)];
    expected.sort();
    assert_eq!(sites, expected);
}

#[test]
fn a_missing_binary_falls_back_and_is_found_again_in_a_debug_dir() {
    let c = CFixture::new(&[]);
    let moved = c.dir.join("gone").join("prog");
    let snapshot = c.snapshot("missing.hsnap", &moved, build_id(&c.exe), 0x5555_5555_4000);
    let (json, stderr) = leaks(&snapshot, &[]);
    assert!(stderr.contains(&format!("cannot symbolize {}", moved.display())), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
    let sites: Vec<String> = groups(&json).into_iter().map(|(site, _)| site).collect();
    assert!(sites.contains(&format!("prog+{:#x}", c.after_strdup)), "{sites:?}");

    // A snapshot is untrusted: a device or a FIFO as a module path is not read.
    let device = c.snapshot("device.hsnap", Path::new("/dev/zero"), build_id(&c.exe), 0x5555_5555_4000);
    let (_, stderr) = leaks(&device, &[]);
    assert!(stderr.contains("cannot symbolize /dev/zero: not a regular file"), "{stderr}");

    // The same file name with the same build id in a --debug-dir is the binary.
    let (json, stderr) = leaks(&snapshot, &["--debug-dir", c.dir.to_str().unwrap()]);
    assert!(!stderr.contains(moved.to_str().unwrap()), "{stderr}");
    let sites: Vec<String> = groups(&json).into_iter().map(|(site, _)| site).collect();
    assert!(sites.contains(&format!("main (prog.c:{})", line_of(C_PROGRAM, "strdup"))), "{sites:?}");

    // And a separate debug file under .build-id/xx/rest.debug, found through HEAPSNAP_DEBUG_PATH.
    let hex = heapsnap::symbolize::binary::hex(&build_id(&c.exe));
    let debug_root = c.dir.join("debug");
    let debug_file = debug_root.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
    std::fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    let out = Command::new("objcopy").arg("--only-keep-debug").arg(&c.exe).arg(&debug_file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_heapsnap"))
        .args(["--quiet", "--no-cache", "leaks", "--format", "json"])
        .arg(&snapshot)
        .env("HEAPSNAP_DEBUG_PATH", &debug_root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sites: Vec<String> = groups(&json).into_iter().map(|(site, _)| site).collect();
    assert!(sites.contains(&format!("main (prog.c:{})", line_of(C_PROGRAM, "strdup"))), "{sites:?}");
}

#[test]
fn site_keys_do_not_move_with_the_load_address_so_diff_matches_two_runs() {
    let c = CFixture::new(&[]);
    let id = build_id(&c.exe);
    let base = c.dir.join("base.hsnap");
    let new = c.dir.join("new.hsnap");
    let one_run = c.stacks(0);
    write_snapshot(&base, 100, &c.modules(&c.exe, id.clone(), 0x5555_5555_4000), &one_run);
    // Another run: another load bias, and the strdup leak twice.
    let mut other_run = c.stacks(0);
    other_run.push(other_run[0].clone());
    write_snapshot(&new, 200, &c.modules(&c.exe, id, 0x55aa_0000_0000), &other_run);
    let sites = |p: &Path| -> Vec<String> { groups(&leaks(p, &[]).0).into_iter().map(|(s, _)| s).collect() };
    let mut base_sites = sites(&base);
    let mut new_sites = sites(&new);
    new_sites.dedup();
    base_sites.dedup();
    assert_eq!(base_sites, new_sites);

    let diff = common::json(&[
        "--quiet",
        "--no-cache",
        "diff",
        "--format",
        "json",
        base.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(diff["matching"], "key");
    let main_site = format!("main (prog.c:{})", line_of(C_PROGRAM, "strdup"));
    let row = diff["by_site"].as_array().unwrap().iter().find(|r| r["name"] == main_site.as_str()).expect("grown site");
    assert_eq!((row["base"]["objects"].as_u64(), row["new"]["objects"].as_u64()), (Some(1), Some(2)), "{row}");
    assert_eq!(diff["by_site"].as_array().unwrap().len(), 1, "the other site did not change: {diff}");
}

#[test]
fn a_position_dependent_executable_is_read_at_its_link_addresses() {
    let c = CFixture::new(&["-no-pie"]);
    let id = build_id(&c.exe);
    let expected = format!("main (prog.c:{})", line_of(C_PROGRAM, "strdup"));
    // A recorder may give the load bias as dl_iterate_phdr does (0 for such a file, offsets are the
    // addresses) or as the base of the first mapping (offsets relative to it): both are bias + offset.
    let first_segment: u64 = 0x40_0000;
    for (bias, delta) in [(0, 0), (first_segment, first_segment.wrapping_neg())] {
        let path = c.dir.join(format!("nopie-{bias:x}.hsnap"));
        write_snapshot(&path, 1, &c.modules(&c.exe, id.clone(), bias), &c.stacks(delta));
        let sites: Vec<String> = groups(&leaks(&path, &[]).0).into_iter().map(|(s, _)| s).collect();
        assert!(sites.contains(&expected), "bias {bias:#x}: {sites:?}");
    }
}

#[test]
fn cpp_names_are_demangled_and_operator_new_is_plumbing() {
    if Command::new("g++").arg("--version").output().is_err() {
        eprintln!("g++ is not installed: C++ demangling not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = compile("g++", CPP_PROGRAM, "widget.cpp", dir.path(), &[]);
    let libstdcxx = Command::new("g++").arg("-print-file-name=libstdc++.so.6").output().unwrap();
    let libstdcxx = std::fs::canonicalize(String::from_utf8_lossy(&libstdcxx.stdout).trim()).unwrap();
    let modules = [
        Module { path: exe.clone(), build_id: build_id(&exe), load_bias: 0x5555_5555_4000 },
        Module { path: libstdcxx.clone(), build_id: build_id(&libstdcxx), load_bias: 0x7f00_0000_0000 },
    ];
    let stack = vec![
        (Some(1), symbol_address(&libstdcxx, "_Znwm") + 4),
        (Some(0), return_after_call(&exe, "_ZN4shop11make_widgetEi", "_Znwm")),
        (Some(0), return_after_call(&exe, "main", "_ZN4shop11make_widgetEi")),
    ];
    let snapshot = dir.path().join("cpp.hsnap");
    write_snapshot(&snapshot, 1, &modules, &[stack]);
    let (json, _) = leaks(&snapshot, &[]);
    let (site, stack) = &groups(&json)[0];
    assert_eq!(site, &format!("shop::make_widget(int) (widget.cpp:{})", line_of(CPP_PROGRAM, "new")));
    assert!(stack[0].starts_with("operator new(unsigned long)"), "{stack:?}");
    assert_eq!(stack[1], *site);
    assert_eq!(stack[2], format!("main (widget.cpp:{})", line_of(CPP_PROGRAM, "call")));
}

#[test]
fn suppressions_match_symbolized_functions_and_files() {
    let c = CFixture::new(&[]);
    let snapshot = c.snapshot("supp.hsnap", &c.exe, build_id(&c.exe), 0x5555_5555_4000);
    let check = |rules: &str| {
        let file = c.dir.join("rules.supp");
        std::fs::write(&file, rules).unwrap();
        let args = ["--quiet", "--no-cache", "check", snapshot.to_str().unwrap(), "--max-leaked", "0"];
        let out = common::heapsnap(&[&args[..], &["--suppressions", file.to_str().unwrap()]].concat());
        out.status.code()
    };
    assert_eq!(check("leak:type:nothing\n"), Some(1), "two leaks over a budget of 0");
    // The inlined make_buffer is a logical frame of its own; main's file is prog.c.
    assert_eq!(check("leak:function:make_buffer\nleak:function:main\n"), Some(0));
    assert_eq!(check("leak:function:make_buffer\n"), Some(1));
    assert_eq!(check("leak:file:prog.c\n"), Some(0));
}

#[test]
fn frames_a_producer_named_are_never_plumbing() {
    // A Python or V8 snapshot names its frames itself (form 2): a function called `getline` there
    // is the program's, and stays the site.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("named.hsnap");
    let mut buf = vec![0u8; 4096];
    let mut w = Writer::new(Vec::new(), &mut buf).unwrap();
    let (getline, file, main) =
        (w.string(b"getline").unwrap(), w.string(b"linecache.py").unwrap(), w.string(b"main").unwrap());
    let type_id = w.type_(main).unwrap();
    let outer = w.frame_symbol(main, file, 3, 0).unwrap();
    let inner = w.frame_symbol(getline, file, 30, 0).unwrap();
    let stack = w.stack(0, outer).unwrap();
    let stack = w.stack(stack, inner).unwrap();
    w.node(&Node { identity: 1, address: 0x10, size: 8, type_id, stack, flags: 0 }).unwrap();
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    let (json, stderr) = leaks(&path, &[]);
    assert_eq!(
        groups(&json),
        [(
            "getline (linecache.py:30)".to_string(),
            vec!["getline (linecache.py:30)".to_string(), "main (linecache.py:3)".to_string()]
        )]
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[inline(never)]
fn rust_marker_function() -> u64 {
    std::hint::black_box(42)
}

#[test]
fn rust_names_are_demangled() {
    // This test's own executable (a PIE with line tables in release builds): a return address one
    // byte into a function of it.
    let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let base = maps
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() == 6 && Path::new(f[5]) == exe && u64::from_str_radix(f[2], 16) == Ok(0))
        .map(|f| u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap())
        .expect("the executable's first mapping");
    let address = rust_marker_function as fn() -> u64 as usize as u64 + 1;
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("rust.hsnap");
    let module = Module { path: exe.clone(), build_id: build_id(&exe), load_bias: base };
    write_snapshot(&snapshot, 1, &[module], &[vec![(Some(0), address - base)]]);
    let (json, stderr) = leaks(&snapshot, &[]);
    let (site, stack) = &groups(&json)[0];
    // Inlined standard-library frames (`black_box<u64>` in core's hint.rs), if the address is in
    // one, come first in the stack and are plumbing.
    assert!(site.starts_with("symbolize::rust_marker_function (tests/symbolize.rs:"), "{site} {stack:?} {stderr}");
    assert_eq!(stack.last(), Some(site));
}

#[test]
fn without_dwarf_the_symbol_table_names_the_function() {
    // libc's own file has no DWARF; with no debug directories to search, its dynamic symbol table
    // is all there is.
    use heapsnap::symbolize::binary::{self, Location, SearchPath};
    let libc = libc_path();
    let libc_binary = binary::open(&libc, &build_id(&libc), &SearchPath::default()).unwrap();
    let strdup = symbol_address(&libc, "strdup");
    let expected = Location { function: Some("strdup".into()), offset: Some(0x10), file: None, line: 0, column: 0 };
    assert_eq!(libc_binary.locate(0x7f00_0000_0000, strdup + 0x10), [expected]);
    // The test program without DWARF is named from its .symtab (`main+0x…`); without a symbol
    // table either, nothing names it and reports fall back to `prog+0x…`.
    let c = CFixture::new(&[]);
    let stripped = c.dir.join("prog.nodebug");
    let out = Command::new("objcopy").arg("--strip-debug").arg(&c.exe).arg(&stripped).output().unwrap();
    assert!(out.status.success());
    let b = binary::open(&stripped, &build_id(&c.exe), &SearchPath::default()).unwrap();
    let main = symbol_address(&c.exe, "main");
    let located = b.locate(0x5555_5555_4000, c.after_strdup);
    assert_eq!(located.len(), 1);
    assert_eq!(located[0].function.as_deref(), Some("main"));
    assert_eq!(located[0].offset, Some(c.after_strdup - main));
    let bare = c.dir.join("prog.stripped");
    let out = Command::new("objcopy").arg("--strip-all").arg(&c.exe).arg(&bare).output().unwrap();
    assert!(out.status.success());
    let b = binary::open(&bare, &build_id(&c.exe), &SearchPath::default()).unwrap();
    assert_eq!(b.locate(0x5555_5555_4000, c.after_strdup), []);
}
