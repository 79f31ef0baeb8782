//! `heapsnap record`: runs a program with the recorder (`libheapsnap_recorder.so`, the `recorder/`
//! crate) preloaded, so that it writes an `.hsnap` snapshot of its heap when it exits.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::{Error, Result};

/// The recorder's file name, as cargo builds it.
pub const LIBRARY: &str = "libheapsnap_recorder.so";

/// What to run and where the snapshot goes.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// The snapshot's path; `heapsnap-PID.hsnap` in the current directory when `None`.
    pub output: Option<PathBuf>,
    /// The recorder library; found with [`find_recorder`] when `None`.
    pub recorder: Option<PathBuf>,
}

/// A finished run.
#[derive(Debug)]
pub struct Recording {
    pub status: ExitStatus,
    /// Where the recorder was asked to write; the file exists only if the program exited through
    /// `exit` (not `_exit`, not a fatal signal).
    pub snapshot: PathBuf,
}

impl Recording {
    /// The exit code to hand on: the program's, or 128 + the signal that killed it, as shells do.
    pub fn exit_code(&self) -> u8 {
        use std::os::unix::process::ExitStatusExt;
        match (self.status.code(), self.status.signal()) {
            (Some(code), _) => code as u8,
            (None, Some(signal)) => (128 + signal) as u8,
            _ => 1,
        }
    }
}

/// The recorder library: `$HEAPSNAP_RECORDER`, else `libheapsnap_recorder.so` next to the running
/// executable or in its parent directory (a test binary runs from `target/PROFILE/deps`).
pub fn find_recorder() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HEAPSNAP_RECORDER") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(Error::io("heapsnap"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join(LIBRARY), dir.join("..").join(LIBRARY)].into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Usage(format!(
            "cannot find {LIBRARY} next to {} (build it with `cargo build --release -p heapsnap-preload`, \
             or set HEAPSNAP_RECORDER to its path)",
            exe.display()
        ))
    })
}

/// Runs the program with the recorder preloaded; its standard streams are the caller's.
pub fn run(options: &RecordOptions) -> Result<Recording> {
    let (program, args) =
        options.command.split_first().ok_or_else(|| Error::Usage("record: no command given".into()))?;
    let recorder = match &options.recorder {
        Some(path) => path.clone(),
        None => find_recorder()?,
    };
    let recorder = std::path::absolute(&recorder).map_err(Error::io(&recorder))?;
    if !recorder.is_file() {
        return Err(Error::Usage(format!("recorder library {} does not exist", recorder.display())));
    }
    // The recorder replaces `%p` by its process id; the default name uses it.
    let pattern = match &options.output {
        Some(path) => std::path::absolute(path).map_err(Error::io(path))?,
        None => std::path::absolute("heapsnap-%p.hsnap").map_err(Error::io("."))?,
    };
    let mut preload = recorder.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let mut child = Command::new(program)
        .args(args)
        .env("LD_PRELOAD", &preload)
        .env("HEAPSNAP_OUT", &pattern)
        .spawn()
        .map_err(Error::io(Path::new(program)))?;
    let pid = child.id();
    let status = child.wait().map_err(Error::io(Path::new(program)))?;
    let snapshot = PathBuf::from(replace_pid(pattern.as_os_str(), pid));
    Ok(Recording { status, snapshot })
}

/// The leak report of a recorded snapshot, as text (what `heapsnap leaks SNAP` prints).
pub fn leak_summary(snapshot: &Path, progress: &crate::progress::Progress, use_cache: bool) -> Result<String> {
    use crate::report::Report;
    use crate::report::leaks::{LeakOptions, LeakReport};
    let file = crate::import::open_any(snapshot, progress)?;
    let heap = file.load(progress)?;
    let analysis = crate::cache::analyze(&heap, progress, use_cache, crate::cache::MIN_NODES);
    let report = LeakReport::build(&heap, &analysis, LeakOptions { limit: 20, members: false });
    let mut text = report.render(crate::report::Format::Text);
    for note in heap.symbols().notes() {
        text += &format!("heapsnap: note: {note}\n");
    }
    Ok(text)
}

fn replace_pid(pattern: &OsStr, pid: u32) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = pattern.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"%p") {
            out.extend_from_slice(pid.to_string().as_bytes());
            i += 2;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_is_substituted() {
        assert_eq!(replace_pid(OsStr::new("/tmp/a-%p.hsnap"), 42), OsString::from("/tmp/a-42.hsnap"));
        assert_eq!(replace_pid(OsStr::new("/tmp/plain"), 42), OsString::from("/tmp/plain"));
    }
}
