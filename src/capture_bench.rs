//! `heapsnap bench-capture`: what recording costs. Runs an allocation-heavy C workload
//! (`bench/alloc_workload.c`: millions of malloc/free/realloc of mixed sizes, allocated from a
//! shallow and from a 30-frames-deep call chain) natively, under the recorder (with allocation
//! stacks, and without), under heaptrack and under valgrind memcheck, and reports each run's wall
//! time and peak resident memory as ratios to the native run. Not a test: it prints figures.
//!
//! "Under the recorder" is the program with `libheapsnap_recorder.so` preloaded, as
//! `heapsnap record` runs it, including the snapshot written at exit but not the leak analysis
//! `heapsnap record` prints afterwards. Peak memory is `ru_maxrss` from `wait4`, which for a
//! wrapper script (heaptrack) covers its largest waited-for descendant.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};

/// The workload's source, built by the benchmark itself.
pub const WORKLOAD: &str = include_str!("../bench/alloc_workload.c");

/// The variants the workload knows.
pub const VARIANTS: [&str; 2] = ["shallow", "deep"];

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Allocator operations per run.
    pub ops: u64,
    /// Runs per tool (the fastest is kept); heaptrack and memcheck run once.
    pub repeat: usize,
    /// The recorder library; found with [`crate::record::find_recorder`] when `None`.
    pub recorder: Option<PathBuf>,
}

/// One tool's run of one variant.
#[derive(Debug, Clone)]
pub struct Measured {
    pub variant: &'static str,
    pub tool: &'static str,
    /// Seconds and bytes; `None` when the tool is not installed or failed.
    pub wall: Option<f64>,
    /// User plus system CPU seconds of the process and its waited-for children: less sensitive to
    /// other load on the machine than wall time.
    pub cpu: Option<f64>,
    pub peak_rss: Option<u64>,
    pub note: String,
}

/// Compiles the workload with `cc -O2` in `dir`.
pub fn build_workload(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("alloc_workload.c");
    std::fs::write(&source, WORKLOAD).map_err(Error::io(&source))?;
    let exe = dir.join("alloc_workload");
    let out = Command::new("cc").args(["-O2", "-g", "-o"]).arg(&exe).arg(&source).output().map_err(Error::io("cc"))?;
    if !out.status.success() {
        return Err(Error::Usage(format!("cc {}: {}", source.display(), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(exe)
}

/// Runs a command to completion with its output discarded; wall time and peak RSS (`wait4`).
fn measure(program: &OsString, args: &[OsString], env: &[(&str, OsString)]) -> std::io::Result<(f64, f64, u64)> {
    let start = Instant::now();
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, writing into the two locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    // The child was reaped by wait4: `child` must not be waited for again (dropping it does not).
    drop(child);
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(std::io::Error::other(format!("exit status {status:#x}")));
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((wall, seconds(usage.ru_utime) + seconds(usage.ru_stime), usage.ru_maxrss as u64 * 1024))
}

/// One way of running the workload.
struct Tool {
    name: &'static str,
    /// The program and its first arguments; the variant and the count follow.
    command: Vec<OsString>,
    env: Vec<(&'static str, OsString)>,
    runs: usize,
}

/// The tools: native, the recorder with and without stacks, heaptrack, memcheck.
fn tools(exe: &Path, recorder: &Path, dir: &Path, repeat: usize) -> Vec<Tool> {
    let exe = exe.as_os_str().to_owned();
    let snapshot = dir.join("bench.hsnap").into_os_string();
    let preload = vec![("LD_PRELOAD", recorder.as_os_str().to_owned()), ("HEAPSNAP_OUT", snapshot)];
    let mut no_stacks = preload.clone();
    no_stacks.push(("HEAPSNAP_STACKS", "0".into()));
    let heaptrack_out = dir.join("heaptrack.out").into_os_string();
    let tool = |name, command, env, runs| Tool { name, command, env, runs };
    vec![
        tool("native", vec![exe.clone()], vec![], repeat),
        tool("heapsnap record", vec![exe.clone()], preload, repeat),
        tool("heapsnap record, no stacks", vec![exe.clone()], no_stacks, repeat),
        tool("heaptrack", vec!["heaptrack".into(), "-o".into(), heaptrack_out, exe.clone()], vec![], 1),
        tool(
            "valgrind memcheck",
            vec!["valgrind".into(), "--tool=memcheck".into(), "--leak-check=full".into(), "-q".into(), exe],
            vec![],
            1,
        ),
    ]
}

/// Runs every tool on every variant; a tool that is missing or fails gets a note instead of
/// figures.
pub fn run(options: &CaptureOptions, mut progress: impl FnMut(&str)) -> Result<Vec<Measured>> {
    let recorder = match &options.recorder {
        Some(path) => path.clone(),
        None => crate::record::find_recorder()?,
    };
    let recorder = std::path::absolute(&recorder).map_err(Error::io(&recorder))?;
    let dir = tempfile::tempdir().map_err(Error::io("temporary directory"))?;
    let exe = build_workload(dir.path())?;
    let mut results = Vec::new();
    for variant in VARIANTS {
        for Tool { name: tool, command, env, runs } in tools(&exe, &recorder, dir.path(), options.repeat.max(1)) {
            progress(&format!("{variant}: {tool}"));
            let (program, rest) = command.split_first().expect("a program");
            let mut args = rest.to_vec();
            args.push(variant.into());
            args.push(options.ops.to_string().into());
            let mut best: Option<(f64, f64, u64)> = None;
            let mut note = String::new();
            for _ in 0..runs {
                match measure(program, &args, &env) {
                    Ok((wall, cpu, rss)) => {
                        best = Some(best.map_or((wall, cpu, rss), |(w, c, r)| (w.min(wall), c.min(cpu), r.max(rss))));
                    }
                    Err(e) => {
                        note = format!("{}: {e}", program.to_string_lossy());
                        break;
                    }
                }
            }
            results.push(Measured {
                variant,
                tool,
                wall: best.map(|b| b.0),
                cpu: best.map(|b| b.1),
                peak_rss: best.map(|b| b.2),
                note,
            });
        }
    }
    Ok(results)
}

/// The figures as a text table, ratios to the native run of the same variant.
pub fn table(results: &[Measured], ops: u64) -> String {
    use std::fmt::Write;
    let mut out = format!("{ops} allocator operations per run; best of the repeated runs; ratios to native\n\n");
    let _ = writeln!(
        out,
        "{:<8} {:<27} {:>9} {:>8} {:>9} {:>8} {:>12} {:>8}",
        "variant", "tool", "wall (s)", "× native", "cpu (s)", "× native", "peak RSS", "× native"
    );
    for r in results {
        let native = results.iter().find(|n| n.variant == r.variant && n.tool == "native");
        let ratio = |value: Option<f64>, base: Option<f64>| match (value, base) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}", v / b),
            _ => "-".into(),
        };
        let wall = r.wall.map_or("-".into(), |w| format!("{w:.3}"));
        let cpu = r.cpu.map_or("-".into(), |c| format!("{c:.3}"));
        let rss = r.peak_rss.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)));
        let _ = write!(
            out,
            "{:<8} {:<27} {:>9} {:>8} {:>9} {:>8} {:>12} {:>8}",
            r.variant,
            r.tool,
            wall,
            ratio(r.wall, native.and_then(|n| n.wall)),
            cpu,
            ratio(r.cpu, native.and_then(|n| n.cpu)),
            rss,
            ratio(r.peak_rss.map(|b| b as f64), native.and_then(|n| n.peak_rss.map(|b| b as f64)))
        );
        if !r.note.is_empty() {
            let _ = write!(out, "  ({})", r.note);
        }
        out.push('\n');
    }
    out
}
