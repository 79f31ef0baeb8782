//! When snapshots are taken, and the process events the recorder must follow: `fork`.
//!
//! Configuration comes from the environment, which `heapsnap record` sets:
//! - `HEAPSNAP_SIGNAL=N`: a snapshot each time the process gets signal N;
//! - `HEAPSNAP_EVERY_MS=N`: a snapshot every N milliseconds;
//! - `HEAPSNAP_AT_EXIT=0`: no snapshot at exit (the default is one).
//!
//! Snapshots are never taken in a signal handler: the trigger signal's handler only bumps a
//! counter and wakes a futex. The work is done by the recorder's own thread, made with
//! `pthread_create` (not a raw `clone`: a thread glibc does not know has no TLS, so no `errno` and
//! no re-entry guard, and it would break `pthread` functions that walk the thread list). It is
//! created with the guard held, so the allocations `pthread_create` makes go unrecorded, and with
//! every signal blocked but the suspend signal, so it never runs the program's handlers. It holds
//! the guard for its whole life: nothing it allocates is recorded, and its stack is not a root.
//!
//! The program's own handler for the trigger signal is honoured: `sigaction` and `signal` are
//! interposed for that one signal, so the program installs and reads back its handler as usual, and
//! the recorder's handler calls it after asking for the snapshot. The program's mask and flags other
//! than `SA_SIGINFO` are not applied to its handler. A program that had no handler no longer dies of
//! the signal (that is what asking for `--signal` means). The suspend signal ([`crate::stop`]) is
//! kept from the program the same way: it reads a default action for it and cannot change it.
//!
//! `fork`: `pthread_atfork` handlers take the snapshot lock and the table lock before the fork and
//! release them in both processes, so the child never starts with a lock held by a thread it does
//! not have. The child records on: it numbers its snapshots from 1 again, under its own name (the
//! `%p` of the pattern, or `.PID` appended), and gets a recorder thread of its own.

use core::ffi::{CStr, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::guard::Entered;
use crate::snapshot::{self, SNAPSHOTS};
use crate::stop::{self, futex_wait, futex_wake, gettid, now_ns};
use crate::table::TABLE;

type SigactionFn = unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;
type SignalFn = unsafe extern "C" fn(c_int, libc::sighandler_t) -> libc::sighandler_t;

/// The trigger signal (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The timer's period (0: none).
static EVERY_NS: AtomicU64 = AtomicU64::new(0);
static AT_EXIT: AtomicBool = AtomicBool::new(true);
/// Bumped by the trigger handler; the futex the recorder's thread waits on.
static REQUESTS: AtomicU32 = AtomicU32::new(0);
/// The recorder thread's id (0: none), skipped when stopping the world.
static RECORDER_TID: AtomicI32 = AtomicI32::new(0);
/// Set when the exit snapshot starts: the recorder's thread takes no more.
static EXITING: AtomicBool = AtomicBool::new(false);
/// The program's own handler for the trigger signal (`SIG_DFL` by default) and its `SA_SIGINFO` bit.
static PROGRAM_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PROGRAM_FLAGS: AtomicI32 = AtomicI32::new(0);
static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// A decimal number from the environment.
pub fn env_number(name: &CStr) -> Option<u64> {
    // SAFETY: getenv with a NUL-terminated name; a non-null result is a NUL-terminated string.
    let value = unsafe {
        let p = libc::getenv(name.as_ptr());
        if p.is_null() {
            return None;
        }
        CStr::from_ptr(p).to_bytes()
    };
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, &d| n * 10 + (d - b'0') as u64))
}

pub fn recorder_tid() -> i32 {
    RECORDER_TID.load(Ordering::Acquire)
}

pub fn at_exit_enabled() -> bool {
    AT_EXIT.load(Ordering::Acquire)
}

/// Called when the exit snapshot starts.
pub fn exiting() {
    EXITING.store(true, Ordering::Release);
}

/// The next definition of `name` (after this library), looked up once and kept in `slot`.
pub fn resolve(slot: &AtomicUsize, name: &CStr) -> usize {
    let mut addr = slot.load(Ordering::Acquire);
    if addr == 0 {
        // `dlsym` may allocate: with the guard held, that goes unrecorded (or to the pool).
        let _guard = Entered::enter();
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
        addr = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        slot.store(addr, Ordering::Release);
    }
    addr
}

fn real_sigaction() -> Option<SigactionFn> {
    let addr = resolve(&REAL_SIGACTION, c"sigaction");
    // SAFETY: the address dlsym gave for `sigaction`, which has this signature.
    (addr != 0).then(|| unsafe { core::mem::transmute::<usize, SigactionFn>(addr) })
}

/// Reads the configuration, installs the handlers and starts the recorder's thread if needed.
/// Called at load, with the guard held.
pub fn init() {
    crate::roots::init();
    let Some(sigaction) = real_sigaction() else { return };
    stop::install(sigaction);
    AT_EXIT.store(env_number(c"HEAPSNAP_AT_EXIT") != Some(0), Ordering::Release);
    EVERY_NS.store(env_number(c"HEAPSNAP_EVERY_MS").unwrap_or(0).saturating_mul(1_000_000), Ordering::Release);
    if let Some(signal) = env_number(c"HEAPSNAP_SIGNAL").filter(|&s| s > 0 && s < 65) {
        install_trigger(sigaction, signal as c_int);
    }
    // SAFETY: registers three functions that take no arguments and only touch our own locks.
    unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    if SIGNAL.load(Ordering::Acquire) != 0 || EVERY_NS.load(Ordering::Acquire) != 0 {
        spawn_recorder();
    }
}

fn install_trigger(sigaction: SigactionFn, signal: c_int) {
    // SAFETY: zeroed sigactions are valid; ours is an SA_SIGINFO handler of the right type.
    unsafe {
        let mut action: libc::sigaction = core::mem::zeroed();
        let mut previous: libc::sigaction = core::mem::zeroed();
        action.sa_sigaction = on_trigger as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if sigaction(signal, &action, &mut previous) == 0 {
            PROGRAM_HANDLER.store(previous.sa_sigaction, Ordering::Release);
            PROGRAM_FLAGS.store(previous.sa_flags, Ordering::Release);
            SIGNAL.store(signal, Ordering::Release);
        }
    }
}

/// The trigger signal's handler: asks the recorder's thread for a snapshot, then runs the
/// program's own handler, if it has one.
extern "C" fn on_trigger(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: this thread's errno, saved and restored around the wake.
    let errno = unsafe { *libc::__errno_location() };
    REQUESTS.fetch_add(1, Ordering::AcqRel);
    futex_wake(&REQUESTS);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    let handler = PROGRAM_HANDLER.load(Ordering::Acquire);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    // SAFETY: the program installed this handler for this signal, with this calling convention.
    unsafe {
        if PROGRAM_FLAGS.load(Ordering::Acquire) & libc::SA_SIGINFO != 0 {
            let f = core::mem::transmute::<usize, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(handler);
            f(signal, info, context);
        } else {
            let f = core::mem::transmute::<usize, extern "C" fn(c_int)>(handler);
            f(signal);
        }
    }
}

/// `sigaction`, interposed: the trigger signal's action is the program's own, kept aside; every
/// other signal goes to the real function.
///
/// # Safety
/// The C `sigaction` contract.
pub unsafe extern "C" fn sigaction(signal: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if signal == stop::signal() && signal != 0 {
        // The suspend signal stays ours: a program that takes over every real-time signal must not
        // make the threads unstoppable. It sees a default action that it cannot change.
        if !old.is_null() {
            // SAFETY: the caller passes null or a valid sigaction structure.
            unsafe { *old = core::mem::zeroed() };
        }
        return 0;
    }
    let trigger = SIGNAL.load(Ordering::Acquire);
    if trigger == 0 || signal != trigger {
        return match real_sigaction() {
            // SAFETY: forwarding the caller's arguments.
            Some(f) => unsafe { f(signal, act, old) },
            None => {
                // SAFETY: this thread's errno.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                -1
            }
        };
    }
    // SAFETY: the caller passes null or valid sigaction structures.
    unsafe {
        if !old.is_null() {
            *old = core::mem::zeroed();
            (*old).sa_sigaction = PROGRAM_HANDLER.load(Ordering::Acquire);
            (*old).sa_flags = PROGRAM_FLAGS.load(Ordering::Acquire);
        }
        if !act.is_null() {
            PROGRAM_FLAGS.store((*act).sa_flags, Ordering::Release);
            PROGRAM_HANDLER.store((*act).sa_sigaction, Ordering::Release);
        }
    }
    0
}

/// `signal`, interposed for the same reason as [`sigaction`].
///
/// # Safety
/// The C `signal` contract.
pub unsafe extern "C" fn signal(signal: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    if signal == stop::signal() && signal != 0 {
        return libc::SIG_DFL; // see `sigaction`
    }
    let trigger = SIGNAL.load(Ordering::Acquire);
    if trigger == 0 || signal != trigger {
        let addr = resolve(&REAL_SIGNAL, c"signal");
        if addr == 0 {
            return libc::SIG_ERR;
        }
        // SAFETY: the address dlsym gave for `signal`, forwarding the caller's arguments.
        return unsafe { core::mem::transmute::<usize, SignalFn>(addr)(signal, handler) };
    }
    PROGRAM_FLAGS.store(libc::SA_RESTART, Ordering::Release);
    PROGRAM_HANDLER.swap(handler, Ordering::AcqRel)
}

/// Starts the recorder's thread. The caller holds the guard (at load, after fork).
fn spawn_recorder() {
    // SAFETY: sigset and pthread calls on local, initialised values; the thread function has the
    // signature pthread_create expects and takes no argument.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut thread: libc::pthread_t = 0;
        if libc::pthread_create(&mut thread, ptr::null(), recorder_main, ptr::null_mut()) == 0 {
            libc::pthread_detach(thread);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
    }
}

extern "C" fn recorder_main(_: *mut c_void) -> *mut c_void {
    // Held for the thread's whole life: nothing it does is recorded.
    let _guard = Entered::enter();
    RECORDER_TID.store(gettid(), Ordering::Release);
    // Stoppable like any thread, should a snapshot start before its id is published.
    // SAFETY: sigset calls on a local, initialised set.
    unsafe {
        let mut suspend: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut suspend);
        libc::sigaddset(&mut suspend, stop::signal());
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &suspend, ptr::null_mut());
    }
    let every = EVERY_NS.load(Ordering::Acquire);
    let mut next = now_ns().saturating_add(every);
    // Requests made before this thread ran count too (the counter starts at 0 in every process).
    let mut seen = 0;
    loop {
        let timeout = (every > 0).then(|| next.saturating_sub(now_ns()).max(1));
        if REQUESTS.load(Ordering::Acquire) == seen {
            futex_wait(&REQUESTS, seen, timeout);
        }
        if EXITING.load(Ordering::Acquire) {
            // The exit snapshot is the last; the process ends soon and takes this thread with it.
            loop {
                futex_wait(&REQUESTS, REQUESTS.load(Ordering::Acquire), None);
            }
        }
        let now = REQUESTS.load(Ordering::Acquire);
        if now != seen {
            seen = now;
            snapshot::on_request(b"signal");
        } else if every > 0 && now_ns() >= next {
            snapshot::on_request(b"timer");
            next = now_ns().saturating_add(every);
        }
    }
}

extern "C" fn before_fork() {
    SNAPSHOTS.acquire();
    TABLE.hold();
}

extern "C" fn after_fork_parent() {
    TABLE.release_held();
    SNAPSHOTS.release();
}

extern "C" fn after_fork_child() {
    TABLE.release_held();
    SNAPSHOTS.release();
    stop::after_fork_child();
    snapshot::after_fork_child();
    crate::threads::forget_after_fork();
    RECORDER_TID.store(0, Ordering::Release);
    REQUESTS.store(0, Ordering::Release);
    EXITING.store(false, Ordering::Release);
    if SIGNAL.load(Ordering::Acquire) != 0 || EVERY_NS.load(Ordering::Acquire) != 0 {
        let _guard = Entered::enter();
        spawn_recorder();
    }
}
