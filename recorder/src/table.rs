//! The table of live blocks: open addressing with linear probing over `mmap`'d memory, keyed by
//! address, behind a spinlock. Nothing here goes through malloc.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

/// One live block. `addr == 0` marks an empty slot.
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

pub struct Table {
    slots: *mut Entry,
    /// log2 of the slot count.
    bits: u32,
    len: usize,
    next_serial: u64,
    /// Blocks that could not be recorded because a larger table could not be mapped.
    pub dropped: u64,
}

const INITIAL_BITS: u32 = 14;

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
        Table { slots: ptr::null_mut(), bits: 0, len: 0, next_serial: 1, dropped: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn capacity(&self) -> usize {
        if self.slots.is_null() { 0 } else { 1 << self.bits }
    }

    #[inline]
    fn home(addr: usize, bits: u32) -> usize {
        // Fibonacci hashing: blocks are 16-byte aligned, so the low bits carry nothing.
        ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    fn slots(&self) -> &[Entry] {
        if self.slots.is_null() {
            return &[];
        }
        // SAFETY: `slots` is a live mapping of `capacity()` entries owned by this table.
        unsafe { core::slice::from_raw_parts(self.slots, self.capacity()) }
    }

    #[inline]
    fn slots_mut(&mut self) -> &mut [Entry] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as in `slots`, and `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.slots, self.capacity()) }
    }

    /// Doubles the table (or creates it); false when no memory could be mapped.
    fn grow(&mut self) -> bool {
        let bits = if self.slots.is_null() { INITIAL_BITS } else { self.bits + 1 };
        let bytes = (1usize << bits) * size_of::<Entry>();
        let fresh = map(bytes).cast::<Entry>();
        if fresh.is_null() {
            return false;
        }
        let old = self.slots;
        let old_bytes = self.capacity() * size_of::<Entry>();
        let old_len = self.capacity();
        self.slots = fresh;
        self.bits = bits;
        for i in 0..old_len {
            // SAFETY: `i` is below the old table's slot count and the old mapping is still live.
            let entry = unsafe { *old.add(i) };
            if entry.addr != 0 {
                self.place(entry);
            }
        }
        unmap(old.cast(), old_bytes);
        true
    }

    /// Puts an entry in its slot; the table has room and does not hold the address.
    #[inline]
    fn place(&mut self, entry: Entry) {
        let bits = self.bits;
        let slots = self.slots_mut();
        let mask = slots.len() - 1;
        let mut i = Self::home(entry.addr, bits);
        while slots[i].addr != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = entry;
    }

    /// Records a new block and gives it the next serial number.
    #[inline]
    pub fn insert(&mut self, addr: usize, size: usize, stack: u32, thread: u32) {
        if addr == 0 {
            return;
        }
        if (self.len + 1) * 2 > self.capacity() && !self.grow() {
            self.dropped += 1;
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.place(Entry { addr, serial, size, usable: 0, stack, thread });
        self.len += 1;
    }

    /// Puts back an entry taken out by [`Table::remove`] (a failed realloc keeps its block).
    pub fn reinsert(&mut self, entry: Entry) {
        if (self.len + 1) * 2 > self.capacity() && !self.grow() {
            self.dropped += 1;
            return;
        }
        self.place(entry);
        self.len += 1;
    }

    /// Takes a block out, with backward-shift deletion (no tombstones).
    #[inline]
    pub fn remove(&mut self, addr: usize) -> Option<Entry> {
        if addr == 0 || self.slots.is_null() {
            return None;
        }
        let bits = self.bits;
        let slots = self.slots_mut();
        let mask = slots.len() - 1;
        let mut i = Self::home(addr, bits);
        loop {
            if slots[i].addr == 0 {
                return None;
            }
            if slots[i].addr == addr {
                break;
            }
            i = (i + 1) & mask;
        }
        let found = slots[i];
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while slots[j].addr != 0 {
            let home = Self::home(slots[j].addr, bits);
            // The entry at `j` may move into the hole when its home is not in (hole, j].
            let between = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !between {
                slots[hole] = slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        slots[hole] = Entry::default();
        self.len -= 1;
        Some(found)
    }

    /// Copies every live entry into `out` (which holds at least `len()` entries); returns the count.
    pub fn copy_to(&self, out: &mut [Entry]) -> usize {
        let mut n = 0;
        for entry in self.slots() {
            if entry.addr != 0 && n < out.len() {
                out[n] = *entry;
                n += 1;
            }
        }
        n
    }
}

/// A spinlock that cannot allocate (a `std::sync::Mutex` may, and may not be used in a hook).
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

    #[inline]
    pub fn try_lock(&self) -> Option<TableGuard<'_>> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Not `then_some`: that would build (and drop, releasing the lock) a guard on failure.
            .then(|| TableGuard(self))
    }
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
