//! The Rust front: [`Recorder`], a global allocator that wraps [`System`] and records every block,
//! and [`snapshot`] / [`snapshot_at_exit`] to write `.hsnap` snapshots from inside the program.
//!
//! It records into the same table, with the same allocation stacks, as the `LD_PRELOAD` library;
//! what differs is where the recorder lives (see `front.rs`): in the program itself. So:
//! - The unwinder's own allocations reach the global allocator, that is [`Recorder`]: they are made
//!   with the re-entry guard held, and a call that finds the guard held goes to `System` without
//!   recording anything.
//! - Stacks keep the recorder's frames (the frame that recorded, and Rust's allocator shims
//!   `__rust_alloc` / `__rg_alloc`); the analyzer skips them, with the rest of the allocator
//!   plumbing (`alloc::`, `core::`), when it picks a block's allocation site.
//! - A snapshot taken on demand scans the stack from the writer's outermost frame up, after
//!   storing the callee-saved registers in that frame (a pointer that a caller keeps only in a
//!   register is a root too) and zeroing the dead stack that frame is made of (stale pointers left
//!   by returned calls are not).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use std::alloc::System;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::guard::Entered;
use crate::table::TABLE;
use crate::{front, record, resolve, snapshot as writer, stacks};

/// A global allocator that records every heap block of a Rust program for heap snapshots.
///
/// ```ignore
/// use heapsnap_recorder::Recorder;
///
/// #[global_allocator]
/// static ALLOCATOR: Recorder = Recorder::new();
///
/// fn main() {
///     heapsnap_recorder::snapshot_at_exit("app.hsnap").unwrap();
///     // ... or at any point: heapsnap_recorder::snapshot("now.hsnap")
/// }
/// ```
///
/// Every allocation goes to [`System`] (glibc's `malloc`), and is recorded with its requested size
/// and allocation stack; a snapshot also records the size `malloc_usable_size` reports.
/// Environment: `HEAPSNAP_STACKS=0` and `HEAPSNAP_STACK_DEPTH=N` as for `heapsnap record`.
/// Scope: snapshots see the calling thread's stack only; other threads' stacks are not scanned.
pub struct Recorder(());

impl Recorder {
    pub const fn new() -> Recorder {
        Recorder(())
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

/// Done once per process, with the guard held, before the first block is recorded: mark the
/// recorder as linked into the program (before any stack is captured), find the C library's
/// allocator (for `malloc_usable_size`, and to know its data in the snapshot), and register the
/// fork handler.
#[inline(always)]
fn start() {
    if !front::linked() {
        start_once();
    }
}

#[cold]
#[inline(never)]
fn start_once() {
    static FORK_HANDLER: AtomicBool = AtomicBool::new(false);
    front::set_linked();
    resolve();
    if !FORK_HANDLER.swap(true, Ordering::AcqRel) {
        stacks::on_load();
        // The suspend signal's handler (so that a snapshot stops the other threads), the fork
        // handlers, and the triggers if the environment asks for them.
        crate::trigger::init();
    }
}

/// Forgets a block that is freed from inside the recorder, when the table's lock is free (as the
/// C hooks do), so that the table never keeps an address `System` may hand out again.
fn forget_unguarded(p: *mut u8) {
    if let Some(mut table) = TABLE.try_lock() {
        table.remove(p as usize);
    }
}

// SAFETY: every method forwards its arguments to `System`, which meets the contract, and returns
// what `System` returned; recording only reads the pointers.
unsafe impl GlobalAlloc for Recorder {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(_guard) = Entered::enter() else {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.alloc(layout) };
        };
        start();
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        record(p.cast(), layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(_guard) = Entered::enter() else {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.alloc_zeroed(layout) };
        };
        start();
        // SAFETY: the caller's contract, forwarded.
        let p = unsafe { System.alloc_zeroed(layout) };
        record(p.cast(), layout.size());
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match Entered::enter() {
            Some(_guard) => {
                TABLE.lock().remove(p as usize);
            }
            None => forget_unguarded(p),
        }
        // SAFETY: the caller's contract, forwarded; the block is out of the table.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(_guard) = Entered::enter() else {
            forget_unguarded(p);
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.realloc(p, layout, new_size) };
        };
        start();
        let stack = stacks::current();
        // As in the C `realloc` hook: the lock is held across the call, so that no other thread is
        // handed the old address while the table still lists it; a failed call keeps the block.
        let mut table = TABLE.lock();
        let old = table.remove(p as usize);
        // SAFETY: the caller's contract, forwarded.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if q.is_null() {
            if let Some(entry) = old {
                table.reinsert(entry);
            }
        } else {
            table.insert(q as usize, new_size, stack, crate::threads::current());
        }
        q
    }
}

/// The longest path a snapshot is written to, in bytes (the writer's buffer, less the NUL).
const MAX_PATH: usize = 4095;

/// A snapshot path as the writer takes it: not empty, no NUL, at most [`MAX_PATH`] bytes.
fn checked(path: &Path) -> io::Result<&[u8]> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    if bytes.len() > MAX_PATH {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    Ok(bytes)
}

/// Writes a snapshot of the heap to `path` now: every live block the [`Recorder`] holds, the
/// pointers between them, and as roots the writable segments of every loaded object and the
/// calling thread's stack. The file is written under a temporary name (`PATH.tmp.PID`), then
/// renamed; nothing is allocated meanwhile. An error when the path is empty, holds a NUL or is
/// longer than 4095 bytes, or when the file cannot be written.
///
/// Meaningful only in a program whose global allocator is [`Recorder`]; otherwise the snapshot
/// holds no blocks.
pub fn snapshot(path: impl AsRef<Path>) -> io::Result<()> {
    let path = checked(path.as_ref())?;
    clear_dead_stack();
    write_from_here(path)
}

/// Zeroes the stack below the caller's frame before the writer's frames take it. The frames of
/// functions that have returned (often the very ones that made a leak) leave pointers there, and
/// the one frame of ours that is scanned ([`write_from_here`]'s) would otherwise show whatever of
/// them it does not overwrite: a stale root that keeps a leak alive.
#[inline(never)]
fn clear_dead_stack() {
    let mut dead = [0usize; 2048];
    // The zeros must be stored: `black_box` may read them.
    core::hint::black_box(&mut dead);
}

/// Writes the snapshot, scanning the stack from this frame up. Not inlined: the frame holds the
/// callers' callee-saved registers (stored below, or saved by this function's prologue), and
/// everything the writer's own frames hold is below the stack pointer taken here.
#[inline(never)]
fn write_from_here(path: &[u8]) -> io::Result<()> {
    let Some(_guard) = Entered::enter() else {
        // Called from inside the recorder (a signal handler that interrupted it).
        return Err(io::Error::from_raw_os_error(libc::EDEADLK));
    };
    start();
    let registers = callee_saved_registers();
    let sp = writer::stack_pointer();
    let result = writer::take(Some(sp), b"demand", Some(path));
    // Keeps the registers in this frame until the scan is done.
    core::hint::black_box(&registers);
    result
}

/// The callee-saved registers, which may hold a caller's pointers that are in no stack slot.
#[inline(always)]
fn callee_saved_registers() -> [usize; 12] {
    let mut saved = [0usize; 12];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies six registers into the array; touches no other memory.
    unsafe {
        core::arch::asm!(
            "mov [{at}], rbx",
            "mov [{at} + 8], rbp",
            "mov [{at} + 16], r12",
            "mov [{at} + 24], r13",
            "mov [{at} + 32], r14",
            "mov [{at} + 40], r15",
            at = in(reg) saved.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: copies x19..x29 into the array; touches no other memory.
    unsafe {
        core::arch::asm!(
            "stp x19, x20, [{at}]",
            "stp x21, x22, [{at}, #16]",
            "stp x23, x24, [{at}, #32]",
            "stp x25, x26, [{at}, #48]",
            "stp x27, x28, [{at}, #64]",
            "str x29, [{at}, #80]",
            at = in(reg) saved.as_mut_ptr(),
            options(nostack, preserves_flags)
        );
    }
    saved
}

/// The path [`snapshot_at_exit`] registered, NUL-free, `len` bytes; behind a spinlock.
struct ExitPath {
    busy: AtomicBool,
    bytes: UnsafeCell<[u8; MAX_PATH]>,
    len: UnsafeCell<usize>,
}

// SAFETY: the cells are only touched with `busy` held (see `with`).
unsafe impl Sync for ExitPath {}

static EXIT_PATH: ExitPath =
    ExitPath { busy: AtomicBool::new(false), bytes: UnsafeCell::new([0; MAX_PATH]), len: UnsafeCell::new(0) };
static EXIT_REGISTERED: AtomicBool = AtomicBool::new(false);

impl ExitPath {
    fn with<R>(&self, f: impl FnOnce(&mut [u8; MAX_PATH], &mut usize) -> R) -> R {
        while self.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: `busy` is held: no other reference to the cells exists.
        let result = unsafe { f(&mut *self.bytes.get(), &mut *self.len.get()) };
        self.busy.store(false, Ordering::Release);
        result
    }
}

/// Asks for a snapshot to `path` when the program exits (from an `atexit` handler: after `main`
/// returns or `exit` is called, not after `_exit` or a fatal signal). A relative path is taken
/// relative to the current directory now. Calling it again replaces the path.
pub fn snapshot_at_exit(path: impl AsRef<Path>) -> io::Result<()> {
    let absolute = std::path::absolute(path.as_ref())?;
    let bytes = checked(&absolute)?;
    EXIT_PATH.with(|buf, len| {
        buf[..bytes.len()].copy_from_slice(bytes);
        *len = bytes.len();
    });
    if !EXIT_REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registers a handler with no arguments that lives as long as the program.
        if unsafe { libc::atexit(write_at_exit) } != 0 {
            EXIT_REGISTERED.store(false, Ordering::Release);
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
    }
    Ok(())
}

extern "C" fn write_at_exit() {
    let mut path = [0u8; MAX_PATH];
    let len = EXIT_PATH.with(|buf, len| {
        path[..*len].copy_from_slice(&buf[..*len]);
        *len
    });
    if len == 0 {
        return;
    }
    clear_dead_stack();
    if let Err(err) = write_from_here(&path[..len]) {
        writer::complain(b"writing the heap snapshot at exit failed", &err);
    }
}
