//! Which front records: the `LD_PRELOAD` library or a Rust program's own [`crate::Recorder`].
//!
//! Two things depend on it, both about where the recorder's code and data are:
//! - Preloaded, the recorder is an object of its own: the unwinder skips every frame in it, and
//!   the snapshot takes none of its writable segments as roots.
//! - Linked into a program, its code and statics are the program's: skipping the object would skip
//!   the program's frames and globals. So the unwinder keeps every frame (the analyzer names this
//!   crate's functions and Rust's allocator shims as allocator plumbing when it picks a site), and
//!   the snapshot scans the program's segments whole. The recorder's statics are scanned with them,
//!   harmlessly: none of them holds the address of a recorded block (the table, the stack trie and
//!   the module list are `mmap`'d and referenced through pointers to those mappings; the
//!   unwinder's own blocks were allocated with the guard held, so they are not recorded).
//!
//! [`crate::Recorder`] sets the flag before it records anything; nothing clears it.

use core::sync::atomic::{AtomicBool, Ordering};

static LINKED: AtomicBool = AtomicBool::new(false);

/// Whether the recorder is linked into the program (the [`crate::Recorder`] front).
#[inline(always)]
pub fn linked() -> bool {
    LINKED.load(Ordering::Relaxed)
}

/// Marks the recorder as linked into the program; called by [`crate::Recorder`] before its first
/// stack capture.
pub fn set_linked() {
    LINKED.store(true, Ordering::Relaxed);
}
