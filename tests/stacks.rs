//! Allocation stacks recorded by `heapsnap record` (`tests/record/stacks.c`), checked frame by
//! frame against the program's symbol table (`nm`): each frame's module must be the program (or
//! libc, for `strdup`), and its offset must fall inside the function that made the call. The
//! program is built with `-O2`, once with `-fomit-frame-pointer` (only `.eh_frame` unwinding can
//! get past the first frame) and once with `-fno-omit-frame-pointer`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hsnap::{Frame, Snapshot};

const HEAPSNAP: &str = env!("CARGO_BIN_EXE_heapsnap");

/// The recorder library, built next to the `heapsnap` binary under test once per test process.
fn recorder() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| common::cargo_build(&["-p", "heapsnap-preload"], heapsnap::record::LIBRARY))
}

fn compile(flags: &[&str], dir: &Path) -> PathBuf {
    compile_named("stacks", "stacks", flags, dir)
}

/// Builds `tests/record/NAME.c` into `dir/OUTPUT` with `cc FLAGS`.
fn compile_named(name: &str, output: &str, flags: &[&str], dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/record").join(format!("{name}.c"));
    let exe = dir.join(output);
    let out = Command::new("cc").args(flags).arg("-o").arg(&exe).arg(&source).output().expect("cc runs");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    exe
}

/// Runs the program under `heapsnap record` with extra environment; returns the snapshot's bytes.
fn record(exe: &Path, dir: &Path, env: &[(&str, &str)]) -> Vec<u8> {
    record_with_args(exe, &[], dir, env)
}

fn record_with_args(exe: &Path, args: &[&Path], dir: &Path, env: &[(&str, &str)]) -> Vec<u8> {
    let snapshot = dir.join("out.hsnap");
    let out = Command::new(HEAPSNAP)
        .args(["--quiet", "--no-cache", "record", "-o"])
        .arg(&snapshot)
        .arg("--")
        .arg(exe)
        .args(args)
        .env("HEAPSNAP_RECORDER", recorder())
        .envs(env.iter().copied())
        .output()
        .expect("heapsnap runs");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&snapshot).expect("snapshot written")
}

/// The program's functions: name -> (start, end) offsets, from `nm -S` (text symbols with a size).
fn symbols(exe: &Path) -> HashMap<String, (u64, u64)> {
    let out = Command::new("nm").args(["-S", "--defined-only"]).arg(exe).output().expect("nm runs");
    assert!(out.status.success());
    let mut table = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [value, size, kind, name] = fields[..]
            && kind.eq_ignore_ascii_case("t")
        {
            let value = u64::from_str_radix(value, 16).expect("hex value");
            let size = u64::from_str_radix(size, 16).expect("hex size");
            table.insert(name.to_string(), (value, value + size));
        }
    }
    table
}

/// One frame, resolved as far as the test needs: (module path, offset).
fn frames(snap: &Snapshot<'_>, stack: u32) -> Vec<(String, u64)> {
    snap.stack_frames(stack)
        .map(|f| match snap.frame(f).expect("frame exists") {
            Frame::InModule { module, offset } => {
                let m = &snap.modules()[module as usize];
                (String::from_utf8_lossy(snap.string(m.path)).into_owned(), offset)
            }
            other => (format!("{other:?}"), 0),
        })
        .collect()
}

/// The stack id of every block, by size.
fn stacks_by_size(snap: &Snapshot<'_>) -> HashMap<u64, Vec<u32>> {
    let mut by_size: HashMap<u64, Vec<u32>> = HashMap::new();
    for node in snap.nodes() {
        let node = node.expect("node decodes");
        by_size.entry(node.size).or_default().push(node.stack);
    }
    by_size
}

/// Names the function of `exe` (the program or a library) that holds a frame ("?" outside it).
fn function_of(frame: &(String, u64), exe: &Path, syms: &HashMap<String, (u64, u64)>) -> String {
    let same = |a: &Path, b: &Path| a == b || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok();
    if !same(Path::new(&frame.0), exe) {
        return "?".into();
    }
    // A return address: the call is the byte before it.
    let at = frame.1 - 1;
    syms.iter()
        .find(|&(_, &(start, end))| start <= at && at < end)
        .map_or_else(|| format!("?{at:#x}"), |(name, _)| name.clone())
}

/// The first `n` frames of the one block of `size`, as function names.
fn chain(snap: &Snapshot<'_>, size: u64, n: usize, exe: &Path, syms: &HashMap<String, (u64, u64)>) -> Vec<String> {
    let by_size = stacks_by_size(snap);
    let stacks = by_size.get(&size).unwrap_or_else(|| panic!("no block of {size} bytes"));
    let frames = frames(snap, stacks[0]);
    frames.iter().take(n).map(|f| function_of(f, exe, syms)).collect()
}

fn check_program_stacks(flags: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(flags, dir.path());
    let syms = symbols(&exe);
    let bytes = record(&exe, dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    assert_eq!(chain(&snap, 101, 4, &exe, &syms), names(&["leaf_malloc", "middle", "outer", "main"]), "{flags:?}");
    assert_eq!(chain(&snap, 133, 2, &exe, &syms), names(&["leaf_calloc", "main"]), "{flags:?}");
    assert_eq!(chain(&snap, 4001, 2, &exe, &syms), names(&["grow_it", "main"]), "{flags:?}");
    // 22 frames: malloc's caller is recurse(0), then 20 more recurse, then main.
    let mut deep = vec!["recurse"; 21];
    deep.push("main");
    assert_eq!(chain(&snap, 333, 22, &exe, &syms), names(&deep), "{flags:?}");

    // strdup: the innermost frame is in libc (strdup called malloc), its caller in dup_it.
    let by_size = stacks_by_size(&snap);
    let dup = frames(&snap, by_size[&27][0]);
    assert!(dup[0].0.contains("libc"), "strdup's frame: {dup:?}");
    assert_eq!(function_of(&dup[1], &exe, &syms), "dup_it", "{flags:?}");

    // Every stack reaches main and goes on into libc's start code: nothing is cut short.
    for size in [101, 133, 4001, 27, 333, 55, 66] {
        let all = frames(&snap, by_size[&size][0]);
        assert!(all.iter().any(|f| function_of(f, &exe, &syms) == "main"), "{size}: {all:?}");
        assert!(all.last().is_some_and(|f| f.0.contains("libc") || function_of(f, &exe, &syms) == "_start"));
    }
}

#[test]
fn stacks_resolve_without_frame_pointers() {
    check_program_stacks(&["-O2", "-g", "-fomit-frame-pointer"]);
}

#[test]
fn stacks_resolve_with_frame_pointers() {
    check_program_stacks(&["-O2", "-g", "-fno-omit-frame-pointer"]);
}

#[test]
fn identical_call_paths_share_one_stack() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(&["-O2", "-g"], dir.path());
    let syms = symbols(&exe);
    let bytes = record(&exe, dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let by_size = stacks_by_size(&snap);

    // Ten blocks from one call path: one stack id.
    let same = &by_size[&55];
    assert_eq!(same.len(), 10);
    assert!(same[0] != 0 && same.iter().all(|&s| s == same[0]), "{same:?}");
    // The sibling path differs in its two innermost frames and shares the rest: the stack of
    // shared_parent's caller is one trie node for both.
    let other = by_size[&66][0];
    assert_ne!(other, same[0]);
    let grandparent = |s: u32| snap.stack_parent(snap.stack_parent(s));
    assert_eq!(grandparent(other), grandparent(same[0]));
    let frames = frames(&snap, grandparent(other));
    assert_eq!(function_of(&frames[0], &exe, &syms), "main");
    // Parents come before children, and every stack of the file is used once per distinct path:
    // far fewer stacks than blocks' frames.
    assert!(snap.stack_count() < 100, "{} stacks", snap.stack_count());
}

#[test]
fn stacks_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(&["-O2", "-g"], dir.path());
    let bytes = record(&exe, dir.path(), &[("HEAPSNAP_STACKS", "0")]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    assert_eq!(snap.stack_count(), 0);
    assert!(stacks_by_size(&snap).values().flatten().all(|&s| s == 0));
    // The module map is still written.
    assert!(!snap.modules().is_empty());

    let bytes = record(&exe, dir.path(), &[("HEAPSNAP_STACK_DEPTH", "3")]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let by_size = stacks_by_size(&snap);
    assert_eq!(snap.stack_frames(by_size[&333][0]).count(), 3);
}

#[test]
fn module_map_names_the_program_with_its_build_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(&["-O2", "-g", "-Wl,--build-id=sha1"], dir.path());
    let bytes = record(&exe, dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let exe = std::fs::canonicalize(&exe).unwrap();
    let program = snap
        .modules()
        .iter()
        .find(|m| Path::new(&*String::from_utf8_lossy(snap.string(m.path))) == exe)
        .expect("the program is in the module map");
    // The build-id in the file on disk (readelf -n), as hex.
    let out = Command::new("readelf").arg("-n").arg(&exe).output().expect("readelf runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let on_disk = text.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).expect("a build id");
    let ours: String = program.build_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ours, on_disk.trim());
    assert!(!program.ranges.is_empty() && program.load_bias > 0);
    // Every range of the program lies at or above its load bias.
    assert!(program.ranges.iter().all(|&(start, _)| start >= program.load_bias));
}

#[test]
fn stacks_through_a_library_loaded_later_and_since_unloaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib =
        compile_named("dl_lib", "libdl_lib.so", &["-O2", "-g", "-fomit-frame-pointer", "-shared", "-fPIC"], dir.path());
    let exe = compile_named("dl_main", "dl_main", &["-O2", "-g", "-fomit-frame-pointer"], dir.path());
    let bytes = record_with_args(&exe, &[&lib], dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let by_size = stacks_by_size(&snap);
    let frames = frames(&snap, by_size[&777][0]);
    let (lib_syms, exe_syms) = (symbols(&lib), symbols(&exe));
    assert_eq!(function_of(&frames[0], &lib, &lib_syms), "lib_inner", "{frames:?}");
    assert_eq!(function_of(&frames[1], &lib, &lib_syms), "lib_leak", "{frames:?}");
    assert_eq!(function_of(&frames[2], &exe, &exe_syms), "call_into", "{frames:?}");
    assert_eq!(function_of(&frames[3], &exe, &exe_syms), "main", "{frames:?}");
}

#[test]
fn thousands_of_distinct_stacks_each_spelled_right() {
    const BLOCKS: u64 = 7000;
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile_named("many_stacks", "many_stacks", &["-O2", "-g", "-fomit-frame-pointer"], dir.path());
    let syms = symbols(&exe);
    let bytes = record(&exe, dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let by_size = stacks_by_size(&snap);
    let mut distinct = std::collections::HashSet::new();
    for i in 0..BLOCKS {
        let stack = by_size[&(16 + i)][0];
        distinct.insert(stack);
        let names: Vec<String> = frames(&snap, stack).iter().take(16).map(|f| function_of(f, &exe, &syms)).collect();
        let mut expected: Vec<&str> = (0..14).map(|k| if i >> k & 1 == 1 { "one" } else { "zero" }).collect();
        expected.extend(["zero", "main"]);
        assert_eq!(names, expected, "block {i}");
    }
    assert_eq!(distinct.len(), BLOCKS as usize);
    // The trie shares prefixes: about two nodes per stack rather than sixteen, and more than the
    // first index holds (12288), so the index has grown.
    assert!(snap.stack_count() > 12_288 && snap.stack_count() < 3 * BLOCKS as usize, "{} stacks", snap.stack_count());
}

#[test]
fn stacks_found_again_are_told_apart_by_their_outer_frames() {
    const LEVELS: usize = 12;
    const PATHS: u64 = 8;
    const BLOCKS: u64 = 6 * PATHS * 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile_named("revisited_stacks", "revisited_stacks", &["-O2", "-g", "-fomit-frame-pointer"], dir.path());
    let syms = symbols(&exe);
    let bytes = record(&exe, dir.path(), &[]);
    let snap = Snapshot::parse(&bytes).expect("snapshot parses");
    let by_size = stacks_by_size(&snap);
    let mut stack_of_path: HashMap<u64, u32> = HashMap::new();
    for n in 0..BLOCKS {
        let path = n / 3 % PATHS;
        let stack = by_size[&(16 + n)][0];
        // Innermost first: level 0 up to level LEVELS (called by main); levels LEVELS - 3,
        // LEVELS - 2 and LEVELS - 1 run in the function that bits 0, 1 and 2 of the path name.
        let expected: Vec<&str> = (0..=LEVELS)
            .map(|d| match (LEVELS - 3..LEVELS).contains(&d).then(|| path >> (d + 3 - LEVELS) & 1) {
                Some(1) => "one",
                _ => "zero",
            })
            .chain(["main"])
            .collect();
        let names: Vec<String> =
            frames(&snap, stack).iter().take(LEVELS + 2).map(|f| function_of(f, &exe, &syms)).collect();
        assert_eq!(names, expected, "block {n}, path {path}");
        assert_eq!(*stack_of_path.entry(path).or_insert(stack), stack, "block {n}, path {path}");
    }
    let distinct: std::collections::HashSet<u32> = stack_of_path.values().copied().collect();
    assert_eq!(distinct.len(), PATHS as usize);
}
