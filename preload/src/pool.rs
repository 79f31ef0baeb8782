//! A small static bump allocator for the calls that arrive before the real allocator is known
//! (`dlsym` calls `calloc`). Its blocks are zeroed, never reused, never recorded; `free` ignores them
//! and `realloc` moves them to the real heap.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

const POOL_BYTES: usize = 64 << 10;
/// Each block is preceded by its size, in the word just below it.
const HEADER: usize = size_of::<usize>();

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[u8; POOL_BYTES]>);

// SAFETY: disjoint ranges of the pool are handed out by an atomic bump pointer.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([0; POOL_BYTES]));
static USED: AtomicUsize = AtomicUsize::new(0);

fn base() -> usize {
    POOL.0.get() as usize
}

pub fn contains(p: *mut c_void) -> bool {
    let p = p as usize;
    p >= base() && p < base() + POOL_BYTES
}

/// A zeroed block of `size` bytes aligned to `align` (a power of two), or null when the pool is full.
pub fn alloc(size: usize, align: usize) -> *mut c_void {
    let align = align.max(16);
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    let mut used = USED.load(Ordering::Relaxed);
    loop {
        let start = (base() + used + HEADER).next_multiple_of(align) - base();
        let Some(end) = start.checked_add(size).filter(|&end| end <= POOL_BYTES) else {
            return ptr::null_mut();
        };
        match USED.compare_exchange_weak(used, end, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                let block = (base() + start) as *mut u8;
                // SAFETY: `start - HEADER .. end` lies in the pool and now belongs to this call alone.
                unsafe { block.sub(HEADER).cast::<usize>().write_unaligned(size) };
                return block.cast();
            }
            Err(now) => used = now,
        }
    }
}

/// The size a pool block was allocated with.
pub fn size_of_block(p: *mut c_void) -> usize {
    // SAFETY: `p` is a pool block (callers check `contains`), so its header word is in the pool.
    unsafe { p.cast::<u8>().sub(HEADER).cast::<usize>().read_unaligned() }
}

/// `realloc` of a pool block: a new block from `alloc`, with the old contents copied.
pub fn realloc_into(p: *mut c_void, size: usize, alloc: impl FnOnce(usize) -> *mut c_void) -> *mut c_void {
    if size == 0 {
        return ptr::null_mut();
    }
    let q = alloc(size);
    if !q.is_null() {
        let n = size_of_block(p).min(size);
        // SAFETY: both blocks hold at least `n` bytes and are distinct (the pool is never reused).
        unsafe { ptr::copy_nonoverlapping(p.cast::<u8>(), q.cast::<u8>(), n) };
    }
    q
}
