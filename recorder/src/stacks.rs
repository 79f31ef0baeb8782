//! Allocation stacks: captured in the hooks ([`current`]), kept in the trie ([`crate::trie`]), and
//! written into the snapshot with the module map ([`write`]).
//!
//! Settings, read once from the environment:
//! - `HEAPSNAP_STACKS=0` records no stacks (every block has stack 0);
//! - `HEAPSNAP_STACK_DEPTH=N` keeps at most N frames per stack (default 64, at most 128).

use core::sync::atomic::{AtomicUsize, Ordering};
use std::io;

use hsnap::{Sink, Writer};

use crate::modules::{self, Module};
use crate::table::{map, unmap};
use crate::{trie, unwind};

const DEFAULT_DEPTH: usize = 64;
pub const MAX_DEPTH: usize = 128;
/// Not yet read from the environment.
const UNSET: usize = usize::MAX;

/// The depth limit; 0 when stacks are off.
static DEPTH: AtomicUsize = AtomicUsize::new(UNSET);

fn env_number(name: &core::ffi::CStr) -> Option<usize> {
    // SAFETY: getenv with a NUL-terminated name; the value is read at once.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let text = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    core::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// The configured depth (0: stacks off).
#[inline]
pub fn depth() -> usize {
    let depth = DEPTH.load(Ordering::Relaxed);
    if depth != UNSET {
        return depth;
    }
    let depth = if env_number(c"HEAPSNAP_STACKS") == Some(0) {
        0
    } else {
        env_number(c"HEAPSNAP_STACK_DEPTH").unwrap_or(DEFAULT_DEPTH).min(MAX_DEPTH)
    };
    DEPTH.store(depth, Ordering::Relaxed);
    depth
}

/// Called once from the library's constructor, with the re-entry guard held (so that what
/// `pthread_atfork` allocates takes the unrecorded path).
pub fn on_load() {
    // SAFETY: registers a child handler that only stores to atomics.
    unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
}

/// In a child of `fork`, only the forking thread exists: a lock of the stack machinery that
/// another thread held at the fork would never be released, so every one is released here. Its
/// data stays consistent enough: each structure publishes an update with one store (a trie node
/// whose slot was not yet published is a duplicate at worst).
extern "C" fn after_fork_in_child() {
    crate::alloc::release_all();
    crate::trie::release_lock();
    unwind::release_all();
    modules::release_lock();
}

/// The stack id of the current call into the allocator (0 when stacks are off or none could be
/// taken). Called from a hook, with the re-entry guard held.
#[inline(always)]
pub fn current() -> u32 {
    let depth = depth();
    if depth == 0 {
        return 0;
    }
    if modules::take_dirty() {
        unwind::refresh_modules();
    }
    unwind::stack_id(depth)
}

/// Writes the module map (`MODS`), one frame per trie node (`FRMS`: form 0 inside a module, form 1
/// outside) and the trie (`STKS`), so that stack id `k` of the recorder is stack id `k` of the file.
/// Reads the trie's size once: nodes created later (by threads still running) are not referenced
/// by the blocks the caller copied before calling this. Allocates nothing: the sorted module
/// index lives in an `mmap`'d scratch array.
pub fn write<S: Sink>(w: &mut Writer<'_, S>) -> io::Result<()> {
    // Objects loaded since the last capture (or all of them, when stacks are off) are listed too.
    if let Some(lock) = modules::try_lock() {
        modules::refresh(&lock);
    }
    let known = modules::all();
    // All paths, then all modules: one chunk of each kind rather than two per module.
    let mut first_path = 0;
    for (i, m) in known.iter().enumerate() {
        let id = w.string(m.path())?;
        if i == 0 {
            first_path = id;
        }
    }
    for (i, m) in known.iter().enumerate() {
        w.module(first_path + i as u32, m.build_id(), m.bias, m.ranges())?;
    }
    let bytes = (known.len() + 1) * size_of::<u32>();
    let scratch = map(bytes).cast::<u32>();
    if scratch.is_null() {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    // SAFETY: a fresh zeroed mapping of `known.len() + 1` u32s, used only here.
    let order = unsafe { core::slice::from_raw_parts_mut(scratch, known.len()) };
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u32;
    }
    // Live modules last at equal starts (the lookup searches backwards), so that a live object
    // wins over a dead one it replaced.
    order.sort_unstable_by_key(|&i| (known[i as usize].start, known[i as usize].live.load(Ordering::Relaxed)));
    let result = write_stacks(w, known, order);
    unmap(scratch.cast(), bytes);
    result
}

/// Frames first, then stacks (each kind in as few chunks as the buffer allows): node `k` has frame
/// `first + k - 1`.
fn write_stacks<S: Sink>(w: &mut Writer<'_, S>, known: &[Module], order: &[u32]) -> io::Result<()> {
    let count = trie::count();
    let first = w.counts().frames as u32;
    for id in 1..=count {
        let addr = trie::node(id).addr;
        // A return address may be just past its function's last byte: look up the call itself.
        match lookup(known, order, addr.wrapping_sub(1)) {
            Some(m) => w.frame_in_module(m, addr.wrapping_sub(known[m as usize].bias))?,
            None => w.frame_absolute(addr)?,
        };
    }
    for id in 1..=count {
        let written = w.stack(trie::node(id).parent, first + id - 1)?;
        debug_assert_eq!(written, id);
    }
    Ok(())
}

/// The module that maps `addr`, by binary search on start addresses, then a few steps back over
/// modules that start earlier and may still hold it.
fn lookup(known: &[Module], order: &[u32], addr: u64) -> Option<u32> {
    let after = order.partition_point(|&i| known[i as usize].start <= addr);
    order[..after].iter().rev().take(8).copied().find(|&i| known[i as usize].contains(addr))
}
