//! The V8 benchmark: heapsnap against memlab on the same `.heapsnapshot`, each in a fresh process.
//!
//! For each size a snapshot is made (by Node running `tests/v8/make-heap.js`, or by
//! [`crate::import::v8_synth`]), then measured twice: `heapsnap bench --one FILE` (conversion, load
//! and every analysis) and `node tests/v8/memlab-retained.js FILE 0` (memlab's
//! `getFullHeapFromFile`: parse, dominators, retained sizes). Both report their own peak resident
//! set (VmHWM; Node's `maxRSS`, the same figure); wall times are taken around each child process,
//! so they include process start-up. memlab failing (Node's heap or string limits) is a result,
//! reported with what it said, not an error of the benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde::Serialize;

use super::Measurement;
use crate::error::{Error, Result};
use crate::import::v8_synth::{self, V8SynthOptions};

/// Who writes the snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Source {
    /// Node 20 running `make-heap.js`: real snapshots, about 3 nodes per extra object.
    Node,
    /// The synthetic writer: any size, fast.
    Synthetic,
}

#[derive(Debug, Clone)]
pub struct V8BenchOptions {
    /// Approximate node counts.
    pub sizes: Vec<u64>,
    pub dir: PathBuf,
    pub source: Source,
    /// Also run memlab.
    pub memlab: bool,
    /// Where `make-heap.js` and `memlab-retained.js` are, with memlab in `node_modules`.
    pub scripts: PathBuf,
    pub keep: bool,
}

/// The default scripts directory: `tests/v8` of the checkout this binary was built from.
pub fn default_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/v8")
}

/// How memlab fared.
#[derive(Debug, Clone, Serialize)]
pub enum Memlab {
    NotRun,
    Done {
        /// Wall time of the whole `node` process.
        wall: f64,
        /// memlab's own time: parsing and retained sizes, without Node's start-up.
        load: f64,
        peak_rss: u64,
    },
    Failed {
        wall: f64,
        /// Exit status and the line that says what went wrong.
        reason: String,
    },
}

/// One size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct V8Row {
    pub source: Source,
    pub file: PathBuf,
    pub file_bytes: u64,
    /// Seconds to write the snapshot.
    pub make: f64,
    /// Wall time of the whole `heapsnap bench --one` process.
    pub heapsnap_wall: f64,
    pub heapsnap: Measurement,
    pub memlab: Memlab,
}

impl V8Row {
    /// memlab's wall time over heapsnap's: how many times faster heapsnap is.
    pub fn speedup(&self) -> Option<f64> {
        match self.memlab {
            Memlab::Done { wall, .. } => Some(wall / self.heapsnap_wall),
            _ => None,
        }
    }

    /// heapsnap's peak memory over memlab's.
    pub fn memory_ratio(&self) -> Option<f64> {
        match self.memlab {
            Memlab::Done { peak_rss, .. } if peak_rss > 0 => Some(self.heapsnap.peak_rss as f64 / peak_rss as f64),
            _ => None,
        }
    }
}

/// Nodes in a snapshot of `make-heap.js` without extra objects (Node 20); each extra object adds 3.
const MAKE_HEAP_BASE: u64 = 47_200;

/// Makes, measures and (unless `keep`) removes one snapshot per size.
pub fn run(exe: &Path, options: &V8BenchOptions) -> Result<Vec<V8Row>> {
    let mut rows = Vec::new();
    for &nodes in &options.sizes {
        let name = match options.source {
            Source::Node => format!("node-{nodes}.heapsnapshot"),
            Source::Synthetic => format!("synthetic-{nodes}.heapsnapshot"),
        };
        let path = options.dir.join(name);
        let t = Instant::now();
        make(&path, nodes, options)?;
        let make = t.elapsed().as_secs_f64();
        let file_bytes = std::fs::metadata(&path).map_err(Error::io(&path))?.len();
        let measured = measure_both(exe, &path, options);
        if !options.keep {
            let _ = std::fs::remove_file(&path);
        }
        let (heapsnap_wall, heapsnap, memlab) = measured?;
        rows.push(V8Row { source: options.source, file: path, file_bytes, make, heapsnap_wall, heapsnap, memlab });
    }
    Ok(rows)
}

fn make(path: &Path, nodes: u64, options: &V8BenchOptions) -> Result<()> {
    match options.source {
        Source::Synthetic => {
            v8_synth::write(path, V8SynthOptions { nodes, chain: 1000, seed: 1, extra_edges: true })?;
        }
        Source::Node => {
            let extra = nodes.saturating_sub(MAKE_HEAP_BASE) / 3;
            let output = node(&options.scripts, "make-heap.js", &[path.as_os_str(), extra.to_string().as_ref()])?;
            if !output.status.success() {
                return Err(Error::Usage(format!(
                    "node make-heap.js failed ({}): {}",
                    output.status,
                    what_went_wrong(&output.stderr)
                )));
            }
        }
    }
    Ok(())
}

fn measure_both(exe: &Path, path: &Path, options: &V8BenchOptions) -> Result<(f64, Measurement, Memlab)> {
    let t = Instant::now();
    let output = Command::new(exe).args(["bench", "--one"]).arg(path).output().map_err(Error::io(exe))?;
    let heapsnap_wall = t.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(Error::Usage(format!(
            "heapsnap bench --one {} failed: {}",
            path.display(),
            what_went_wrong(&output.stderr)
        )));
    }
    let heapsnap: Measurement = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::Usage(format!("benchmark child printed no figures: {e}")))?;
    let memlab = if options.memlab { memlab(path, &options.scripts)? } else { Memlab::NotRun };
    Ok((heapsnap_wall, heapsnap, memlab))
}

/// Runs memlab on `path`; a failure of memlab is a [`Memlab::Failed`], only failing to start
/// `node` at all is an error.
fn memlab(path: &Path, scripts: &Path) -> Result<Memlab> {
    let t = Instant::now();
    let output = node(scripts, "memlab-retained.js", &[path.as_os_str(), "0".as_ref()])?;
    let wall = t.elapsed().as_secs_f64();
    if !output.status.success() {
        let reason = format!("{}: {}", output.status, what_went_wrong(&output.stderr));
        return Ok(Memlab::Failed { wall, reason });
    }
    #[derive(serde::Deserialize)]
    struct Figures {
        seconds: f64,
        #[serde(rename = "maxRSS")]
        max_rss: u64,
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let figures = stderr.lines().rev().find_map(|l| serde_json::from_str::<Figures>(l).ok());
    Ok(match figures {
        Some(f) => Memlab::Done { wall, load: f.seconds, peak_rss: f.max_rss },
        None => Memlab::Failed { wall, reason: format!("no figures on stderr: {}", what_went_wrong(&output.stderr)) },
    })
}

/// `node SCRIPT ARGS…` in `scripts`, with this process's environment (so `NODE_OPTIONS` applies).
fn node(scripts: &Path, script: &str, args: &[&std::ffi::OsStr]) -> Result<Output> {
    Command::new("node")
        .arg(scripts.join(script))
        .args(args)
        .current_dir(scripts)
        .output()
        .map_err(|e| Error::Usage(format!("cannot run node (Node.js is needed for the V8 benchmark): {e}")))
}

/// The line of a failed process's stderr that says what happened: the first naming an error, else
/// the last one.
fn what_went_wrong(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines
        .iter()
        .find(|l| l.contains("Error") || l.contains("FATAL") || l.contains("out of memory"))
        .or(lines.last())
        .copied()
        .unwrap_or("(nothing on stderr)");
    let mut line = line.to_string();
    if line.len() > 300 {
        let cut = (0..=300).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// The figures as a table, and below it memlab's failures in full.
pub fn table(rows: &[V8Row]) -> String {
    let secs = |s: f64| format!("{s:.2} s");
    let size = crate::report::size;
    let mut notes = Vec::new();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let m = &r.heapsnap;
            let (memlab_time, memlab_peak) = match &r.memlab {
                Memlab::NotRun => ("not run".to_string(), String::new()),
                Memlab::Done { wall, load, peak_rss } => {
                    (format!("{} ({} load)", secs(*wall), secs(*load)), size(*peak_rss))
                }
                Memlab::Failed { wall, reason } => {
                    notes.push(format!("memlab failed on {} after {}: {reason}", r.file.display(), secs(*wall)));
                    (format!("FAILED after {}", secs(*wall)), String::new())
                }
            };
            vec![
                format!("{:?}", r.source).to_lowercase(),
                m.nodes.to_string(),
                m.edges.to_string(),
                size(r.file_bytes),
                secs(r.make),
                format!("{} ({} convert)", secs(r.heapsnap_wall), secs(m.parse)),
                size(m.peak_rss),
                memlab_time,
                memlab_peak,
                r.speedup().map(|x| format!("{x:.1}x")).unwrap_or_default(),
                r.memory_ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            ]
        })
        .collect();
    let mut text = crate::report::table(
        &[
            "source",
            "nodes",
            "edges",
            "file",
            "write",
            "heapsnap wall",
            "heapsnap peak",
            "memlab wall",
            "memlab peak",
            "speed-up",
            "memory ratio",
        ],
        &[false, true, true, true, true, true, true, true, true, true, true],
        &cells,
    );
    text.push_str("speed-up: memlab's wall time over heapsnap's; memory ratio: heapsnap's peak RSS over memlab's.\n");
    for note in notes {
        text.push_str(&note);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(memlab: Memlab) -> V8Row {
        let heapsnap = Measurement {
            nodes: 1000,
            edges: 3000,
            file_bytes: 1 << 20,
            parse: 0.5,
            graph: 0.1,
            reachability: 0.1,
            leaks: 0.0,
            dominators: 0.2,
            total: 1.0,
            peak_rss: 100 << 20,
            petgraph_kosaraju: None,
            petgraph_simple_fast: None,
        };
        let file = PathBuf::from("/tmp/node-1000.heapsnapshot");
        V8Row { source: Source::Node, file, file_bytes: 2 << 20, make: 1.0, heapsnap_wall: 2.0, heapsnap, memlab }
    }

    #[test]
    fn ratios_and_failures_are_printed() {
        let done = row(Memlab::Done { wall: 25.0, load: 24.0, peak_rss: 400 << 20 });
        assert_eq!((done.speedup(), done.memory_ratio()), (Some(12.5), Some(0.25)));
        let reason = "signal: 6 (SIGABRT): FATAL ERROR: Reached heap limit".to_string();
        let failed = row(Memlab::Failed { wall: 3.0, reason: reason.clone() });
        assert_eq!((failed.speedup(), failed.memory_ratio()), (None, None));
        let text = table(&[done, failed]);
        assert!(text.contains("12.5x") && text.contains("0.25"), "{text}");
        assert!(text.contains("FAILED after 3.00 s"), "{text}");
        assert!(
            text.contains(&format!("memlab failed on /tmp/node-1000.heapsnapshot after 3.00 s: {reason}")),
            "{text}"
        );
    }

    #[test]
    fn what_went_wrong_names_the_error_line() {
        let stderr = b"\n<--- Last few GCs --->\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n 1: 0xb7 node::Abort()\n";
        assert!(what_went_wrong(stderr).starts_with("FATAL ERROR: Reached heap limit"));
        assert_eq!(what_went_wrong(b"first\nlast\n"), "last");
        assert_eq!(what_went_wrong(b""), "(nothing on stderr)");
        assert!(what_went_wrong("é".repeat(400).as_bytes()).ends_with('…'));
    }
}
