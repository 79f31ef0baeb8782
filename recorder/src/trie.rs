//! The stack trie: every allocation stack is a node `(parent, return address)`, where `parent` is
//! the stack of the callers (0 for none), so a block stores one `u32` id and shared call paths are
//! stored once. Ids are handed out in creation order, so a parent's id is always below its
//! children's: the snapshot writes nodes in id order, as the `STKS` chunk wants.
//!
//! Memory: nodes live in segments of doubling size (segment `s` holds ids
//! `BASE * (2^s - 1) ..`), `mmap`'d once and never moved, so an id maps to a fixed address. The
//! index is an open-addressing hash table of `u64` slots (`tag << 32 | id`, 0 = empty) with
//! linear probing. Lookups take no lock: they read a slot, then the node it names. Inserts take a
//! spinlock, re-probe, write the node, then publish its slot with a release store. When the table
//! fills up a larger one is built and published; old tables are never unmapped, so a lookup still
//! probing one stays safe (it may miss a new node, and then takes the locked path, which probes
//! the current table).

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::table::map;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Node {
    pub parent: u32,
    pub addr: u64,
}

const BASE: usize = 1 << 12;
const SEGMENTS: usize = 20;
/// Ids go up to `BASE * (2^SEGMENTS - 1)`, about 4 billion.
static SEGMENT: [AtomicPtr<Node>; SEGMENTS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; SEGMENTS];
/// Nodes created so far; ids `1..=COUNT` exist.
static COUNT: AtomicU32 = AtomicU32::new(0);

/// A hash table: `mask + 1` slots after a header word.
#[repr(C)]
struct Index {
    mask: u64,
    slots: [AtomicU64; 0],
}

static INDEX: AtomicPtr<Index> = AtomicPtr::new(core::ptr::null_mut());
static LOCK: AtomicBool = AtomicBool::new(false);
/// Nodes that could not be created (no memory): their stacks are cut short.
static DROPPED: AtomicU64 = AtomicU64::new(0);

const INITIAL_SLOTS: u64 = 1 << 14;

/// Where id `id` (from 1) lives: (segment, index in it).
fn locate(id: u32) -> (usize, usize) {
    let k = id as usize / BASE + 1;
    let segment = (usize::BITS - 1 - k.leading_zeros()) as usize;
    (segment, id as usize - BASE * ((1 << segment) - 1))
}

fn segment_len(segment: usize) -> usize {
    BASE << segment
}

/// The node `id` (`1..=count()`).
pub fn node(id: u32) -> Node {
    let (segment, at) = locate(id);
    let base = SEGMENT[segment].load(Ordering::Acquire);
    // SAFETY: `id` was published (its slot or COUNT read with Acquire), after its segment was
    // mapped and the node written; segments never move.
    unsafe { base.add(at).read() }
}

/// How many nodes exist (ids `1..=count()`).
pub fn count() -> u32 {
    COUNT.load(Ordering::Acquire)
}

/// Frees the insert lock (in the child of a fork).
pub fn release_lock() {
    LOCK.store(false, Ordering::Release);
}

pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Mixes both halves of the key into every bit: the slot comes from the low bits, and one return
/// address under many parents (a recursive call site) must not share a home slot.
fn hash(parent: u32, addr: u64) -> u64 {
    let mut x = addr ^ (parent as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 33)
}

fn tag(h: u64) -> u64 {
    // Never 0, so that a slot with id and tag is never empty.
    (h >> 32) | 1
}

fn slots(index: &Index) -> &[AtomicU64] {
    // SAFETY: an Index mapping holds `mask + 1` slots after its header.
    unsafe { core::slice::from_raw_parts(index.slots.as_ptr(), index.mask as usize + 1) }
}

/// Probes one table for `(parent, addr)`: the id, or 0.
fn probe(index: &Index, parent: u32, addr: u64, h: u64) -> u32 {
    let slots = slots(index);
    let want = tag(h);
    let mut i = h & index.mask;
    loop {
        let slot = slots[i as usize].load(Ordering::Acquire);
        if slot == 0 {
            return 0;
        }
        if slot >> 32 == want {
            let id = slot as u32;
            let n = node(id);
            if n.parent == parent && n.addr == addr {
                return id;
            }
        }
        i = (i + 1) & index.mask;
    }
}

/// The id of the stack `addr` called from the stack `parent`, created if new; 0 when out of
/// memory.
pub fn intern(parent: u32, addr: u64) -> u32 {
    let h = hash(parent, addr);
    let index = INDEX.load(Ordering::Acquire);
    if !index.is_null() {
        // SAFETY: published tables are never unmapped.
        let found = probe(unsafe { &*index }, parent, addr, h);
        if found != 0 {
            return found;
        }
    }
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    let id = insert(parent, addr, h);
    LOCK.store(false, Ordering::Release);
    id
}

/// Slots of a published table (0 for none).
fn capacity(index: *mut Index) -> u64 {
    if index.is_null() {
        return 0;
    }
    // SAFETY: published tables are never unmapped, and their header never changes.
    unsafe { (*index).mask + 1 }
}

/// The locked part of [`intern`].
fn insert(parent: u32, addr: u64, h: u64) -> u32 {
    let mut index = INDEX.load(Ordering::Acquire);
    let n = COUNT.load(Ordering::Relaxed);
    if (n as u64 + 1) * 4 > capacity(index) * 3 {
        match grow(index, n) {
            Some(bigger) => index = bigger,
            None if index.is_null() => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
            // No memory for a bigger table: keep probing the full-ish one while it has room.
            None if n as u64 + 1 >= capacity(index) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
            None => {}
        }
    }
    // SAFETY: published tables are never unmapped.
    let index = unsafe { &*index };
    let found = probe(index, parent, addr, h);
    if found != 0 {
        return found;
    }
    let id = n + 1;
    let (segment, at) = locate(id);
    if segment >= SEGMENTS {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return 0;
    }
    let mut base = SEGMENT[segment].load(Ordering::Acquire);
    if base.is_null() {
        base = map(segment_len(segment) * size_of::<Node>()).cast();
        if base.is_null() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        SEGMENT[segment].store(base, Ordering::Release);
    }
    // SAFETY: `at` is inside the segment; the lock makes this the only writer of the fresh id.
    unsafe { base.add(at).write(Node { parent, addr }) };
    COUNT.store(id, Ordering::Release);
    let slots = slots(index);
    let mut i = h & index.mask;
    while slots[i as usize].load(Ordering::Relaxed) != 0 {
        i = (i + 1) & index.mask;
    }
    slots[i as usize].store(tag(h) << 32 | id as u64, Ordering::Release);
    id
}

/// Builds a table twice the size of `old` (or the first one) holding nodes `1..=n`, and
/// publishes it. Under the lock.
fn grow(old: *mut Index, n: u32) -> Option<*mut Index> {
    let count = if old.is_null() { INITIAL_SLOTS } else { capacity(old) * 2 };
    let bytes = size_of::<Index>() + count as usize * size_of::<u64>();
    let fresh = map(bytes).cast::<Index>();
    if fresh.is_null() {
        return None;
    }
    // SAFETY: a fresh zeroed mapping large enough for the header and `count` slots.
    let index = unsafe {
        (*fresh).mask = count - 1;
        &*fresh
    };
    let slots = slots(index);
    for id in 1..=n {
        let node = node(id);
        let h = hash(node.parent, node.addr);
        let mut i = h & index.mask;
        while slots[i as usize].load(Ordering::Relaxed) != 0 {
            i = (i + 1) & index.mask;
        }
        slots[i as usize].store(tag(h) << 32 | id as u64, Ordering::Relaxed);
    }
    INDEX.store(fresh, Ordering::Release);
    Some(fresh)
}
