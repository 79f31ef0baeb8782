//! The table of live blocks: open addressing with linear probing over `mmap`'d memory, keyed by
//! address, behind a spinlock. Nothing here goes through malloc.
//!
//! The keys (block addresses) and the values (serial, size, stack) are kept in two arrays: a free
//! probes the keys alone, 8 slots a cache line, and reads no value; only an allocation (and a
//! snapshot) touches the values. The table is kept sparse (see [`SPARSE`]), which matters more.
//!
//! The lock costs no locked instruction while the process is single-threaded (see [`Locked`]).

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering, compiler_fence};

/// One live block, as the snapshot sees it.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Entry {
    pub addr: usize,
    /// Allocation serial number, from 1, in the order the recorder saw the allocations.
    pub serial: u64,
    /// What the program asked for.
    pub size: usize,
    /// What `malloc_usable_size` reports (the program may use the slack): filled in by the
    /// snapshot for the blocks it writes, 0 before.
    pub usable: usize,
    /// Allocation stack id in [`crate::trie`], 0 for none.
    pub stack: u32,
    /// The allocating thread's id (`gettid`), 0 when unknown.
    pub thread: u32,
}

/// What the table keeps of a block besides its address.
#[derive(Clone, Copy)]
#[repr(C)]
struct Value {
    serial: u64,
    size: usize,
    stack: u32,
    thread: u32,
}

impl Value {
    #[inline(always)]
    fn of(entry: &Entry) -> Value {
        Value { serial: entry.serial, size: entry.size, stack: entry.stack, thread: entry.thread }
    }

    /// The block at `addr`, its usable size not yet known (the snapshot asks for it).
    #[inline(always)]
    fn entry(self, addr: usize) -> Entry {
        Entry { addr, serial: self.serial, size: self.size, usable: 0, stack: self.stack, thread: self.thread }
    }
}

pub struct Table {
    /// Block address per slot, 0 for an empty slot; `capacity()` of them, followed in the same
    /// mapping by as many [`Value`]s.
    keys: *mut usize,
    values: *mut Value,
    /// log2 of the slot count.
    bits: u32,
    len: usize,
    next_serial: u64,
    /// Blocks that could not be recorded because a larger table could not be mapped.
    pub dropped: u64,
}

/// The first table: 65,536 slots (2 MiB, up to 16,384 live blocks).
const INITIAL_BITS: u32 = 16;
/// The table grows when more than 1 slot in `SPARSE` is taken. Sparse, because every slot taken
/// after the one a free empties is a step of the backward shift, with a branch the processor
/// cannot predict: on the benchmark, 4,096 live blocks in 16,384 slots cost about 10 ns more per
/// malloc/free pair than in 65,536. At most 32 bytes × 2 × `SPARSE` per live block.
const SPARSE: usize = 4;

const SLOT_BYTES: usize = size_of::<usize>() + size_of::<Value>();

/// Anonymous private memory straight from the kernel; null on failure.
pub fn map(bytes: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED { ptr::null_mut() } else { p.cast() }
}

/// Returns memory obtained from [`map`] with the same length.
pub fn unmap(p: *mut u8, bytes: usize) {
    if !p.is_null() {
        // SAFETY: callers pass a mapping made by `map` with its length, and drop every reference to it.
        unsafe { libc::munmap(p.cast(), bytes) };
    }
}

impl Table {
    const fn empty() -> Table {
        Table { keys: ptr::null_mut(), values: ptr::null_mut(), bits: 0, len: 0, next_serial: 1, dropped: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn capacity(&self) -> usize {
        if self.keys.is_null() { 0 } else { 1 << self.bits }
    }

    #[inline(always)]
    fn home(addr: usize, bits: u32) -> usize {
        // Fibonacci hashing: blocks are 16-byte aligned, so the low bits carry nothing.
        ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    #[inline(always)]
    fn keys(&self) -> &[usize] {
        if self.keys.is_null() {
            return &[];
        }
        // SAFETY: `keys` is a live mapping of `capacity()` keys owned by this table.
        unsafe { core::slice::from_raw_parts(self.keys, self.capacity()) }
    }

    /// Both arrays, for an update.
    #[inline(always)]
    fn arrays_mut(&mut self) -> (&mut [usize], &mut [Value]) {
        if self.keys.is_null() {
            return (&mut [], &mut []);
        }
        // SAFETY: `keys` and `values` are disjoint parts of a live mapping of `capacity()` slots
        // owned by this table, and `&mut self` makes these the only references.
        unsafe {
            (
                core::slice::from_raw_parts_mut(self.keys, self.capacity()),
                core::slice::from_raw_parts_mut(self.values, self.capacity()),
            )
        }
    }

    /// Doubles the table (or creates it); false when no memory could be mapped.
    #[cold]
    fn grow(&mut self) -> bool {
        let bits = if self.keys.is_null() { INITIAL_BITS } else { self.bits + 1 };
        let fresh = map((1usize << bits) * SLOT_BYTES);
        if fresh.is_null() {
            return false;
        }
        let (old_keys, old_values, old_len) = (self.keys, self.values, self.capacity());
        self.keys = fresh.cast();
        // SAFETY: the values start right after the keys, inside the new mapping; `usize` keys keep
        // them 8-byte aligned.
        self.values = unsafe { fresh.add((1usize << bits) * size_of::<usize>()) }.cast();
        self.bits = bits;
        for i in 0..old_len {
            // SAFETY: `i` is below the old table's slot count and the old mapping is still live.
            let (addr, value) = unsafe { (*old_keys.add(i), *old_values.add(i)) };
            if addr != 0 {
                self.place(addr, value);
            }
        }
        unmap(old_keys.cast(), old_len * SLOT_BYTES);
        true
    }

    /// Puts a block in its slot; the table has room and does not hold the address.
    #[inline(always)]
    fn place(&mut self, addr: usize, value: Value) {
        let bits = self.bits;
        let (keys, values) = self.arrays_mut();
        let mask = keys.len() - 1;
        let mut i = Self::home(addr, bits);
        while keys[i] != 0 {
            i = (i + 1) & mask;
        }
        keys[i] = addr;
        values[i] = value;
    }

    /// Records a new block and gives it the next serial number.
    #[inline]
    pub fn insert(&mut self, addr: usize, size: usize, stack: u32, thread: u32) {
        if addr == 0 {
            return;
        }
        if (self.len + 1) * SPARSE > self.capacity() && !self.grow() {
            self.dropped += 1;
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.place(addr, Value { serial, size, stack, thread });
        self.len += 1;
    }

    /// Puts back an entry taken out by [`Table::remove`] (a failed realloc keeps its block).
    pub fn reinsert(&mut self, entry: Entry) {
        if (self.len + 1) * SPARSE > self.capacity() && !self.grow() {
            self.dropped += 1;
            return;
        }
        self.place(entry.addr, Value::of(&entry));
        self.len += 1;
    }

    /// The slot that holds `addr`.
    #[inline(always)]
    fn find(&self, addr: usize) -> Option<usize> {
        let keys = self.keys();
        if addr == 0 || keys.is_empty() {
            return None;
        }
        let mask = keys.len() - 1;
        let mut i = Self::home(addr, self.bits);
        loop {
            match keys[i] {
                0 => return None,
                key if key == addr => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Takes a block out. Inlined, so that a caller that drops the entry (`free`) never reads
    /// the values array.
    #[inline(always)]
    pub fn remove(&mut self, addr: usize) -> Option<Entry> {
        let i = self.find(addr)?;
        // SAFETY: `find` returned a slot index below `capacity()`.
        let value = unsafe { *self.values.add(i) };
        self.clear(i);
        Some(value.entry(addr))
    }

    /// Empties slot `i`, with backward-shift deletion (no tombstones).
    #[inline]
    fn clear(&mut self, i: usize) {
        let bits = self.bits;
        let (keys, values) = self.arrays_mut();
        let mask = keys.len() - 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while keys[j] != 0 {
            let home = Self::home(keys[j], bits);
            // The entry at `j` may move into the hole when its home is not in (hole, j].
            let between = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !between {
                keys[hole] = keys[j];
                values[hole] = values[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        keys[hole] = 0;
        self.len -= 1;
    }

    /// Copies every live entry into `out` (which holds at least `len()` entries); returns the count.
    pub fn copy_to(&self, out: &mut [Entry]) -> usize {
        let mut n = 0;
        for (i, &addr) in self.keys().iter().enumerate() {
            if addr != 0 && n < out.len() {
                // SAFETY: `i` is below `capacity()`.
                let value = unsafe { *self.values.add(i) };
                out[n] = value.entry(addr);
                n += 1;
            }
        }
        n
    }
}

/// A spinlock that cannot allocate (a `std::sync::Mutex` may, and may not be used in a hook).
///
/// While the process is single-threaded it is taken without an atomic read-modify-write: a plain
/// load and store, which costs a few cycles where a locked instruction costs dozens (it waits
/// for every pending store to reach the cache), twice per malloc/free pair. glibc's own malloc
/// skips its arena locks on the same condition: it reads the flag that [`single_threaded`] reads.
/// The only other code that can run on the thread meanwhile is a signal handler, which runs to
/// completion before the interrupted code resumes, so a load and a store (kept in order by a
/// compiler fence) exclude it as well as an atomic exchange does. The flag turns false in
/// `pthread_create` before the new thread exists, so no thread ever sees another thread's
/// plainly-taken lock.
pub struct Locked {
    busy: AtomicBool,
    table: UnsafeCell<Table>,
}

// SAFETY: the table is only reached through `lock`/`try_lock`, which hand out one guard at a time.
unsafe impl Sync for Locked {}

pub static TABLE: Locked = Locked { busy: AtomicBool::new(false), table: UnsafeCell::new(Table::empty()) };

pub struct TableGuard<'a>(&'a Locked);

impl Locked {
    #[inline]
    pub fn lock(&self) -> TableGuard<'_> {
        if let Some(guard) = self.try_lock() {
            return guard;
        }
        self.lock_contended()
    }

    #[cold]
    fn lock_contended(&self) -> TableGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            spins += 1;
            if spins < 100 {
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Takes the lock without a guard (before `fork`); [`Locked::release_held`] gives it back.
    pub fn hold(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`Locked::hold`] (after `fork`, in the parent and in the child).
    pub fn release_held(&self) {
        self.busy.store(false, Ordering::Release);
    }

    #[inline(always)]
    pub fn try_lock(&self) -> Option<TableGuard<'_>> {
        if single_threaded() {
            if self.busy.load(Ordering::Relaxed) {
                return None;
            }
            self.busy.store(true, Ordering::Relaxed);
            // No access to the table may be moved above the store (a signal handler arriving in
            // between would find the lock free while this thread already reads the table).
            compiler_fence(Ordering::SeqCst);
            return Some(TableGuard(self));
        }
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Not `then_some`: that would build (and drop, releasing the lock) a guard on failure.
            .then(|| TableGuard(self))
    }
}

/// Whether glibc knows the process to be single-threaded (its `__libc_single_threaded`, since
/// glibc 2.32; false when the symbol is missing). It turns false when a thread is created with
/// `pthread_create` (before the thread starts) and stays false; a child of `fork` starts true.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn single_threaded() -> bool {
    let at: usize;
    // SAFETY: loads the GOT slot of a weak symbol: the variable's address, or 0 when no loaded
    // object defines it. Touches no other memory.
    unsafe {
        core::arch::asm!(
            ".weak __libc_single_threaded",
            "movq __libc_single_threaded@GOTPCREL(%rip), {at}",
            at = out(reg) at,
            options(att_syntax, nostack, pure, readonly, preserves_flags)
        );
    }
    if at == 0 {
        return false;
    }
    // SAFETY: the address of glibc's `char __libc_single_threaded`, which lives as long as libc;
    // glibc writes it only on a thread that is the only one (or about to stop being so).
    unsafe { (*(at as *const AtomicU8)).load(Ordering::Relaxed) != 0 }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn single_threaded() -> bool {
    false
}

impl core::ops::Deref for TableGuard<'_> {
    type Target = Table;
    #[inline]
    fn deref(&self) -> &Table {
        // SAFETY: holding the guard means holding the lock: no other reference to the table exists.
        unsafe { &*self.0.table.get() }
    }
}

impl core::ops::DerefMut for TableGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Table {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { &mut *self.0.table.get() }
    }
}

impl Drop for TableGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}
