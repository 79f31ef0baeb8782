//! `libheapsnap_recorder.so`: loaded with `LD_PRELOAD`, it records every heap block the program
//! allocates and writes `.hsnap` snapshots of the live blocks, the pointers between them and the
//! roots (globals, and each thread's registers, stack and static TLS) that reference them: at exit,
//! each time the process gets a chosen signal, or periodically.
//!
//! This crate is the `LD_PRELOAD` front of the recorder: the C allocation entry points, the
//! loader's constructor and destructor entries, and the private allocator for the recorder's own
//! Rust allocations. What they record into (the live-block table, the allocation stacks, the
//! snapshot writer) is the `heapsnap-recorder` crate (`recorder/`), which Rust programs also link
//! directly, with its `Recorder` as their global allocator.
//!
//! Design (see also `README.md`, section "Allocation stacks"):
//! - Every allocation entry point is defined here and forwards to the next definition, found with
//!   `dlsym(RTLD_NEXT, …)`. `dlsym` itself calls `calloc` before the real one is known: those calls
//!   are served from a small static pool ([`pool`]), whose blocks `free` and `realloc` recognise.
//! - The recorder never re-enters itself: a per-thread guard (initial-exec TLS, no destructor)
//!   sends allocations made while a hook runs straight to the real allocator, unrecorded.
//! - Its state never lives in the hooked heap: the live-block table and every buffer of the
//!   snapshot are `mmap`'d, behind a spinlock that cannot allocate; the recorder's own Rust
//!   allocations (the unwinder's tables) come from [`MmapAlloc`], this library's global allocator.
//! - Snapshots are taken from a `.fini_array` destructor at exit, after `exit` has run the program's
//!   `atexit` handlers and the destructors of the objects loaded after this one; and, for a signal or
//!   a timer, on the recorder's own thread (started from the `.init_array` entry).
//! - `dlclose` is interposed only to tell the unwinder that an object may be gone; `sigaction`,
//!   `signal`, `pthread_sigmask` and `sigprocmask` so that the program can neither block the
//!   signal that stops threads for a snapshot nor take the trigger signal away (its own handler
//!   for that signal still runs).

mod pool;

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use core_recorder::MmapAlloc;
use core_recorder::preload::{
    AlignFn, CallocFn, Entered, FreeFn, MallocFn, PosixMemalignFn, ReallocFn, TABLE, modules, record, resolve,
    set_errno, snapshot, stacks, threads, trigger, usable_size,
};
use core_recorder::real;

/// Every Rust allocation of the recorder (the unwinder's) goes here, never to the hooked malloc.
#[global_allocator]
static ALLOCATOR: MmapAlloc = MmapAlloc::new();

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
    let thread = threads::current();
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
        table.insert(q as usize, size, stack, thread);
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

/// The real `dlclose`, 0 until looked up.
static REAL_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

/// `dlclose`, interposed only to learn that an object may be gone. (`dlopen` is not interposed:
/// glibc finds the caller's `RUNPATH` from its return address, which would then be ours; new
/// objects are found when a stack meets an unknown address instead.)
///
/// # Safety
/// The C `dlclose` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    let mut real = REAL_DLCLOSE.load(Ordering::Acquire);
    if real == 0 {
        // dlsym may allocate: with the guard held that takes the unrecorded path.
        let _guard = Entered::enter();
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
        real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlclose".as_ptr()) } as usize;
        if real == 0 {
            return -1;
        }
        REAL_DLCLOSE.store(real, Ordering::Release);
    }
    // SAFETY: the address dlsym returned for dlclose, which has this signature.
    let real = unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(*mut c_void) -> c_int>(real) };
    // SAFETY: forwarding dlclose's own contract.
    let result = unsafe { real(handle) };
    modules::mark_dirty();
    result
}

/// # Safety
/// The C `sigaction` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(signal: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    // SAFETY: forwarding the caller's contract.
    unsafe { trigger::sigaction(signal, act, old) }
}

/// # Safety
/// The C `signal` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(signal: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: forwarding the caller's contract.
    unsafe { trigger::signal(signal, handler) }
}

/// # Safety
/// The C `pthread_sigmask` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    // SAFETY: forwarding the caller's contract.
    unsafe { trigger::pthread_sigmask(how, set, old) }
}

/// # Safety
/// The C `sigprocmask` contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    // SAFETY: forwarding the caller's contract.
    unsafe { trigger::sigprocmask(how, set, old) }
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
