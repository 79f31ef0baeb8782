//! Analyses over a loaded heap graph. Every one is linear or near-linear and iterative: heap graphs
//! have tens of millions of nodes and million-long chains.

pub mod dominators;
pub mod leaks;
pub mod paths;
pub mod reach;
pub mod retained;
pub mod scc;

use crate::graph::Graph;
use crate::progress::Progress;

/// Every analysis of one snapshot, as the reports and the cache need them.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Analysis {
    pub reach: reach::Reachability,
    pub leaks: leaks::Leaks,
    pub retention: retained::Retention,
}

impl Analysis {
    pub fn of(graph: &Graph, progress: &Progress) -> Analysis {
        let phase = |name: &str| progress.spinner(name);
        let bar = phase("reachability");
        let reach = reach::Reachability::of(graph);
        bar.finish_and_clear();
        let bar = phase("leaks");
        let leaks = leaks::Leaks::find(graph, &reach);
        bar.finish_and_clear();
        let bar = phase("dominators");
        let retention = retained::Retention::of(graph);
        bar.finish_and_clear();
        Analysis { reach, leaks, retention }
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
