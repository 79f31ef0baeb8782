//! The `LD_PRELOAD` recorder's own Rust allocator: `mmap`'d memory, never the hooked `malloc`.
//!
//! The unwinder ([`crate::unwind`], built on `framehop`) keeps its module list and rule cache in
//! `Vec`s and `Box`es. In the preloaded library those would go through `System`, that is through
//! the very `malloc` it defines: a hook would re-enter itself, and the unwinder's memory would
//! show up as program blocks. That library declares [`MmapAlloc`] its `#[global_allocator]`, which
//! gives every Rust allocation inside it a private heap instead. (A Rust program that links this
//! crate has [`crate::Recorder`] as its global allocator instead, which sends the unwinder's
//! allocations, made with the re-entry guard held, to `System` unrecorded.)
//!
//! Design: power-of-two size classes from 16 bytes to 64 KiB, each with a free list (an intrusive
//! singly linked list through the free blocks) behind its own spinlock; fresh blocks are carved
//! from 1 MiB `mmap`'d arenas. Larger requests are `mmap`'d on their own and `munmap`'d on free
//! (`GlobalAlloc::dealloc` is handed the layout, so no header is needed). Memory of a class is
//! never returned to the kernel: the recorder's allocations are few and long-lived (modules,
//! caches). Only the hooks allocate here, with the re-entry guard held, so a signal handler that
//! interrupts an allocation here and calls `malloc` takes the unrecorded path, never this one.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::table::{map, unmap};

const MIN_SHIFT: u32 = 4;
const MAX_SHIFT: u32 = 16;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
const ARENA: usize = 1 << 20;
const PAGE: usize = 4096;

struct Class {
    busy: AtomicBool,
    /// Head of the free list.
    free: core::cell::UnsafeCell<*mut u8>,
    /// The unused tail of the current arena: `next..end`.
    next: core::cell::UnsafeCell<usize>,
    end: core::cell::UnsafeCell<usize>,
}

impl Class {
    const fn new() -> Class {
        Class {
            busy: AtomicBool::new(false),
            free: core::cell::UnsafeCell::new(ptr::null_mut()),
            next: core::cell::UnsafeCell::new(0),
            end: core::cell::UnsafeCell::new(0),
        }
    }

    fn lock(&self) {
        while self.busy.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// The allocator (see the module documentation): a handle on the one set of size classes, so that
/// a fork handler can reach them whoever declared the allocator.
pub struct MmapAlloc(());

struct Classes([Class; CLASSES]);

// SAFETY: each class's cells are only touched with its spinlock held.
unsafe impl Sync for Classes {}

static CLASSES_STATE: Classes = Classes([const { Class::new() }; CLASSES]);

impl MmapAlloc {
    pub const fn new() -> MmapAlloc {
        MmapAlloc(())
    }

    fn classes(&self) -> &'static [Class; CLASSES] {
        &CLASSES_STATE.0
    }
}

impl Default for MmapAlloc {
    fn default() -> MmapAlloc {
        MmapAlloc::new()
    }
}

/// Frees every class lock (in the child of a fork; see `stacks::after_fork_in_child`).
pub fn release_all() {
    for class in &CLASSES_STATE.0 {
        class.unlock();
    }
}

/// The size class of a layout, or `None` for a large (own mapping) one.
fn class_of(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    let shift = size.next_power_of_two().trailing_zeros();
    (shift <= MAX_SHIFT).then(|| (shift - MIN_SHIFT) as usize)
}

// SAFETY: blocks of a class are disjoint (carved once from an arena, or reused from the free list
// after `dealloc`), aligned to their size up to the page size (arenas are page-aligned and carved in
// multiples of the class size), and at least as large as requested.
unsafe impl GlobalAlloc for MmapAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > PAGE {
            return ptr::null_mut();
        }
        let Some(index) = class_of(layout) else {
            return map(layout.size().next_multiple_of(PAGE));
        };
        let size = 1usize << (index as u32 + MIN_SHIFT);
        let class = &self.classes()[index];
        class.lock();
        // SAFETY: the class lock is held: these cells are ours.
        let block = unsafe {
            let head = *class.free.get();
            if !head.is_null() {
                // The first word of a free block links to the next one.
                *class.free.get() = head.cast::<*mut u8>().read();
                head
            } else {
                if *class.next.get() + size > *class.end.get() {
                    let arena = map(ARENA);
                    if arena.is_null() {
                        class.unlock();
                        return ptr::null_mut();
                    }
                    *class.next.get() = arena as usize;
                    *class.end.get() = arena as usize + ARENA;
                }
                let block = *class.next.get() as *mut u8;
                *class.next.get() += size;
                block
            }
        };
        class.unlock();
        block
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some(index) = class_of(layout) else {
            unmap(p, layout.size().next_multiple_of(PAGE));
            return;
        };
        let class = &self.classes()[index];
        class.lock();
        // SAFETY: `p` is a block of this class that its owner gives back; the lock is held.
        unsafe {
            p.cast::<*mut u8>().write(*class.free.get());
            *class.free.get() = p;
        }
        class.unlock();
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as `alloc`.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() && class_of(layout).is_some() {
            // SAFETY: `p` holds at least `layout.size()` bytes. (Large blocks are fresh mappings,
            // already zero.)
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }
}
