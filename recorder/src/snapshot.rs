//! The snapshot, written at exit or on demand (`take`). Nothing on this path allocates: the live
//! blocks are copied into an `mmap`'d array, `/proc/self/maps` and `/proc/self/cmdline` are read
//! with `read(2)` into `mmap`'d buffers, and the `hsnap::Writer` streams through an `mmap`'d buffer
//! into a raw file descriptor.
//!
//! Roots, as LeakSanitizer and memcheck take them for a single thread: every aligned word of the
//! writable `PT_LOAD` segments of every loaded object (minus `PT_GNU_RELRO`, read-only by then, and
//! minus this library's own data), and of the current stack from the stack pointer to its end.
//! Registers do not matter at exit. Words in the real allocator's own data (glibc's `main_arena`)
//! that point at the header of the chunk after a live block (its top-chunk and bin pointers) are
//! the allocator's bookkeeping, not references: memcheck, whose allocator lives outside the
//! program, never sees them, so they are not roots here either. Other threads' stacks and registers, and static TLS blocks, are
//! not scanned yet.

use core::ffi::{c_char, c_int, c_void};
use core::ptr;
use std::io;

use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind, Sink, Writer};

use crate::guard::Entered;
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

const MAX_RANGES: usize = 4096;
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

/// The `.fini_array` entry: takes the snapshot of this thread's view of the heap.
#[inline(never)]
pub fn at_exit() {
    let Some(_guard) = Entered::enter() else { return };
    // Taken first, here, so that the frames of the snapshot code below it are not scanned.
    let sp = stack_pointer();
    if let Err(err) = take(sp, None) {
        complain(b"writing the heap snapshot failed", &err);
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

/// Writes a snapshot to `target` (at most 4095 bytes, no NUL), or when `None` to `$HEAPSNAP_OUT`
/// or `heapsnap-PID.hsnap`; the stack is scanned from `sp` up. Called with the guard held.
#[inline(never)]
pub(crate) fn take(sp: usize, target: Option<&[u8]>) -> io::Result<()> {
    let table = TABLE.lock();

    // The live blocks, in address order.
    let mut blocks_map = Mapped::new((table.len() + 1) * size_of::<Entry>())?;
    let blocks = blocks_map.entries(table.len());
    let n = table.copy_to(blocks);
    let blocks = &mut blocks[..n];
    blocks.sort_unstable_by_key(|e| e.addr);
    for b in blocks.iter_mut() {
        b.usable = crate::usable_size(b.addr as *mut c_void);
    }
    let blocks = &*blocks;

    // Roots: writable segments, then the stack.
    let ranges_map = Mapped::new(MAX_RANGES * size_of::<Range>())?;
    // SAFETY: the mapping is zeroed (a valid `Range`), aligned and large enough for `MAX_RANGES`.
    let ranges = unsafe { core::slice::from_raw_parts_mut(ranges_map.ptr.cast::<Range>(), MAX_RANGES) };
    let globals = writable_segments(ranges);
    let mut text = Mapped::new(TEXT_BUFFER)?;
    let stack = stack_range(sp, text.bytes())?;

    // The file: PATH.tmp.PID, renamed to PATH when complete.
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let mut path = [0u8; 4096];
    let mut tmp = [0u8; 4200];
    let path_len = match target {
        Some(target) => concat(&mut path, &[target]),
        None => output_path(&mut path, pid),
    };
    {
        let mut digits = [0u8; 20];
        let parts: [&[u8]; 3] = [&path[..path_len], b".tmp.", decimal(&mut digits, pid)];
        concat(&mut tmp, &parts);
    }
    // SAFETY: `tmp` is NUL-terminated by `concat`.
    let fd = unsafe {
        libc::open(
            tmp.as_ptr().cast::<c_char>(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(errno()));
    }
    let mut buffer = Mapped::new(WRITE_BUFFER)?;
    let written = write(FdSink(fd), buffer.bytes(), blocks, globals_of(ranges, globals), stack, pid, &mut text, &table);
    // SAFETY: closes the descriptor opened above, once.
    let closed = unsafe { libc::close(fd) };
    let result = written.and_then(|()| {
        if closed != 0 {
            return Err(io::Error::from_raw_os_error(errno()));
        }
        // SAFETY: both paths are NUL-terminated.
        if unsafe { libc::rename(tmp.as_ptr().cast(), path.as_ptr().cast()) } != 0 {
            return Err(io::Error::from_raw_os_error(errno()));
        }
        Ok(())
    });
    if result.is_err() {
        // SAFETY: `tmp` is NUL-terminated.
        unsafe { libc::unlink(tmp.as_ptr().cast()) };
    }
    drop(table);
    result
}

fn globals_of(ranges: &[Range], n: usize) -> &[Range] {
    &ranges[..n]
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

/// `$HEAPSNAP_OUT` (with `%p` replaced by the process id) or `heapsnap-PID.hsnap`, NUL-terminated.
fn output_path(out: &mut [u8; 4096], pid: u64) -> usize {
    let mut digits = [0u8; 20];
    let pid_text = decimal(&mut digits, pid);
    // SAFETY: getenv with a NUL-terminated name; the result is read before anything changes the
    // environment (the program is exiting, and this thread runs the exit path).
    let env = unsafe { libc::getenv(c"HEAPSNAP_OUT".as_ptr()) };
    if env.is_null() || unsafe { *env } == 0 {
        return concat(out, &[b"heapsnap-", pid_text, b".hsnap"]);
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string.
    let value = unsafe { core::ffi::CStr::from_ptr(env) }.to_bytes();
    let mut len = 0;
    let mut i = 0;
    while i < value.len() {
        let (piece, step): (&[u8], usize) =
            if value[i..].starts_with(b"%p") { (pid_text, 2) } else { (&value[i..i + 1], 1) };
        for &b in piece {
            if len + 1 < out.len() {
                out[len] = b;
                len += 1;
            }
        }
        i += step;
    }
    out[len] = 0;
    len
}

/// A root region: start, end, and whether it belongs to the object that holds the real malloc.
#[derive(Clone, Copy)]
#[repr(C)]
struct Range {
    start: usize,
    end: usize,
    allocator: bool,
}

struct Segments<'a> {
    ranges: &'a mut [Range],
    n: usize,
    /// An address inside the real allocator's code (its `malloc`).
    allocator: usize,
}

/// Fills `ranges` with the writable, non-RELRO parts of every loaded object's `PT_LOAD` segments,
/// except this library's. Returns how many.
fn writable_segments(ranges: &mut [Range]) -> usize {
    let allocator = crate::REAL.malloc.load(core::sync::atomic::Ordering::Acquire);
    let mut state = Segments { ranges, n: 0, allocator };
    // SAFETY: the callback only reads the headers it is given and writes into `state`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut state as *mut Segments<'_>).cast()) };
    state.n
}

unsafe extern "C" fn each_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `Segments` as `data`.
    let (info, state) = unsafe { (&*info, &mut *data.cast::<Segments<'_>>()) };
    if info.dlpi_phdr.is_null() {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
    let headers = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr as usize;
    let holds = |addr: usize| {
        headers.iter().any(|h| {
            h.p_type == libc::PT_LOAD && {
                let start = base + h.p_vaddr as usize;
                (start..start + h.p_memsz as usize).contains(&addr)
            }
        })
    };
    if !crate::front::linked() && holds(&TABLE as *const _ as usize) {
        return 0;
    }
    let allocator = holds(state.allocator);
    let relro = headers
        .iter()
        .find(|h| h.p_type == libc::PT_GNU_RELRO)
        .map(|h| (base + h.p_vaddr as usize, base + (h.p_vaddr + h.p_memsz) as usize))
        .unwrap_or((0, 0));
    for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W != 0) {
        let start = base + h.p_vaddr as usize;
        let end = start + h.p_memsz as usize;
        // The segment minus the RELRO range: up to two pieces.
        for (s, e) in [(start, end.min(relro.0)), (start.max(relro.1), end)] {
            if s < e && state.n < state.ranges.len() {
                state.ranges[state.n] = Range { start: s, end: e, allocator };
                state.n += 1;
            }
        }
    }
    0
}

fn parse_hex(text: &[u8]) -> Option<usize> {
    let mut value = 0usize;
    if text.is_empty() {
        return None;
    }
    for &c in text {
        let digit = (c as char).to_digit(16)? as usize;
        value = value.checked_mul(16)?.checked_add(digit)?;
    }
    Some(value)
}

/// Reads a file into `buf` with `read(2)`, keeping what fits; returns the length read.
fn read_file(path: &core::ffi::CStr, buf: &mut [u8], mut line: impl FnMut(&[u8])) -> io::Result<usize> {
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

/// The part of the mapping that holds `sp`, from `sp` (aligned up) to the mapping's end.
fn stack_range(sp: usize, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    let mut found = (sp, sp);
    read_file(c"/proc/self/maps", buf, |line| {
        let range = line.split(|&b| b == b' ').next().unwrap_or(b"");
        let mut bounds = range.split(|&b| b == b'-');
        if let (Some(Some(start)), Some(Some(end))) = (bounds.next().map(parse_hex), bounds.next().map(parse_hex))
            && start <= sp
            && sp < end
        {
            found = (sp.next_multiple_of(size_of::<usize>()), end);
        }
    })?;
    Ok(found)
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
    globals: &[Range],
    stack: (usize, usize),
    pid: u64,
    text: &mut Mapped,
    table: &table::Table,
) -> io::Result<()> {
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
    if table.dropped > 0 {
        w.meta(b"x.recorder.dropped", decimal(&mut digits, table.dropped))?;
    }
    w.meta(b"x.recorder.threads", b"calling thread only")?;

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

    let stack = Range { start: stack.0, end: stack.1, allocator: false };
    let regions = globals.iter().map(|&r| (r, RootKind::Global)).chain([(stack, RootKind::Stack)]);
    for (range, kind) in regions {
        words(range.start, range.end, |_, word| {
            if let Some((node, at_start)) = hit(word) {
                let b = &blocks[node as usize];
                if range.allocator && !at_start && word == (b.addr + b.usable).wrapping_sub(8) {
                    // glibc's pointer to the chunk that follows this block: bookkeeping.
                    return Ok(());
                }
                w.root(&Root { node, kind, interior: !at_start, name: 0 })?;
            }
            Ok(())
        })?;
    }
    w.finish()?;
    Ok(())
}
