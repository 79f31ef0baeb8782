//! Taking a snapshot: at exit, on the recorder's thread when a signal or the timer asks, or on
//! demand from a Rust program ([`crate::snapshot`]). Nothing
//! on this path allocates: the live blocks are copied into an `mmap`'d array, `/proc/self/maps` and
//! `/proc/self/cmdline` are read with `read(2)` into `mmap`'d buffers, and the `hsnap::Writer`
//! streams through an `mmap`'d buffer into a raw file descriptor.
//!
//! Every other thread is stopped first ([`crate::stop`]); the roots ([`crate::roots`]) are the
//! writable segments of every loaded object and each thread's registers, stack and static TLS.
//! Words in the real allocator's own data (glibc's `main_arena`) that point at the header of the
//! chunk after a live block (its top-chunk and bin pointers) are the allocator's bookkeeping, not
//! references: memcheck, whose allocator lives outside the program, never sees them, so they are not
//! roots here either. The world stays stopped until the nodes, edges and roots are written; the
//! pause is recorded as `capture.pause.ns`.

use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::io;

use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind, Sink, Writer};

use crate::guard::Entered;
use crate::roots::{self, Region, Regions};
use crate::stop;
use crate::table::{self, Entry, TABLE};

/// A raw file descriptor as a [`Sink`]: `write(2)` until done, retrying on `EINTR`.
struct FdSink(c_int);

impl Sink for FdSink {
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: writes from a live slice to a descriptor this module opened.
            let n = unsafe { libc::write(self.0, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let err = errno();
                if err == libc::EINTR {
                    continue;
                }
                return Err(io::Error::from_raw_os_error(err));
            }
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }
}

fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() }
}

/// An `mmap`'d scratch region, unmapped when dropped.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

impl Mapped {
    fn new(len: usize) -> io::Result<Mapped> {
        let len = len.max(1);
        let ptr = table::map(len);
        if ptr.is_null() { Err(io::Error::from_raw_os_error(libc::ENOMEM)) } else { Ok(Mapped { ptr, len }) }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: a live private mapping of `len` bytes, reached only through `self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn entries(&mut self, n: usize) -> &mut [Entry] {
        assert!(n * size_of::<Entry>() <= self.len);
        // SAFETY: the mapping is page-aligned, zeroed (a valid `Entry` is any bit pattern) and holds
        // `n` entries.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.cast::<Entry>(), n) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        table::unmap(self.ptr, self.len);
    }
}

/// Mappings read from `/proc/self/maps`, at most.
const MAX_MAPPINGS: usize = 1 << 16;
const WRITE_BUFFER: usize = 1 << 20;
const TEXT_BUFFER: usize = 64 << 10;

/// Formats `value` in decimal into `buf`, returning the digits.
fn decimal(buf: &mut [u8; 20], mut value: u64) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buf[at..];
        }
    }
}

/// Writes a line to standard error without allocating.
pub(crate) fn complain(what: &[u8], err: &io::Error) {
    let mut digits = [0u8; 20];
    let code = decimal(&mut digits, err.raw_os_error().unwrap_or(0) as u64);
    for part in [b"heapsnap-recorder: ".as_slice(), what, b": errno ", code, b"\n"] {
        // SAFETY: writes a live slice to the standard error descriptor.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

/// Serialises snapshots (the exit path, the recorder's thread) and `fork` (see [`crate::trigger`]).
pub static SNAPSHOTS: SpinLock = SpinLock::new();
/// Snapshots written by this process (the `%n` of `$HEAPSNAP_OUT`).
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
/// Set in a child after `fork`: its file name must differ from the parent's.
static FORKED: AtomicBool = AtomicBool::new(false);

/// A lock that spins and yields, never allocates, and can be held across `fork`.
pub struct SpinLock(AtomicBool);

impl SpinLock {
    pub const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    pub fn acquire(&self) {
        while self.0.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    pub fn release(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// In a child after `fork`: numbering starts again, under a name of its own.
pub fn after_fork_child() {
    SEQUENCE.store(0, Ordering::Release);
    FORKED.store(true, Ordering::Release);
}

/// The `.fini_array` entry: takes the snapshot at exit, unless only other triggers were asked for.
#[inline(never)]
pub fn at_exit() {
    let Some(_guard) = Entered::enter() else { return };
    // Taken first, here, so that the frames of the snapshot code below it are not scanned.
    let sp = stack_pointer();
    // The exiting thread's registers matter too (memcheck scans them): the callee-saved ones may
    // still hold a caller's local that no frame spilled. The others were clobbered by the calls.
    for (slot, value) in CALLER_REGISTERS.iter().zip(callee_saved_registers()) {
        slot.store(value, Ordering::Relaxed);
    }
    crate::trigger::exiting();
    if !crate::trigger::at_exit_enabled() {
        return;
    }
    if let Err(err) = take(Some(sp), b"exit", None) {
        complain(b"writing the heap snapshot failed", &err);
    }
}

/// A snapshot asked for by a signal or the timer; called on the recorder's thread (guard held).
pub fn on_request(trigger: &'static [u8]) {
    if let Err(err) = take(None, trigger, None) {
        complain(b"writing the heap snapshot failed", &err);
    }
}

/// The exiting thread's callee-saved registers, a root region while its snapshot is taken.
static CALLER_REGISTERS: [AtomicUsize; 6] = [const { AtomicUsize::new(0) }; 6];

/// x86-64: rbx, rbp, r12 to r15.
#[inline(always)]
fn callee_saved_registers() -> [usize; 6] {
    #[cfg(target_arch = "x86_64")]
    {
        let (a, b, c, d, e, f): (usize, usize, usize, usize, usize, usize);
        // SAFETY: copies six registers into outputs; touches no memory.
        unsafe {
            core::arch::asm!(
                "mov {a}, rbx", "mov {b}, rbp", "mov {c}, r12", "mov {d}, r13", "mov {e}, r14", "mov {f}, r15",
                a = out(reg) a, b = out(reg) b, c = out(reg) c, d = out(reg) d, e = out(reg) e, f = out(reg) f,
                options(nomem, nostack, preserves_flags)
            )
        };
        [a, b, c, d, e, f]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        [0; 6]
    }
}

#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies the stack pointer into a register; touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let marker = 0usize;
        sp = &marker as *const usize as usize;
    }
    sp
}

/// What one snapshot is asked to do, and its outcome, handed through `dl_iterate_phdr`.
struct Job<'a> {
    /// The calling thread's stack pointer when its stack is a root (at exit); `None` on the
    /// recorder's own thread, whose stack holds nothing of the program's.
    caller_sp: Option<usize>,
    trigger: &'static [u8],
    /// Where to write: `None` for `$HEAPSNAP_OUT` (or `heapsnap-PID.hsnap`) and its sequence.
    target: Option<&'a [u8]>,
    result: io::Result<()>,
}

/// Takes a snapshot. Lock order: the snapshot lock, then the loader's lock (held by running the
/// whole snapshot inside a `dl_iterate_phdr` callback, as LeakSanitizer does), then the table lock;
/// then every other thread is stopped, so none is stopped holding any of them.
/// `target` is the file to write (at most 4095 bytes, no NUL), or `None` for `$HEAPSNAP_OUT`.
pub(crate) fn take(caller_sp: Option<usize>, trigger: &'static [u8], target: Option<&[u8]>) -> io::Result<()> {
    SNAPSHOTS.acquire();
    let mut job = Job { caller_sp, trigger, target, result: Ok(()) };
    // SAFETY: the callback runs `take_locked` once with our `Job`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(with_loader_lock), (&mut job as *mut Job<'_>).cast()) };
    SNAPSHOTS.release();
    job.result
}

unsafe extern "C" fn with_loader_lock(_info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: `take` passes its `Job`.
    let job = unsafe { &mut *data.cast::<Job<'_>>() };
    job.result = take_locked(job.caller_sp, job.trigger, job.target);
    1 // once is enough
}

/// The stopped world and the clock of the pause.
struct Pause {
    world: Option<stop::World>,
    since: u64,
    ns: u64,
}

impl Pause {
    /// Resumes the world (once) and returns how long it was stopped.
    fn end(&mut self) -> u64 {
        if let Some(world) = self.world.take() {
            stop::resume(world);
            self.ns = stop::now_ns().saturating_sub(self.since);
        }
        self.ns
    }
}

/// What the writer needs besides the blocks and the regions.
struct Capture {
    pid: u64,
    sequence: u64,
    trigger: &'static [u8],
    dropped: u64,
    threads_stopped: usize,
    threads_missed: usize,
    threads_listed: bool,
}

#[inline(never)]
fn take_locked(caller_sp: Option<usize>, trigger: &'static [u8], target: Option<&[u8]>) -> io::Result<()> {
    let table = TABLE.lock();
    let mut text = Mapped::new(TEXT_BUFFER)?;
    let since = stop::now_ns();
    let world = stop::stop_all(crate::trigger::recorder_tid(), text.bytes());
    let mut pause = Pause { world: Some(world), since, ns: 0 };
    let result = capture(caller_sp, trigger, target, &table, &mut pause, &mut text);
    pause.end();
    drop(table);
    result
}

fn capture(
    caller_sp: Option<usize>,
    trigger: &'static [u8],
    target: Option<&[u8]>,
    table: &table::Table,
    pause: &mut Pause,
    text: &mut Mapped,
) -> io::Result<()> {
    // The live blocks, in address order.
    let mut blocks_map = Mapped::new((table.len() + 1) * size_of::<Entry>())?;
    let blocks = blocks_map.entries(table.len());
    let n = table.copy_to(blocks);
    let blocks = &mut blocks[..n];
    blocks.sort_unstable_by_key(|e| e.addr);
    for b in blocks.iter_mut() {
        b.usable = crate::usable_size(b.addr as *mut c_void);
    }
    if let Some(world) = pause.world.as_ref() {
        let tps = world.stopped().map(|s| s.tp).chain(caller_sp.map(|_| stop::thread_pointer()));
        roots::discount_own_dtv_slot(blocks, tps);
    }
    let blocks = &*blocks;

    // Roots: writable segments, then each thread's registers, stack and TLS.
    let mut regions_map = Mapped::new(roots::MAX_REGIONS * size_of::<Region>())?;
    // SAFETY: the mapping is zeroed (a valid `Region`: kind 0 is `Global`), aligned and large enough.
    let regions_buf = unsafe {
        core::slice::from_raw_parts_mut(regions_map.bytes().as_mut_ptr().cast::<Region>(), roots::MAX_REGIONS)
    };
    let mut regions = Regions::new(regions_buf);
    roots::writable_segments(&mut regions);
    let mut spans_map = Mapped::new(MAX_MAPPINGS * size_of::<roots::Span>())?;
    // SAFETY: as above; a zeroed `Span` is valid.
    let spans =
        unsafe { core::slice::from_raw_parts_mut(spans_map.bytes().as_mut_ptr().cast::<roots::Span>(), MAX_MAPPINGS) };
    let maps = roots::Maps::read(spans, text.bytes())?;
    let Some(world) = pause.world.as_ref() else { return Ok(()) };
    for slot in world.stopped() {
        roots::stopped_thread(&mut regions, &maps, slot);
    }
    if let Some(sp) = caller_sp {
        let registers = CALLER_REGISTERS.as_ptr() as usize;
        regions.push(registers, registers + size_of_val(&CALLER_REGISTERS), RootKind::Register, false);
        roots::thread(&mut regions, &maps, sp.next_multiple_of(size_of::<usize>()), stop::thread_pointer());
    }
    let live = |start: usize, end: usize| {
        world.stopped().any(|s| (start..end).contains(&s.sp)) || caller_sp.is_some_and(|sp| (start..end).contains(&sp))
    };
    roots::cached_thread_descriptors(&mut regions, &maps, live);
    roots::link_maps(&mut regions, &maps, |at| find(blocks, at).is_some());

    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let sequence = SEQUENCE.fetch_add(1, Ordering::AcqRel) + 1;
    let info = Capture {
        pid,
        sequence,
        trigger,
        dropped: table.dropped,
        threads_stopped: world.stopped_count(),
        threads_missed: world.missed,
        threads_listed: world.listed,
    };
    if info.threads_missed > 0 {
        complain_count(b"threads not stopped in time (blocking the suspend signal?), not scanned", info.threads_missed);
    }

    // The file: PATH.tmp.PID, renamed to PATH when complete.
    let mut path = [0u8; 4096];
    let mut tmp = [0u8; 4200];
    let path_len = match target {
        Some(target) => concat(&mut path, &[target]),
        None => output_path(&mut path, pid, sequence),
    };
    {
        let mut digits = [0u8; 20];
        let parts: [&[u8]; 3] = [&path[..path_len], b".tmp.", decimal(&mut digits, pid)];
        concat(&mut tmp, &parts);
    }
    // A target that exists and is not a regular file (`/dev/null`, a pipe) is written to directly:
    // a rename would replace the device itself.
    let direct = is_special(&path);
    let (name, flags) = if direct {
        (&path[..], libc::O_WRONLY | libc::O_CLOEXEC)
    } else {
        (&tmp[..], libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC)
    };
    // SAFETY: `name` is NUL-terminated by `concat`.
    let fd = unsafe { libc::open(name.as_ptr().cast::<c_char>(), flags, 0o644) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(errno()));
    }
    let mut buffer = Mapped::new(WRITE_BUFFER)?;
    let written = write(FdSink(fd), buffer.bytes(), blocks, regions.as_slice(), &info, text, pause);
    // SAFETY: closes the descriptor opened above, once.
    let closed = unsafe { libc::close(fd) };
    let result = written.and_then(|()| {
        if closed != 0 {
            return Err(io::Error::from_raw_os_error(errno()));
        }
        // SAFETY: both paths are NUL-terminated.
        if !direct && unsafe { libc::rename(tmp.as_ptr().cast(), path.as_ptr().cast()) } != 0 {
            return Err(io::Error::from_raw_os_error(errno()));
        }
        Ok(())
    });
    if result.is_err() {
        if !direct {
            // SAFETY: `tmp` is NUL-terminated.
            unsafe { libc::unlink(tmp.as_ptr().cast()) };
        }
    } else {
        list_written(pid, &path[..path_len]);
    }
    result
}

/// Appends `PID<TAB>PATH` to `$HEAPSNAP_LIST`, if set: how `heapsnap record` learns which
/// snapshots the program (and its forked children) wrote.
fn list_written(pid: u64, path: &[u8]) {
    // SAFETY: getenv with a NUL-terminated name; the value is read at once.
    let env = unsafe { libc::getenv(c"HEAPSNAP_LIST".as_ptr()) };
    if env.is_null() {
        return;
    }
    let mut line = [0u8; 4200];
    let mut digits = [0u8; 20];
    let len = concat(&mut line, &[decimal(&mut digits, pid), b"\t", path, b"\n"]);
    // SAFETY: a NUL-terminated path from the environment; one O_APPEND write keeps lines whole.
    unsafe {
        let fd = libc::open(env, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
        if fd >= 0 {
            libc::write(fd, line.as_ptr().cast(), len);
            libc::close(fd);
        }
    }
}

/// Writes "heapsnap-recorder: WHAT: N" to standard error without allocating.
fn complain_count(what: &[u8], count: usize) {
    let mut digits = [0u8; 20];
    let n = decimal(&mut digits, count as u64);
    for part in [b"heapsnap-recorder: ".as_slice(), what, b": ", n, b"\n"] {
        // SAFETY: writes a live slice to the standard error descriptor.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

/// Concatenates `parts` into `out` with a terminating NUL (truncating); returns the length.
fn concat(out: &mut [u8], parts: &[&[u8]]) -> usize {
    let mut len = 0;
    for part in parts {
        for &b in *part {
            if len + 1 < out.len() {
                out[len] = b;
                len += 1;
            }
        }
    }
    out[len] = 0;
    len
}

/// Whether this process is not the program `heapsnap record` started but one of its descendants:
/// a child it forked, or a program such a child executed (`$HEAPSNAP_PARENT` is the pid of
/// `heapsnap record`, the program's parent).
fn is_descendant() -> bool {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() } as u64;
    FORKED.load(Ordering::Acquire) || crate::trigger::env_number(c"HEAPSNAP_PARENT").is_some_and(|p| p != parent)
}

/// `$HEAPSNAP_OUT` or `heapsnap-%p.hsnap`, NUL-terminated, with `%p` replaced by the process id and
/// `%n` by the snapshot's sequence number. In a descendant of the recorded program (see
/// [`is_descendant`]), a pattern without `%p` gets `.PID` appended, so that it never overwrites the
/// program's snapshot.
fn output_path(out: &mut [u8; 4096], pid: u64, sequence: u64) -> usize {
    let mut pid_digits = [0u8; 20];
    let pid_text = decimal(&mut pid_digits, pid);
    let mut seq_digits = [0u8; 20];
    let seq_text = decimal(&mut seq_digits, sequence);
    // SAFETY: getenv with a NUL-terminated name; the result is read before anything changes the
    // environment (the other threads are stopped).
    let env = unsafe { libc::getenv(c"HEAPSNAP_OUT".as_ptr()) };
    let value: &[u8] = if env.is_null() {
        b""
    } else {
        // SAFETY: a non-null getenv result is a NUL-terminated string.
        unsafe { core::ffi::CStr::from_ptr(env) }.to_bytes()
    };
    let value: &[u8] = if value.is_empty() { b"heapsnap-%p.hsnap" } else { value };
    let mut len = 0;
    let mut push = |piece: &[u8], out: &mut [u8; 4096]| {
        for &b in piece {
            if len + 1 < out.len() {
                out[len] = b;
                len += 1;
            }
        }
    };
    let mut i = 0;
    while i < value.len() {
        if value[i..].starts_with(b"%p") {
            push(pid_text, out);
            i += 2;
        } else if value[i..].starts_with(b"%n") {
            push(seq_text, out);
            i += 2;
        } else {
            push(&value[i..i + 1], out);
            i += 1;
        }
    }
    if is_descendant() && !value.windows(2).any(|w| w == b"%p") {
        push(b".", out);
        push(pid_text, out);
    }
    out[len] = 0;
    len
}

/// Whether the NUL-terminated `path` names something that exists and is neither a regular file nor
/// a directory.
fn is_special(path: &[u8]) -> bool {
    // SAFETY: an all-zero `stat` is valid; `path` is NUL-terminated; stat writes only into `st`.
    unsafe {
        let mut st: libc::stat = core::mem::zeroed();
        if libc::stat(path.as_ptr().cast::<c_char>(), &mut st) != 0 {
            return false;
        }
        let kind = st.st_mode & libc::S_IFMT;
        kind != libc::S_IFREG && kind != libc::S_IFDIR
    }
}

/// Reads a file into `buf` with `read(2)`, keeping what fits; returns the length read.
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8], mut line: impl FnMut(&[u8])) -> io::Result<usize> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(errno()));
    }
    // Complete lines are handed to `line` as they arrive; a partial one moves to the front.
    let mut filled = 0;
    let mut total = 0;
    loop {
        if filled == buf.len() {
            // A line longer than the buffer: drop it.
            filled = 0;
        }
        // SAFETY: reads into the free tail of `buf`.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            let err = io::Error::from_raw_os_error(errno());
            // SAFETY: closes the descriptor opened above.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        if n == 0 {
            break;
        }
        filled += n as usize;
        total += n as usize;
        let mut start = 0;
        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
            line(&buf[start..start + end]);
            start += end + 1;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    if filled > 0 {
        line(&buf[..filled]);
    }
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    Ok(total)
}

/// The block that `word` points into, and whether it points at its start.
fn find(blocks: &[Entry], word: usize) -> Option<(u32, bool)> {
    let after = blocks.partition_point(|b| b.addr <= word);
    let j = after.checked_sub(1)?;
    let b = &blocks[j];
    if word == b.addr {
        Some((j as u32, true))
    } else if word - b.addr < b.size {
        Some((j as u32, false))
    } else {
        None
    }
}

/// Calls `f(offset, word)` for every aligned word that lies wholly in `start..end`.
fn words(start: usize, end: usize, mut f: impl FnMut(usize, usize) -> io::Result<()>) -> io::Result<()> {
    let word = size_of::<usize>();
    let mut at = start.next_multiple_of(word);
    while at + word <= end {
        // SAFETY: `at` is aligned and lies in readable memory: a live heap block's requested bytes,
        // a loaded writable segment, or the current stack above the stack pointer. The bytes may
        // never have been written (a fresh malloc block); they are read as a plain integer through
        // a volatile load and only compared.
        let value = unsafe { ptr::read_volatile(at as *const usize) };
        f(at - start, value)?;
        at += word;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write(
    sink: FdSink,
    buffer: &mut [u8],
    blocks: &[Entry],
    regions: &[Region],
    info: &Capture,
    text: &mut Mapped,
    pause: &mut Pause,
) -> io::Result<()> {
    let pid = info.pid;
    let mut w = Writer::new(sink, buffer)?;
    let mut digits = [0u8; 20];
    w.meta(b"producer", b"heapsnap-recorder")?;
    w.meta(b"producer.version", env!("CARGO_PKG_VERSION").as_bytes())?;
    w.meta(b"capture", b"allocator")?;
    w.meta(b"pointer.width", decimal(&mut digits, size_of::<usize>() as u64))?;
    w.meta(b"process.id", decimal(&mut digits, pid))?;
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut time) } == 0 {
        let ns = (time.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(time.tv_nsec as u64);
        w.meta(b"time.unix.ns", decimal(&mut digits, ns))?;
    }
    // The command line: NUL-separated arguments, handed over as "lines" split on NUL below.
    let cmdline = text.bytes();
    let mut cmdline_len = 0;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/cmdline".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        while cmdline_len < cmdline.len() {
            // SAFETY: reads into the free tail of the buffer.
            let n = unsafe { libc::read(fd, cmdline[cmdline_len..].as_mut_ptr().cast(), cmdline.len() - cmdline_len) };
            if n <= 0 {
                break;
            }
            cmdline_len += n as usize;
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
    }
    let args = &cmdline[..cmdline_len];
    for arg in args.strip_suffix(b"\0").unwrap_or(args).split(|&b| b == 0) {
        if cmdline_len > 0 {
            w.meta(b"process.arg", arg)?;
        }
    }
    if info.dropped > 0 {
        w.meta(b"x.recorder.dropped", decimal(&mut digits, info.dropped))?;
    }
    w.meta(b"capture.trigger", info.trigger)?;
    w.meta(b"capture.sequence", decimal(&mut digits, info.sequence))?;
    if info.threads_listed {
        w.meta(b"capture.threads.stopped", decimal(&mut digits, info.threads_stopped as u64))?;
        w.meta(b"capture.threads.missed", decimal(&mut digits, info.threads_missed as u64))?;
    } else {
        w.meta(b"capture.threads.stopped", b"unknown: /proc/self/task unreadable; only the calling thread scanned")?;
    }

    crate::stacks::write(&mut w)?;
    if crate::stacks::depth() == 0 {
        w.meta(b"x.recorder.stacks", b"off")?;
    } else {
        w.meta(b"x.recorder.stack.depth", decimal(&mut digits, crate::stacks::depth() as u64))?;
    }
    if crate::trie::dropped() > 0 {
        w.meta(b"x.recorder.stack.dropped", decimal(&mut digits, crate::trie::dropped()))?;
    }

    let name = w.string(b"block")?;
    let block_type = w.type_(name)?;
    for b in blocks {
        w.node(&Node {
            identity: b.serial,
            address: b.addr as u64,
            size: b.size as u64,
            type_id: block_type,
            stack: b.stack,
            flags: 0,
        })?;
    }
    for (node, b) in blocks.iter().enumerate() {
        w.allocation(node as u32, b.usable as u64, b.thread as u64)?;
    }

    let lowest = blocks.first().map_or(usize::MAX, |b| b.addr);
    let highest = blocks.iter().map(|b| b.addr + b.size.max(1)).max().unwrap_or(0);
    let hit = |word: usize| if word < lowest || word >= highest { None } else { find(blocks, word) };

    const BATCH: usize = 256;
    let mut batch = [Edge { to: 0, kind: EdgeKind::Strong, label: Label::None }; BATCH];
    for (i, b) in blocks.iter().enumerate() {
        let mut len = 0;
        words(b.addr, b.addr + b.size, |offset, word| {
            if let Some((to, start)) = hit(word) {
                let kind = if start { EdgeKind::Strong } else { EdgeKind::Interior };
                batch[len] = Edge { to, kind, label: Label::Offset(offset as u64) };
                len += 1;
                if len == BATCH {
                    w.edges(i as u32, &batch)?;
                    len = 0;
                }
            }
            Ok(())
        })?;
        if len > 0 {
            w.edges(i as u32, &batch[..len])?;
        }
    }

    for range in regions {
        let kind = range.kind;
        words(range.start, range.end, |_, word| {
            if let Some((node, at_start)) = hit(word) {
                let b = &blocks[node as usize];
                if range.allocator && !at_start && word == (b.addr + b.usable).wrapping_sub(8) {
                    // glibc's pointer to the chunk that follows this block: bookkeeping.
                    return Ok(());
                }
                w.root(&Root { node, kind, interior: !at_start && !range.whole, name: 0 })?;
            }
            Ok(())
        })?;
    }
    // Everything that needed the world stopped is written: let it go, and say for how long.
    let paused = pause.end();
    w.meta(b"capture.pause.ns", decimal(&mut digits, paused))?;
    w.finish()?;
    Ok(())
}
