//! `heapsnap leaks`: leak groups, largest first, with memcheck's totals.

use std::collections::HashMap;
use std::fmt::Write;

use serde::Serialize;

use super::{Amount, Report, md, md_omitted, md_table, omitted, size, table};
use crate::analysis::Analysis;
use crate::analysis::leaks::LeakGroup;
use crate::analysis::reach::Class;
use crate::heap::Heap;

#[derive(Debug, Clone, Serialize)]
pub struct LeakReport {
    /// `heapsnap.leaks/1`: the shape of this document, as `formats/json.md` specifies it.
    pub schema: &'static str,
    pub snapshot: String,
    /// Every node.
    pub totals: Amount,
    /// Still reachable: a chain of start pointers from a root leads to it.
    pub reachable: Amount,
    /// Directly and indirectly lost together.
    pub leaked: Amount,
    /// The leaders of the groups: memcheck's "definitely lost".
    pub direct: Amount,
    /// Lost through a leader: memcheck's "indirectly lost".
    pub indirect: Amount,
    /// Reached only through interior pointers: memcheck's "possibly lost".
    pub possibly: Amount,
    pub groups: Vec<GroupRow>,
    /// Groups left out by the limit.
    pub omitted_groups: usize,
    /// The possibly lost blocks, most bytes first.
    pub possibly_lost: Vec<Block>,
    /// Possibly lost blocks left out by the limit.
    pub omitted_possibly: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    pub address: u64,
    pub bytes: u64,
    pub site: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    /// Identity of the directly lost node.
    pub leader: u64,
    pub leader_type: String,
    pub leader_address: u64,
    pub objects: u64,
    pub bytes: u64,
    pub cycle: bool,
    /// Members by type, most bytes first.
    pub types: Vec<Tally>,
    /// Members by allocation site, most bytes first.
    pub sites: Vec<Tally>,
    /// The leader's allocation site: the innermost frame of its stack.
    pub site: String,
    /// The leader's allocation stack, innermost frame first.
    pub stack: Vec<String>,
    /// The id of the thread that allocated the leader, when the producer recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
    /// Identities of every member, leader first; only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tally {
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
}

/// What to put in a leak report.
#[derive(Debug, Clone, Copy)]
pub struct LeakOptions {
    /// Groups to list at most.
    pub limit: usize,
    /// List every member's identity.
    pub members: bool,
}

impl LeakReport {
    pub fn build(heap: &Heap<'_>, analysis: &Analysis, options: LeakOptions) -> LeakReport {
        let g = &heap.graph;
        let mut report = LeakReport {
            schema: "heapsnap.leaks/1",
            snapshot: heap.path.display().to_string(),
            totals: Amount::default(),
            reachable: Amount::default(),
            leaked: Amount::default(),
            direct: Amount::default(),
            indirect: Amount::default(),
            possibly: Amount::default(),
            groups: Vec::new(),
            possibly_lost: Vec::new(),
            omitted_possibly: 0,
            omitted_groups: analysis.leaks.groups.len().saturating_sub(options.limit),
        };
        for (v, class) in analysis.reach.class.iter().enumerate() {
            let bytes = g.size.get(v);
            report.totals.add(bytes);
            match class {
                Class::Reachable => report.reachable.add(bytes),
                Class::Possibly => report.possibly.add(bytes),
                Class::Leaked => report.leaked.add(bytes),
            }
        }
        for group in &analysis.leaks.groups {
            report.direct.add(g.size.get(group.leader as usize));
        }
        report.indirect = Amount {
            objects: report.leaked.objects - report.direct.objects,
            bytes: report.leaked.bytes - report.direct.bytes,
        };
        report.groups =
            analysis.leaks.groups.iter().take(options.limit).map(|group| row(heap, group, options)).collect();
        let mut possibly: Vec<u32> =
            (0..g.node_count() as u32).filter(|&v| analysis.reach.class[v as usize] == Class::Possibly).collect();
        possibly.sort_by_key(|&v| (std::cmp::Reverse(g.size.get(v as usize)), g.address.get(v as usize), v));
        report.omitted_possibly = possibly.len().saturating_sub(options.limit);
        report.possibly_lost = possibly
            .into_iter()
            .take(options.limit)
            .map(|v| Block {
                id: g.identity.get(v as usize),
                type_name: heap.type_name(v).into_owned(),
                address: g.address.get(v as usize),
                bytes: g.size.get(v as usize),
                site: heap.site_name(g.stack[v as usize]),
            })
            .collect();
        report
    }

    /// Whether anything leaked: what `--fail` gates on.
    pub fn any(&self) -> bool {
        self.leaked.objects > 0
    }

    fn verdict(&self) -> String {
        if !self.any() && self.possibly.objects == 0 {
            return "no leaks".to_string();
        }
        let groups = self.groups.len() + self.omitted_groups;
        let cycles = self.groups.iter().filter(|g| g.cycle).count();
        let mut line =
            format!("{} leaked in {groups} group{}", self.leaked.describe(), if groups == 1 { "" } else { "s" });
        if cycles > 0 {
            write!(line, " ({cycles} with cycles)").unwrap();
        }
        if self.possibly.objects > 0 {
            write!(line, "; {} possibly lost", self.possibly.describe()).unwrap();
        }
        line
    }

    fn summary_rows(&self) -> Vec<Vec<String>> {
        [
            ("definitely lost", self.direct),
            ("indirectly lost", self.indirect),
            ("possibly lost", self.possibly),
            ("still reachable", self.reachable),
            ("total", self.totals),
        ]
        .iter()
        .map(|(what, a)| vec![what.to_string(), size(a.bytes), a.objects.to_string()])
        .collect()
    }

    fn block_rows(&self) -> Vec<Vec<String>> {
        self.possibly_lost
            .iter()
            .map(|b| vec![size(b.bytes), b.id.to_string(), b.type_name.clone(), b.site.clone()])
            .collect()
    }

    fn group_rows(&self) -> Vec<Vec<String>> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                vec![
                    (i + 1).to_string(),
                    size(g.bytes),
                    g.objects.to_string(),
                    if g.cycle { "yes" } else { "" }.to_string(),
                    format!("{} #{}", g.leader_type, g.leader),
                    types_line(&g.types),
                    g.site.clone(),
                ]
            })
            .collect()
    }
}

const BLOCK_HEADER: [&str; 4] = ["bytes", "id", "type", "site"];
const BLOCK_RIGHT: [bool; 4] = [true, true, false, false];

const GROUP_HEADER: [&str; 7] = ["#", "bytes", "objects", "cycle", "leader", "types", "site"];
const GROUP_RIGHT: [bool; 7] = [true, true, true, false, false, false, false];

fn row(heap: &Heap<'_>, group: &LeakGroup, options: LeakOptions) -> GroupRow {
    let g = &heap.graph;
    let leader = group.leader as usize;
    GroupRow {
        leader: g.identity.get(leader),
        leader_type: heap.type_name(group.leader).into_owned(),
        leader_address: g.address.get(leader),
        objects: group.members.len() as u64,
        bytes: group.bytes,
        cycle: group.cycle,
        types: tally(heap, &group.members, |v| heap.type_name(v).into_owned()),
        sites: tally(heap, &group.members, |v| heap.site_name(g.stack[v as usize])),
        site: heap.site_name(g.stack[leader]),
        stack: heap.stack_names(g.stack[leader]),
        thread: heap.snap.allocation(group.leader).map(|a| a.thread).filter(|&t| t != 0),
        members: options.members.then(|| group.members.iter().map(|&v| g.identity.get(v as usize)).collect()),
    }
}

/// Objects and bytes of `nodes` per name, most bytes first.
fn tally(heap: &Heap<'_>, nodes: &[u32], name: impl Fn(u32) -> String) -> Vec<Tally> {
    let mut by_name: HashMap<String, Amount> = HashMap::new();
    for &v in nodes {
        by_name.entry(name(v)).or_default().add(heap.graph.size.get(v as usize));
    }
    let mut rows: Vec<Tally> =
        by_name.into_iter().map(|(name, a)| Tally { name, objects: a.objects, bytes: a.bytes }).collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.objects.cmp(&a.objects)).then(a.name.cmp(&b.name)));
    rows
}

/// "node ×3, str ×2, … (+4 types)"
fn types_line(types: &[Tally]) -> String {
    let mut line: Vec<String> = types.iter().take(3).map(|t| format!("{} ×{}", t.name, t.objects)).collect();
    if types.len() > 3 {
        line.push(format!("(+{} types)", types.len() - 3));
    }
    line.join(", ")
}

impl Report for LeakReport {
    fn text(&self) -> String {
        let mut out = format!("{}: {}\n\n", super::plain(&self.snapshot), self.verdict());
        out += &table(&["", "bytes", "objects"], &[false, true, true], &self.summary_rows());
        if !self.groups.is_empty() {
            out += "\nleak groups, largest first:\n";
            out += &table(&GROUP_HEADER, &GROUP_RIGHT, &self.group_rows());
            out += &omitted(self.omitted_groups, "groups");
        }
        if !self.possibly_lost.is_empty() {
            out += "\npossibly lost (held only through pointers into their middle), largest first:\n";
            out += &table(&BLOCK_HEADER, &BLOCK_RIGHT, &self.block_rows());
            out += &omitted(self.omitted_possibly, "blocks");
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("**{}**: {}\n\n", md(&self.snapshot), md(&self.verdict()));
        out += &md_table(&["", "bytes", "objects"], &[false, true, true], &self.summary_rows());
        if !self.groups.is_empty() {
            out += "\n### Leak groups\n\n";
            out += &md_table(&GROUP_HEADER, &GROUP_RIGHT, &self.group_rows());
            out += &md_omitted(self.omitted_groups, "groups");
            for (i, g) in self.groups.iter().enumerate().filter(|(_, g)| !g.stack.is_empty()) {
                let frames: Vec<String> = g.stack.iter().map(|f| format!("  - {}", md(f))).collect();
                let thread = g.thread.map(|t| format!(", thread {t}")).unwrap_or_default();
                write!(
                    out,
                    "\n<details><summary>group {} allocation stack{thread}</summary>\n\n{}\n\n</details>\n",
                    i + 1,
                    frames.join("\n")
                )
                .unwrap();
            }
        }
        if !self.possibly_lost.is_empty() {
            out += "\n### Possibly lost\n\nHeld only through pointers into their middle.\n\n";
            out += &md_table(&BLOCK_HEADER, &BLOCK_RIGHT, &self.block_rows());
            out += &md_omitted(self.omitted_possibly, "blocks");
        }
        out
    }
}
