//! `heapsnap check`: a gate for CI. Budgets on leaked bytes and on growth against a baseline,
//! known leaks suppressed, and a Markdown report with one verdict line first.

use std::collections::HashMap;
use std::fmt::Write;

use hsnap::EdgeKind;
use serde::Serialize;

use super::diff::{RETAINER_HEADER, RETAINER_RIGHT, details, growth_rows, path_lines, retainer_rows, signed_size};
use super::{Amount, NodeRef, Report, md, md_omitted, md_table, omitted, plain, size, table};
use crate::analysis::reach::Class;
use crate::diff::{By, DiffReport, GrowthRow, SearchTree, Side, Step};
use crate::heap::Heap;
use crate::suppress::Suppressions;

/// A growth budget: bytes, or a share of the baseline's reachable bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Bytes(u64),
    Percent(f64),
}

/// Parses a size: `1234` (bytes), `500kB` or `500KB` (×1000), `10MiB` (×1024²), `1.5GiB`; units
/// `B`, `kB`/`KB`/`K`, `MB`, `GB`, `TB` (powers of 1000), `KiB`, `MiB`, `GiB`, `TiB` (of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let factor: f64 = match unit {
        "" | "B" | "b" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("bad size {text:?}: unknown unit {unit:?} (use B, kB, MB, GB, KiB, MiB, GiB)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("bad size {text:?}: expected a number such as 10MiB"))?;
    let bytes = (value * factor).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("bad size {text:?}: out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a growth budget: a size, or a percentage such as `5%`.
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    match text.trim().strip_suffix('%') {
        Some(p) => match p.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p >= 0.0 => Ok(Budget::Percent(p)),
            _ => Err(format!("bad percentage {text:?}: expected a number such as 5%")),
        },
        None => parse_size(text).map(Budget::Bytes),
    }
}

/// What `heapsnap check` gates on.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Most bytes that may leak (unsuppressed groups), and how it was written.
    pub max_leaked: Option<(u64, String)>,
    /// Most growth against the baseline, and how it was written.
    pub max_growth: Option<(Budget, String)>,
    pub suppressions: Suppressions,
    /// Rows per table.
    pub limit: usize,
}

/// The result of one budget.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetResult {
    /// `max-leaked` or `max-growth`.
    pub budget: &'static str,
    /// The limit as given.
    pub limit: String,
    /// The limit in bytes (for a percentage, of the baseline's reachable bytes).
    pub limit_bytes: u64,
    /// What was measured.
    pub actual_bytes: i64,
    pub pass: bool,
    /// One sentence saying why it passed or failed.
    pub reason: String,
}

/// Growth against the baseline.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GrowthFigure {
    /// Live bytes of the snapshot minus those of the baseline, suppressed leaks left out of both.
    pub bytes: i64,
    /// The baseline's still reachable bytes.
    pub base_reachable: u64,
    /// `bytes` as a percentage of `base_reachable`; null when that is 0.
    pub percent: Option<f64>,
}

/// A leak group as the gate shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckGroup {
    pub leader: u64,
    pub leader_type: String,
    pub objects: u64,
    pub bytes: u64,
    pub cycle: bool,
    pub site: String,
    /// The leader's allocation stack, innermost frame first.
    pub stack: Vec<String>,
    /// For a group with a cycle: its members and the retaining edges between them, at most
    /// [`MERMAID_NODES`] members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<GroupGraph>,
}

/// Members drawn in the Markdown report (as a Mermaid flowchart).
pub const MERMAID_NODES: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub struct GroupGraph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    /// Members left out.
    pub omitted_nodes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphNode {
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphEdge {
    /// Indices into `nodes`.
    pub from: usize,
    pub to: usize,
    /// `strong` or `interior`.
    pub kind: &'static str,
    pub label: Option<String>,
}

/// How much each suppression matched.
#[derive(Debug, Clone, Serialize)]
pub struct SuppressionUse {
    pub line: usize,
    pub rule: String,
    pub groups: u64,
    pub bytes: u64,
}

/// A retainer and the shortest path that holds it.
#[derive(Debug, Clone, Serialize)]
pub struct HeldNode {
    pub node: NodeRef,
    /// What holds the first step: `global root`, …; empty when no path was found.
    pub start: String,
    pub path: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `heapsnap.check/1`.
    pub schema: &'static str,
    pub snapshot: String,
    pub baseline: Option<String>,
    pub pass: bool,
    /// Leak groups no suppression matched.
    pub leaked: Amount,
    /// Leak groups a suppression matched.
    pub suppressed: Amount,
    pub possibly: Amount,
    pub growth: Option<GrowthFigure>,
    pub budgets: Vec<BudgetResult>,
    /// Unsuppressed leak groups, most bytes first.
    pub groups: Vec<CheckGroup>,
    pub omitted_groups: usize,
    pub suppressions: Vec<SuppressionUse>,
    /// With a baseline: growth by allocation site, largest first.
    pub growth_by_site: Vec<GrowthRow>,
    pub omitted_sites: usize,
    /// With a baseline: what is new and retains most; without one: the top retainers.
    pub top_retainers: Vec<HeldNode>,
}

impl CheckReport {
    pub fn build(snap: Side<'_, '_>, baseline: Option<Side<'_, '_>>, options: &CheckOptions) -> CheckReport {
        let heap = snap.heap;
        let limit = options.limit;
        let rules = &options.suppressions.rules;
        let mut uses: Vec<SuppressionUse> =
            rules.iter().map(|r| SuppressionUse { line: r.line, rule: r.text.clone(), groups: 0, bytes: 0 }).collect();
        let (mut leaked, mut suppressed) = (Amount::default(), Amount::default());
        let mut kept = Vec::new();
        for group in &snap.analysis.leaks.groups {
            let objects = group.members.len() as u64;
            match options.suppressions.matching(heap, group.leader) {
                Some(rule) => {
                    uses[rule].groups += 1;
                    uses[rule].bytes += group.bytes;
                    suppressed.objects += objects;
                    suppressed.bytes += group.bytes;
                }
                None => {
                    leaked.objects += objects;
                    leaked.bytes += group.bytes;
                    kept.push(group);
                }
            }
        }
        let possibly = class_amount(snap, Class::Possibly);
        let omitted_groups = kept.len().saturating_sub(limit);
        let groups: Vec<CheckGroup> = kept.iter().take(limit).map(|gr| check_group(heap, gr)).collect();

        let mut budgets = Vec::new();
        if let Some((max, text)) = &options.max_leaked {
            let pass = leaked.bytes <= *max;
            let reason = match (pass, groups.first()) {
                (true, _) => format!("{} leaked, within the budget of {text}", size(leaked.bytes)),
                (false, Some(top)) => format!(
                    "{} leaked, over the budget of {text}; biggest offender: {} #{} ({}, {} objects) allocated at {}",
                    size(leaked.bytes),
                    top.leader_type,
                    top.leader,
                    size(top.bytes),
                    top.objects,
                    top.site
                ),
                (false, None) => format!("{} leaked, over the budget of {text}", size(leaked.bytes)),
            };
            budgets.push(BudgetResult {
                budget: "max-leaked",
                limit: text.clone(),
                limit_bytes: *max,
                actual_bytes: leaked.bytes.min(i64::MAX as u64) as i64,
                pass,
                reason,
            });
        }

        let mut growth = None;
        let (mut growth_by_site, mut omitted_sites) = (Vec::new(), 0);
        let top_retainers;
        if let Some(base) = baseline {
            let base_suppressed = suppressed_bytes(base, &options.suppressions);
            let live = |side: Side<'_, '_>, sup: u64| side.heap.graph.size.iter().sum::<u64>().saturating_sub(sup);
            let bytes = live(snap, suppressed.bytes) as i128 - live(base, base_suppressed) as i128;
            let bytes = bytes.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            let base_reachable = class_amount(base, Class::Reachable).bytes;
            let percent = (base_reachable > 0).then(|| bytes as f64 * 100.0 / base_reachable as f64);
            growth = Some(GrowthFigure { bytes, base_reachable, percent });
            let diff = DiffReport::build(base, snap, By::Auto, limit);
            if let Some((budget, text)) = &options.max_growth {
                let limit_bytes = match *budget {
                    Budget::Bytes(b) => b,
                    Budget::Percent(p) => (base_reachable as f64 * p / 100.0).floor() as u64,
                };
                let pass = bytes <= 0 || (bytes as u64) <= limit_bytes;
                let share =
                    percent.map(|p| format!(" ({p:+.2}% of the baseline's reachable bytes)")).unwrap_or_default();
                let mut reason = format!(
                    "grew {}{share}, {} the budget of {text}",
                    signed_size(bytes),
                    if pass { "within" } else { "over" }
                );
                if let (false, Some(top)) = (pass, diff.by_site.first()) {
                    write!(reason, "; biggest growth: {} at {}", signed_size(top.bytes), top.name).unwrap();
                }
                budgets.push(BudgetResult {
                    budget: "max-growth",
                    limit: text.clone(),
                    limit_bytes,
                    actual_bytes: bytes,
                    pass,
                    reason,
                });
            }
            growth_by_site = diff.by_site;
            omitted_sites = diff.omitted_sites;
            top_retainers = diff.new_retainers;
        } else {
            top_retainers =
                snap.analysis.retention.top(limit).into_iter().map(|v| NodeRef::of(heap, snap.analysis, v)).collect();
        }
        let tree = (!top_retainers.is_empty()).then(|| SearchTree::of(snap));
        let ids = crate::diff::Identities::of(heap);
        let top_retainers = top_retainers
            .into_iter()
            .map(|node| {
                let found = tree.as_ref().zip(ids.get(node.id)).and_then(|(t, v)| t.path(heap, v));
                let (start, path) = found.unwrap_or_default();
                HeldNode { node, start, path }
            })
            .collect();
        CheckReport {
            schema: "heapsnap.check/1",
            snapshot: heap.path.display().to_string(),
            baseline: baseline.map(|b| b.heap.path.display().to_string()),
            pass: budgets.iter().all(|b| b.pass),
            leaked,
            suppressed,
            possibly,
            growth,
            budgets,
            groups,
            omitted_groups,
            suppressions: uses,
            growth_by_site,
            omitted_sites,
            top_retainers,
        }
    }

    /// Suppressions that matched no leak group.
    pub fn unused_suppressions(&self) -> impl Iterator<Item = &SuppressionUse> {
        self.suppressions.iter().filter(|s| s.groups == 0)
    }

    /// The verdict: `PASS` or `FAIL`, leaked bytes, growth.
    pub fn verdict(&self) -> String {
        let mut line = format!(
            "{}: {} leaked in {} groups",
            if self.pass { "PASS" } else { "FAIL" },
            size(self.leaked.bytes),
            self.groups.len() + self.omitted_groups
        );
        if self.suppressed.objects > 0 {
            write!(line, " ({} suppressed)", size(self.suppressed.bytes)).unwrap();
        }
        if let Some(g) = self.growth {
            write!(line, "; growth {}", signed_size(g.bytes)).unwrap();
            if let Some(p) = g.percent {
                write!(line, " ({p:+.2}%)").unwrap();
            }
        }
        let failed: Vec<&str> = self.budgets.iter().filter(|b| !b.pass).map(|b| b.budget).collect();
        if !failed.is_empty() {
            write!(line, "; failed: {}", failed.join(", ")).unwrap();
        }
        line
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
                    g.site.clone(),
                ]
            })
            .collect()
    }

    fn retainers(&self) -> Vec<NodeRef> {
        self.top_retainers.iter().map(|h| h.node.clone()).collect()
    }

    fn retainer_title(&self) -> &'static str {
        if self.baseline.is_some() { "new retainers" } else { "top retainers" }
    }
}

const GROUP_HEADER: [&str; 6] = ["#", "bytes", "objects", "cycle", "leader", "site"];
const GROUP_RIGHT: [bool; 6] = [true, true, true, false, false, false];

fn class_amount(side: Side<'_, '_>, class: Class) -> Amount {
    let mut a = Amount::default();
    for (v, c) in side.analysis.reach.class.iter().enumerate() {
        if *c == class {
            a.add(side.heap.graph.size.get(v));
        }
    }
    a
}

fn suppressed_bytes(side: Side<'_, '_>, suppressions: &Suppressions) -> u64 {
    side.analysis
        .leaks
        .groups
        .iter()
        .filter(|gr| suppressions.matching(side.heap, gr.leader).is_some())
        .map(|gr| gr.bytes)
        .sum()
}

fn check_group(heap: &Heap<'_>, group: &crate::analysis::leaks::LeakGroup) -> CheckGroup {
    let g = &heap.graph;
    let leader = group.leader as usize;
    CheckGroup {
        leader: g.identity.get(leader),
        leader_type: heap.type_name(group.leader).into_owned(),
        objects: group.members.len() as u64,
        bytes: group.bytes,
        cycle: group.cycle,
        site: heap.site_name(g.stack[leader]),
        stack: heap.stack_names(g.stack[leader]),
        graph: group.cycle.then(|| group_graph(heap, &group.members)),
    }
}

/// The first [`MERMAID_NODES`] members (leader first, breadth first) and the retaining edges
/// between them, labelled.
fn group_graph(heap: &Heap<'_>, members: &[u32]) -> GroupGraph {
    let g = &heap.graph;
    let shown = &members[..members.len().min(MERMAID_NODES)];
    let index: HashMap<u32, usize> = shown.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let labels = heap.labels(shown);
    let mut edges = Vec::new();
    for (i, &v) in shown.iter().enumerate() {
        let mut seen = Vec::new();
        for (w, kind) in g.edges(v).filter(|&(_, k)| k != EdgeKind::Weak) {
            let Some(&j) = index.get(&w) else { continue };
            if seen.contains(&(j, kind)) {
                continue;
            }
            seen.push((j, kind));
            let label = labels.get(&(v, w, kind)).and_then(|&l| heap.label_name(l));
            edges.push(GraphEdge { from: i, to: j, kind: kind.name(), label });
        }
    }
    GroupGraph {
        nodes: shown
            .iter()
            .map(|&v| GraphNode { id: g.identity.get(v as usize), type_name: heap.type_name(v).into_owned() })
            .collect(),
        edges,
        omitted_nodes: members.len() - shown.len(),
    }
}

/// Text from a snapshot made safe inside a quoted Mermaid label (`id["…"]`): quotes, angle
/// brackets, ampersands, `#`, backticks and pipes become Mermaid's `#…;` entities, and line
/// breaks and other control characters become spaces, so a label can neither end its quotes,
/// inject HTML, start Markdown strings, nor close the code fence.
pub fn mermaid_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '`' => out.push_str("#96;"),
            '|' => out.push_str("#124;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A Mermaid flowchart of a group: one node a member, strong edges solid, interior dotted.
pub fn mermaid(graph: &GroupGraph) -> String {
    let mut out = String::from("```mermaid\nflowchart LR\n");
    for (i, n) in graph.nodes.iter().enumerate() {
        writeln!(out, "  n{i}[\"{} #35;{}\"]", mermaid_label(&n.type_name), n.id).unwrap();
    }
    for e in &graph.edges {
        let arrow = if e.kind == "interior" { "-.->" } else { "-->" };
        match &e.label {
            Some(label) => writeln!(out, "  n{} {arrow}|\"{}\"| n{}", e.from, mermaid_label(label), e.to).unwrap(),
            None => writeln!(out, "  n{} {arrow} n{}", e.from, e.to).unwrap(),
        }
    }
    if graph.omitted_nodes > 0 {
        writeln!(out, "  more[\"… and {} more members\"]", graph.omitted_nodes).unwrap();
    }
    out += "```\n";
    out
}

impl Report for CheckReport {
    fn text(&self) -> String {
        let mut out = format!("{}: {}\n", plain(&self.snapshot), plain(&self.verdict()));
        for b in &self.budgets {
            writeln!(out, "  {} {}: {}", if b.pass { "ok  " } else { "FAIL" }, b.budget, plain(&b.reason)).unwrap();
        }
        for s in self.unused_suppressions() {
            writeln!(out, "  unused suppression (line {}): {}", s.line, plain(&s.rule)).unwrap();
        }
        if !self.groups.is_empty() {
            out += "\nleak groups, largest first:\n";
            out += &table(&GROUP_HEADER, &GROUP_RIGHT, &self.group_rows());
            out += &omitted(self.omitted_groups, "groups");
        }
        if !self.growth_by_site.is_empty() {
            out += "\ngrowth by allocation site, largest first:\n";
            let identity = self.growth_by_site.iter().any(|r| r.born.is_some());
            let (header, right) = growth_header(identity);
            out += &table(&header, &right, &growth_rows(&self.growth_by_site));
            out += &omitted(self.omitted_sites, "sites");
        }
        if !self.top_retainers.is_empty() {
            writeln!(out, "\n{}, largest first:", self.retainer_title()).unwrap();
            out += &table(&RETAINER_HEADER, &RETAINER_RIGHT, &retainer_rows(&self.retainers()));
        }
        out
    }

    fn markdown(&self) -> String {
        let mark = if self.pass { "✅" } else { "❌" };
        let mut out = format!("{mark} **heapsnap check {}**\n\n", md(&self.verdict()));
        let mut about = format!("Snapshot {}", md(&self.snapshot));
        if let Some(base) = &self.baseline {
            write!(about, ", baseline {}", md(base)).unwrap();
        }
        out += &about;
        out += ".\n\n";
        if !self.budgets.is_empty() {
            let rows: Vec<Vec<String>> = self
                .budgets
                .iter()
                .map(|b| {
                    vec![
                        if b.pass { "pass" } else { "FAIL" }.to_string(),
                        b.budget.to_string(),
                        b.limit.clone(),
                        b.reason.clone(),
                    ]
                })
                .collect();
            out += &md_table(&["result", "budget", "limit", "why"], &[false; 4], &rows);
            out.push('\n');
        }
        let unused: Vec<&SuppressionUse> = self.unused_suppressions().collect();
        if !unused.is_empty() {
            out += "Suppressions that matched nothing:\n\n";
            for s in unused {
                writeln!(out, "- line {}: {}", s.line, md(&s.rule)).unwrap();
            }
            out.push('\n');
        }
        if !self.groups.is_empty() {
            out += "### Leak groups\n\n";
            out += &md_table(&GROUP_HEADER, &GROUP_RIGHT, &self.group_rows());
            out += &md_omitted(self.omitted_groups, "groups");
            for (i, g) in self.groups.iter().enumerate() {
                let mut items: Vec<String> = g.stack.clone();
                if items.is_empty() {
                    items.push("(no stack)".to_string());
                }
                let mut block = details(&format!("group {} allocation stack", i + 1), &items);
                block += &details(
                    &format!("group {} retainer path", i + 1),
                    &[format!(
                        "no root reaches it: {} #{} leads the group and nothing outside the group points to it",
                        g.leader_type, g.leader
                    )],
                );
                if let Some(graph) = &g.graph {
                    write!(
                        block,
                        "\n<details><summary>group {} cycle</summary>\n\n{}\n</details>\n",
                        i + 1,
                        mermaid(graph)
                    )
                    .unwrap();
                }
                out += &block;
            }
            out.push('\n');
        }
        if !self.growth_by_site.is_empty() {
            out += "### Growth by allocation site\n\n";
            let identity = self.growth_by_site.iter().any(|r| r.born.is_some());
            let (header, right) = growth_header(identity);
            out += &md_table(&header, &right, &growth_rows(&self.growth_by_site));
            out += &md_omitted(self.omitted_sites, "sites");
            out.push('\n');
        }
        if !self.top_retainers.is_empty() {
            let title = self.retainer_title();
            write!(out, "### {}{}\n\n", title[..1].to_uppercase(), &title[1..]).unwrap();
            out += &md_table(&RETAINER_HEADER, &RETAINER_RIGHT, &retainer_rows(&self.retainers()));
            for (i, h) in self.top_retainers.iter().enumerate().filter(|(_, h)| !h.path.is_empty()) {
                out += &details(&format!("retainer {} path from a root", i + 1), &path_lines(&h.start, &h.path));
            }
        }
        out
    }
}

fn growth_header(identity: bool) -> (Vec<&'static str>, Vec<bool>) {
    let mut header = vec!["Δ bytes", "Δ objects", "Δ retained", "bytes", "objects"];
    if identity {
        header.push("born");
    }
    header.push("site");
    let right = header.iter().map(|h| *h != "site").collect();
    (header, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_budgets() {
        assert_eq!(parse_size("1234"), Ok(1234));
        assert_eq!(parse_size("500kB"), Ok(500_000));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-5").is_err());
        assert_eq!(parse_budget("5%"), Ok(Budget::Percent(5.0)));
        assert_eq!(parse_budget("2MB"), Ok(Budget::Bytes(2_000_000)));
        assert!(parse_budget("x%").is_err());
    }

    #[test]
    fn mermaid_labels_cannot_escape() {
        let hostile = "a\"]\n```\n<script>x</script> | `b` #quot; &amp;";
        let label = mermaid_label(hostile);
        for bad in ["\"", "\n", "`", "<", ">", "|"] {
            assert!(!label.contains(bad), "{bad:?} survived in {label}");
        }
        // An entity written in the name stays text: its `#` is escaped first.
        assert!(label.contains("#35;quot;"));
    }
}
