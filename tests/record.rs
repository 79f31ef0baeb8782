//! `heapsnap record` on small C programs (`tests/record/*.c`), compared with valgrind memcheck.
//!
//! Each program is compiled with `cc -O0 -g`, run natively, under `heapsnap record`, and under
//! `valgrind --leak-check=full`. The recorded snapshot's definitely, indirectly and possibly lost
//! amounts must equal the figures written here, and so must memcheck's LEAK SUMMARY (skipped, with a
//! note, when valgrind is not installed). The program's output and exit status must not change.

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

/// Builds the recorder next to the `heapsnap` binary under test (a no-op when it is up to date),
/// once per test process.
fn recorder() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let profile_dir = Path::new(HEAPSNAP).parent().expect("binary in a directory");
        let lib = profile_dir.join(heapsnap::record::LIBRARY);
        let target_dir = profile_dir.parent().expect("target/PROFILE");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", "heapsnap-preload"]).env("CARGO_TARGET_DIR", target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => {
                build.arg("--release");
            }
            Some("debug") => {}
            Some(other) => {
                build.args(["--profile", other]);
            }
            None => {}
        }
        let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status();
        assert!(
            matches!(status, Ok(s) if s.success()) && lib.is_file(),
            "could not build {} ({status:?}); run `cargo build --release -p heapsnap-preload` first",
            lib.display()
        );
        lib
    })
}

fn compile(name: &str, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/record").join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new("cc").args(["-O0", "-g", "-o"]).arg(&exe).arg(&source).output().expect("cc runs");
    assert!(out.status.success(), "cc {}: {}", source.display(), String::from_utf8_lossy(&out.stderr));
    exe
}

fn amount(a: Amount) -> (u64, u64) {
    (a.bytes, a.objects)
}

/// Runs the program under `heapsnap record` and reads the verdict from the snapshot.
fn recorded(exe: &Path, dir: &Path) -> Lost {
    let native = Command::new(exe).output().expect("program runs");
    let snapshot = dir.join("out.hsnap");
    let out = Command::new(HEAPSNAP)
        .args(["--quiet", "--no-cache", "record", "-o"])
        .arg(&snapshot)
        .arg("--")
        .arg(exe)
        .env("HEAPSNAP_RECORDER", recorder())
        .output()
        .expect("heapsnap runs");
    assert_eq!(
        out.status.code(),
        native.status.code(),
        "exit status changed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, native.stdout, "standard output changed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("definitely lost") && stderr.contains(&snapshot.display().to_string()), "{stderr}");

    let progress = Progress::stderr(true);
    let file = heapsnap::import::open_any(&snapshot, &progress).expect("snapshot opens");
    let heap = file.load(&progress).expect("snapshot loads");
    let analysis = heapsnap::cache::analyze(&heap, &progress, false, usize::MAX);
    let report = LeakReport::build(&heap, &analysis, LeakOptions { limit: 100, members: false });
    Lost { definitely: amount(report.direct), indirectly: amount(report.indirect), possibly: amount(report.possibly) }
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
    let ours = recorded(&exe, dir.path());
    match memcheck(&exe) {
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
