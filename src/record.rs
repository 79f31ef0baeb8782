//! `heapsnap record`: runs a program with the recorder (`libheapsnap_recorder.so`, the `recorder/`
//! crate) preloaded, so that it writes `.hsnap` snapshots of its heap: at exit, each time it gets a
//! signal, or periodically. The recorder is configured through the environment (`HEAPSNAP_OUT`,
//! `HEAPSNAP_SIGNAL`, `HEAPSNAP_EVERY_MS`, `HEAPSNAP_AT_EXIT`) and appends the path of each snapshot
//! it writes to the file named by `HEAPSNAP_LIST`, which is how this module learns them.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

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
    /// Snapshot each time the program gets this signal (its own handler still runs).
    pub signal: Option<i32>,
    /// Snapshot periodically.
    pub every: Option<Duration>,
    /// Snapshot at exit. [`RecordOptions::new`] sets it; the CLI sets it unless only `--signal` or
    /// `--every` was asked for.
    pub at_exit: bool,
}

impl RecordOptions {
    /// Runs `command`, snapshot at exit to the default path.
    pub fn new(command: Vec<OsString>) -> RecordOptions {
        RecordOptions { command, output: None, recorder: None, signal: None, every: None, at_exit: true }
    }
}

/// One snapshot the recorder wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The process that wrote it: the program, or a child it forked.
    pub pid: u32,
    pub path: PathBuf,
}

/// A finished run.
#[derive(Debug)]
pub struct Recording {
    pub status: ExitStatus,
    /// The program's process id.
    pub pid: u32,
    /// Every snapshot written, in the order they were completed.
    pub snapshots: Vec<Written>,
}

impl Recording {
    /// The program's last snapshot (at exit, when it exited through `exit`), if any.
    pub fn last(&self) -> Option<&Path> {
        self.snapshots.iter().rev().find(|w| w.pid == self.pid).map(|w| w.path.as_path())
    }
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

/// Runs the program with the recorder preloaded; its standard streams are the caller's. While it
/// runs, this process catches SIGINT, SIGQUIT and the `--signal` signal (see `Forwarding`).
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
    let pattern = output_pattern(options)?;
    let mut preload = recorder.as_os_str().to_owned();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let list = tempfile::NamedTempFile::new().map_err(Error::io(std::env::temp_dir()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LD_PRELOAD", &preload)
        .env("HEAPSNAP_OUT", &pattern)
        .env("HEAPSNAP_LIST", list.path())
        .env("HEAPSNAP_PARENT", std::process::id().to_string())
        .env("HEAPSNAP_AT_EXIT", if options.at_exit { "1" } else { "0" })
        .env_remove("HEAPSNAP_SIGNAL")
        .env_remove("HEAPSNAP_EVERY_MS");
    if let Some(signal) = options.signal {
        command.env("HEAPSNAP_SIGNAL", signal.to_string());
    }
    if let Some(every) = options.every {
        command.env("HEAPSNAP_EVERY_MS", every.as_millis().max(1).to_string());
    }
    let forwarding = Forwarding::install(options.signal);
    let mut child = command.spawn().map_err(Error::io(Path::new(program)))?;
    let pid = child.id();
    forwarding.started(pid);
    let status = child.wait().map_err(Error::io(Path::new(program)))?;
    drop(forwarding);
    let listed = std::fs::read(list.path()).map_err(Error::io(list.path()))?;
    Ok(Recording { status, pid, snapshots: parse_list(&listed) })
}

/// The program's process id, for the forwarding handler (0 until it is started).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// A `--signal` signal that arrived before the program's id was known.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// The `--signal` signal, which the handler passes on (any other it catches, it drops).
static FORWARDED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    if signal != FORWARDED.load(Ordering::Acquire) {
        return; // SIGINT, SIGQUIT: the terminal sent them to the program too
    }
    let pid = CHILD.load(Ordering::Acquire);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe and touches no memory of ours.
        unsafe { libc::kill(pid, signal) };
    } else {
        PENDING.store(signal, Ordering::Release);
    }
}

/// While the program runs, `heapsnap record` behaves as a wrapper: the terminal's SIGINT and
/// SIGQUIT reach the program directly (same process group), so `heapsnap` outlives them and
/// reports when the program ends; the `--signal` signal sent to `heapsnap` is passed on to the
/// program, so either process id can be used to ask for a snapshot. The handlers are caught, not
/// ignored, so the program starts with the default actions (`exec` resets caught signals); they are
/// installed before the program starts, so that a signal it sends its parent at once is not lost.
/// Restored when dropped.
struct Forwarding {
    saved: Vec<(libc::c_int, libc::sigaction)>,
}

impl Forwarding {
    fn install(signal: Option<i32>) -> Forwarding {
        CHILD.store(0, Ordering::Release);
        PENDING.store(0, Ordering::Release);
        FORWARDED.store(signal.unwrap_or(0), Ordering::Release);
        let mut saved = Vec::new();
        for sig in [libc::SIGINT, libc::SIGQUIT].into_iter().chain(signal) {
            // SAFETY: zeroed sigactions are valid; `on_signal` has the signature of a plain handler.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                let mut old: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, &mut old) == 0 {
                    saved.push((sig, old));
                }
            }
        }
        Forwarding { saved }
    }

    /// The program has started: pass on what arrived before.
    fn started(&self, pid: u32) {
        CHILD.store(pid as i32, Ordering::Release);
        let pending = PENDING.swap(0, Ordering::AcqRel);
        if pending != 0 {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, pending) };
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for (sig, old) in self.saved.drain(..).rev() {
            // SAFETY: restores an action sigaction returned.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
        CHILD.store(0, Ordering::Release);
    }
}

/// The snapshot path pattern handed to the recorder: absolute, with `%p` (process id) and, when
/// more than one snapshot may be taken, `%n` (sequence number) inserted before the extension if
/// the user's path has none.
fn output_pattern(options: &RecordOptions) -> Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let several = options.signal.is_some() || options.every.is_some();
    let path = match &options.output {
        Some(path) => std::path::absolute(path).map_err(Error::io(path))?,
        None if several => std::path::absolute("heapsnap-%p-%n.hsnap").map_err(Error::io("."))?,
        None => std::path::absolute("heapsnap-%p.hsnap").map_err(Error::io("."))?,
    };
    let bytes = path.as_os_str().as_bytes();
    if !several || bytes.windows(2).any(|w| w == b"%n") {
        return Ok(path);
    }
    let name_start = bytes.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let at = match bytes[name_start..].iter().rposition(|&b| b == b'.') {
        Some(dot) if dot > 0 => name_start + dot,
        _ => bytes.len(),
    };
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(b"-%n");
    out.extend_from_slice(&bytes[at..]);
    Ok(PathBuf::from(OsString::from_vec(out)))
}

/// Reads the recorder's list: one `PID<TAB>PATH` line per snapshot.
fn parse_list(bytes: &[u8]) -> Vec<Written> {
    use std::os::unix::ffi::OsStrExt;
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let tab = line.iter().position(|&b| b == b'\t')?;
            let pid = std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?;
            Some(Written { pid, path: PathBuf::from(OsStr::from_bytes(&line[tab + 1..])) })
        })
        .collect()
}

/// A signal by name (`USR2`, `SIGUSR2`, `RTMIN+3`) or number.
pub fn parse_signal(text: &str) -> Result<i32> {
    let bad = || Error::Usage(format!("unknown signal `{text}` (try USR1, USR2, HUP, PROF, RTMIN+N or a number)"));
    if let Ok(n) = text.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(bad()) };
    }
    let name = text.strip_prefix("SIG").unwrap_or(text).to_ascii_uppercase();
    let named = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CONT", libc::SIGCONT),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("PWR", libc::SIGPWR),
    ];
    if let Some(&(_, n)) = named.iter().find(|(n, _)| *n == name) {
        return Ok(n);
    }
    // The C library's real-time range (glibc keeps the first two for itself).
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    let rt = |rest: &str, base: i32, sign: i32| -> Result<i32> {
        let offset: i32 = if rest.is_empty() { 0 } else { rest.parse().map_err(|_| bad())? };
        let n = base + sign * offset;
        if (rtmin..=rtmax).contains(&n) { Ok(n) } else { Err(bad()) }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(rest.strip_prefix('+').unwrap_or(rest), rtmin, 1);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(rest.strip_prefix('-').unwrap_or(rest), rtmax, -1);
    }
    Err(bad())
}

/// A duration: a number with a unit `ms`, `s`, `m` or `h` (`500ms`, `2s`, `1.5m`); a bare number is
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || Error::Usage(format!("cannot read the duration `{text}` (try 500ms, 2s, 1m)"));
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|_| bad())?;
    if duration < Duration::from_millis(1) {
        return Err(Error::Usage(format!("the period `{text}` is shorter than a millisecond")));
    }
    Ok(duration)
}

/// What `heapsnap record` says about one snapshot.
#[derive(Debug)]
pub struct Summary {
    /// The leak report, as `heapsnap leaks SNAP` prints it.
    pub text: String,
    /// How long the recorder stopped the program to take it (`capture.pause.ns`), when it says.
    pub pause: Option<Duration>,
    /// Still reachable bytes.
    pub reachable_bytes: u64,
}

/// The leak report of a recorded snapshot and what the recorder says about it.
pub fn leak_summary(snapshot: &Path, progress: &crate::progress::Progress, use_cache: bool) -> Result<Summary> {
    use crate::report::Report;
    use crate::report::leaks::{LeakOptions, LeakReport};
    let file = crate::import::open_any(snapshot, progress)?;
    let heap = file.load(progress)?;
    let pause = heap
        .snap
        .meta_value("capture.pause.ns")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .map(Duration::from_nanos);
    let analysis = crate::cache::analyze(&heap, progress, use_cache, crate::cache::MIN_NODES);
    let report = LeakReport::build(&heap, &analysis, LeakOptions { limit: 20, members: false });
    let mut text = report.render(crate::report::Format::Text);
    for note in heap.symbols().notes() {
        text += &format!("heapsnap: note: {note}\n");
    }
    let reachable_bytes = report.reachable.bytes;
    Ok(Summary { text, pause, reachable_bytes })
}

/// What `heapsnap record` prints after the run: the leak report of the program's last snapshot (as
/// valgrind reports at exit), then the path of every snapshot written.
pub fn report(recording: &Recording, progress: &crate::progress::Progress, use_cache: bool) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    match recording.last() {
        Some(last) if !std::fs::metadata(last).is_ok_and(|m| m.is_file()) => {
            // `-o /dev/null`, a pipe: the snapshot went there and cannot be read back.
            writeln!(out, "heapsnap: the snapshot went to {}, not a regular file: no summary", last.display())
                .expect("writing to a String");
        }
        Some(last) => {
            let summary = leak_summary(last, progress, use_cache)?;
            out.push_str(&summary.text);
            if summary.reachable_bytes > 0 {
                out.push_str(
                    "heapsnap: still reachable may exceed valgrind memcheck's by glibc's own buffers (stdio \
                     buffers, the DTVs of cached thread stacks, the dynamic linker's tables), which memcheck \
                     frees before it checks\n",
                );
            }
            if let Some(pause) = summary.pause {
                writeln!(out, "heapsnap: the program was stopped {:.3} s for this snapshot", pause.as_secs_f64())
                    .expect("writing to a String");
            }
        }
        None => out.push_str(
            "heapsnap: the program wrote no snapshot (it did not exit through exit(), and no --signal or \
             --every snapshot was taken)\n",
        ),
    }
    for written in &recording.snapshots {
        let whose =
            if written.pid == recording.pid { String::new() } else { format!(" (child process {})", written.pid) };
        writeln!(out, "heapsnap: snapshot written to {}{whose}", written.path.display()).expect("writing to a String");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("USR2").unwrap(), libc::SIGUSR2);
        assert_eq!(parse_signal("SIGusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("12").unwrap(), 12);
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("0ms").is_err());
    }

    #[test]
    fn several_snapshots_get_a_sequence_number() {
        let mut options = RecordOptions::new(vec!["true".into()]);
        options.output = Some(PathBuf::from("/tmp/x.y/run.hsnap"));
        assert_eq!(output_pattern(&options).unwrap(), PathBuf::from("/tmp/x.y/run.hsnap"));
        options.signal = Some(12);
        assert_eq!(output_pattern(&options).unwrap(), PathBuf::from("/tmp/x.y/run-%n.hsnap"));
        options.output = Some(PathBuf::from("/tmp/x.y/run"));
        assert_eq!(output_pattern(&options).unwrap(), PathBuf::from("/tmp/x.y/run-%n"));
        options.output = Some(PathBuf::from("/tmp/%n-%p.hsnap"));
        assert_eq!(output_pattern(&options).unwrap(), PathBuf::from("/tmp/%n-%p.hsnap"));
    }

    #[test]
    fn the_list_names_pids_and_paths() {
        let listed = parse_list(b"12\t/tmp/a-12-1.hsnap\n13\t/tmp/a.hsnap.13\nbroken\n");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1], Written { pid: 13, path: PathBuf::from("/tmp/a.hsnap.13") });
    }
}
