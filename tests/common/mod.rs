//! Running the `heapsnap` binary from integration tests.
#![allow(dead_code)] // each test crate uses part of this

use std::process::{Command, Output};

pub fn heapsnap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heapsnap")).args(args).output().unwrap()
}

/// The JSON a successful command prints.
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = heapsnap(args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Builds a target of this workspace (`cargo build ARGS`) with the profile of the `heapsnap` binary
/// under test, into the same target directory, and returns `ARTIFACT` there (a path relative to
/// the profile's directory). A no-op when it is up to date. Tests that need the recorder library
/// or an example program call it once per process, from a `OnceLock`.
pub fn cargo_build(args: &[&str], artifact: &str) -> std::path::PathBuf {
    use std::path::Path;
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_heapsnap")).parent().expect("binary in a directory");
    let built = profile_dir.join(artifact);
    let target_dir = profile_dir.parent().expect("target/PROFILE");
    let mut build = Command::new(env!("CARGO"));
    build.arg("build").arg("--quiet").args(args).env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => {
            build.arg("--release");
        }
        Some("debug") | None => {}
        Some(other) => {
            build.args(["--profile", other]);
        }
    }
    let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status();
    assert!(
        matches!(status, Ok(s) if s.success()) && built.is_file(),
        "could not build {} with `cargo build {}` ({status:?})",
        built.display(),
        args.join(" ")
    );
    built
}

/// A named pipe with a thread reading everything written to it, for outputs that are not regular
/// files (a writer must write to them, not rename over them).
pub struct Pipe {
    pub path: std::path::PathBuf,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl Pipe {
    pub fn new(path: std::path::PathBuf) -> Pipe {
        let c_path = std::ffi::CString::new(path.to_str().expect("utf-8 path")).expect("no NUL");
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
        let reader = {
            let path = path.clone();
            std::thread::spawn(move || std::fs::read(path).expect("pipe reads"))
        };
        Pipe { path, reader }
    }

    /// What came through once the writer closed it; the pipe must still be a pipe.
    pub fn finish(self) -> Vec<u8> {
        use std::os::unix::fs::FileTypeExt;
        let bytes = self.reader.join().expect("reader");
        let kind = std::fs::metadata(&self.path).expect("still there").file_type();
        assert!(kind.is_fifo(), "the pipe was replaced");
        bytes
    }
}

/// Loads and analyses a snapshot as `heapsnap leaks` does (no cache), and hands both to `f`.
pub fn with_heap<T>(
    snapshot: &std::path::Path,
    f: impl FnOnce(&heapsnap::heap::Heap<'_>, &heapsnap::analysis::Analysis) -> T,
) -> T {
    let progress = heapsnap::progress::Progress::stderr(true);
    let file = heapsnap::import::open_any(snapshot, &progress).expect("snapshot opens");
    let heap = file.load(&progress).expect("snapshot loads");
    let analysis = heapsnap::cache::analyze(&heap, &progress, false, usize::MAX);
    f(&heap, &analysis)
}
