//! What `Recorder` costs a Rust program: an allocation-heavy loop, with or without recording.
//!
//! ```sh
//! cargo build --release -p heapsnap-recorder --example churn
//! for mode in system record; do target/release/examples/churn $mode 5000000; done
//! ```
//!
//! `OPS` allocations of mixed sizes (most 8-127 bytes, some up to 2 KiB), each replacing one block
//! of a ring of 4096 live ones, with both ends of each block written; one in 16 grows a block
//! instead (`realloc`). `record` sends them through [`Recorder`] (with allocation stacks),
//! `system` straight to `System`; the mode is chosen before `main` allocates anything of its own.
//! Prints the CPU time of the loop (user + system, `getrusage`) and the operations per second.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

use heapsnap_recorder::Recorder;

/// `Recorder` or `System`, by a flag set once at the start. Mixing is safe: `Recorder` allocates
/// from `System`, and frees a block it never recorded as `System` would.
struct Switch;

static RECORD: AtomicBool = AtomicBool::new(false);
static RECORDER: Recorder = Recorder::new();

// SAFETY: both allocators meet the contract, and a block of either may be freed by either.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { if RECORD.load(Ordering::Relaxed) { RECORDER.alloc(layout) } else { System.alloc(layout) } }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { if RECORD.load(Ordering::Relaxed) { RECORDER.dealloc(p, layout) } else { System.dealloc(p, layout) } }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe {
            if RECORD.load(Ordering::Relaxed) {
                RECORDER.realloc(p, layout, new_size)
            } else {
                System.realloc(p, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static ALLOCATOR: Switch = Switch;

const RING: usize = 4096;

/// A small xorshift generator: the same sizes in both modes.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn size(state: &mut u64) -> usize {
    let r = next(state);
    match r % 100 {
        0..=79 => 8 + (r >> 8) as usize % 120,
        _ => 128 + (r >> 8) as usize % 1920,
    }
}

#[inline(never)]
fn churn(ops: usize) -> usize {
    let mut ring: Vec<Vec<u8>> = (0..RING).map(|_| Vec::new()).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut touched = 0usize;
    for i in 0..ops {
        let slot = (next(&mut state) as usize) % RING;
        let n = size(&mut state);
        if i % 16 == 0 && !ring[slot].is_empty() {
            let block = &mut ring[slot];
            block.reserve_exact(block.len() + n);
            block.resize(block.len() + n, 1);
        } else {
            let mut block = Vec::with_capacity(n);
            block.resize(n, 2u8);
            ring[slot] = block;
        }
        let block = &ring[slot];
        touched += block[0] as usize + block[block.len() - 1] as usize;
        if ring[slot].len() > 8192 {
            ring[slot] = Vec::new();
        }
    }
    touched
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: zeroed, then filled by getrusage: every field is an integer.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let ops: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5_000_000);
    match mode.as_str() {
        "record" => RECORD.store(true, Ordering::Relaxed),
        "system" => {}
        _ => {
            eprintln!("usage: churn system|record [OPS]");
            std::process::exit(2);
        }
    }
    let start = cpu_seconds();
    let touched = churn(ops);
    let cpu = cpu_seconds() - start;
    println!("{mode}: {ops} operations, {cpu:.3} s CPU, {:.1} M/s (checksum {touched})", ops as f64 / cpu / 1e6);
}
