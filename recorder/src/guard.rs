//! The per-thread re-entry guard.
//!
//! A hook sets the guard while it runs; a malloc call that arrives while it is set (from `dlsym`,
//! from the real allocator, from the snapshot code, from a signal handler that interrupted a hook)
//! goes straight to the real allocator and is not recorded, so the recorder never re-enters itself.
//!
//! The flag is one byte of thread-local storage with the *initial-exec* model and no destructor:
//! it is reached as `%fs:offset`, where the offset comes from a GOT slot the dynamic linker fills in
//! at load time. General-dynamic TLS, what rustc emits for a `thread_local!` in a shared object
//! (`-Z tls-model` is unstable), goes through `__tls_get_addr`, which may call malloc; a `static`
//! table keyed by `gettid()` costs a system call per allocation. So on x86-64 the variable is
//! declared in assembly (`.tbss`) and read with an `@gottpoff` relocation. This marks the library
//! `DF_STATIC_TLS`, which is right for a library loaded with `LD_PRELOAD`. On other architectures it
//! falls back to a `const`-initialised `thread_local!` of a `Cell<bool>`: no destructor, no lazy
//! initialisation, but general-dynamic access.

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::{asm, global_asm};

    global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".globl heapsnap_recorder_guard",
        ".hidden heapsnap_recorder_guard",
        ".type heapsnap_recorder_guard, @object",
        ".size heapsnap_recorder_guard, 8",
        ".p2align 3",
        "heapsnap_recorder_guard:",
        ".zero 8",
        ".popsection",
        options(att_syntax)
    );

    #[inline(always)]
    pub fn get() -> bool {
        let value: u8;
        // SAFETY: reads the byte of this thread's static TLS block that the `.tbss` symbol above
        // reserves; the GOT slot holds its offset from the thread pointer, filled by the dynamic
        // linker before any code of this library runs. No memory but that byte is touched.
        unsafe {
            asm!(
                "movq heapsnap_recorder_guard@gottpoff(%rip), {offset}",
                "movb %fs:({offset}), {value}",
                offset = out(reg) _,
                value = out(reg_byte) value,
                options(att_syntax, nostack, readonly, preserves_flags)
            );
        }
        value != 0
    }

    /// The thread id kept in bytes 4 to 7 of the same TLS slot (see [`super::thread_id`]).
    #[inline(always)]
    pub fn thread_id() -> u32 {
        let value: u32;
        // SAFETY: reads bytes 4..8 of this thread's 8-byte `.tbss` slot declared above; nothing else.
        unsafe {
            asm!(
                "movq heapsnap_recorder_guard@gottpoff(%rip), {offset}",
                "movl %fs:4({offset}), {value:e}",
                offset = out(reg) _,
                value = out(reg) value,
                options(att_syntax, nostack, readonly, preserves_flags)
            );
        }
        value
    }

    #[inline(always)]
    pub fn set_thread_id(tid: u32) {
        // SAFETY: writes bytes 4..8 of the same thread-private slot as `thread_id`.
        unsafe {
            asm!(
                "movq heapsnap_recorder_guard@gottpoff(%rip), {offset}",
                "movl {value:e}, %fs:4({offset})",
                offset = out(reg) _,
                value = in(reg) tid,
                options(att_syntax, nostack, preserves_flags)
            );
        }
    }

    #[inline(always)]
    pub fn set(on: bool) {
        // SAFETY: writes the same thread-private byte as `get`; no other thread can address it.
        unsafe {
            asm!(
                "movq heapsnap_recorder_guard@gottpoff(%rip), {offset}",
                "movb {value}, %fs:({offset})",
                offset = out(reg) _,
                value = in(reg_byte) on as u8,
                options(att_syntax, nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use std::cell::Cell;

    std::thread_local! {
        // `const` initialisation and a type without `Drop`: no lazy init, no destructor registration.
        static GUARD: Cell<bool> = const { Cell::new(false) };
        static THREAD_ID: Cell<u32> = const { Cell::new(0) };
    }

    pub fn thread_id() -> u32 {
        THREAD_ID.with(Cell::get)
    }

    pub fn set_thread_id(tid: u32) {
        THREAD_ID.with(|t| t.set(tid))
    }

    pub fn get() -> bool {
        GUARD.with(Cell::get)
    }

    pub fn set(on: bool) {
        GUARD.with(|g| g.set(on))
    }
}

/// The calling thread's id as [`crate::threads::current`] keeps it, 0 before it is first asked.
pub fn thread_id() -> u32 {
    imp::thread_id()
}

pub fn set_thread_id(tid: u32) {
    imp::set_thread_id(tid)
}

/// Holds the guard for this thread until dropped (a plain stack value, not a TLS destructor).
pub struct Entered(());

impl Entered {
    /// Sets the guard, or returns `None` when this thread is already inside the recorder.
    #[inline(always)]
    pub fn enter() -> Option<Entered> {
        if imp::get() {
            return None;
        }
        imp::set(true);
        Some(Entered(()))
    }
}

impl Drop for Entered {
    #[inline(always)]
    fn drop(&mut self) {
        imp::set(false);
    }
}
