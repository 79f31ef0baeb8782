//! `libheapsnap_recorder.so`: loaded with `LD_PRELOAD`, it records every heap block the program
//! allocates and writes `.hsnap` snapshots of the live blocks, the pointers between them and the
//! roots (globals, and each thread's registers, stack and static TLS) that reference them: at exit,
//! each time the process gets a chosen signal, or periodically.
//!
//! Design (see also `README.md`, section "Recording native programs"):
//! - Every allocation entry point is defined here and forwards to the next definition, found with
//!   `dlsym(RTLD_NEXT, …)`. `dlsym` itself calls `calloc` before the real one is known: those calls
//!   are served from a small static pool ([`pool`]), whose blocks `free` and `realloc` recognise.
//! - The recorder never re-enters itself: a per-thread guard ([`guard`], initial-exec TLS, no
//!   destructor) sends allocations made while a hook runs (by the real allocator, the snapshot code,
//!   or a signal handler that interrupted a hook) straight to the real allocator, unrecorded.
//! - Its state never lives in the hooked heap: the live-block table ([`table`]) and every buffer of
//!   the snapshot are `mmap`'d, behind a spinlock that cannot allocate.
//! - A snapshot ([`snapshot`]) holds the snapshot lock, the loader's lock and the table lock, in
//!   that order, then stops every other thread with a suspend signal ([`stop`], [`threads`]), scans
//!   from the roots ([`roots`]), writes the file, and lets the threads go. So a hook must never
//!   call into the dynamic linker (`dl_iterate_phdr`, `dladdr`, an unwinder that uses them) while
//!   it holds the table lock: do such work before taking it.
//! - Snapshots are taken from a `.fini_array` destructor at exit, after `exit` has run the program's
//!   `atexit` handlers and the destructors of the objects loaded after this one; and, for a signal or
//!   a timer, on the recorder's own thread ([`trigger`]), which also keeps the locks consistent
//!   across `fork`.
//! - Each block's allocation stack ([`stacks`]: unwound by [`unwind`], interned in [`trie`], with
//!   the module map of [`modules`]) is taken in the hook; the recorder's own Rust allocations come
//!   from a private `mmap`'d allocator ([`alloc`]).
//!
//! Scope: Linux, glibc; x86-64 for registers (other architectures scan stacks but not registers).

mod alloc;
mod guard;
mod modules;
mod pool;
mod roots;
mod snapshot;
mod stacks;
mod stop;
mod table;
mod threads;
mod trie;
mod trigger;
mod unwind;

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use guard::Entered;
use table::TABLE;

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type CallocFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type PosixMemalignFn = unsafe extern "C" fn(*mut *mut c_void, usize, usize) -> c_int;
type AlignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

/// The real allocator's entry points, as addresses (0 until resolved).
struct Real {
    malloc: AtomicUsize,
    free: AtomicUsize,
    calloc: AtomicUsize,
    realloc: AtomicUsize,
    posix_memalign: AtomicUsize,
    aligned_alloc: AtomicUsize,
    memalign: AtomicUsize,
    valloc: AtomicUsize,
    pvalloc: AtomicUsize,
    usable: AtomicUsize,
}

static REAL: Real = Real {
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
macro_rules! real {
    ($field:ident, $ty:ty) => {{
        let addr = REAL.$field.load(Ordering::Acquire);
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
#[inline]
fn resolve() -> bool {
    // The common case, without the locked compare-exchange below.
    if STATE.load(Ordering::Acquire) == READY {
        return true;
    }
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

fn set_errno(value: c_int) {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() = value };
}

pub(crate) fn usable_size(p: *mut c_void) -> usize {
    match real!(usable, UsableFn) {
        // SAFETY: `p` is a live block of the real allocator.
        Some(f) => unsafe { f(p) },
        None => 0,
    }
}

#[inline(always)]
fn record(p: *mut c_void, size: usize) {
    if p.is_null() {
        return;
    }
    // The usable size is asked for at snapshot time, when it matters (one call per live block
    // instead of one per allocation).
    let stack = stacks::current();
    TABLE.lock().insert(p as usize, size, 0, stack);
}

// Unrecorded paths, taken while the guard is held: the real allocator once known, else the pool.

fn raw_malloc(size: usize) -> *mut c_void {
    match real!(malloc, MallocFn) {
        // SAFETY: forwarding malloc's own contract.
        Some(f) => unsafe { f(size) },
        None => pool::alloc(size, 16),
    }
}

fn raw_calloc(n: usize, size: usize) -> *mut c_void {
    let Some(total) = n.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    match real!(calloc, CallocFn) {
        // SAFETY: forwarding calloc's own contract.
        Some(f) => unsafe { f(n, size) },
        // The pool is zeroed and never reused.
        None => pool::alloc(total, 16),
    }
}

fn raw_aligned(align: usize, size: usize) -> *mut c_void {
    match real!(memalign, AlignFn) {
        // SAFETY: forwarding memalign's own contract.
        Some(f) => unsafe { f(align, size) },
        None => pool::alloc(size, align),
    }
}

/// Frees without recording, but still forgets the block when the lock is free, so that the table
/// never keeps a block the allocator has reused or unmapped.
fn raw_free(p: *mut c_void) {
    if p.is_null() || pool::contains(p) {
        return;
    }
    if let Some(mut table) = TABLE.try_lock() {
        table.remove(p as usize);
    }
    if let Some(f) = real!(free, FreeFn) {
        // SAFETY: `p` came from the real allocator (it is not a pool block).
        unsafe { f(p) }
    }
}

fn raw_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return raw_malloc(size);
    }
    if pool::contains(p) {
        return pool::realloc_into(p, size, raw_malloc);
    }
    if let Some(mut table) = TABLE.try_lock() {
        table.remove(p as usize);
    }
    match real!(realloc, ReallocFn) {
        // SAFETY: `p` came from the real allocator.
        Some(f) => unsafe { f(p, size) },
        None => ptr::null_mut(),
    }
}

/// # Safety
/// The C `malloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let Some(_guard) = Entered::enter() else { return raw_malloc(size) };
    resolve();
    let p = raw_malloc(size);
    record(p, size);
    p
}

/// # Safety
/// The C `free` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    let Some(_guard) = Entered::enter() else { return raw_free(p) };
    if p.is_null() || pool::contains(p) {
        return;
    }
    resolve();
    TABLE.lock().remove(p as usize);
    if let Some(f) = real!(free, FreeFn) {
        // SAFETY: `p` is a block of the real allocator, now out of the table.
        unsafe { f(p) }
    }
}

/// # Safety
/// The C `calloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    let Some(_guard) = Entered::enter() else { return raw_calloc(n, size) };
    resolve();
    let p = raw_calloc(n, size);
    record(p, n.wrapping_mul(size));
    p
}

/// # Safety
/// The C `realloc` contract, as glibc implements it: a null pointer allocates; size 0 frees and
/// returns null; on failure the old block stays allocated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    let Some(_guard) = Entered::enter() else { return raw_realloc(p, size) };
    resolve();
    if p.is_null() {
        let q = raw_malloc(size);
        record(q, size);
        return q;
    }
    if pool::contains(p) {
        let q = pool::realloc_into(p, size, raw_malloc);
        record(q, size);
        return q;
    }
    if size == 0 {
        TABLE.lock().remove(p as usize);
        if let Some(f) = real!(free, FreeFn) {
            // SAFETY: `p` is a block of the real allocator, now out of the table.
            unsafe { f(p) }
        }
        return ptr::null_mut();
    }
    let Some(f) = real!(realloc, ReallocFn) else { return ptr::null_mut() };
    let stack = stacks::current();
    // The lock is held across the real call so that no other thread can be handed the old
    // address while the table still lists it.
    let mut table = TABLE.lock();
    let old = table.remove(p as usize);
    // SAFETY: `p` is a live block of the real allocator.
    let q = unsafe { f(p, size) };
    if q.is_null() {
        if let Some(entry) = old {
            table.reinsert(entry);
        }
    } else {
        table.insert(q as usize, size, 0, stack);
    }
    q
}

/// # Safety
/// The C `reallocarray` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarding to realloc with the same pointer.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// # Safety
/// The C `posix_memalign` contract (returns an error code, leaves errno alone).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    let guard = Entered::enter();
    if guard.is_some() {
        resolve();
    }
    let code = match real!(posix_memalign, PosixMemalignFn) {
        // SAFETY: forwarding posix_memalign's own contract.
        Some(f) => unsafe { f(out, align, size) },
        None => {
            if !align.is_power_of_two() || align % size_of::<usize>() != 0 {
                return libc::EINVAL;
            }
            let p = pool::alloc(size, align);
            if p.is_null() {
                return libc::ENOMEM;
            }
            // SAFETY: the caller passes a writable pointer slot.
            unsafe { *out = p };
            0
        }
    };
    if code == 0 && guard.is_some() {
        // SAFETY: on success posix_memalign stored the block in `*out`.
        record(unsafe { *out }, size);
    }
    code
}

/// Forwards one of the aligned allocators and records the block under `recorded` bytes.
fn aligned(real: Option<AlignFn>, align: usize, size: usize, recorded: usize) -> *mut c_void {
    let guard = Entered::enter();
    if guard.is_none() {
        return raw_aligned(align, size);
    }
    resolve();
    let p = match real {
        // SAFETY: forwarding the real function's own contract.
        Some(f) => unsafe { f(align, size) },
        None => raw_aligned(align, size),
    };
    record(p, recorded);
    p
}

/// # Safety
/// The C `aligned_alloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    aligned(real!(aligned_alloc, AlignFn), align, size, size)
}

/// # Safety
/// The C `memalign` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    aligned(real!(memalign, AlignFn), align, size, size)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 { page as usize } else { 4096 }
}

/// # Safety
/// The C `valloc` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let page = page_size();
    match real!(valloc, MallocFn) {
        Some(f) => aligned_with(f, page, size, size),
        None => aligned(None, page, size, size),
    }
}

/// # Safety
/// The C `pvalloc` contract: the size is rounded up to whole pages, and recorded so, as memcheck does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let page = page_size();
    // glibc rounds 0 to 0 (a minimum chunk), not to a page.
    let Some(rounded) = size.checked_next_multiple_of(page) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    match real!(pvalloc, MallocFn) {
        Some(f) => aligned_with(f, page, size, rounded),
        None => aligned(None, page, rounded, rounded),
    }
}

/// `valloc` and `pvalloc`: the real function takes only a size.
fn aligned_with(f: MallocFn, page: usize, size: usize, recorded: usize) -> *mut c_void {
    let Some(_guard) = Entered::enter() else { return raw_aligned(page, size) };
    resolve();
    // SAFETY: forwarding the real function's own contract.
    let p = unsafe { f(size) };
    record(p, recorded);
    p
}

/// # Safety
/// The C `malloc_usable_size` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if pool::contains(p) {
        return pool::size_of_block(p);
    }
    usable_size(p)
}

/// # Safety
/// The C23 `free_sized` contract (glibc 2.41 and later); the size is not needed to free.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: same contract as free.
    unsafe { free(p) }
}

/// # Safety
/// The C23 `free_aligned_sized` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: same contract as free.
    unsafe { free(p) }
}

extern "C" fn on_load() {
    if let Some(_guard) = Entered::enter() {
        resolve();
        stacks::on_load();
        trigger::init();
    }
}

extern "C" fn on_exit() {
    snapshot::at_exit();
}

#[used]
#[unsafe(link_section = ".init_array")]
static ON_LOAD: extern "C" fn() = on_load;

/// Runs from `_dl_fini`: after the program's `atexit` handlers and the destructors of the main
/// program and of every object loaded after this library.
#[used]
#[unsafe(link_section = ".fini_array")]
static ON_EXIT: extern "C" fn() = on_exit;
