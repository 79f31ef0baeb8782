//! Analyses over a loaded heap graph. Every one is linear or near-linear and iterative: heap graphs
//! have tens of millions of nodes and million-long chains.

pub mod dominators;
pub mod leaks;
pub mod paths;
pub mod reach;
pub mod retained;
pub mod scc;
#[cfg(test)]
mod testing;

use std::time::Instant;

use crate::graph::Graph;
use crate::progress::Progress;

/// Seconds each analysis took; reachability with leaks ran beside the dominators.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    pub reachability: f64,
    pub leaks: f64,
    pub dominators: f64,
}

/// Every analysis of one snapshot, as the reports and the cache need them.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Analysis {
    pub reach: reach::Reachability,
    pub leaks: leaks::Leaks,
    pub retention: retained::Retention,
}

impl Analysis {
    pub fn of(graph: &Graph, progress: &Progress) -> Analysis {
        Analysis::timed(graph, progress).0
    }

    /// Runs the dominator tree on a second thread beside reachability and leak grouping (the two
    /// share nothing but the graph), and says how long each took.
    pub fn timed(graph: &Graph, progress: &Progress) -> (Analysis, Timings) {
        let bar = progress.spinner("analysing");
        let seconds = |start: Instant| start.elapsed().as_secs_f64();
        let (reach, leaks, retention, timings) = std::thread::scope(|scope| {
            let dominators = scope.spawn(|| {
                let start = Instant::now();
                (retained::Retention::of(graph), seconds(start))
            });
            let start = Instant::now();
            let reach = reach::Reachability::of(graph);
            let reachability = seconds(start);
            let start = Instant::now();
            let leaks = leaks::Leaks::find(graph, &reach);
            let leaks_time = seconds(start);
            let (mut retention, dominators) = dominators.join().expect("the dominator thread does not panic");
            retention.add_leaked(graph, &leaks);
            (reach, leaks, retention, Timings { reachability, leaks: leaks_time, dominators })
        });
        bar.finish_and_clear();
        (Analysis { reach, leaks, retention }, timings)
    }

    /// Whether this analysis (say, from a cache file) is shaped for `graph`: every array has one
    /// entry a node and every node index is in range, so reports can index without checks.
    pub fn fits(&self, graph: &Graph) -> bool {
        let n = graph.node_count();
        let in_range = |v: u32| (v as usize) < n;
        self.reach.class.len() == n
            && self.retention.idom.len() == n
            && self.retention.retained.len() == n
            && self.retention.idom.iter().all(|&d| in_range(d) || d >= dominators::VIRTUAL_ROOT)
            && self.leaks.groups.iter().all(|g| in_range(g.leader) && g.members.iter().all(|&v| in_range(v)))
    }
}
