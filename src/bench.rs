//! The benchmark: synthetic heaps of given sizes, each loaded and analysed in a fresh process so
//! its peak memory is its own. Not a test: it prints figures. [`v8`] compares heapsnap with memlab
//! on V8 snapshots.

pub mod v8;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::analysis::Analysis;
use crate::error::{Error, Result};
use crate::graph::{Graph, Retaining};
use crate::progress::Progress;
use crate::synth::{self, SynthOptions};

/// Figures of one load and analysis, in seconds and bytes. Reachability and leaks run beside the
/// dominators, so `total` is less than the sum of the phases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub nodes: u64,
    pub edges: u64,
    pub file_bytes: u64,
    pub parse: f64,
    pub graph: f64,
    pub reachability: f64,
    pub leaks: f64,
    pub dominators: f64,
    pub total: f64,
    pub peak_rss: u64,
    /// petgraph's algorithms on the same graph, when asked for.
    pub petgraph_kosaraju: Option<f64>,
    pub petgraph_simple_fast: Option<f64>,
}

/// Loads and analyses one snapshot in this process and measures each phase.
pub fn measure(path: &Path, petgraph: bool) -> Result<Measurement> {
    let start = Instant::now();
    let lap = |since: &mut Instant| {
        let s = since.elapsed().as_secs_f64();
        *since = Instant::now();
        s
    };
    let mut t = Instant::now();
    // A V8 snapshot is converted first; the conversion counts as parsing.
    let opened = crate::import::open_any(path, &Progress::hidden())?;
    let file = &opened.file;
    let format = |source| Error::Format { path: path.to_path_buf(), source };
    // A converted V8 snapshot comes with its graph, built as the file was written.
    let built = opened.take_graph();
    let snap = match built {
        Some(_) => hsnap::Snapshot::parse_own(file.bytes()),
        None => hsnap::Snapshot::parse(file.bytes()),
    }
    .map_err(format)?;
    let parse = lap(&mut t);
    let graph = match built {
        Some(graph) => graph,
        None => Graph::load(&snap, &Progress::hidden()).map_err(format)?,
    };
    file.release_all();
    let graph_time = lap(&mut t);
    let (analysis, timings) = Analysis::timed(&graph, &Progress::hidden());
    lap(&mut t);
    let total = start.elapsed().as_secs_f64();
    let peak_rss = peak_rss();
    std::hint::black_box(&analysis);
    let (mut kosaraju, mut simple_fast) = (None, None);
    if petgraph {
        let view = Retaining(&graph);
        petgraph::algo::kosaraju_scc(view);
        kosaraju = Some(lap(&mut t));
        let virtual_root = graph.root_nodes().first().copied().unwrap_or(0);
        petgraph::algo::dominators::simple_fast(view, virtual_root);
        simple_fast = Some(lap(&mut t));
    }
    Ok(Measurement {
        nodes: graph.node_count() as u64,
        edges: graph.edge_count() as u64,
        file_bytes: file.bytes().len() as u64,
        parse,
        graph: graph_time,
        reachability: timings.reachability,
        leaks: timings.leaks,
        dominators: timings.dominators,
        total,
        peak_rss,
        petgraph_kosaraju: kosaraju,
        petgraph_simple_fast: simple_fast,
    })
}

/// The process's peak resident set (VmHWM), mapped file pages included.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

/// For each size: writes a synthetic heap into `dir`, measures it in a child process running
/// `exe bench --one FILE`, and returns the figures. Snapshots are removed unless `keep`.
pub fn run(
    exe: &Path,
    sizes: &[u32],
    options: SynthOptions,
    dir: &Path,
    petgraph: bool,
    keep: bool,
) -> Result<Vec<(f64, Measurement)>> {
    let mut results = Vec::new();
    for &nodes in sizes {
        let path: PathBuf = dir.join(format!("synth-{nodes}.hsnap"));
        let t = Instant::now();
        synth::write(&path, SynthOptions { nodes, ..options })?;
        let write_time = t.elapsed().as_secs_f64();
        let mut child = Command::new(exe);
        child.args(["bench", "--one"]).arg(&path);
        if petgraph {
            child.arg("--petgraph");
        }
        let output = child.output().map_err(Error::io(exe))?;
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
        if !output.status.success() {
            return Err(Error::Usage(format!("benchmark child failed: {}", String::from_utf8_lossy(&output.stderr))));
        }
        let m: Measurement = serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::Usage(format!("benchmark child printed no figures: {e}")))?;
        results.push((write_time, m));
    }
    Ok(results)
}

/// The figures as a table.
pub fn table(results: &[(f64, Measurement)]) -> String {
    let secs = |s: f64| format!("{s:.2} s");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(write, m)| {
            let mut row = vec![
                m.nodes.to_string(),
                m.edges.to_string(),
                crate::report::size(m.file_bytes),
                format!("{:.1}", m.file_bytes as f64 / m.nodes as f64),
                secs(*write),
                secs(m.parse + m.graph),
                secs(m.reachability),
                secs(m.leaks),
                secs(m.dominators),
                secs(m.total),
                crate::report::size(m.peak_rss),
            ];
            row.push(m.petgraph_kosaraju.map(secs).unwrap_or_default());
            row.push(m.petgraph_simple_fast.map(secs).unwrap_or_default());
            row
        })
        .collect();
    crate::report::table(
        &[
            "nodes",
            "edges",
            "file",
            "B/node",
            "write",
            "load",
            "reach",
            "leaks",
            "dominators",
            "total",
            "peak RSS",
            "petgraph scc",
            "petgraph dom",
        ],
        &[true; 13],
        &rows,
    )
}
