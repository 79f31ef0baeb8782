//! `heapsnap record` on small C programs (`tests/record/*.c`), compared with valgrind memcheck.
//!
//! Each program is compiled with `cc -O0 -g`, run natively, under `heapsnap record`, and under
//! `valgrind --leak-check=full`. The recorded snapshot's definitely, indirectly and possibly lost
//! amounts must equal the figures written here, and so must memcheck's LEAK SUMMARY (skipped, with a
//! note, when valgrind is not installed). The program's output and exit status must not change.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use heapsnap::progress::Progress;
use heapsnap::report::Amount;
use heapsnap::report::leaks::{LeakOptions, LeakReport};

const HEAPSNAP: &str = env!("CARGO_BIN_EXE_heapsnap");

/// Bytes and blocks: definitely, indirectly, possibly lost.
#[derive(Debug, PartialEq, Eq, Clone, Copy, Default)]
struct Lost {
    definitely: (u64, u64),
    indirectly: (u64, u64),
    possibly: (u64, u64),
}

/// The recorder library, built next to the `heapsnap` binary under test once per test process.
fn recorder() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| common::cargo_build(&["-p", "heapsnap-preload"], heapsnap::record::LIBRARY))
}

fn compile(name: &str, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/record").join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc")
        .args(["-O0", "-g", "-pthread", "-o"])
        .arg(&exe)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "cc {}: {}", source.display(), String::from_utf8_lossy(&out.stderr));
    exe
}

fn amount(a: Amount) -> (u64, u64) {
    (a.bytes, a.objects)
}

/// Runs the program natively and under `heapsnap record ARGS -o DIR/out.hsnap`; checks that its
/// output and exit status are unchanged and that `heapsnap` names the snapshots it lists; returns
/// `heapsnap`'s standard error and the snapshot paths it printed.
fn record_with(exe: &Path, dir: &Path, args: &[&str]) -> (String, Vec<PathBuf>) {
    let native = Command::new(exe).output().expect("program runs");
    let snapshot = dir.join("out.hsnap");
    let out = Command::new(HEAPSNAP)
        .args(["--quiet", "--no-cache", "record"])
        .args(args)
        .arg("-o")
        .arg(&snapshot)
        .arg("--")
        .arg(exe)
        .env("HEAPSNAP_RECORDER", recorder())
        .output()
        .expect("heapsnap runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), native.status.code(), "exit status changed: {stderr}");
    assert_eq!(out.stdout, native.stdout, "standard output changed");
    let paths: Vec<PathBuf> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("heapsnap: snapshot written to "))
        .map(|p| PathBuf::from(p.split(" (child process").next().unwrap_or(p)))
        .collect();
    assert!(stderr.contains("definitely lost") && !paths.is_empty(), "{stderr}");
    (stderr, paths)
}

/// The verdict of one snapshot, as `heapsnap leaks` computes it.
fn verdict(snapshot: &Path) -> Lost {
    common::with_heap(snapshot, |heap, analysis| {
        let report = LeakReport::build(heap, analysis, LeakOptions { limit: 100, members: false });
        Lost {
            definitely: amount(report.direct),
            indirectly: amount(report.indirect),
            possibly: amount(report.possibly),
        }
    })
}

/// Whether the (one) live block of `size` bytes has a root of `kind` pointing at its start.
fn rooted(snapshot: &Path, size: u64, kind: hsnap::RootKind) -> bool {
    common::with_heap(snapshot, |heap, _| {
        let graph = &heap.graph;
        let block = (0..graph.size.len()).find(|&n| graph.size.get(n) == size).expect("the block is live");
        heap.snap.roots().iter().any(|r| r.node as usize == block && r.kind == kind && !r.interior)
    })
}

/// Runs the program under `heapsnap record` and reads the verdict from the (one) snapshot.
fn recorded(exe: &Path, dir: &Path) -> Lost {
    let (stderr, paths) = record_with(exe, dir, &[]);
    assert_eq!(paths, [dir.join("out.hsnap")]);
    let lost = verdict(&paths[0]);
    let reachable = stderr.lines().any(|l| l.trim_start().starts_with("still reachable") && !l.contains(" 0 B "));
    assert_eq!(
        stderr.contains("by glibc's own buffers"),
        reachable,
        "the note goes with still reachable bytes: {stderr}"
    );
    lost
}

/// A snapshot's metadata value.
fn meta(snapshot: &Path, key: &str) -> Option<String> {
    let bytes = std::fs::read(snapshot).expect("snapshot reads");
    let snap = hsnap::Snapshot::parse(&bytes).expect("snapshot parses");
    snap.meta_value(key).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// memcheck's LEAK SUMMARY, or `None` when valgrind is not installed.
fn memcheck(exe: &Path) -> Option<Lost> {
    let out = Command::new("valgrind")
        .args(["--leak-check=full", "--show-leak-kinds=all", "--error-exitcode=0"])
        .arg(exe)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("All heap blocks were freed") {
        return Some(Lost::default());
    }
    let field = |label: &str| -> (u64, u64) {
        let line = text.lines().find(|l| l.contains(label)).unwrap_or_else(|| panic!("no `{label}` in:\n{text}"));
        let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.replace(',', "").parse().ok()).collect();
        // "==PID==    definitely lost: 1,234 bytes in 5 blocks" (the pid is not a bare number)
        assert_eq!(numbers.len(), 2, "cannot read `{line}`");
        (numbers[0], numbers[1])
    };
    Some(Lost {
        definitely: field("definitely lost:"),
        indirectly: field("indirectly lost:"),
        possibly: field("possibly lost:"),
    })
}

fn check(name: &str, expected: Lost) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(name, dir.path());
    agrees_with_memcheck(name, &exe, recorded(&exe, dir.path()), expected);
}

/// `ours` equals memcheck's LEAK SUMMARY for `exe` (when valgrind is installed) and `expected`.
fn agrees_with_memcheck(name: &str, exe: &Path, ours: Lost, expected: Lost) {
    match memcheck(exe) {
        Some(theirs) => assert_eq!(ours, theirs, "{name}: heapsnap (left) against memcheck (right)"),
        None => eprintln!("{name}: valgrind not found; compared with the expected figures only"),
    }
    assert_eq!(ours, expected, "{name}: heapsnap (left) against the expected figures (right)");
}

fn lost(definitely: (u64, u64), indirectly: (u64, u64), possibly: (u64, u64)) -> Lost {
    Lost { definitely, indirectly, possibly }
}

#[test]
fn dropped_list() {
    check("list", lost((16, 1), (144, 9), (0, 0)));
}

#[test]
fn dropped_ring_is_a_pure_cycle_with_one_leader() {
    check("ring", lost((24, 1), (96, 4), (0, 0)));
}

#[test]
fn tree_kept_by_a_global_and_a_detached_subtree() {
    check("tree", lost((24, 1), (48, 2), (0, 0)));
}

#[test]
fn every_allocation_function() {
    // realloc 100 + calloc 40 + strdup 11 + posix_memalign 200 + memalign 48 + aligned_alloc 256
    // + reallocarray 72
    check("apis", lost((727, 7), (0, 0), (0, 0)));
}

#[test]
fn cycle_hanging_off_a_leaked_block() {
    check("cycle_off_leak", lost((64, 2), (160, 5), (0, 0)));
}

#[test]
fn interior_pointer_from_a_global_is_possibly_lost() {
    check("interior", lost((8, 1), (0, 0), (88, 2)));
}

#[test]
fn realloc_to_zero_frees() {
    check("realloc0", lost((30, 1), (0, 0), (0, 0)));
}

#[test]
fn valloc_and_a_failed_realloc() {
    // valloc 300 + the 70-byte block that a failed realloc leaves in place
    check("page_aligned", lost((370, 2), (0, 0), (0, 0)));
}

/// memcheck (3.19) aborts the program at `pvalloc`, so this one has only its expected figures:
/// glibc rounds `pvalloc(100)` up to a page and `pvalloc(0)` to nothing (a block of no bytes).
#[test]
fn pvalloc_rounds_up_to_whole_pages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("pvalloc", dir.path());
    let page = 4096; // x86-64 Linux
    assert_eq!(recorded(&exe, dir.path()), lost((page, 2), (0, 0), (0, 0)));
}

#[test]
fn block_on_a_running_threads_stack_is_reachable() {
    // Without stopping and scanning the worker, its 100-byte block would be definitely lost.
    check("thread_stack", lost((40, 1), (0, 0), (272, 1)));
}

#[test]
fn a_thread_that_blocks_every_signal_is_stopped_all_the_same() {
    check("thread_masked", lost((40, 1), (0, 0), (272, 1)));
}

#[test]
fn block_in_a_running_threads_register_is_reachable() {
    check("thread_register", lost((24, 1), (0, 0), (272, 1)));
}

#[test]
fn blocks_in_thread_local_variables_are_reachable() {
    // The worker's DTV (glibc's, 272 + 16 bytes with the program's own TLS module) is held through
    // `dtv + 1`: possibly lost, for memcheck too.
    check("thread_tls", lost((8, 1), (0, 0), (288, 1)));
}

#[test]
fn block_in_a_register_of_the_exiting_thread_is_reachable() {
    check("exit_register", lost((16, 1), (0, 0), (0, 0)));
}

#[test]
fn leaks_made_in_worker_threads() {
    check("thread_leak", lost((64, 4), (256, 16), (0, 0)));
}

/// Each block records the thread that allocated it and its usable size (the `aloc` chunk): the four
/// workers' lists are four groups, each allocated by one worker, none by the main thread.
#[test]
fn each_block_records_its_thread_and_usable_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("thread_leak", dir.path());
    let (_, paths) = record_with(&exe, dir.path(), &[]);
    let pid: u64 = meta(&paths[0], "process.id").expect("process.id").parse().expect("a number");
    let mut threads = common::with_heap(&paths[0], |heap, analysis| {
        let report = LeakReport::build(heap, analysis, LeakOptions { limit: 100, members: true });
        let nodes = heap.graph.node_count() as u32;
        assert_eq!(heap.snap.allocations().len() as u32, nodes, "one aloc record per block");
        for v in 0..nodes {
            let a = heap.snap.allocation(v).expect("every block has its record");
            assert!(a.usable >= heap.graph.size.get(v as usize), "block {v}: usable {} < size", a.usable);
            assert_ne!(a.thread, 0, "block {v}: no thread");
        }
        let identity_to_node: std::collections::HashMap<u64, u32> =
            (0..nodes).map(|v| (heap.graph.identity.get(v as usize), v)).collect();
        let mut threads = Vec::new();
        for group in &report.groups {
            let thread = group.thread.expect("the leader's thread");
            let members = group.members.as_ref().expect("members asked for");
            for identity in members {
                let allocation = heap.snap.allocation(identity_to_node[identity]).expect("record");
                assert_eq!(allocation.thread, thread, "a list is built by one worker");
            }
            threads.push(thread);
        }
        threads
    });
    threads.sort_unstable();
    threads.dedup();
    assert_eq!(threads.len(), 4, "four workers, four threads: {threads:?}");
    assert!(!threads.contains(&pid), "no list was made by the main thread ({pid})");
}

#[test]
fn signals_that_allocate_inside_the_allocator() {
    check("signal_in_hook", lost((48, 1), (0, 0), (0, 0)));
}

#[test]
fn signal_snapshot_sees_a_block_held_by_a_stack_variable() {
    signal_snapshot("signal_stack");
}

#[test]
fn the_signal_sent_to_heapsnap_is_passed_on() {
    signal_snapshot("signal_parent");
}

fn signal_snapshot(name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(name, dir.path());
    let (_, paths) = record_with(&exe, dir.path(), &["--signal", "USR2", "--at-exit"]);
    assert_eq!(paths, [dir.path().join("out-1.hsnap"), dir.path().join("out-2.hsnap")]);
    assert_eq!(meta(&paths[0], "capture.trigger").as_deref(), Some("signal"));
    assert_eq!(meta(&paths[1], "capture.trigger").as_deref(), Some("exit"));

    // At the signal: the 1234-byte block is held by `held`, on main's stack; the 40 bytes are lost.
    assert_eq!(verdict(&paths[0]), lost((40, 1), (0, 0), (0, 0)));
    assert!(rooted(&paths[0], 1234, hsnap::RootKind::Stack), "no stack root for the held block");

    // At exit both are lost, as memcheck says.
    agrees_with_memcheck(name, &exe, verdict(&paths[1]), lost((1274, 2), (0, 0), (0, 0)));
}

#[test]
fn a_thread_blocking_the_suspend_signal_is_reported_not_waited_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("thread_blocked", dir.path());
    let (stderr, paths) = record_with(&exe, dir.path(), &[]);
    assert!(stderr.contains("threads not stopped in time"), "{stderr}");
    assert_eq!(meta(&paths[0], "capture.threads.missed").as_deref(), Some("1"));
    assert_eq!(meta(&paths[0], "capture.threads.stopped").as_deref(), Some("0"));
}

#[test]
fn snapshots_record_the_pause_and_the_threads_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("thread_stack", dir.path());
    let (stderr, paths) = record_with(&exe, dir.path(), &[]);
    assert!(stderr.contains("heapsnap: the program was stopped "), "{stderr}");
    assert!(stderr.contains("still reachable may exceed valgrind memcheck's by glibc's own buffers"), "{stderr}");
    let pause: u64 = meta(&paths[0], "capture.pause.ns").expect("capture.pause.ns").parse().expect("a number");
    assert!(pause > 0 && pause < 10_000_000_000, "pause {pause} ns");
    assert_eq!(meta(&paths[0], "capture.threads.stopped").as_deref(), Some("1"));
}

#[test]
fn a_forked_child_records_on_under_its_own_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("fork_child", dir.path());
    let (stderr, paths) = record_with(&exe, dir.path(), &[]);
    // The parent's exit snapshot under the name asked for, the child's with its pid appended.
    assert_eq!(paths.len(), 2, "{stderr}");
    let parent = dir.path().join("out.hsnap");
    let child = paths.iter().find(|p| **p != parent).expect("a child snapshot").clone();
    assert!(paths.contains(&parent), "{stderr}");
    let child_pid = child.extension().and_then(|e| e.to_str()).expect("pid suffix");
    assert!(stderr.contains(&format!("(child process {child_pid})")), "{stderr}");
    assert_eq!(meta(&child, "process.id").as_deref(), Some(child_pid));
    assert_eq!(verdict(&child), lost((64, 1), (0, 0), (0, 0)));
    assert_eq!(verdict(&parent), lost((32, 1), (0, 0), (0, 0)));
}

#[test]
fn an_exec_is_recorded_from_scratch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("exec_self", dir.path());
    let (_, paths) = record_with(&exe, dir.path(), &[]);
    assert_eq!(paths, [dir.path().join("out.hsnap")]);
    assert_eq!(verdict(&paths[0]), lost((48, 1), (0, 0), (0, 0)));
    assert_eq!(meta(&paths[0], "process.arg").as_deref().map(|a| a.ends_with("exec_self")), Some(true));
}

#[test]
fn periodic_snapshots_are_numbered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("sleeper", dir.path());
    let (stderr, paths) = record_with(&exe, dir.path(), &["--every", "50ms"]);
    // About six in 300 ms; at least two whatever the machine's load. No exit snapshot unless asked.
    assert!(paths.len() >= 2, "{stderr}");
    for (i, path) in paths.iter().enumerate() {
        assert_eq!(*path, dir.path().join(format!("out-{}.hsnap", i + 1)));
        assert_eq!(meta(path, "capture.trigger").as_deref(), Some("timer"));
        assert_eq!(verdict(path), lost((20, 1), (0, 0), (0, 0)));
    }
}

/// Runs `tests/record/stress.c` (16 threads handing blocks to each other, forks, signals) under
/// `--signal USR2 --every 20ms --at-exit` five times. `scripts/stress-record.sh 100` is the long
/// version, which reports hangs.
#[test]
fn stress_threads_forks_signals_and_snapshots() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("temp dir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/record/stress.c");
    let exe = dir.path().join("stress");
    let out = Command::new("cc").args(["-O2", "-g", "-pthread", "-o"]).arg(&exe).arg(&source).output().expect("cc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let native = Command::new(&exe).output().expect("stress runs");
    for run in 0..5 {
        let run_dir = dir.path().join(run.to_string());
        std::fs::create_dir(&run_dir).expect("run dir");
        let mut child = Command::new(HEAPSNAP)
            .args(["--quiet", "--no-cache", "record", "--signal", "USR2", "--every", "20ms", "--at-exit", "-o"])
            .arg(run_dir.join("s-%p-%n.hsnap"))
            .arg("--")
            .arg(&exe)
            .env("HEAPSNAP_RECORDER", recorder())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("heapsnap runs");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("run {run}: hang (still running after 60 s)");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(0), "run {run}: {stderr}");
        assert_eq!(out.stdout, native.stdout, "run {run}: output changed");
        let mut triggers = Vec::new();
        for entry in std::fs::read_dir(&run_dir).expect("read dir") {
            let path = entry.expect("entry").path();
            assert_eq!(path.extension().and_then(|e| e.to_str()), Some("hsnap"), "left over: {}", path.display());
            let line = format!("heapsnap: snapshot written to {}", path.display());
            let listed = stderr.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("unlisted: {line}"));
            let lost = verdict(&path);
            // The program leaks nothing. A forked child inherits blocks that only the parent's other
            // threads (absent in the child) referenced: those may be lost there.
            if !listed.contains("child process") {
                // Possibly lost: only the running workers' DTVs (272 bytes each), which glibc holds
                // through `dtv + 1`, as memcheck reports them too.
                let no_leak = Lost { possibly: lost.possibly, ..Lost::default() };
                assert_eq!(lost, no_leak, "{}", path.display());
                assert!(lost.possibly.1 <= 16 && lost.possibly.0 == 272 * lost.possibly.1, "{lost:?}");
                triggers.push(meta(&path, "capture.trigger").expect("trigger"));
            }
        }
        assert!(triggers.iter().any(|t| t == "exit"), "run {run}: {triggers:?}");
    }
}

/// Runs a real program natively and under `heapsnap record`; the output and exit status must not
/// change, and the program's snapshot must load. Returns the number of live blocks it holds.
fn real_program(program: &Path, args: &[&str], env: &[(&str, &str)]) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let native = Command::new(program).args(args).envs(env.iter().copied()).output().expect("program runs");
    let snapshot = dir.path().join("real.hsnap");
    let out = Command::new(HEAPSNAP)
        .args(["--quiet", "--no-cache", "record", "-o"])
        .arg(&snapshot)
        .arg("--")
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .env("HEAPSNAP_RECORDER", recorder())
        .output()
        .expect("heapsnap runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), native.status.code(), "{}: exit status changed: {stderr}", program.display());
    assert_eq!(out.stdout, native.stdout, "{}: standard output changed", program.display());
    assert!(
        stderr.starts_with(&*String::from_utf8_lossy(&native.stderr)),
        "{}: stderr changed: {stderr}",
        program.display()
    );
    let progress = Progress::stderr(true);
    let file = heapsnap::import::open_any(&snapshot, &progress).expect("snapshot opens");
    let heap = file.load(&progress).expect("snapshot loads");
    verdict(&snapshot);
    heap.graph.size.len()
}

#[test]
fn python_runs_unchanged_and_its_snapshot_loads() {
    // The interpreter itself, not a version manager's shell wrapper (whose every subprocess would
    // be recorded too).
    let Ok(out) = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output() else {
        eprintln!("python3 not found: skipped");
        return;
    };
    let python = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let code = "import json, threading\n\
                out = []\n\
                ts = [threading.Thread(target=lambda i=i: out.append(len(json.dumps(list(range(i * 100)))))) for i in range(4)]\n\
                [t.start() for t in ts]\n\
                [t.join() for t in ts]\n\
                print(sorted(out))\n\
                raise SystemExit(3)";
    let blocks = real_program(&python, &["-c", code], &[("PYTHONMALLOC", "malloc")]);
    // At exit Python has freed most of its heap (finalisation); hundreds of blocks remain.
    assert!(blocks > 100, "a Python heap of only {blocks} blocks");
}

#[test]
fn git_runs_unchanged_and_its_snapshot_loads() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("git not found: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().display().to_string();
    real_program(Path::new("git"), &["--version"], &[]);
    real_program(Path::new("git"), &["-c", "init.defaultBranch=main", "init", "-q", &repo], &[]);
    real_program(Path::new("git"), &["-C", &repo, "status", "--porcelain=v1", "--branch"], &[]);
}

#[test]
fn frees_after_thread_local_destructors() {
    check("tls_dtor", lost((12, 1), (0, 0), (0, 0)));
}

#[test]
fn roots_follow_dlopen_and_dlclose() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lib = dir.path().join("libstash.so");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/record/stash.c");
    let out = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&source).output().expect("cc runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exe = compile("dlopen", dir.path());
    let (_, paths) = record_with(&exe, dir.path(), &["--signal", "USR2", "--at-exit"]);
    assert_eq!(paths, [dir.path().join("out-1.hsnap"), dir.path().join("out-2.hsnap")]);
    // Loaded: the library's global holds the block (by its start: still reachable). glibc's
    // `_dl_find_object` table for the new object, held by the dynamic linker through an aligned
    // pointer into its block, is glibc's own buffer: still reachable too (memcheck frees it).
    assert_eq!(verdict(&paths[0]), Lost::default());
    assert!(rooted(&paths[0], 77, hsnap::RootKind::Global), "no global root for the stashed block");
    agrees_with_memcheck("dlopen", &exe, verdict(&paths[1]), lost((77, 1), (0, 0), (0, 0)));
}

/// Stopping the world needs no `ptrace`, so it works in a process that gdb is tracing (where a
/// ptrace-based stop, LeakSanitizer's, fails). gdb is told to pass the suspend signal through
/// quietly, as the README says.
#[test]
fn threads_are_stopped_under_gdb() {
    if Command::new("gdb").arg("--version").output().is_err() {
        eprintln!("gdb not found: skipped");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("thread_stack", dir.path());
    let snapshot = dir.path().join("gdb.hsnap");
    let out = Command::new("gdb")
        .args(["-q", "-batch", "-nx", "-ex", "set startup-with-shell off", "-ex", "handle SIG63 nostop noprint pass"])
        .arg("-ex")
        .arg(format!("set environment LD_PRELOAD {}", recorder().display()))
        .arg("-ex")
        .arg(format!("set environment HEAPSNAP_OUT {}", snapshot.display()))
        .args(["-ex", "run"])
        .arg(&exe)
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("exited normally"), "{text}");
    assert_eq!(meta(&snapshot, "capture.threads.stopped").as_deref(), Some("1"), "{text}");
    assert_eq!(verdict(&snapshot), lost((40, 1), (0, 0), (272, 1)));
}

/// Threads created and ending while the world is being stopped: the stop lists `/proc/self/task`
/// again until no new thread appears, and drops the ones that exit before they take the signal.
#[test]
fn threads_that_come_and_go_during_snapshots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("churn", dir.path());
    let (stderr, paths) = record_with(&exe, dir.path(), &["--every", "5ms", "--at-exit"]);
    assert!(paths.len() >= 2, "{stderr}");
    for path in &paths {
        let lost = verdict(path);
        assert_eq!((lost.definitely, lost.indirectly), ((0, 0), (0, 0)), "{}", path.display());
        // A thread caught while glibc creates or ends it runs with every signal blocked; if that
        // lasts past the stop's timeout (a loaded machine), it is missed. It holds none of the
        // program's pointers yet (or any more), and a miss is never silent: it is counted in the
        // snapshot and reported on stderr.
        let missed: usize = meta(path, "capture.threads.missed").expect("counted").parse().expect("a number");
        if missed > 0 {
            assert!(stderr.contains("threads not stopped in time"), "{stderr}");
        }
    }
}

/// The recorder writes to an output that is not a regular file (a pipe here; `/dev/null` alike)
/// directly instead of renaming over it.
#[test]
fn a_pipe_as_output_is_written_to_not_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("list", dir.path());
    let pipe = common::Pipe::new(dir.path().join("out.fifo"));
    let status = Command::new(&exe)
        .env("LD_PRELOAD", recorder())
        .env("HEAPSNAP_OUT", &pipe.path)
        .status()
        .expect("program runs");
    assert!(status.success());
    let bytes = pipe.finish();
    let snap = hsnap::Snapshot::parse(&bytes).expect("the bytes through the pipe are a snapshot");
    assert_eq!(snap.nodes().count(), 10, "the list's ten blocks");
}

/// `heapsnap record -o PIPE`: the snapshot goes through the pipe, the pipe stays, no summary is
/// attempted from it, and the program's exit status is passed through.
#[test]
fn record_to_a_pipe_reports_no_summary_and_keeps_the_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile("list", dir.path());
    let pipe = common::Pipe::new(dir.path().join("out.fifo"));
    let out = Command::new(HEAPSNAP)
        .args(["--quiet", "record", "-o"])
        .arg(&pipe.path)
        .arg("--")
        .arg(&exe)
        .env("HEAPSNAP_RECORDER", recorder())
        .output()
        .expect("heapsnap runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not a regular file: no summary"), "{stderr}");
    let bytes = pipe.finish();
    assert_eq!(hsnap::Snapshot::parse(&bytes).expect("a snapshot").nodes().count(), 10);
}
