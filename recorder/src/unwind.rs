//! In-process stack unwinding for allocation stacks, with the `framehop` crate.
//!
//! `framehop` unwinds each frame with the rule that fits it: the `.eh_frame` CFI of its module
//! (found through `.eh_frame_hdr`, read straight from memory: the dynamic linker has mapped it),
//! which for code built with frame pointers is "CFA = rbp + 16", a frame-pointer step; and the
//! frame-pointer rule for code that no module covers. Each rule is cached per return address (its
//! `Cache`, 509 direct-mapped entries), so a hot allocation path costs one cache probe and one or
//! two stack reads per frame, not a CFI evaluation, and no module lookup either: the module is only
//! looked up on a cache miss.
//!
//! Most allocations need no unwinding at all: each thread keeps its last 16 stacks (`Many`; two,
//! `Recent`, for threads past the pool's 64), and an allocation whose callers' return addresses all still sit in the same stack slots as one
//! of them has its stack; otherwise the walk stops at the first frame whose callers are unchanged.
//!
//! Sharing: a walk holds one of `CACHES` lock slots, each with its own rule cache, so threads
//! seldom wait for each other; a module-list change (rare) takes them all. Everything `framehop`
//! allocates comes from the recorder's own allocator ([`crate::alloc`]), never from the hooked
//! `malloc`.
//!
//! Safety of the stack reads: every read is checked against the current thread's stack, from the
//! stack pointer at the capture to the top of the mapping that holds it (read once per thread
//! from `/proc/self/maps` and kept in initial-exec TLS), so a wrong rule or a garbage frame
//! pointer ends the walk instead of faulting.

#[cfg(target_arch = "x86_64")]
pub use imp::{refresh as refresh_modules, release_all, stack_id};

/// Without a `framehop` unwinder for this architecture, no stacks are recorded.
#[cfg(not(target_arch = "x86_64"))]
pub fn stack_id(_depth: usize) -> u32 {
    0
}

#[cfg(not(target_arch = "x86_64"))]
pub fn refresh_modules() {}

#[cfg(not(target_arch = "x86_64"))]
pub fn release_all() {}

#[cfg(target_arch = "x86_64")]
mod imp {
    use alloc_crate::boxed::Box;
    use core::arch::{asm, global_asm};
    use core::cell::UnsafeCell;
    use core::mem::MaybeUninit;
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

    use crate::{modules, trie};

    extern crate alloc as alloc_crate;

    type Data = &'static [u8];
    type Unwind = UnwinderX86_64<Data>;
    type Cache = CacheX86_64;

    /// Frames a walk can hold: the deepest configurable stack. The walk's arrays live on the hook's
    /// stack, so this stays small.
    const MAX_FRAMES: usize = crate::stacks::MAX_DEPTH;

    /// Lock slots, each with its own rule cache.
    const CACHES: usize = 4;
    /// Frames walked (the recorder's own included) before giving up on a stack.
    const MAX_STEPS: usize = 512;

    /// The unwinder (its module list). Read by a capture while it holds any one of the [`SLOTS`];
    /// replaced by a refresh while it holds all of them. So a capture pays for one atomic
    /// exchange, and a refresh (rare) waits for the captures under way.
    struct Shared(UnsafeCell<Option<Unwind>>);

    // SAFETY: see `Shared`: readers hold a slot, the writer holds every slot.
    unsafe impl Sync for Shared {}

    static SHARED: Shared = Shared(UnsafeCell::new(None));

    struct Slot {
        busy: AtomicBool,
        cache: UnsafeCell<Option<Box<Cache>>>,
    }

    // SAFETY: `cache` is only reached with `busy` held.
    unsafe impl Sync for Slot {}

    static SLOTS: [Slot; CACHES] =
        [const { Slot { busy: AtomicBool::new(false), cache: UnsafeCell::new(None) } }; CACHES];

    /// The recorder's own code, whose frames are skipped: (start, end), 0..0 until known; empty
    /// (1..1) when the recorder is linked into the program.
    static OWN_START: AtomicU64 = AtomicU64::new(0);
    static OWN_END: AtomicU64 = AtomicU64::new(0);

    fn lock_slot(slot: &Slot) {
        while slot.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }

    fn write_lock() {
        for slot in &SLOTS {
            lock_slot(slot);
        }
    }

    /// Frees every slot (in the child of a fork).
    pub fn release_all() {
        write_unlock();
    }

    fn write_unlock() {
        for slot in &SLOTS {
            slot.busy.store(false, Ordering::Release);
        }
    }

    /// Re-reads the module list and gives the unwinder the new modules (and takes dead ones
    /// away). Never waits for the refresh lock, and calls `dl_iterate_phdr` before taking the
    /// unwinder's lock (see `modules.rs` on the loader's locks).
    pub fn refresh() {
        let Some(lock) = modules::try_lock() else {
            // Someone else is refreshing; if that was not for a dlclose, the next capture retries.
            modules::mark_dirty();
            return;
        };
        modules::refresh(&lock);
        write_lock();
        // SAFETY: every slot is held: no capture uses the unwinder.
        let unwinder = unsafe { &mut *SHARED.0.get() }.get_or_insert_with(Unwind::new);
        let own = refresh as fn() as usize as u64;
        for m in modules::all() {
            let live = m.live.load(Ordering::Relaxed);
            let installed = m.installed.load(Ordering::Relaxed);
            if live && m.code.0 <= own && own < m.code.1 {
                // Linked into the program (see `front.rs`), this module is the program's: no frame
                // is skipped. The empty range is still nonzero: the list has been read.
                let (start, end) = if crate::front::linked() { (1, 1) } else { m.code };
                OWN_START.store(start, Ordering::Relaxed);
                OWN_END.store(end, Ordering::Relaxed);
            }
            let own_module = m.code.0 <= own && own < m.code.1;
            if live && !installed && m.eh_frame.1 > 0 && m.code.1 > m.code.0 && (own_module || !frame_pointers_only()) {
                unwinder.add_module(module_of(m));
                m.installed.store(true, Ordering::Relaxed);
            } else if !live && installed {
                unwinder.remove_module(m.code.0);
                m.installed.store(false, Ordering::Relaxed);
            }
        }
        write_unlock();
        drop(lock);
    }

    /// `HEAPSNAP_UNWIND=fp`: the program's frames are walked by frame pointers only (the
    /// recorder's own frames still by their CFI). Faster, and wrong for code built without frame
    /// pointers: for comparisons.
    fn frame_pointers_only() -> bool {
        // SAFETY: getenv with a NUL-terminated name; the value is read at once.
        let value = unsafe { libc::getenv(c"HEAPSNAP_UNWIND".as_ptr()) };
        // SAFETY: a non-null getenv result is a NUL-terminated string.
        !value.is_null() && unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes() == b"fp"
    }

    /// The `framehop` view of a loaded module: its sections, in place in memory.
    fn module_of(m: &modules::Module) -> Module<Data> {
        let slice = |(start, len): (u64, u64)| -> Data {
            // SAFETY: the range lies in one of the module's mapped, read-only `PT_LOAD`
            // segments, which stay mapped while the module is live; it is removed from the
            // unwinder when a refresh finds it gone.
            unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) }
        };
        let svma = |(start, len): (u64, u64)| (start - m.bias)..(start - m.bias + len);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(svma((m.code.0, m.code.1 - m.code.0))),
            eh_frame_svma: Some(svma(m.eh_frame)),
            eh_frame: Some(slice(m.eh_frame)),
            eh_frame_hdr_svma: Some(svma(m.eh_frame_hdr)),
            eh_frame_hdr: Some(slice(m.eh_frame_hdr)),
            ..Default::default()
        };
        Module::new(alloc_crate::string::String::new(), m.code.0..m.code.1, m.bias, info)
    }

    /// Takes a free cache slot (waiting on one when all are busy).
    #[inline]
    fn take_slot() -> &'static Slot {
        let mut i = 0;
        loop {
            let slot = &SLOTS[i % CACHES];
            if slot.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return slot;
            }
            i += 1;
            core::hint::spin_loop();
        }
    }

    /// The trie id of the caller's stack, innermost frame first up to `depth` frames, skipping
    /// the recorder's own frames, so that the innermost frame is where the program called the
    /// allocator. 0 when no frame could be found.
    #[inline(always)]
    pub fn stack_id(depth: usize) -> u32 {
        if OWN_END.load(Ordering::Relaxed) == 0 {
            refresh();
        }
        match walk(depth, true) {
            Walked::Done(id) => id,
            // A frame outside every known module, and objects were loaded or unloaded since the
            // last refresh (dlopen): learn them and walk again.
            Walked::Stale(id) => {
                if modules::changed() {
                    refresh();
                    match walk(depth, false) {
                        Walked::Done(id) | Walked::Stale(id) => id,
                    }
                } else {
                    id
                }
            }
        }
    }

    enum Walked {
        Done(u32),
        /// The walk failed at or after an address of no known module.
        Stale(u32),
    }

    /// Frames of the last stack of each thread kept for [`Previous`]: deeper ones are not cached.
    const CACHED: usize = 64;

    /// The last stack this thread captured, outermost last: where each return address was found
    /// on the stack, the address, and the trie id of the stack from that frame outwards. The next
    /// capture unwinds only until it meets one of these frames at the same stack slot with the same
    /// return address, then checks that every slot further out still holds its return address:
    /// then the callers are the same, and their trie id is reused. A loop that allocates 30 frames
    /// down unwinds two or three frames per allocation instead of thirty.
    ///
    /// The check can only be fooled by a caller whose frame size varies between calls (`alloca`)
    /// in a way that puts the same return addresses back at the same slots: the stack shown is then
    /// a previous one of the same call site.
    #[repr(C)]
    struct Previous {
        /// Frames held, 0 for none; only complete stacks (the walk reached the outermost frame).
        len: u64,
        slots: [u64; CACHED],
        addrs: [u64; CACHED],
        ids: [u32; CACHED],
    }

    /// A thread's last two stacks: a loop that allocates at two call sites (malloc here, realloc
    /// there) finds both without unwinding. Kept in static TLS, which must stay small: glibc
    /// carves it out of every thread's stack, and refuses small stacks when it is large.
    #[repr(C)]
    struct Recent {
        /// Index of the newest.
        newest: u64,
        stacks: [Previous; 2],
        /// This thread's [`Many`]: 0 before its first capture, [`NO_MANY`] when none was left.
        many: u64,
    }

    /// A thread's last [`MANY`] stacks, in place of [`Recent`]'s two when one could be had: a
    /// program that allocates from a few call sites reached along a few paths (a loop that calls
    /// a recursive function, which allocates at its bottom) finds each stack without unwinding
    /// and interning it again. Taken from a pool of [`POOLED`], mapped on first use, one per
    /// thread for good (a thread has no exit hook here); later threads keep to [`Recent`].
    #[repr(C)]
    struct Many {
        newest: u64,
        stacks: [Previous; MANY],
    }

    const MANY: usize = 16;
    const POOLED: usize = 64;
    const NO_MANY: u64 = 1;

    static POOL: AtomicPtr<Many> = AtomicPtr::new(core::ptr::null_mut());
    static CLAIMED: AtomicUsize = AtomicUsize::new(0);

    /// This thread's stacks: its [`Many`], or its [`Recent`] ones. The index of the newest, and
    /// the stacks.
    #[inline]
    fn stacks_of(recent: &'static mut Recent) -> (&'static mut u64, &'static mut [Previous]) {
        if recent.many == 0 {
            recent.many = claim_many().map_or(NO_MANY, |m| m as u64);
        }
        if recent.many == NO_MANY {
            return (&mut recent.newest, &mut recent.stacks[..]);
        }
        // SAFETY: a `Many` of the pool, claimed by this thread alone (see `claim_many`), zeroed
        // when mapped (a valid `Many`: all integers), and never unmapped.
        let many = unsafe { &mut *(recent.many as *mut Many) };
        (&mut many.newest, &mut many.stacks[..])
    }

    /// A `Many` no other thread has, or `None` when the pool is used up or cannot be mapped.
    #[cold]
    fn claim_many() -> Option<*mut Many> {
        let i = CLAIMED.fetch_add(1, Ordering::Relaxed);
        if i >= POOLED {
            CLAIMED.store(POOLED, Ordering::Relaxed);
            return None;
        }
        let mut pool = POOL.load(Ordering::Acquire);
        if pool.is_null() {
            let fresh = crate::table::map(POOLED * size_of::<Many>()).cast::<Many>();
            if fresh.is_null() {
                return None;
            }
            pool = match POOL.compare_exchange(core::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => fresh,
                Err(theirs) => {
                    crate::table::unmap(fresh.cast(), POOLED * size_of::<Many>());
                    theirs
                }
            };
        }
        // SAFETY: `i < POOLED`: inside the pool's mapping.
        Some(unsafe { pool.add(i) })
    }

    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".globl heapsnap_recorder_previous",
        ".hidden heapsnap_recorder_previous",
        ".type heapsnap_recorder_previous, @object",
        ".size heapsnap_recorder_previous, {size}",
        ".p2align 3",
        "heapsnap_recorder_previous:",
        ".zero {size}",
        ".popsection",
        size = const size_of::<Recent>(),
        options(att_syntax)
    );

    /// This thread's [`Recent`]. Only a hook with the re-entry guard held calls this, once per
    /// capture, so the reference is never shared (a signal handler that interrupts a capture finds
    /// the guard set, and its allocations take the unrecorded path).
    #[inline]
    fn recent() -> &'static mut Recent {
        let at: usize;
        // SAFETY: computes the address of this thread's copy of the `.tbss` symbol above: the
        // thread pointer (`%fs:0` holds it on x86-64) plus the offset from the GOT.
        unsafe {
            asm!(
                "movq %fs:0, {at}",
                "addq heapsnap_recorder_previous@gottpoff(%rip), {at}",
                at = out(reg) at,
                options(att_syntax, nostack, readonly)
            );
        }
        // SAFETY: the symbol reserves `size_of::<Recent>()` zeroed, aligned bytes per thread (a
        // valid `Recent`: all integers), reached only by this thread, and only here (see above).
        unsafe { &mut *(at as *mut Recent) }
    }

    /// One walk, then the trie ids. `use_previous`: whether [`Previous`] may shorten it.
    /// Inlined into the hooks, so that the walk starts in the hook's own frame: one step to the
    /// program's frame instead of one per function of the recorder.
    #[inline(always)]
    fn walk(depth: usize, use_previous: bool) -> Walked {
        let (ip, sp, bp) = registers();
        let top = stack_top(sp);
        // Not zeroed: only the first `n` are read. (Zeroing 5 KiB per allocation was measurable.)
        let mut slots = [const { MaybeUninit::<u64>::uninit() }; MAX_FRAMES];
        let mut addrs = [const { MaybeUninit::<u64>::uninit() }; MAX_FRAMES];
        let depth = depth.min(addrs.len());
        let (newest, stacks) = stacks_of(recent());
        // The fastest path: one of the last stacks again, found without unwinding at all.
        if use_previous && let Some(offset) = learned_offset(ip) {
            let slot0 = sp.wrapping_add(offset);
            let innermost = if slot0 >= sp && slot0 < top.saturating_sub(7) {
                // SAFETY: an aligned word (learnt from a walk that read it) between the stack
                // pointer and the top of this thread's stack.
                unsafe { core::ptr::read_volatile(slot0 as *const u64) }
            } else {
                0
            };
            // The most recently used first: it becomes the newest again.
            let count = stacks.len();
            let newer = *newest as usize % count;
            for k in (0..count).map(|j| (newer + count - j) % count) {
                let prev = &stacks[k];
                let len = prev.len as usize;
                // The innermost return address first: the other call sites fail on it.
                if len > 0
                    && prev.slots[0] == slot0
                    && prev.addrs[0] == innermost
                    && first_change(prev, 1, len, sp, top).is_none()
                {
                    *newest = k as u64;
                    return Walked::Done(prev.ids[0]);
                }
            }
        }
        // Otherwise unwind, shortened by the most recent stack; the new one replaces the other.
        // The newest, and the one after it, which the new one replaces (the oldest, unless stacks
        // were found again since).
        let newer = *newest as usize % stacks.len();
        let older = (newer + 1) % stacks.len();
        let (prev, next) = if newer < older {
            let (low, high) = stacks.split_at_mut(older);
            (&mut low[newer], &mut high[0])
        } else {
            let (low, high) = stacks.split_at_mut(newer);
            (&mut high[0], &mut low[older])
        };
        let prev_len = if use_previous { prev.len as usize } else { 0 };
        let (n, end, reused, first_slot) =
            unwind((ip, sp, bp), top, &mut slots[..depth], &mut addrs[..depth], prev, prev_len);
        if first_slot != 0 {
            learn_offset(ip, first_slot.wrapping_sub(sp));
        }
        // SAFETY: `unwind` wrote the first `n` of each.
        let (slots, addrs) = unsafe { (assume_init(&slots[..n]), assume_init(&addrs[..n])) };

        // Trie ids, outermost first; the reused part of the previous stack keeps its ids.
        let (mut parent, total) = match reused {
            Some(p) => (prev.ids[p], n + prev_len - p),
            None => (0, n),
        };
        let mut ids = [const { MaybeUninit::<u32>::uninit() }; MAX_FRAMES];
        if reused == Some(n) && prev.addrs[..n] == *addrs {
            // The very same stack as last time (an allocation in a loop): no trie lookups.
            prev.slots[..n].copy_from_slice(slots);
            return Walked::Done(if n == 0 { parent } else { prev.ids[0] });
        }
        for i in (0..n).rev() {
            let id = trie::intern(parent, addrs[i]);
            parent = if id == 0 { parent } else { id };
            ids[i].write(parent);
        }
        // SAFETY: the loop wrote the first `n`.
        let ids = unsafe { assume_init(&ids[..n]) };
        // Remember this stack for the next capture, when it is complete and fits.
        let complete = end == End::Outermost || reused.is_some();
        if complete && total <= CACHED {
            if let Some(p) = reused {
                next.slots[n..total].copy_from_slice(&prev.slots[p..prev_len]);
                next.addrs[n..total].copy_from_slice(&prev.addrs[p..prev_len]);
                next.ids[n..total].copy_from_slice(&prev.ids[p..prev_len]);
            }
            next.slots[..n].copy_from_slice(slots);
            next.addrs[..n].copy_from_slice(addrs);
            next.ids[..n].copy_from_slice(ids);
            next.len = total as u64;
            *newest = older as u64;
        } else {
            next.len = 0;
        }
        // A stack that failed or ended early (a frame-pointer walk through code of an object we do not
        // know yet can end at a zero frame pointer), or whose allocation site is in no known
        // object, may mean new objects (dlopen).
        let stale = (end != End::Full || n == 0 || !modules::is_known(addrs[0]))
            && addrs.iter().any(|&a| !modules::is_known(a))
            && stale_worth_checking();
        if stale { Walked::Stale(parent) } else { Walked::Done(parent) }
    }

    /// The first of frames `from..len` of `prev` whose slot no longer holds its return address
    /// (`len` when the stack's bounds exclude them), or `None` when all do. The slots are aligned
    /// (they were read before) and increasing, so checking the first and the last against the
    /// bounds covers all of them.
    #[inline]
    fn first_change(prev: &Previous, from: usize, len: usize, sp: u64, top: u64) -> Option<usize> {
        if from >= len {
            return None;
        }
        if prev.slots[from] < sp || prev.slots[len - 1] >= top.saturating_sub(7) {
            return Some(len);
        }
        let read = |slot: u64| {
            // SAFETY: an aligned word between the stack pointer and the top of this thread's stack.
            unsafe { core::ptr::read_volatile(slot as *const u64) }
        };
        let (slots, addrs) = (&prev.slots[from..len], &prev.addrs[from..len]);
        // Four frames at a time, without a branch per frame: most calls find no change.
        let mut at = 0;
        for (s, a) in slots.chunks_exact(4).zip(addrs.chunks_exact(4)) {
            let diff = (read(s[0]) ^ a[0]) | (read(s[1]) ^ a[1]) | (read(s[2]) ^ a[2]) | (read(s[3]) ^ a[3]);
            if diff != 0 {
                break;
            }
            at += 4;
        }
        (at..slots.len()).find(|&j| read(slots[j]) != addrs[j]).map(|j| from + j)
    }

    /// # Safety
    /// Every element of `part` is initialised.
    unsafe fn assume_init<T: Copy>(part: &[MaybeUninit<T>]) -> &[T] {
        // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the caller vouches for the contents.
        unsafe { &*(part as *const [MaybeUninit<T>] as *const [T]) }
    }

    /// Where the program's innermost return address is, as an offset from the stack pointer at a
    /// capture point (the walk, inlined into a hook, has one instruction pointer per hook): the
    /// recorder's own frames have fixed sizes, so it is the same every time the program calls that
    /// hook directly. Learnt from full walks, (ip, offset) pairs, 0 for none; an instruction
    /// pointer seen with two offsets (a hook called by another hook, `reallocarray` -> `realloc`)
    /// is marked [`AMBIGUOUS`] and always walked. With it, an allocation whose stack is the one
    /// its thread had last time is recognised by reading the saved return addresses alone.
    static OFFSETS: [(AtomicU64, AtomicU64); 64] = [const { (AtomicU64::new(0), AtomicU64::new(0)) }; 64];
    const AMBIGUOUS: u64 = u64::MAX;

    #[inline]
    fn offset_slot(ip: u64) -> &'static (AtomicU64, AtomicU64) {
        &OFFSETS[(ip.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize]
    }

    #[inline(always)]
    fn learned_offset(ip: u64) -> Option<u64> {
        let (key, offset) = offset_slot(ip);
        if key.load(Ordering::Acquire) != ip {
            return None;
        }
        let offset = offset.load(Ordering::Acquire);
        (offset != 0 && offset != AMBIGUOUS).then_some(offset)
    }

    #[inline]
    fn learn_offset(ip: u64, offset: u64) {
        let (key, slot) = offset_slot(ip);
        let current = key.load(Ordering::Acquire);
        if current == 0 {
            // Claim the entry; a lost race leaves it to the other instruction pointer.
            if key.compare_exchange(0, ip, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                slot.store(offset, Ordering::Release);
            }
        } else if current == ip {
            let known = slot.load(Ordering::Acquire);
            if known != offset && known != 0 && known != AMBIGUOUS {
                slot.store(AMBIGUOUS, Ordering::Release);
            }
        }
    }

    /// Stale-looking stacks seen: code that belongs to no object (a JIT's) looks stale every time,
    /// so only the first and then every 64th asks the loader whether anything changed.
    static STALE: AtomicU64 = AtomicU64::new(0);

    #[inline]
    fn stale_worth_checking() -> bool {
        STALE.fetch_add(1, Ordering::Relaxed) % 64 == 0
    }

    #[derive(PartialEq, Eq, Clone, Copy)]
    enum End {
        /// The walk reached the outermost frame.
        Outermost,
        /// `depth` frames were found (or the previous stack was met).
        Full,
        Failed,
    }

    /// Unwinds from the given registers, skipping the recorder's frames, into `slots` (where each
    /// return address was read) and `addrs`. Stops early when it meets a frame of `prev` (its
    /// first `prev_len`) whose callers are unchanged, and returns its index there.
    #[allow(clippy::too_many_arguments)]
    fn unwind(
        (ip, sp, bp): (u64, u64, u64),
        top: u64,
        slots: &mut [MaybeUninit<u64>],
        addrs: &mut [MaybeUninit<u64>],
        prev: &Previous,
        prev_len: usize,
    ) -> (usize, End, Option<usize>, u64) {
        let mut read = |addr: u64| -> Result<u64, ()> {
            if addr >= sp && addr & 7 == 0 && addr.checked_add(8).is_some_and(|end| end <= top) {
                // SAFETY: an aligned word of this thread's stack, above the stack pointer.
                Ok(unsafe { core::ptr::read_volatile(addr as *const u64) })
            } else {
                Err(())
            }
        };
        let own = OWN_START.load(Ordering::Relaxed)..OWN_END.load(Ordering::Relaxed);
        let slot = take_slot();
        // SAFETY: a slot is held: no refresh changes the unwinder meanwhile.
        let shared = unsafe { &*SHARED.0.get() };
        // SAFETY: the slot is held: its cache is ours.
        let cache = unsafe { &mut *slot.cache.get() };
        let mut n = 0;
        let mut end = End::Failed;
        let mut reused = None;
        let mut first_slot = 0;
        if let Some(unwinder) = shared {
            let cache = cache.get_or_insert_with(|| Box::new(Cache::new()));
            let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
            let mut address = FrameAddress::from_instruction_pointer(ip);
            let mut skipping = true;
            // Index of the first frame of `prev` whose slot is not below the current one.
            let mut p = 0;
            // Frames of `prev` below this index have changed callers.
            let mut changed_below = 0;
            for _ in 0..MAX_STEPS {
                if n == slots.len() {
                    end = End::Full;
                    break;
                }
                let ra = match unwinder.unwind_frame(address, &mut regs, cache, &mut read) {
                    Ok(Some(ra)) => ra,
                    Ok(None) => {
                        end = End::Outermost;
                        break;
                    }
                    Err(_) => break,
                };
                let Some(next) = FrameAddress::from_return_address(ra) else { break };
                address = next;
                if skipping && own.contains(&ra) {
                    continue;
                }
                let at = regs.sp().wrapping_sub(8);
                if skipping {
                    skipping = false;
                    first_slot = at;
                }
                while p < prev_len && prev.slots[p] < at {
                    p += 1;
                }
                if p < prev_len
                    && p >= changed_below
                    && prev.slots[p] == at
                    && prev.addrs[p] == ra
                    && n + prev_len - p <= slots.len()
                {
                    match first_change(prev, p + 1, prev_len, sp, top) {
                        None => {
                            reused = Some(p);
                            end = End::Full;
                            break;
                        }
                        // Any frame below that one would fail the same check: skip to it.
                        Some(j) => changed_below = j,
                    }
                }
                slots[n].write(at);
                addrs[n].write(ra);
                n += 1;
            }
        }
        slot.busy.store(false, Ordering::Release);
        (n, end, reused, first_slot)
    }

    /// This function's instruction pointer, stack pointer and frame pointer, in agreement: the
    /// CFI row for `ip` describes the frame whose stack pointer is `sp`.
    #[inline(always)]
    fn registers() -> (u64, u64, u64) {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: copies three registers; touches no memory.
        unsafe {
            asm!(
                "lea {ip}, [rip]",
                "mov {sp}, rsp",
                "mov {bp}, rbp",
                ip = out(reg) ip,
                sp = out(reg) sp,
                bp = out(reg) bp,
                options(nomem, nostack, preserves_flags)
            );
        }
        (ip, sp, bp)
    }

    // This thread's stack mapping, (low, high): zero until known. Initial-exec TLS, like the
    // re-entry guard (see `guard.rs` for why not `thread_local!`).
    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".globl heapsnap_recorder_stack",
        ".hidden heapsnap_recorder_stack",
        ".type heapsnap_recorder_stack, @object",
        ".size heapsnap_recorder_stack, 16",
        ".p2align 3",
        "heapsnap_recorder_stack:",
        ".zero 16",
        ".popsection",
        options(att_syntax)
    );

    #[inline(always)]
    fn bounds() -> (u64, u64) {
        let (low, high): (u64, u64);
        // SAFETY: reads the 16 bytes of this thread's static TLS that the symbol above reserves.
        unsafe {
            asm!(
                "movq heapsnap_recorder_stack@gottpoff(%rip), {offset}",
                "movq %fs:({offset}), {low}",
                "movq %fs:8({offset}), {high}",
                offset = out(reg) _,
                low = out(reg) low,
                high = out(reg) high,
                options(att_syntax, nostack, readonly, preserves_flags)
            );
        }
        (low, high)
    }

    fn set_bounds(low: u64, high: u64) {
        // SAFETY: writes the same thread-private 16 bytes as `bounds`.
        unsafe {
            asm!(
                "movq heapsnap_recorder_stack@gottpoff(%rip), {offset}",
                "movq {low}, %fs:({offset})",
                "movq {high}, %fs:8({offset})",
                offset = out(reg) _,
                low = in(reg) low,
                high = in(reg) high,
                options(att_syntax, nostack, preserves_flags)
            );
        }
    }

    /// The top of the stack mapping that holds `sp`; `sp` itself (no reads allowed) when unknown.
    #[inline(always)]
    fn stack_top(sp: u64) -> u64 {
        let (low, high) = bounds();
        if low <= sp && sp < high {
            return high;
        }
        stack_top_lookup(sp)
    }

    /// [`stack_top`] on the first capture of a thread, a grown main stack, or a signal stack.
    #[cold]
    #[inline(never)]
    fn stack_top_lookup(sp: u64) -> u64 {
        match mapping_of(sp) {
            Some((low, high)) => {
                set_bounds(low, high);
                high
            }
            None => sp,
        }
    }

    /// The `/proc/self/maps` range that holds `addr`, read with plain system calls into a buffer
    /// on the stack (no allocation).
    fn mapping_of(addr: u64) -> Option<(u64, u64)> {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let mut buf = [0u8; 4096];
        let mut filled = 0;
        let mut found = None;
        'read: loop {
            // SAFETY: reads into the free tail of `buf`.
            let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
            if n <= 0 {
                break;
            }
            filled += n as usize;
            let mut start = 0;
            while let Some(len) = buf[start..filled].iter().position(|&b| b == b'\n') {
                if let Some((low, high)) = parse_range(&buf[start..start + len])
                    && low <= addr
                    && addr < high
                {
                    found = Some((low, high));
                    break 'read;
                }
                start += len + 1;
            }
            buf.copy_within(start..filled, 0);
            filled -= start;
            if filled == buf.len() {
                filled = 0;
            }
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        found
    }

    fn parse_range(line: &[u8]) -> Option<(u64, u64)> {
        let range = line.split(|&b| b == b' ').next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        Some((hex(&range[..dash])?, hex(&range[dash + 1..])?))
    }

    fn hex(text: &[u8]) -> Option<u64> {
        if text.is_empty() || text.len() > 16 {
            return None;
        }
        text.iter().try_fold(0u64, |v, &c| Some(v << 4 | (c as char).to_digit(16)? as u64))
    }
}
