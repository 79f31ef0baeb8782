//! Where a snapshot's roots are: the memory regions whose words may reference heap blocks.
//!
//! As memcheck and LeakSanitizer take them: every loaded object's writable `PT_LOAD` segments (found
//! with `dl_iterate_phdr`, re-read at each snapshot so `dlopen`/`dlclose` are followed), minus
//! `PT_GNU_RELRO` and minus the recorder's own object; and per thread its saved general registers,
//! its stack from the saved stack pointer (less the 128-byte red zone, which the kernel leaves intact
//! below an interrupted frame) to the end of the stack's mapping, and its static TLS block. The
//! mappings come from `/proc/self/maps`, read into a caller's pre-mapped buffer.

use core::ffi::{c_int, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::io;

use hsnap::RootKind;

use crate::stop::{SAVED_REGISTERS, Slot};
use crate::table::TABLE;

/// One root region.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Region {
    pub start: usize,
    pub end: usize,
    pub kind: RootKind,
    /// Whether it belongs to the object that holds the real malloc (whose bookkeeping words that
    /// point just past a block are not references).
    pub allocator: bool,
    /// Whether a word here that points inside a block holds the whole block (glibc's stack cache
    /// keeps each cached thread's DTV through `dtv + 1`).
    pub whole: bool,
}

impl Region {
    const EMPTY: Region = Region { start: 0, end: 0, kind: RootKind::Other, allocator: false, whole: false };
}

/// A fixed-capacity list of regions over a caller's buffer.
pub struct Regions<'a> {
    items: &'a mut [Region],
    len: usize,
}

impl<'a> Regions<'a> {
    pub fn new(items: &'a mut [Region]) -> Regions<'a> {
        Regions { items, len: 0 }
    }

    pub fn push(&mut self, start: usize, end: usize, kind: RootKind, allocator: bool) {
        self.push_region(Region { start, end, kind, allocator, whole: false });
    }

    fn push_region(&mut self, region: Region) {
        if region.start < region.end && self.len < self.items.len() {
            self.items[self.len] = region;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[Region] {
        &self.items[..self.len]
    }
}

/// The static TLS size glibc reports (`_dl_get_tls_static_info`), 0 when unknown.
pub static STATIC_TLS: AtomicUsize = AtomicUsize::new(0);
/// How far above the thread pointer glibc's thread descriptor (`struct pthread`, with the
/// thread-specific data pointers) reaches, at most; clipped to the mapping.
const TCB_SPAN: usize = 4096;
/// The x86-64 System V red zone below the stack pointer.
const RED_ZONE: usize = 128;

/// Asks the dynamic linker for the static TLS size. Called at load, with the guard held (`dlsym`
/// may allocate).
pub fn init() {
    type Info = unsafe extern "C" fn(*mut usize, *mut usize);
    // SAFETY: dlsym with a NUL-terminated name; a found symbol has the signature above (a glibc
    // private function, stable since 2.0, that LeakSanitizer uses too).
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"_dl_get_tls_static_info".as_ptr());
        if !f.is_null() {
            let f = core::mem::transmute::<*mut c_void, Info>(f);
            let (mut size, mut align) = (0usize, 0usize);
            f(&mut size, &mut align);
            STATIC_TLS.store(size, Ordering::Release);
        }
    }
    // SAFETY: the callback only reads the headers it is given.
    unsafe { libc::dl_iterate_phdr(Some(find_own_tls), ptr::null_mut()) };
}

/// Whether this library is a TLS module (it has a `PT_TLS` segment: the Rust runtime's
/// thread-locals), which makes every thread's DTV one entry longer.
static OWN_TLS_MODULE: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn find_own_tls(info: *mut libc::dl_phdr_info, _size: usize, _data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info whose `dlpi_phdr` points at `dlpi_phnum` headers.
    let headers = unsafe {
        let info = &*info;
        if info.dlpi_phdr.is_null() {
            return 0;
        }
        (info.dlpi_addr as usize, core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize))
    };
    let (base, headers) = headers;
    let own = headers.iter().any(|h| {
        let start = base + h.p_vaddr as usize;
        h.p_type == libc::PT_LOAD && (start..start + h.p_memsz as usize).contains(&(&TABLE as *const _ as usize))
    });
    if own {
        OWN_TLS_MODULE.store(headers.iter().any(|h| h.p_type == libc::PT_TLS), Ordering::Release);
        return 1;
    }
    0
}

struct Segments<'r, 'a> {
    regions: &'r mut Regions<'a>,
    /// An address inside the real allocator's code (its `malloc`).
    allocator: usize,
}

/// Adds the writable, non-RELRO parts of every loaded object's `PT_LOAD` segments, except this
/// library's.
pub fn writable_segments(regions: &mut Regions<'_>) {
    let allocator = crate::REAL.malloc.load(Ordering::Acquire);
    let mut state = Segments { regions, allocator };
    // SAFETY: the callback only reads the headers it is given and writes into `state`, which
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut state as *mut Segments<'_, '_>).cast()) };
}

unsafe extern "C" fn each_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `Segments` as `data`.
    let (info, state) = unsafe { (&*info, &mut *data.cast::<Segments<'_, '_>>()) };
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
    // Linked into a program (the Rust front), the recorder's object is the program itself.
    if !crate::front::linked() && holds(&TABLE as *const _ as usize) {
        return 0;
    }
    let allocator = holds(state.allocator);
    // The dynamic linker's data holds pointers only to its own allocations (descriptors of objects
    // opened later, `_dl_find_object` tables reached through aligned pointers into their blocks):
    // glibc's buffers, which memcheck frees before it checks. They are still reachable here.
    let whole = holds(core::ptr::addr_of!(_r_debug) as usize);
    let relro = headers
        .iter()
        .find(|h| h.p_type == libc::PT_GNU_RELRO)
        .map(|h| (base + h.p_vaddr as usize, base + (h.p_vaddr + h.p_memsz) as usize))
        .unwrap_or((0, 0));
    for h in headers.iter().filter(|h| h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W != 0) {
        let start = base + h.p_vaddr as usize;
        let end = start + h.p_memsz as usize;
        // The segment minus the RELRO range: up to two pieces.
        for (start, end) in [(start, end.min(relro.0)), (start.max(relro.1), end)] {
            state.regions.push_region(Region { start, end, kind: RootKind::Global, allocator, whole });
        }
    }
    0
}

/// One mapping of the process.
#[derive(Clone, Copy, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    /// `rw-p`: private, readable and writable.
    pub writable: bool,
    /// `---p`: a guard page, as glibc puts below every thread stack it maps.
    pub guard: bool,
}

/// The process's mappings in address order, as `/proc/self/maps` lists them.
pub struct Maps<'a> {
    spans: &'a [Span],
}

impl<'a> Maps<'a> {
    /// Reads `/proc/self/maps` into `spans` (using `text` as the read buffer).
    pub fn read(spans: &'a mut [Span], text: &mut [u8]) -> io::Result<Maps<'a>> {
        let mut n = 0;
        crate::snapshot::read_file(c"/proc/self/maps", text, |line| {
            let mut fields = line.split(|&b| b == b' ');
            let range = fields.next().unwrap_or(b"");
            let perms = fields.next().unwrap_or(b"");
            let mut bounds = range.split(|&b| b == b'-');
            if let (Some(Some(start)), Some(Some(end))) = (bounds.next().map(parse_hex), bounds.next().map(parse_hex))
                && n < spans.len()
            {
                spans[n] = Span { start, end, writable: perms == b"rw-p", guard: perms == b"---p" };
                n += 1;
            }
        })?;
        Ok(Maps { spans: &spans[..n] })
    }

    /// The mapping that holds `addr`.
    pub fn containing(&self, addr: usize) -> Option<(usize, usize)> {
        let after = self.spans.partition_point(|s| s.start <= addr);
        let s = self.spans.get(after.checked_sub(1)?)?;
        (addr < s.end).then_some((s.start, s.end))
    }
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

/// Adds one thread's stack (from `low`, clipped to its mapping) and static TLS block (around the
/// thread pointer `tp`). A thread's stack mapping, for threads glibc created, also holds its TLS
/// block and descriptor at the top: the stack stops where the TLS block starts.
pub fn thread(regions: &mut Regions<'_>, maps: &Maps<'_>, low: usize, tp: usize) {
    let stack = maps.containing(low);
    let tls_map = if tp == 0 { None } else { maps.containing(tp) };
    let tls = tls_map.map(|(start, end)| {
        let size = STATIC_TLS.load(Ordering::Acquire);
        (tp.saturating_sub(size).max(start), tp.saturating_add(TCB_SPAN).min(end))
    });
    match (stack, tls) {
        (Some(s), Some((tls_start, _))) if tls_map == Some(s) && tls_start > low => {
            regions.push(low, tls_start, RootKind::Stack, false);
            regions.push(tls_start, s.1, RootKind::ThreadLocal, false);
        }
        (s, t) => {
            if let Some((_, end)) = s {
                regions.push(low, end, RootKind::Stack, false);
            }
            if let Some((start, end)) = t {
                regions.push(start, end, RootKind::ThreadLocal, false);
            }
        }
    }
}

/// Adds a stopped thread's registers, stack and TLS.
pub fn stopped_thread(regions: &mut Regions<'_>, maps: &Maps<'_>, slot: &Slot) {
    let registers = slot.registers.as_ptr() as usize;
    regions.push(registers, registers + SAVED_REGISTERS * size_of::<usize>(), RootKind::Register, false);
    let low = slot.sp.saturating_sub(RED_ZONE);
    // The red zone may cross into the mapping below the stack (the guard page): clip it.
    let low = match maps.containing(slot.sp) {
        Some((start, _)) => low.max(start),
        None => return,
    };
    thread(regions, maps, low, slot.tp);
}

/// How far below the top of a cached thread stack its descriptor is looked for.
const DESCRIPTOR_SEARCH: usize = 64 << 10;

/// Adds, for every dead thread whose stack glibc keeps in its cache for reuse, the word of its
/// descriptor that holds its DTV (a heap block). memcheck never sees those blocks (its
/// `__libc_freeres` releases the cache before the leak check), and they are not leaks: they are
/// counted still reachable. A cached stack is a private writable mapping right above a guard page
/// that holds no stopped thread's stack pointer (`live`); its descriptor is found near the top by
/// glibc's x86-64 signature: `tcb` (at 0) and `self` (at 16) both point at the descriptor itself.
pub fn cached_thread_descriptors(regions: &mut Regions<'_>, maps: &Maps<'_>, live: impl Fn(usize, usize) -> bool) {
    if !cfg!(all(target_arch = "x86_64", target_env = "gnu")) {
        return;
    }
    for pair in maps.spans.windows(2) {
        let (below, span) = (pair[0], pair[1]);
        if !(below.guard && below.end == span.start && span.writable) || live(span.start, span.end) {
            continue;
        }
        let low = span.end.saturating_sub(DESCRIPTOR_SEARCH).max(span.start).next_multiple_of(64);
        let mut at = (span.end - 24) & !63;
        while at >= low {
            // SAFETY: `at .. at + 24` lies in a private readable and writable mapping that stays
            // mapped while the world is stopped (only its owner, glibc's thread code, unmaps it).
            let (tcb, own) = unsafe { (ptr_read(at), ptr_read(at + 16)) };
            if tcb == at && own == at {
                let dtv = Region { start: at + 8, end: at + 16, kind: RootKind::Other, allocator: false, whole: true };
                regions.push_region(dtv);
                break;
            }
            at -= 64;
        }
    }
}

/// Reads an aligned word of readable memory.
///
/// # Safety
/// `at` must be aligned and readable.
unsafe fn ptr_read(at: usize) -> usize {
    // SAFETY: the caller's contract.
    unsafe { core::ptr::read_volatile(at as *const usize) }
}

/// The size of one DTV entry (glibc's `dtv_t`: a pointer and a flag word).
const DTV_ENTRY: usize = 16;

/// Reports each thread's DTV as the program alone would have it. glibc `calloc`s a DTV for every
/// thread it creates, with one 16-byte entry per TLS module; this library is one more module (the
/// Rust runtime it links has thread-locals), so under the recorder each DTV is 16 bytes longer than
/// under memcheck or natively. The descriptor of a thread (at its thread pointer `tp`) holds
/// `dtv + 1` at `tp + 8`; the block that starts one entry below is shrunk by one entry. Blocks are
/// in address order.
pub fn discount_own_dtv_slot(blocks: &mut [crate::table::Entry], tps: impl Iterator<Item = usize>) {
    if !cfg!(all(target_arch = "x86_64", target_env = "gnu")) || !OWN_TLS_MODULE.load(Ordering::Acquire) {
        return;
    }
    for tp in tps.filter(|&tp| tp != 0) {
        // SAFETY: a thread pointer points at its thread's descriptor, mapped while the thread lives
        // (it is stopped, or it is the caller); `tp + 8` is its aligned `dtv` field.
        let dtv = unsafe { ptr_read(tp + 8) }.wrapping_sub(DTV_ENTRY);
        if let Ok(i) = blocks.binary_search_by_key(&dtv, |b| b.addr)
            && blocks[i].size > DTV_ENTRY
        {
            blocks[i].size -= DTV_ENTRY;
        }
    }
}

/// The start of glibc's `struct link_map` (the public part, `<link.h>`).
#[repr(C)]
struct LinkMap {
    addr: usize,
    name: *const core::ffi::c_char,
    dynamic: *const c_void,
    next: *const LinkMap,
    prev: *const LinkMap,
}

/// glibc's `struct r_debug` (`<link.h>`), the debugger's entry to the list of loaded objects.
#[repr(C)]
struct RDebug {
    version: c_int,
    map: *const LinkMap,
}

unsafe extern "C" {
    static _r_debug: RDebug;
}

/// How much of a link map is scanned: the structure (about 1.1 KiB in glibc 2.36) with some room,
/// at most to the end of its mapping. Not more: the kernel may merge the dynamic linker's pages with
/// a neighbouring anonymous mapping of ours.
const LINK_MAP_SCAN: usize = 1536;

/// Adds the dynamic linker's descriptors (`struct link_map`) of the objects loaded at startup. The
/// dynamic linker allocates those from its own pages, not from the heap, and they hold the only
/// start pointers to the descriptors of objects loaded later with `dlopen`, which are heap blocks.
/// memcheck scans those pages (it scans every writable mapping); so do we, from each descriptor.
/// Descriptors that are heap blocks themselves are scanned as blocks.
pub fn link_maps(regions: &mut Regions<'_>, maps: &Maps<'_>, is_block: impl Fn(usize) -> bool) {
    // SAFETY: `_r_debug` is the dynamic linker's, valid for the life of the process; the chain is
    // stable while we hold the loader's lock (the snapshot runs inside `dl_iterate_phdr`).
    let mut map = unsafe { core::ptr::addr_of!(_r_debug).read_volatile().map };
    let mut seen = 0;
    while !map.is_null() && seen < 100_000 {
        let at = map as usize;
        if !is_block(at)
            && let Some((_, end)) = maps.containing(at)
        {
            regions.push(at, (at + LINK_MAP_SCAN).min(end), RootKind::Global, false);
        }
        // SAFETY: a link map in the dynamic linker's list, readable while the lock is held.
        map = unsafe { (*map).next };
        seen += 1;
    }
}

/// Room for the region list of one snapshot.
pub const MAX_REGIONS: usize = 4096 + 3 * crate::stop::MAX_THREADS;

impl Default for Region {
    fn default() -> Region {
        Region::EMPTY
    }
}
