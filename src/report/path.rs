//! `heapsnap path`: the shortest chains that keep a node alive, from a root; for a leaked node,
//! from the leader of its leak group.

use std::fmt::Write;

use hsnap::{EdgeKind, Label};
use serde::Serialize;

use super::{NodeRef, Report, md, size};
use crate::analysis::Analysis;
use crate::analysis::paths::shortest_chains;
use crate::analysis::reach::Class;
use crate::heap::Heap;

#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// `heapsnap.path/1`: the shape of this document, as `formats/json.md` specifies it.
    pub schema: &'static str,
    pub snapshot: String,
    pub target: NodeRef,
    /// `reachable`, `possibly lost` or `leaked`.
    pub status: &'static str,
    pub chains: Vec<Chain>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    /// What holds the first node: a root (`global`, `stack`, …, with its name) or, for a leaked
    /// node, `leak leader`.
    pub start: String,
    pub start_name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub node: NodeRef,
    /// The edge from the previous step; none on the first.
    pub via: Option<Via>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Via {
    pub kind: &'static str,
    pub label: Option<String>,
}

impl PathReport {
    pub fn build(heap: &Heap<'_>, analysis: &Analysis, target: u32, max_chains: usize) -> PathReport {
        let g = &heap.graph;
        let status = match analysis.reach.class[target as usize] {
            Class::Reachable => "reachable",
            Class::Possibly => "possibly lost",
            Class::Leaked => "leaked",
        };
        let chains = if status == "leaked" {
            let leaders: Vec<u32> = analysis.leaks.groups.iter().map(|grp| grp.leader).collect();
            shortest_chains(g, target, |v| leaders.contains(&v), max_chains)
        } else {
            shortest_chains(g, target, |v| g.root_nodes().binary_search(&v).is_ok(), max_chains)
        };
        let sources: Vec<u32> = chains.iter().flat_map(|c| c[..c.len() - 1].iter().copied()).collect();
        let labels = heap.labels(&sources);
        let node = |v: u32| NodeRef::of(heap, analysis, v);
        let chains = chains
            .into_iter()
            .map(|chain| {
                let (start, start_name) = match g.roots().iter().find(|r| r.node == chain[0]) {
                    Some(root) if status != "leaked" => {
                        let name = (root.name != 0).then(|| heap.string(root.name).into_owned());
                        (format!("{} root", root.kind.name()), name)
                    }
                    _ => ("leak leader".to_string(), None),
                };
                let mut steps = vec![Step { node: node(chain[0]), via: None }];
                for pair in chain.windows(2) {
                    let kind = g.retaining_kind(pair[0], pair[1]).unwrap_or(EdgeKind::Strong);
                    let label = labels.get(&(pair[0], pair[1], kind)).copied().unwrap_or(Label::None);
                    steps.push(Step {
                        node: node(pair[1]),
                        via: Some(Via { kind: kind.name(), label: heap.label_name(label) }),
                    });
                }
                Chain { start, start_name, steps }
            })
            .collect();
        PathReport {
            schema: "heapsnap.path/1",
            snapshot: heap.path.display().to_string(),
            target: node(target),
            status,
            chains,
        }
    }

    fn lines(&self, escape: impl Fn(&str) -> String) -> String {
        let t = &self.target;
        let mut out = format!(
            "{} #{} at {:#x}: {} ({} shallow, {} retained)\n",
            escape(&t.type_name),
            t.id,
            t.address,
            self.status,
            size(t.shallow),
            size(t.retained)
        );
        if self.chains.is_empty() {
            out += "no chain leads to it\n";
        }
        for (i, chain) in self.chains.iter().enumerate() {
            let name = chain.start_name.as_deref().map(|n| format!(" {}", escape(n))).unwrap_or_default();
            writeln!(out, "\nchain {}, from {}{name}:", i + 1, chain.start).unwrap();
            for step in &chain.steps {
                let via = match &step.via {
                    None => String::new(),
                    Some(v) => {
                        let label = v.label.as_deref().map(|l| format!(" {}", escape(l))).unwrap_or_default();
                        format!("--{}{label}--> ", v.kind)
                    }
                };
                writeln!(
                    out,
                    "  {via}{} #{} ({})",
                    escape(&step.node.type_name),
                    step.node.id,
                    size(step.node.retained)
                )
                .unwrap();
            }
        }
        out
    }
}

impl Report for PathReport {
    fn text(&self) -> String {
        self.lines(super::plain)
    }

    fn markdown(&self) -> String {
        format!("```text\n{}```\n", self.lines(|s| md(s).replace('`', "'")))
    }
}
