//! The Rust front of the recorder: `recorder/examples/rc_cycle.rs` has `heapsnap_recorder::Recorder`
//! as its global allocator, leaks an `Rc` cycle, keeps two other cycles (one through a global, one
//! through a live local) and writes a snapshot, on demand or at exit. The analysis of that snapshot
//! must find exactly the dropped cycle leaked, as one group with a cycle, its bytes what the
//! program computed from `Rc`'s and `Vec`'s layouts, its site the function that made it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use heapsnap::analysis::reach::Class;
use heapsnap::report::Amount;
use heapsnap::report::leaks::{LeakOptions, LeakReport};

/// The example, built with the profile of the `heapsnap` binary under test once per test process.
fn example() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| common::cargo_build(&["-p", "heapsnap-recorder", "--example", "rc_cycle"], "examples/rc_cycle"))
}

/// What the example printed (`key=value` lines) and the path of its snapshot.
fn run(dir: &Path, extra: &[&str]) -> (HashMap<String, u64>, PathBuf) {
    let snapshot = dir.join("rc.hsnap");
    let out = Command::new(example()).arg(&snapshot).args(extra).output().expect("example runs");
    assert!(out.status.success(), "rc_cycle failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            (key.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect();
    assert!(snapshot.is_file(), "no snapshot at {}", snapshot.display());
    (printed, snapshot)
}

/// Per allocation site's function (the site without its `(file:line)`): the amounts of each class.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct ByClass {
    reachable: (u64, u64),
    possibly: (u64, u64),
    leaked: (u64, u64),
}

struct Analysed {
    report: LeakReport,
    sites: HashMap<String, ByClass>,
}

fn analyse(snapshot: &Path) -> Analysed {
    common::with_heap(snapshot, |heap, analysis| {
        let report = LeakReport::build(heap, analysis, LeakOptions { limit: 100, members: false });
        let mut sites: HashMap<String, ByClass> = HashMap::new();
        for v in 0..heap.graph.node_count() {
            let site = heap.site_name(heap.graph.stack[v]);
            let function = site.split(" (").next().unwrap_or_default().to_string();
            let entry = sites.entry(function).or_default();
            let slot = match analysis.reach.class[v] {
                Class::Reachable => &mut entry.reachable,
                Class::Possibly => &mut entry.possibly,
                Class::Leaked => &mut entry.leaked,
            };
            slot.0 += heap.graph.size.get(v);
            slot.1 += 1;
        }
        Analysed { report, sites }
    })
}

fn amount(a: Amount) -> (u64, u64) {
    (a.bytes, a.objects)
}

/// The group of `function`'s cycle: one group, a cycle, all of its blocks, its site in the example.
fn assert_cycle_group(report: &LeakReport, function: &str, bytes: u64, blocks: u64) {
    let group = report
        .groups
        .iter()
        .find(|g| g.site.starts_with(&format!("{function} (")))
        .unwrap_or_else(|| panic!("no leak group at {function}: {:#?}", report.groups));
    assert!(group.cycle, "{function}: the group is not a cycle");
    assert_eq!((group.bytes, group.objects), (bytes, blocks), "{function}: the group's bytes and blocks");
    assert!(group.site.contains("rc_cycle.rs:"), "site without its source line: {}", group.site);
    assert!(
        group.sites.iter().all(|s| s.name.starts_with(&format!("{function} ("))),
        "{function}: a member allocated elsewhere: {:?}",
        group.sites.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[test]
fn an_rc_cycle_leaks_as_one_cycle_at_the_function_that_made_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (printed, snapshot) = run(dir.path(), &[]);
    let blocks = printed["blocks.per.cycle"];
    let Analysed { report, sites } = analyse(&snapshot);

    // Exactly the dropped cycle is lost: one group, nothing possibly lost.
    assert_eq!(amount(report.leaked), (printed["cycle.bytes"], blocks), "{:#?}", report.groups);
    assert_eq!(amount(report.possibly), (0, 0));
    assert_eq!(report.groups.len(), 1);
    assert_cycle_group(&report, "rc_cycle::make_cycle", printed["cycle.bytes"], blocks);
    // One node is its leader (definitely lost), the rest hang off it (indirectly lost).
    assert_eq!(report.direct.objects, 1);

    // The kept cycles were recorded (every block, at its maker's site) and are reachable.
    let kept = ByClass { reachable: (printed["kept.bytes"], blocks), ..ByClass::default() };
    assert_eq!(sites.get("rc_cycle::make_kept_cycle"), Some(&kept), "{sites:#?}");
    let global = ByClass { reachable: (printed["global.bytes"], blocks), ..ByClass::default() };
    assert_eq!(sites.get("rc_cycle::make_global_cycle"), Some(&global), "{sites:#?}");
    // The worker thread was stopped and its stack and registers scanned.
    let held = ByClass { reachable: (printed["thread.bytes"], blocks), ..ByClass::default() };
    assert_eq!(sites.get("rc_cycle::make_thread_cycle"), Some(&held), "{sites:#?}");
}

#[test]
fn at_exit_the_cycles_the_locals_kept_have_leaked_too() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (printed, snapshot) = run(dir.path(), &["--at-exit"]);
    let blocks = printed["blocks.per.cycle"];
    let Analysed { report, sites } = analyse(&snapshot);

    let leaked = printed["cycle.bytes"] + printed["kept.bytes"] + printed["thread.bytes"];
    assert_eq!(amount(report.leaked), (leaked, 3 * blocks), "{:#?}", report.groups);
    assert_eq!(amount(report.possibly), (0, 0));
    assert_eq!(report.groups.len(), 3);
    assert_cycle_group(&report, "rc_cycle::make_cycle", printed["cycle.bytes"], blocks);
    assert_cycle_group(&report, "rc_cycle::make_kept_cycle", printed["kept.bytes"], blocks);
    assert_cycle_group(&report, "rc_cycle::make_thread_cycle", printed["thread.bytes"], blocks);
    let global = ByClass { reachable: (printed["global.bytes"], blocks), ..ByClass::default() };
    assert_eq!(sites.get("rc_cycle::make_global_cycle"), Some(&global), "{sites:#?}");
}

#[test]
fn linking_the_recorder_interposes_no_c_function() {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(example()).expect("example readable");
    let file = object::File::parse(&*bytes).expect("an object file");
    let defined: Vec<String> = file
        .dynamic_symbols()
        .chain(file.symbols())
        .filter(|s| s.is_definition() && s.is_global())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect();
    let interposed_by_the_preload_library = [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "posix_memalign",
        "malloc_usable_size",
        "dlclose",
        "sigaction",
        "signal",
        "pthread_sigmask",
        "sigprocmask",
    ];
    for name in interposed_by_the_preload_library {
        assert!(!defined.iter().any(|d| d == name), "the example defines `{name}`");
    }
    // The list is the real one: it holds the program's entry point.
    assert!(defined.iter().any(|d| d.starts_with("main")), "no `main` among {} symbols", defined.len());
}
