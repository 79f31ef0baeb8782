//! Stopping every other thread of the process without `ptrace` (which fails under gdb and in
//! containers without `CAP_SYS_PTRACE`), the way the Boehm collector does it: a suspend signal.
//!
//! The snapshotter lists the threads in `/proc/self/task` ([`crate::threads`]), gives each a slot in
//! an `mmap`'d array and sends it the suspend signal with `tgkill`. The handler finds its slot by
//! thread id, copies the interrupted general registers, stack pointer and thread pointer into it,
//! says so, and waits on a futex until the snapshotter resumes the world. It touches nothing but its
//! slot and three atomics: no lock, no allocation, no TLS of ours, so it is safe wherever it lands,
//! inside a hook or inside the real allocator (the snapshotter never calls the allocator).
//!
//! Threads created while stopping are caught by listing `/proc/self/task` again until no new id
//! appears. A thread that exits before it takes the signal is noticed (`tgkill(tid, 0)` fails) and
//! dropped; one that blocks the signal is given up after a timeout and reported as not stopped.
//!
//! Callers hold the snapshot lock, the loader lock and the table lock first (see
//! [`crate::snapshot`]), so no thread is stopped holding any of them.

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::table;
use crate::threads;

/// How many threads one snapshot can stop; more are reported as not stopped.
pub const MAX_THREADS: usize = 4096;
/// General registers saved per thread (x86-64: r8–r15, rdi, rsi, rbp, rbx, rdx, rax, rcx).
pub const SAVED_REGISTERS: usize = 15;
/// How long to wait for the threads of one listing to stop.
const STOP_TIMEOUT_NS: u64 = 1_000_000_000;
/// How many times `/proc/self/task` is listed again to catch threads created meanwhile.
const MAX_ROUNDS: usize = 32;

// Slot states.
const EMPTY: u32 = 0;
/// The signal was sent; the handler has not run yet.
const SENT: u32 = 1;
/// The handler is copying its registers.
const SAVING: u32 = 2;
/// The registers are saved and the thread waits for the resume.
const SAVED: u32 = 3;
/// The thread has left the handler after the resume.
const LEFT: u32 = 4;
/// The thread exited before it took the signal.
const GONE: u32 = 5;
/// The thread did not take the signal in time (it blocks it, or it is exiting with signals blocked).
const MISSED: u32 = 6;

/// One thread's saved state.
#[repr(C)]
pub struct Slot {
    tid: AtomicI32,
    state: AtomicU32,
    /// The interrupted general registers (not the stack or instruction pointer).
    pub registers: [usize; SAVED_REGISTERS],
    /// The interrupted stack pointer.
    pub sp: usize,
    /// The thread pointer (x86-64: the `fs` base, which points at glibc's `struct pthread`).
    pub tp: usize,
}

/// The slot array (`MAX_THREADS` slots, mapped at the first snapshot, never unmapped).
static SLOTS: AtomicPtr<Slot> = AtomicPtr::new(ptr::null_mut());
/// How many slots the current stop uses.
static USED: AtomicUsize = AtomicUsize::new(0);
/// 1 while the world is stopped; the futex the handlers wait on.
static STOPPED: AtomicU32 = AtomicU32::new(0);
/// Bumped by each handler when it saves or leaves; the futex the snapshotter waits on.
static ACKS: AtomicU32 = AtomicU32::new(0);
/// The suspend signal (0 when no handler could be installed).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) {
    let ts =
        timeout_ns.map(|ns| libc::timespec { tv_sec: (ns / 1_000_000_000) as _, tv_nsec: (ns % 1_000_000_000) as _ });
    let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a private futex wait on a live atomic of ours; it only reads the word and sleeps.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, ts_ptr)
    };
}

pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: a private futex wake on a live atomic of ours.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX) };
}

pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn tgkill(tid: i32, signal: c_int) -> bool {
    // SAFETY: sends a signal (or, with 0, only checks the thread exists); no memory is touched.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) == 0 }
}

pub fn now_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn slots() -> &'static [Slot] {
    let p = SLOTS.load(Ordering::Acquire);
    if p.is_null() {
        return &[];
    }
    // SAFETY: a mapping of MAX_THREADS zeroed slots, never unmapped; every field is atomic or
    // written only by the one thread that owns the slot before it publishes SAVED.
    unsafe { core::slice::from_raw_parts(p, MAX_THREADS) }
}

/// The thread pointer of the calling thread.
#[inline(always)]
pub fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: glibc's TCB starts with a pointer to itself, at %fs:0; the read touches only it.
        unsafe { core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
        tp
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: pthread_self has no preconditions (glibc returns the thread pointer's struct).
        unsafe { libc::pthread_self() as usize }
    }
}

/// The suspend signal's handler. See the module documentation.
extern "C" fn on_suspend(_signal: c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    if STOPPED.load(Ordering::Acquire) == 0 {
        return; // a late signal from a stop that gave up on this thread
    }
    // SAFETY: __errno_location returns this thread's errno; saved and restored around the handler.
    let errno = unsafe { *libc::__errno_location() };
    let tid = gettid();
    let used = USED.load(Ordering::Acquire).min(MAX_THREADS);
    let mine = slots()[..used].iter().find(|s| {
        s.tid.load(Ordering::Acquire) == tid
            && s.state.compare_exchange(SENT, SAVING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    });
    if let Some(slot) = mine {
        let slot_ptr = slot as *const Slot as *mut Slot;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel passes a valid ucontext_t as the third argument of an SA_SIGINFO
        // handler; this thread alone writes its slot's plain fields while the state is SAVING.
        unsafe {
            let gregs = &(*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs;
            // REG_R8 (0) ..= REG_RCX (14): every general register but the stack and instruction pointers.
            for (saved, &value) in (*slot_ptr).registers.iter_mut().zip(gregs.iter()) {
                *saved = value as usize;
            }
            (*slot_ptr).sp = gregs[libc::REG_RSP as usize] as usize;
            (*slot_ptr).tp = thread_pointer();
        }
        #[cfg(not(target_arch = "x86_64"))]
        // SAFETY: as above; without a known register layout only a stack address is saved.
        unsafe {
            let _ = context;
            let marker = 0usize;
            (*slot_ptr).sp = &marker as *const usize as usize;
            (*slot_ptr).tp = thread_pointer();
        }
        slot.state.store(SAVED, Ordering::Release);
        ACKS.fetch_add(1, Ordering::AcqRel);
        futex_wake(&ACKS);
        while STOPPED.load(Ordering::Acquire) != 0 {
            futex_wait(&STOPPED, 1, None);
        }
        slot.state.store(LEFT, Ordering::Release);
        ACKS.fetch_add(1, Ordering::AcqRel);
        futex_wake(&ACKS);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Installs the suspend signal's handler (at load, with the real `sigaction`). The signal is
/// `$HEAPSNAP_SUSPEND_SIGNAL` or `SIGRTMAX - 1`, a real-time signal glibc does not use (it takes the
/// first two, `SIGRTMIN` ones, for cancellation and `setxid`).
pub fn install(sigaction: unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int) {
    let signal =
        crate::trigger::env_number(c"HEAPSNAP_SUSPEND_SIGNAL").map_or_else(|| libc::SIGRTMAX() - 1, |n| n as c_int);
    // SAFETY: a zeroed sigaction is valid; the handler is an SA_SIGINFO handler of the right type,
    // and the mask blocks every signal while it runs, so no other handler runs on top of it.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = on_suspend as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut action.sa_mask);
        if sigaction(signal, &action, ptr::null_mut()) == 0 {
            SIGNAL.store(signal, Ordering::Release);
        }
    }
}

/// The suspend signal (0 when none is installed).
pub fn signal() -> c_int {
    SIGNAL.load(Ordering::Acquire)
}

type SigmaskFn = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;
static REAL_PTHREAD_SIGMASK: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGPROCMASK: AtomicUsize = AtomicUsize::new(0);

/// Forwards a signal-mask change with the suspend signal taken out of the set to block, so that a
/// thread that blocks "every signal" (servers often do, to take signals with `sigwait` in one
/// thread) can still be stopped, as the Boehm collector arranges too. A thread that blocks it with
/// a raw `rt_sigprocmask` system call is not covered: it is reported as not stopped.
fn set_mask(real: usize, how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> Option<c_int> {
    if real == 0 {
        return None;
    }
    // SAFETY: the address dlsym gave for a function of this signature.
    let real = unsafe { core::mem::transmute::<usize, SigmaskFn>(real) };
    let signal = SIGNAL.load(Ordering::Acquire);
    if set.is_null() || how == libc::SIG_UNBLOCK || signal == 0 {
        // SAFETY: forwarding the caller's arguments.
        return Some(unsafe { real(how, set, old) });
    }
    // SAFETY: the caller passes a valid set; the copy is ours.
    unsafe {
        let mut copy = *set;
        libc::sigdelset(&mut copy, signal);
        Some(real(how, &copy, old))
    }
}

/// `pthread_sigmask`, interposed: see [`set_mask`].
///
/// # Safety
/// The C `pthread_sigmask` contract.
pub unsafe extern "C" fn pthread_sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    set_mask(crate::trigger::resolve(&REAL_PTHREAD_SIGMASK, c"pthread_sigmask"), how, set, old).unwrap_or(libc::ENOSYS)
}

/// `sigprocmask`, interposed: see [`set_mask`].
///
/// # Safety
/// The C `sigprocmask` contract.
pub unsafe extern "C" fn sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    set_mask(crate::trigger::resolve(&REAL_SIGPROCMASK, c"sigprocmask"), how, set, old).unwrap_or_else(|| {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        -1
    })
}

/// The threads of a stopped world.
pub struct World {
    used: usize,
    /// Threads that did not take the signal in time (not scanned).
    pub missed: usize,
    /// Whether the threads could be listed at all.
    pub listed: bool,
}

impl World {
    /// The stopped threads' saved states.
    pub fn stopped(&self) -> impl Iterator<Item = &'static Slot> {
        slots()[..self.used].iter().filter(|s| s.state.load(Ordering::Acquire) == SAVED)
    }

    pub fn stopped_count(&self) -> usize {
        self.stopped().count()
    }
}

/// Stops every thread but the caller and `skip` (the recorder's own thread). The caller must hold
/// the locks named in the module documentation, and must call [`resume`] afterwards.
pub fn stop_all(skip: i32, scratch: &mut [u8]) -> World {
    let signal = SIGNAL.load(Ordering::Acquire);
    if SLOTS.load(Ordering::Acquire).is_null() {
        SLOTS.store(table::map(MAX_THREADS * size_of::<Slot>()).cast(), Ordering::Release);
    }
    let all = slots();
    let me = gettid();
    let mut world = World { used: 0, missed: 0, listed: true };
    if all.is_empty() || signal == 0 {
        world.listed = false;
        return world;
    }
    STOPPED.store(1, Ordering::Release);
    for _ in 0..MAX_ROUNDS {
        let first_new = world.used;
        let listed = threads::each_task(scratch, |tid| {
            let known =
                tid == me || tid == skip || all[..world.used].iter().any(|s| s.tid.load(Ordering::Relaxed) == tid);
            if known {
                return;
            }
            if world.used == MAX_THREADS {
                world.missed += 1;
                return;
            }
            let slot = &all[world.used];
            slot.tid.store(tid, Ordering::Release);
            slot.state.store(SENT, Ordering::Release);
            world.used += 1;
            USED.store(world.used, Ordering::Release);
            if !tgkill(tid, signal) {
                slot.state.store(GONE, Ordering::Release);
            }
        });
        if !listed {
            world.listed = false;
            break;
        }
        if world.used == first_new {
            break; // no thread appeared since the last listing
        }
        world.missed += wait_saved(&all[first_new..world.used]);
    }
    world
}

/// Waits until every slot has saved its state, exited, or timed out; returns how many timed out.
fn wait_saved(slots: &[Slot]) -> usize {
    let deadline = now_ns() + STOP_TIMEOUT_NS;
    loop {
        let seen = ACKS.load(Ordering::Acquire);
        let mut pending = 0;
        for slot in slots {
            match slot.state.load(Ordering::Acquire) {
                SENT if !tgkill(slot.tid.load(Ordering::Relaxed), 0) => {
                    let _ = slot.state.compare_exchange(SENT, GONE, Ordering::AcqRel, Ordering::Acquire);
                }
                SENT | SAVING => pending += 1,
                _ => {}
            }
        }
        if pending == 0 {
            return 0;
        }
        if now_ns() >= deadline {
            let mut missed = 0;
            for slot in slots {
                if slot.state.compare_exchange(SENT, MISSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    missed += 1;
                }
                // A handler between SAVING and SAVED finishes in a few instructions.
                while slot.state.load(Ordering::Acquire) == SAVING {
                    core::hint::spin_loop();
                }
            }
            return missed;
        }
        futex_wait(&ACKS, seen, Some(1_000_000));
    }
}

/// Lets the stopped threads go, and waits (boundedly) until each has left the handler, so that
/// the slots can be reused by the next stop.
pub fn resume(world: World) {
    STOPPED.store(0, Ordering::Release);
    futex_wake(&STOPPED);
    let deadline = now_ns() + STOP_TIMEOUT_NS;
    loop {
        let seen = ACKS.load(Ordering::Acquire);
        let waiting = slots()[..world.used].iter().any(|s| s.state.load(Ordering::Acquire) == SAVED);
        if !waiting || now_ns() >= deadline {
            break;
        }
        futex_wait(&ACKS, seen, Some(1_000_000));
    }
    USED.store(0, Ordering::Release);
    for slot in &slots()[..world.used] {
        slot.tid.store(0, Ordering::Relaxed);
        slot.state.store(EMPTY, Ordering::Release);
    }
}

/// In a child after `fork`: the parent's stop, if any, is not this process's.
pub fn after_fork_child() {
    STOPPED.store(0, Ordering::Release);
    USED.store(0, Ordering::Release);
}
