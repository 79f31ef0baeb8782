//! The threads of this process, as `/proc/self/task` lists them, read with raw `open` and
//! `getdents64` into a caller's buffer: `opendir` would allocate, and the listing is made while
//! other threads may be stopped inside the allocator.

use core::ffi::c_int;

/// This thread's id, as `gettid` gives it: asked once per thread and kept beside the re-entry
/// guard in static TLS (a system call per allocation would cost more than the rest of a hook).
#[inline]
pub fn current() -> u32 {
    match crate::guard::thread_id() {
        0 => {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            crate::guard::set_thread_id(tid);
            tid
        }
        tid => tid,
    }
}

/// In the child of `fork` the forking thread has a new id: forget the one kept.
pub fn forget_after_fork() {
    crate::guard::set_thread_id(0);
}

/// Calls `f(tid)` for every thread of the process; false when `/proc/self/task` cannot be read.
pub fn each_task(buf: &mut [u8], mut f: impl FnMut(i32)) -> bool {
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd: c_int =
        unsafe { libc::open(c"/proc/self/task".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut ok = true;
    loop {
        // SAFETY: the kernel fills at most `buf.len()` bytes of `buf` with linux_dirent64 records.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            ok = false;
            break;
        }
        if n == 0 {
            break;
        }
        each_entry(&buf[..n as usize], &mut f);
    }
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    ok
}

/// Walks the `linux_dirent64` records of one `getdents64` answer: `u64 ino, i64 off, u16 reclen,
/// u8 type, name NUL-terminated`. Names that are not numbers (`.`, `..`) are skipped.
fn each_entry(records: &[u8], f: &mut impl FnMut(i32)) {
    const NAME: usize = 19;
    let mut at = 0;
    while at + NAME <= records.len() {
        let reclen = u16::from_ne_bytes([records[at + 16], records[at + 17]]) as usize;
        if reclen == 0 || at + reclen > records.len() {
            return;
        }
        let name = &records[at + NAME..at + reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if let Some(tid) = parse_decimal(name) {
            f(tid);
        }
        at += reclen;
    }
}

fn parse_decimal(text: &[u8]) -> Option<i32> {
    if text.is_empty() || text.len() > 9 {
        return None;
    }
    let mut value = 0i32;
    for &c in text {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + (c - b'0') as i32;
    }
    Some(value)
}
