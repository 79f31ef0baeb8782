//! A Rust program that leaks an `Rc` cycle, recorded by its own global allocator.
//!
//! ```sh
//! cargo run --release -p heapsnap-recorder --example rc_cycle -- rc.hsnap [--at-exit]
//! heapsnap leaks rc.hsnap
//! ```
//!
//! It makes four cycles of three nodes each (every node an `Rc` or `Arc` with a payload `Vec`):
//! one is dropped by its maker and leaks, one is kept by a global, one by a local that is still live
//! when the snapshot is taken, one by a local of a worker thread that is still running then (with
//! `--at-exit` after the path, the snapshot is taken at exit instead, when both locals are gone and
//! their cycles have leaked too). It prints, as `key=value` lines,
//! the blocks and bytes of each cycle, computed from the layouts `Rc`, `Arc` and `Vec` allocate.

use std::alloc::Layout;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};

use heapsnap_recorder::Recorder;

#[global_allocator]
static ALLOCATOR: Recorder = Recorder::new();

/// The nodes of the cycle that leaks, and of the one a local keeps.
struct Node {
    payload: Vec<u64>,
    next: RefCell<Option<Rc<Node>>>,
}

/// The nodes of the cycle a global keeps (`Rc` cannot be in a `static`).
struct SharedNode {
    payload: Vec<u64>,
    next: Mutex<Option<Arc<SharedNode>>>,
}

static KEPT: Mutex<Option<Arc<SharedNode>>> = Mutex::new(None);

const NODES: usize = 3;

/// The bytes `Rc::new` allocates for a `T`: the strong and weak counts, then the value.
fn rc_block<T>() -> usize {
    let counts = Layout::new::<[usize; 2]>();
    counts.extend(Layout::new::<T>()).expect("small layout").0.pad_to_align().size()
}

/// Three nodes with payloads of `words` words, each pointing to the next and the last back to the
/// first; evaluates to the first. A macro, not a function: the blocks' allocation site must be the
/// function that uses it.
macro_rules! ring {
    ($words:expr, $fill:expr) => {{
        let first = Rc::new(Node { payload: vec![$fill; $words], next: RefCell::new(None) });
        let mut last = first.clone();
        for i in 1..NODES {
            let node = Rc::new(Node { payload: vec![$fill + i as u64; $words], next: RefCell::new(None) });
            *last.next.borrow_mut() = Some(node.clone());
            last = node;
        }
        *last.next.borrow_mut() = Some(first.clone());
        first
    }};
}

/// Three nodes, each pointing to the next and the last back to the first, with payloads of
/// `words` words; then every handle to them is dropped, and the cycle keeps itself alive.
#[inline(never)]
fn make_cycle(words: usize) {
    let first = ring!(words, 1);
    std::hint::black_box(&first);
}

/// The same cycle, returned: the caller keeps it alive through its first node.
#[inline(never)]
fn make_kept_cycle(words: usize) -> Rc<Node> {
    ring!(words, 7)
}

/// Another such cycle, made on a worker thread whose local keeps it.
#[inline(never)]
fn make_thread_cycle(words: usize) -> Rc<Node> {
    ring!(words, 11)
}

/// A cycle of `Arc`s kept by the global `KEPT`.
#[inline(never)]
fn make_global_cycle(words: usize) {
    let first = Arc::new(SharedNode { payload: vec![9; words], next: Mutex::new(None) });
    let mut last = first.clone();
    for _ in 1..NODES {
        let node = Arc::new(SharedNode { payload: vec![10; words], next: Mutex::new(None) });
        *last.next.lock().expect("not poisoned") = Some(node.clone());
        last = node;
    }
    *last.next.lock().expect("not poisoned") = Some(first.clone());
    *KEPT.lock().expect("not poisoned") = Some(first);
}

fn main() {
    // The leak comes first: a word that a frame still live at the snapshot (this one) kept from a
    // temporary, such as the end pointer of the argument vector's iterator, is a root to whatever
    // block reuses that memory later, as for any conservative scan (memcheck's too).
    let words = 5;
    make_cycle(words);
    make_global_cycle(words + 1);
    let kept = make_kept_cycle(words + 2);
    // A worker thread holds a fourth cycle in a local while the snapshot is taken: the snapshot
    // stops it and scans its stack and registers, so that cycle is reachable. It ends before exit.
    let (built, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let worker = std::thread::spawn({
        let (built, release) = (built.clone(), release.clone());
        move || {
            let held = make_thread_cycle(words + 3);
            built.wait();
            release.wait();
            std::hint::black_box(&held);
        }
    });
    built.wait();

    let mut args = std::env::args_os().skip(1);
    let path = args.next().unwrap_or_else(|| "rc_cycle.hsnap".into());
    let at_exit = args.next().is_some_and(|a| a == "--at-exit");
    let written = if at_exit { heapsnap_recorder::snapshot_at_exit(&path) } else { heapsnap_recorder::snapshot(&path) };
    if let Err(err) = written {
        eprintln!("rc_cycle: cannot write {}: {err}", path.to_string_lossy());
        std::process::exit(1);
    }
    release.wait();
    worker.join().expect("the worker ends");
    // Each cycle: NODES blocks for the nodes, NODES for their payloads.
    let bytes = |words: usize| NODES * (rc_block::<Node>() + words * size_of::<u64>());
    println!("blocks.per.cycle={}", 2 * NODES);
    println!("cycle.bytes={}", bytes(words));
    println!("global.bytes={}", NODES * (rc_block::<SharedNode>() + (words + 1) * size_of::<u64>()));
    println!("kept.bytes={}", bytes(words + 2));
    println!("thread.bytes={}", bytes(words + 3));
    // Uses the kept cycle after the snapshot: it is live during it. At exit it has been dropped,
    // and being a cycle, it leaks too.
    println!("kept.payload={}", std::hint::black_box(&kept).payload.len());
    let global = KEPT.lock().expect("not poisoned").as_ref().map_or(0, |first| first.payload.len());
    println!("global.payload={global}");
}
