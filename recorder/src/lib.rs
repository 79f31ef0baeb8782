//! The heap recorder: it keeps every live heap block a program allocates (address, size, serial
//! number, allocation stack) and writes `.hsnap` snapshots of them, with the pointers between them
//! and the roots (globals, and each thread's registers, stack and static TLS) that reference them.
//!
//! It has two fronts, which feed the same machinery:
//! - [`Recorder`], a `#[global_allocator]` for Rust programs: it wraps [`std::alloc::System`] and
//!   records each block; [`snapshot`] writes a snapshot on demand, [`snapshot_at_exit`] when the
//!   program exits.
//! - `libheapsnap_recorder.so` (the `heapsnap-preload` crate, `preload/`), loaded with
//!   `LD_PRELOAD` into any Linux program: it defines the C malloc family and snapshots at exit, each
//!   time the process gets a chosen signal, or periodically ([`trigger`]). It builds its hooks from the pieces in [`preload`] (not a stable interface).
//!
//! This crate defines no C symbol and no global allocator of its own, so linking it interposes
//! nothing.
//!
//! Design (see also `README.md`, sections "Allocation stacks" and "Rust programs"):
//! - The recorder never re-enters itself: a per-thread guard ([`guard`], initial-exec TLS, no
//!   destructor) sends allocations made while it records straight to the real allocator,
//!   unrecorded.
//! - Its state never lives in the recorded heap: the live-block table ([`table`]) and every buffer
//!   of the snapshot are `mmap`'d, behind a spinlock that cannot allocate. The unwinder's own Rust
//!   allocations are made with the guard held: in the `LD_PRELOAD` library they go to its private
//!   `mmap`'d allocator ([`MmapAlloc`]), in a Rust program through [`Recorder`] to `System`,
//!   unrecorded.
//! - A snapshot ([`snapshot`](mod@snapshot)) holds the snapshot lock, the loader's lock and the
//!   table lock, in that order, then stops every other thread with a suspend signal ([`stop`],
//!   [`threads`]), scans from the roots ([`roots`]), writes the file, and lets the threads go. So
//!   recording must never call into the dynamic linker (`dl_iterate_phdr`, `dladdr`, an unwinder
//!   that uses them) while it holds the table lock: do such work before taking it.
//! - Each block's allocation stack ([`stacks`]: unwound by [`unwind`], interned in [`trie`], with
//!   the module map of [`modules`]) is taken when the block is recorded.
//!
//! Scope: Linux, glibc; x86-64 for registers (other architectures scan stacks but not registers).

mod alloc;
mod front;
mod global;
mod guard;
mod modules;
mod roots;
mod snapshot;
mod stacks;
mod stop;
mod table;
mod threads;
mod trie;
mod trigger;
mod unwind;

pub use alloc::MmapAlloc;
pub use global::{Recorder, snapshot, snapshot_at_exit};

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use table::TABLE;

#[doc(hidden)]
pub type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
#[doc(hidden)]
pub type FreeFn = unsafe extern "C" fn(*mut c_void);
#[doc(hidden)]
pub type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
#[doc(hidden)]
pub type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
#[doc(hidden)]
pub type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
#[doc(hidden)]
pub type AlignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
#[doc(hidden)]
pub type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// The real allocator's entry points, as addresses (0 until resolved): the next definitions after
/// the object that holds this code (for the `LD_PRELOAD` front, the C library's; for a program that
/// links this crate, the C library's too, which `System` calls).
#[doc(hidden)]
pub struct Real {
    pub malloc: AtomicUsize,
    pub free: AtomicUsize,
    pub calloc: AtomicUsize,
    pub realloc: AtomicUsize,
    pub posix_memalign: AtomicUsize,
    pub aligned_alloc: AtomicUsize,
    pub memalign: AtomicUsize,
    pub valloc: AtomicUsize,
    pub pvalloc: AtomicUsize,
    pub usable: AtomicUsize,
}

#[doc(hidden)]
pub static REAL: Real = Real {
    malloc: AtomicUsize::new(0),
    free: AtomicUsize::new(0),
    calloc: AtomicUsize::new(0),
    realloc: AtomicUsize::new(0),
    posix_memalign: AtomicUsize::new(0),
    aligned_alloc: AtomicUsize::new(0),
    memalign: AtomicUsize::new(0),
    valloc: AtomicUsize::new(0),
    pvalloc: AtomicUsize::new(0),
    usable: AtomicUsize::new(0),
};

/// Turns a resolved address back into its function type.
#[doc(hidden)]
#[macro_export]
macro_rules! real {
    ($field:ident, $ty:ty) => {{
        let addr = $crate::REAL.$field.load(::core::sync::atomic::Ordering::Acquire);
        if addr == 0 {
            None
        } else {
            // SAFETY: the address was returned by dlsym for a symbol of exactly this C signature.
            Some(unsafe { core::mem::transmute::<usize, $ty>(addr) })
        }
    }};
}

const UNRESOLVED: u8 = 0;
const RESOLVING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNRESOLVED);

/// Resolves the real allocator once. Must be called with the guard held, so that the allocations
/// `dlsym` makes take the unrecorded path (the static pool). Returns whether it is resolved.
#[inline(always)]
pub(crate) fn resolve() -> bool {
    // The common case, inlined into every hook; the first call takes the cold path.
    STATE.load(Ordering::Acquire) == READY || resolve_first()
}

#[cold]
#[inline(never)]
fn resolve_first() -> bool {
    match STATE.compare_exchange(UNRESOLVED, RESOLVING, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(READY) => return true,
        Err(_) => {
            // Another thread is resolving (this thread cannot be: it holds the guard, and a
            // resolving thread's nested calls never get here). Wait for it.
            while STATE.load(Ordering::Acquire) != READY {
                core::hint::spin_loop();
            }
            return true;
        }
    }
    let lookup = |name: &core::ffi::CStr, slot: &AtomicUsize| {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; its own allocations are served by
        // the pool because the caller holds the guard.
        let addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        slot.store(addr as usize, Ordering::Release);
    };
    lookup(c"malloc", &REAL.malloc);
    lookup(c"free", &REAL.free);
    lookup(c"calloc", &REAL.calloc);
    lookup(c"realloc", &REAL.realloc);
    lookup(c"posix_memalign", &REAL.posix_memalign);
    lookup(c"aligned_alloc", &REAL.aligned_alloc);
    lookup(c"memalign", &REAL.memalign);
    lookup(c"valloc", &REAL.valloc);
    lookup(c"pvalloc", &REAL.pvalloc);
    lookup(c"malloc_usable_size", &REAL.usable);
    STATE.store(READY, Ordering::Release);
    true
}

#[inline]
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = value };
}

/// What `malloc_usable_size` says of a live block of the real allocator (0 before it is resolved).
#[inline]
pub(crate) fn usable_size(p: *mut c_void) -> usize {
    match real!(usable, UsableFn) {
        // SAFETY: `p` is a live block of the real allocator.
        Some(f) => unsafe { f(p) },
        None => 0,
    }
}

/// Records a new block with the current allocation stack. Called with the re-entry guard held;
/// always inlined, so that the stack walk starts in the frame of the hook that called it.
#[inline(always)]
pub(crate) fn record(p: *mut c_void, size: usize) {
    if p.is_null() {
        return;
    }
    // The usable size is asked for at snapshot time, when it matters (one call per live block
    // instead of one per allocation).
    let stack = stacks::current();
    let thread = threads::current();
    TABLE.lock().insert(p as usize, size, stack, thread);
}

/// What the `LD_PRELOAD` front (`preload/`) builds its C hooks from: the guard, the table, the
/// real allocator's entry points, recording and the loader entries. Not a stable interface.
#[doc(hidden)]
pub mod preload {
    pub use crate::guard::Entered;
    pub use crate::table::TABLE;
    pub use crate::{AlignFn, CallocFn, FreeFn, MallocFn, PosixMemalignFn, ReallocFn, UsableFn};

    use core::ffi::{c_int, c_void};

    /// Resolves the real allocator (with the guard held); see [`crate::resolve`].
    #[inline(always)]
    pub fn resolve() -> bool {
        crate::resolve()
    }

    /// Records a new block with the current stack; inlined into the hook that calls it.
    #[inline(always)]
    pub fn record(p: *mut c_void, size: usize) {
        crate::record(p, size)
    }

    #[inline]
    pub fn set_errno(value: c_int) {
        crate::set_errno(value)
    }

    #[inline]
    pub fn usable_size(p: *mut c_void) -> usize {
        crate::usable_size(p)
    }

    pub mod stacks {
        pub use crate::stacks::{current, on_load};
    }

    pub mod threads {
        pub use crate::threads::current;
    }

    pub mod modules {
        pub use crate::modules::mark_dirty;
    }

    pub mod snapshot {
        pub use crate::snapshot::at_exit;
    }

    /// Triggers, and the signal functions the `LD_PRELOAD` front interposes so that the program
    /// cannot block or take over the recorder's signals.
    pub mod trigger {
        pub use crate::stop::{pthread_sigmask, sigprocmask};
        pub use crate::trigger::{init, sigaction, signal};
    }
}
