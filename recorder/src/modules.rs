//! The module map: every object the dynamic linker has loaded (the executable, shared libraries,
//! the vDSO), with what the snapshot's `MODS` chunk needs (path, GNU build-id, load bias, mapped
//! ranges) and what the unwinder needs (where its `.eh_frame_hdr` and `.eh_frame` are in memory).
//!
//! The list lives in one `mmap`'d array of fixed-size entries, so that the snapshot can read it
//! without allocating. Entries are only appended; an object that disappears (`dlclose`) is marked
//! dead but kept, so that frames recorded while it was loaded still name it.
//!
//! # `dl_iterate_phdr` and the loader's locks
//!
//! [`refresh`] walks the loaded objects with `dl_iterate_phdr`, which holds glibc's
//! `dl_load_write_lock` (a recursive lock) while it calls us back. It may be called from a malloc
//! hook, and the dynamic linker itself calls malloc while it holds `dl_load_lock` (all through
//! `dlopen`), so:
//! - On the thread that is inside `dlopen`: `dl_load_lock` is not the lock `dl_iterate_phdr`
//!   takes, and `dl_load_write_lock` is recursive, so a refresh from a malloc the loader made does
//!   not deadlock. It may see the object being loaded before its relocation: we only read its
//!   program headers and notes, which are mapped by then, never its data.
//! - Across threads: the danger is a cycle between the loader's lock and one of ours. A thread in
//!   `dl_iterate_phdr` (ours, or a program's whose callback calls malloc) holds the loader lock and
//!   may enter a hook, so no recorder lock may be held while we wait for the loader lock. Hence:
//!   the callback takes no lock and does not allocate; the refresh lock that serialises refreshes
//!   is only ever *tried* from a hook (a busy one means someone else is refreshing: the hook goes
//!   on with the list as it is); and the unwinder's lock is taken only after `dl_iterate_phdr`
//!   has returned (see `unwind.rs`).
//! - The program may call `dl_iterate_phdr` and malloc from its callback: the hook's refresh then
//!   re-enters `dl_iterate_phdr` on the same thread, which the recursive lock allows.

use core::ffi::{CStr, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::table::map;

/// Objects a process may load over its life (dead ones included).
pub const MAX_MODULES: usize = 2048;
const MAX_PATH: usize = 1024;
const MAX_BUILD_ID: usize = 64;
pub const MAX_RANGES: usize = 8;

/// One loaded object. Valid when all zero.
#[repr(C)]
pub struct Module {
    /// `dlpi_addr`: what the object's virtual addresses are shifted by.
    pub bias: u64,
    /// The lowest and highest address of its `PT_LOAD` segments.
    pub start: u64,
    pub end: u64,
    /// Its `PT_LOAD` segments, as (start, length).
    pub ranges: [(u64, u64); MAX_RANGES],
    pub range_count: u32,
    /// Whether the last refresh still found it loaded.
    pub live: AtomicBool,
    /// Whether the unwinder has been given this module (owned by the unwinder's lock).
    pub installed: AtomicBool,
    /// In-memory `.eh_frame_hdr` (start, length) and `.eh_frame` (start, length to its segment's
    /// end); zero when absent.
    pub eh_frame_hdr: (u64, u64),
    pub eh_frame: (u64, u64),
    /// Its executable segments' span, where return addresses point.
    pub code: (u64, u64),
    pub path_len: u32,
    pub path: [u8; MAX_PATH],
    pub build_id_len: u32,
    pub build_id: [u8; MAX_BUILD_ID],
}

impl Module {
    pub fn path(&self) -> &[u8] {
        &self.path[..self.path_len as usize]
    }

    pub fn build_id(&self) -> &[u8] {
        &self.build_id[..self.build_id_len as usize]
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges[..self.range_count as usize]
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.ranges().iter().any(|&(s, l)| addr >= s && addr - s < l)
    }
}

static MODULES: AtomicPtr<Module> = AtomicPtr::new(core::ptr::null_mut());
/// Entries in use; readers see a prefix of filled entries.
static COUNT: AtomicUsize = AtomicUsize::new(0);
static REFRESHING: AtomicBool = AtomicBool::new(false);
/// `dlpi_adds + dlpi_subs` at the last refresh: changes whenever an object is loaded or unloaded.
static LOADS: AtomicUsize = AtomicUsize::new(usize::MAX);

fn storage() -> *mut Module {
    let p = MODULES.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    let fresh = map(MAX_MODULES * size_of::<Module>()).cast::<Module>();
    if fresh.is_null() {
        return fresh;
    }
    match MODULES.compare_exchange(core::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => fresh,
        Err(other) => {
            crate::table::unmap(fresh.cast(), MAX_MODULES * size_of::<Module>());
            other
        }
    }
}

/// The modules known so far (a snapshot of the prefix; entries are never moved).
pub fn all() -> &'static [Module] {
    let p = MODULES.load(Ordering::Acquire);
    if p.is_null() {
        return &[];
    }
    // SAFETY: the first COUNT entries are filled (COUNT is raised with Release after they are
    // written) and never unmapped; only their atomic flags change later.
    unsafe { core::slice::from_raw_parts(p, COUNT.load(Ordering::Acquire)) }
}

/// Holds the refresh lock; released on drop.
pub struct Refreshing(());

impl Drop for Refreshing {
    fn drop(&mut self) {
        REFRESHING.store(false, Ordering::Release);
    }
}

/// Tries to take the refresh lock (never waits: see the module documentation).
pub fn try_lock() -> Option<Refreshing> {
    REFRESHING.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok().then_some(Refreshing(()))
}

/// Frees the refresh lock (in the child of a fork).
pub fn release_lock() {
    REFRESHING.store(false, Ordering::Release);
}

/// Set by the `LD_PRELOAD` front's `dlclose` (see `preload/`): the next capture refreshes the
/// module list before it unwinds, so that the unwinder forgets an unloaded object before anything
/// else is mapped at its addresses (it would otherwise read the unwind tables of the old object
/// there). A Rust program that links the recorder does not interpose `dlclose`: there the list is
/// only refreshed when a stack meets an unknown address, so an object loaded where an unloaded one
/// was may be unwound with the old one's rules until then (the walk's bounds checks still hold).
static DIRTY: AtomicBool = AtomicBool::new(false);

pub fn mark_dirty() {
    DIRTY.store(true, Ordering::Relaxed);
}

/// Whether a refresh is due (and clears the flag).
#[inline(always)]
pub fn take_dirty() -> bool {
    DIRTY.load(Ordering::Relaxed) && DIRTY.swap(false, Ordering::Relaxed)
}

/// Whether objects were loaded or unloaded since the last refresh: one cheap `dl_iterate_phdr`
/// call that stops at the first object.
pub fn changed() -> bool {
    unsafe extern "C" fn first(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: glibc passes a valid info (with the adds/subs fields: `size` covers them since
        // glibc 2.4) and our counter slot.
        unsafe { *data.cast::<usize>() = ((*info).dlpi_adds as usize).wrapping_add((*info).dlpi_subs as usize) };
        1
    }
    let mut loads = 0usize;
    // SAFETY: the callback writes one usize into `loads`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(first), (&mut loads as *mut usize).cast()) };
    loads != LOADS.load(Ordering::Relaxed)
}

/// Re-reads the loaded objects: appends new ones, marks vanished ones dead. Needs the refresh lock.
/// Returns whether anything changed.
pub fn refresh(_lock: &Refreshing) -> bool {
    let base = storage();
    if base.is_null() {
        return false;
    }
    let mut state = Walk { base, seen_generation: next_generation(), changed: false, loads: 0 };
    // SAFETY: the callback reads the headers it is given and writes entries of `base` beyond
    // COUNT (no reader looks there) or the flags of existing ones; `state` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each_object), (&mut state as *mut Walk).cast()) };
    LOADS.store(state.loads, Ordering::Relaxed);
    for (m, seen) in all().iter().zip(&SEEN) {
        if m.live.load(Ordering::Relaxed) && seen.load(Ordering::Relaxed) != state.seen_generation {
            m.live.store(false, Ordering::Relaxed);
            state.changed = true;
        }
    }
    state.changed
}

/// Per entry: the generation of the refresh that last saw it (a refresh marks, then sweeps).
static SEEN: [AtomicUsize; MAX_MODULES] = [const { AtomicUsize::new(0) }; MAX_MODULES];
static GENERATION: AtomicUsize = AtomicUsize::new(0);

fn next_generation() -> usize {
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

struct Walk {
    base: *mut Module,
    seen_generation: usize,
    changed: bool,
    loads: usize,
}

unsafe extern "C" fn each_object(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our `Walk` as `data`.
    let (info, walk) = unsafe { (&*info, &mut *data.cast::<Walk>()) };
    walk.loads = (info.dlpi_adds as usize).wrapping_add(info.dlpi_subs as usize);
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return 0;
    }
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
    let headers = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let mut fresh = Module::zeroed();
    describe(info, headers, &mut fresh);
    if fresh.range_count == 0 {
        return 0;
    }
    for (m, seen) in all().iter().zip(&SEEN) {
        if m.live.load(Ordering::Relaxed) && m.bias == fresh.bias && m.start == fresh.start && m.end == fresh.end {
            seen.store(walk.seen_generation, Ordering::Relaxed);
            return 0;
        }
    }
    let n = COUNT.load(Ordering::Acquire);
    if n == MAX_MODULES {
        return 0;
    }
    fresh.live.store(true, Ordering::Relaxed);
    // SAFETY: entry `n` is beyond COUNT: no reader looks at it until COUNT is raised below.
    unsafe { walk.base.add(n).write(fresh) };
    SEEN[n].store(walk.seen_generation, Ordering::Relaxed);
    COUNT.store(n + 1, Ordering::Release);
    walk.changed = true;
    0
}

impl Module {
    fn zeroed() -> Module {
        // SAFETY: every field is an integer, an atomic bool or an array of them: all zero is valid.
        unsafe { core::mem::zeroed() }
    }
}

/// Fills a module from its program headers.
fn describe(info: &libc::dl_phdr_info, headers: &[libc::Elf64_Phdr], m: &mut Module) {
    let bias = info.dlpi_addr;
    m.bias = bias;
    m.start = u64::MAX;
    m.code = (u64::MAX, 0);
    for h in headers {
        match h.p_type {
            libc::PT_LOAD => {
                let start = bias.wrapping_add(h.p_vaddr);
                if (m.range_count as usize) < MAX_RANGES {
                    m.ranges[m.range_count as usize] = (start, h.p_memsz);
                    m.range_count += 1;
                }
                m.start = m.start.min(start);
                m.end = m.end.max(start + h.p_memsz);
                if h.p_flags & libc::PF_X != 0 {
                    m.code = (m.code.0.min(start), m.code.1.max(start + h.p_memsz));
                }
            }
            libc::PT_GNU_EH_FRAME => m.eh_frame_hdr = (bias.wrapping_add(h.p_vaddr), h.p_memsz),
            libc::PT_NOTE => build_id(bias.wrapping_add(h.p_vaddr), h.p_memsz, m),
            _ => {}
        }
    }
    if m.code.0 == u64::MAX {
        m.code = (0, 0);
    }
    if m.eh_frame_hdr.1 >= 8 {
        // SAFETY: the eh_frame_hdr segment is mapped and at least 8 bytes long.
        let hdr = unsafe { core::slice::from_raw_parts(m.eh_frame_hdr.0 as *const u8, m.eh_frame_hdr.1 as usize) };
        if let Some(start) = eh_frame_start(hdr, m.eh_frame_hdr.0) {
            // Its length is not recorded anywhere: up to the end of the segment that holds it.
            if let Some(&(s, l)) = m.ranges().iter().find(|&&(s, l)| start >= s && start - s < l) {
                m.eh_frame = (start, s + l - start);
            }
        }
        if m.eh_frame.1 == 0 {
            m.eh_frame_hdr = (0, 0);
        }
    }
    path(info, m);
}

/// The address of `.eh_frame`, from the `eh_frame_ptr` field of `.eh_frame_hdr` (version 1).
fn eh_frame_start(hdr: &[u8], hdr_addr: u64) -> Option<u64> {
    if hdr[0] != 1 {
        return None;
    }
    let encoding = hdr[1];
    let field = &hdr[4..];
    let (value, _) = match encoding & 0x0f {
        0x00 | 0x04 | 0x0c => (u64::from_le_bytes(field.get(..8)?.try_into().ok()?), 8),
        0x03 => (u32::from_le_bytes(field.get(..4)?.try_into().ok()?) as u64, 4),
        0x0b => (i32::from_le_bytes(field.get(..4)?.try_into().ok()?) as i64 as u64, 4),
        _ => return None,
    };
    match encoding & 0x70 {
        0x00 => Some(value),
        // pc-relative: relative to the field itself.
        0x10 => Some((hdr_addr + 4).wrapping_add(value)),
        // data-relative: relative to the start of .eh_frame_hdr.
        0x30 => Some(hdr_addr.wrapping_add(value)),
        _ => None,
    }
}

/// Copies the GNU build-id note (`NT_GNU_BUILD_ID`, owner "GNU") out of a `PT_NOTE` segment.
fn build_id(addr: u64, len: u64, m: &mut Module) {
    if m.build_id_len > 0 || len < 12 {
        return;
    }
    // SAFETY: a PT_NOTE segment lies inside a PT_LOAD one and is mapped.
    let notes = unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) };
    let mut at = 0usize;
    let word = |at: usize| notes.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    while let (Some(namesz), Some(descsz), Some(kind)) = (word(at), word(at + 4), word(at + 8)) {
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let next = desc_at + descsz.next_multiple_of(4);
        if next > notes.len() {
            return;
        }
        if kind == 3 && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
            let n = descsz.min(MAX_BUILD_ID);
            m.build_id[..n].copy_from_slice(&notes[desc_at..desc_at + n]);
            m.build_id_len = n as u32;
            return;
        }
        at = next;
    }
}

/// `dlpi_name`, or for the main program (whose name is empty) the target of `/proc/self/exe`.
fn path(info: &libc::dl_phdr_info, m: &mut Module) {
    let name = if info.dlpi_name.is_null() {
        &[][..]
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    if !name.is_empty() {
        let n = name.len().min(MAX_PATH);
        m.path[..n].copy_from_slice(&name[..n]);
        m.path_len = n as u32;
        return;
    }
    // SAFETY: readlink writes at most MAX_PATH bytes into the array.
    let n = unsafe { libc::readlink(c"/proc/self/exe".as_ptr(), m.path.as_mut_ptr().cast(), MAX_PATH) };
    m.path_len = n.max(0) as u32;
}

/// The module that answered the last [`is_known`] (an index into [`all`]).
static LAST_KNOWN: AtomicUsize = AtomicUsize::new(0);

/// Whether `addr` is in the code of a live module: two comparisons when it is in the same module
/// as last time, a scan otherwise.
#[inline]
pub fn is_known(addr: u64) -> bool {
    let known = all();
    let in_code = |m: &Module| m.code.0 <= addr && addr < m.code.1 && m.live.load(Ordering::Relaxed);
    if known.get(LAST_KNOWN.load(Ordering::Relaxed)).is_some_and(in_code) {
        return true;
    }
    match known.iter().position(in_code) {
        Some(i) => {
            LAST_KNOWN.store(i, Ordering::Relaxed);
            true
        }
        None => false,
    }
}
