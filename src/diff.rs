//! Comparing snapshots: what grew between two, and memlab's three-snapshot rule for leak
//! candidates.
//!
//! Two snapshots of one process are matched by node identity (the allocator's serial number, V8's
//! node id): a node of NEW whose identity BASE lacks was *born* after BASE, a node of BASE whose
//! identity NEW lacks was *freed*. Snapshots of different runs share no identities and no
//! addresses, so they are compared by stable keys only: type name and allocation site (the
//! symbolized innermost frame). Everything that reaches a report is sorted with a total order, so
//! the same inputs give the same bytes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};

use hsnap::{EdgeKind, Label};
use serde::Serialize;

use crate::analysis::Analysis;
use crate::analysis::dominators::{UNREACHED, VIRTUAL_ROOT};
use crate::heap::Heap;
use crate::report::leaks::Tally;
use crate::report::{Amount, NodeRef};

/// How to match the nodes of two snapshots (`--by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// Identity when the snapshots are of one process, keys otherwise.
    Auto,
    /// By node identity: the snapshots are of one process.
    Identity,
    /// By type and allocation site: the snapshots are of different runs.
    Key,
}

/// How the nodes were matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matching {
    Identity,
    Key,
}

/// A snapshot and its analysis.
#[derive(Clone, Copy)]
pub struct Side<'h, 'a> {
    pub heap: &'h Heap<'a>,
    pub analysis: &'h Analysis,
}

/// Node identities of one snapshot, sorted, for lookups in `O(log n)` with 12 bytes a node. A
/// repeated identity maps to its first node.
pub struct Identities {
    pairs: Vec<(u64, u32)>,
}

impl Identities {
    pub fn of(heap: &Heap<'_>) -> Identities {
        let mut pairs: Vec<(u64, u32)> = heap.graph.identity.iter().enumerate().map(|(v, id)| (id, v as u32)).collect();
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);
        Identities { pairs }
    }

    pub fn get(&self, id: u64) -> Option<u32> {
        self.pairs.binary_search_by_key(&id, |p| p.0).ok().map(|i| self.pairs[i].1)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }
}

/// Share of the smaller snapshot's nodes whose identity the other holds with the same type name,
/// above which two snapshots without process metadata are taken for one process.
pub const SAME_PROCESS_OVERLAP: f64 = 0.5;

/// Decides how to match `base` and `new`, and says why.
///
/// `--by identity|key` decides. Otherwise: when both snapshots carry `process.id` and `capture`
/// metadata, they are of one process exactly when both are equal. When either lacks them, they
/// are taken for one process when at least half of the smaller snapshot's nodes have an identity
/// that the other holds on a node of the same type name.
pub fn decide(base: &Heap<'_>, new: &Heap<'_>, base_ids: &Identities, by: By) -> (Matching, String) {
    match by {
        By::Identity => return (Matching::Identity, "forced by --by identity".into()),
        By::Key => return (Matching::Key, "forced by --by key".into()),
        By::Auto => {}
    }
    let meta = |h: &Heap<'_>, k: &str| h.snap.meta_value(k).map(|v| String::from_utf8_lossy(v).into_owned());
    let (bp, np) = (meta(base, "process.id"), meta(new, "process.id"));
    let (bc, nc) = (meta(base, "capture"), meta(new, "capture"));
    if let (Some(bp), Some(np), Some(bc), Some(nc)) = (&bp, &np, &bc, &nc) {
        return if bp == np && bc == nc {
            (Matching::Identity, format!("same process: process.id {bp}, capture {bc}"))
        } else {
            (Matching::Key, format!("different processes: process.id {bp} and {np}, capture {bc} and {nc}"))
        };
    }
    let smaller = base.graph.node_count().min(new.graph.node_count());
    let shared = (0..new.graph.node_count() as u32)
        .filter(|&v| {
            base_ids.get(new.graph.identity.get(v as usize)).is_some_and(|b| {
                base.snap.type_name(base.graph.type_id[b as usize]) == new.snap.type_name(new.graph.type_id[v as usize])
            })
        })
        .count();
    let share = if smaller == 0 { 0.0 } else { shared as f64 / smaller as f64 };
    let percent = (share * 100.0).round();
    if smaller > 0 && share >= SAME_PROCESS_OVERLAP {
        (Matching::Identity, format!("no process metadata; {percent}% of identities match with their type"))
    } else {
        (Matching::Key, format!("no process metadata; only {percent}% of identities match with their type"))
    }
}

/// Objects, shallow bytes and retained bytes of one key in one snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub objects: u64,
    pub bytes: u64,
    /// Retained bytes of the key's reachable nodes, each dominator subtree counted once.
    pub retained: u64,
}

/// One type or allocation site in both snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrowthRow {
    pub name: String,
    pub base: Totals,
    pub new: Totals,
    /// `new - base`, for objects, shallow bytes and retained bytes.
    pub objects: i64,
    pub bytes: i64,
    pub retained: i64,
    /// With identity matching: the key's nodes of NEW that BASE did not hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub born: Option<Amount>,
}

fn delta(new: u64, base: u64) -> i64 {
    (new as i128 - base as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Totals by a name for every node: `name_of(v)` gives a small key (type or stack id), `names`
/// turns keys into names (several keys may share one), `retained` comes per key.
fn key_totals(
    side: Side<'_, '_>,
    key: &[u32],
    name: impl Fn(u32) -> String,
    born: Option<&[bool]>,
) -> BTreeMap<String, (Totals, Amount)> {
    let g = &side.heap.graph;
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut out: BTreeMap<String, (Totals, Amount)> = BTreeMap::new();
    let mut slot = |k: u32, out: &mut BTreeMap<String, (Totals, Amount)>| -> String {
        let n = names.entry(k).or_insert_with(|| name(k)).clone();
        out.entry(n.clone()).or_default();
        n
    };
    for v in 0..g.node_count() {
        let n = slot(key[v], &mut out);
        let entry = out.get_mut(&n).expect("inserted");
        entry.0.objects += 1;
        entry.0.bytes += g.size.get(v);
        if born.is_some_and(|b| b[v]) {
            entry.1.add(g.size.get(v));
        }
    }
    for t in side.analysis.retention.by_key(g, key) {
        let n = slot(t.key, &mut out);
        out.get_mut(&n).expect("inserted").0.retained += t.retained;
    }
    out
}

/// Rows of keys that changed, largest byte growth first (then retained growth, object growth,
/// name), cut at `limit`; returns the rows and how many were cut.
fn growth_rows(
    base: BTreeMap<String, (Totals, Amount)>,
    new: BTreeMap<String, (Totals, Amount)>,
    identity: bool,
    limit: usize,
) -> (Vec<GrowthRow>, usize) {
    let mut names: Vec<&String> = base.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    let mut rows: Vec<GrowthRow> = names
        .into_iter()
        .map(|name| {
            let (b, _) = base.get(name).copied().unwrap_or_default();
            let (n, born) = new.get(name).copied().unwrap_or_default();
            GrowthRow {
                name: name.clone(),
                base: b,
                new: n,
                objects: delta(n.objects, b.objects),
                bytes: delta(n.bytes, b.bytes),
                retained: delta(n.retained, b.retained),
                born: identity.then_some(born),
            }
        })
        .filter(|r| r.objects != 0 || r.bytes != 0 || r.retained != 0 || r.born.is_some_and(|b| b.objects > 0))
        .collect();
    rows.sort_by(|a, b| {
        (Reverse(a.bytes), Reverse(a.retained), Reverse(a.objects), &a.name).cmp(&(
            Reverse(b.bytes),
            Reverse(b.retained),
            Reverse(b.objects),
            &b.name,
        ))
    });
    let cut = rows.len().saturating_sub(limit);
    rows.truncate(limit);
    (rows, cut)
}

/// Leak groups of one kind: the same leader type, allocation site and cycle flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupGrowth {
    /// `new` (no such group in BASE) or `grew`.
    pub status: &'static str,
    pub leader_type: String,
    pub site: String,
    pub cycle: bool,
    pub base: GroupTotals,
    pub new: GroupTotals,
    /// `new.bytes - base.bytes`.
    pub bytes: i64,
    /// The leader of NEW's largest group of this kind.
    pub example_leader: u64,
    /// Its allocation stack, innermost frame first.
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupTotals {
    pub groups: u64,
    pub objects: u64,
    pub bytes: u64,
}

type GroupKey = (String, String, bool);

fn group_kinds(side: Side<'_, '_>) -> BTreeMap<GroupKey, (GroupTotals, u32)> {
    let g = &side.heap.graph;
    let mut out: BTreeMap<GroupKey, (GroupTotals, u32)> = BTreeMap::new();
    // Groups come largest first, so the first of a kind is its largest.
    for group in &side.analysis.leaks.groups {
        let key = (
            side.heap.type_name(group.leader).into_owned(),
            side.heap.site_name(g.stack[group.leader as usize]),
            group.cycle,
        );
        let entry = out.entry(key).or_insert((GroupTotals::default(), group.leader));
        entry.0.groups += 1;
        entry.0.objects += group.members.len() as u64;
        entry.0.bytes += group.bytes;
    }
    out
}

/// Kinds of leak groups that NEW has and BASE had not, or has more bytes of; most growth first.
fn group_growth(base: Side<'_, '_>, new: Side<'_, '_>, limit: usize) -> (Vec<GroupGrowth>, usize) {
    let before = group_kinds(base);
    let mut rows: Vec<GroupGrowth> = group_kinds(new)
        .into_iter()
        .filter_map(|(key, (n, leader))| {
            let b = before.get(&key).map(|e| e.0).unwrap_or_default();
            (n.bytes > b.bytes || n.groups > b.groups).then(|| GroupGrowth {
                status: if b.groups == 0 { "new" } else { "grew" },
                leader_type: key.0,
                site: key.1,
                cycle: key.2,
                base: b,
                new: n,
                bytes: delta(n.bytes, b.bytes),
                example_leader: new.heap.graph.identity.get(leader as usize),
                stack: new.heap.stack_names(new.heap.graph.stack[leader as usize]),
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (Reverse(a.bytes), Reverse(a.new.objects), &a.leader_type, &a.site, a.cycle).cmp(&(
            Reverse(b.bytes),
            Reverse(b.new.objects),
            &b.leader_type,
            &b.site,
            b.cycle,
        ))
    });
    let cut = rows.len().saturating_sub(limit);
    rows.truncate(limit);
    (rows, cut)
}

/// Nodes born, freed and kept between two snapshots of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Lifetimes {
    /// In NEW, not in BASE.
    pub born: Amount,
    /// In BASE, not in NEW.
    pub freed: Amount,
    /// In both (NEW's sizes).
    pub kept: Amount,
}

/// `heapsnap diff BASE NEW`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// `heapsnap.diff/1`.
    pub schema: &'static str,
    pub base: String,
    pub new: String,
    pub matching: Matching,
    /// Why the snapshots were matched so.
    pub matching_reason: String,
    pub base_totals: Amount,
    pub new_totals: Amount,
    /// `new_totals - base_totals`.
    pub growth: Growth,
    /// Bytes the roots keep alive (still reachable and possibly lost) in BASE and NEW.
    pub base_held: u64,
    pub new_held: u64,
    /// With identity matching only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetimes: Option<Lifetimes>,
    pub by_type: Vec<GrowthRow>,
    pub omitted_types: usize,
    pub by_site: Vec<GrowthRow>,
    pub omitted_sites: usize,
    pub leak_groups: Vec<GroupGrowth>,
    pub omitted_leak_groups: usize,
    pub new_retainers: Vec<NodeRef>,
    pub omitted_retainers: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Growth {
    pub objects: i64,
    pub bytes: i64,
}

fn totals(heap: &Heap<'_>) -> Amount {
    Amount { objects: heap.graph.node_count() as u64, bytes: heap.graph.size.iter().sum() }
}

fn held(side: Side<'_, '_>) -> u64 {
    let r = &side.analysis.retention;
    (0..side.heap.graph.node_count()).filter(|&v| r.idom[v] != UNREACHED).map(|v| side.heap.graph.size.get(v)).sum()
}

impl DiffReport {
    pub fn build(base: Side<'_, '_>, new: Side<'_, '_>, by: By, limit: usize) -> DiffReport {
        let base_ids = Identities::of(base.heap);
        let (matching, matching_reason) = decide(base.heap, new.heap, &base_ids, by);
        let (bg, ng) = (&base.heap.graph, &new.heap.graph);
        let (base_totals, new_totals) = (totals(base.heap), totals(new.heap));
        let mut lifetimes = None;
        let born: Option<Vec<bool>> = (matching == Matching::Identity).then(|| {
            let mut life = Lifetimes::default();
            let mut born = vec![false; ng.node_count()];
            for (v, b) in born.iter_mut().enumerate() {
                if base_ids.contains(ng.identity.get(v)) {
                    life.kept.add(ng.size.get(v));
                } else {
                    *b = true;
                    life.born.add(ng.size.get(v));
                }
            }
            let new_ids = Identities::of(new.heap);
            for v in 0..bg.node_count() {
                if !new_ids.contains(bg.identity.get(v)) {
                    life.freed.add(bg.size.get(v));
                }
            }
            lifetimes = Some(life);
            born
        });
        let identity = matching == Matching::Identity;
        let (by_type, omitted_types) = growth_rows(
            key_totals(base, &bg.type_id, |t| lossy(base.heap.snap.type_name(t)), None),
            key_totals(new, &ng.type_id, |t| lossy(new.heap.snap.type_name(t)), born.as_deref()),
            identity,
            limit,
        );
        let (by_site, omitted_sites) = growth_rows(
            key_totals(base, &bg.stack, |s| base.heap.site_name(s), None),
            key_totals(new, &ng.stack, |s| new.heap.site_name(s), born.as_deref()),
            identity,
            limit,
        );
        let (leak_groups, omitted_leak_groups) = group_growth(base, new, limit);
        let fresh = match &born {
            Some(born) => born.clone(),
            None => grown_keys(base, new),
        };
        let (new_retainers, omitted_retainers) = outermost_retainers(new, &fresh, limit);
        DiffReport {
            schema: "heapsnap.diff/1",
            base: base.heap.path.display().to_string(),
            new: new.heap.path.display().to_string(),
            matching,
            matching_reason,
            base_totals,
            new_totals,
            growth: Growth {
                objects: delta(new_totals.objects, base_totals.objects),
                bytes: delta(new_totals.bytes, base_totals.bytes),
            },
            base_held: held(base),
            new_held: held(new),
            lifetimes,
            by_type,
            omitted_types,
            by_site,
            omitted_sites,
            leak_groups,
            omitted_leak_groups,
            new_retainers,
            omitted_retainers,
        }
    }
}

/// Without identities: the nodes of NEW whose (type, site) key has more objects than in BASE.
fn grown_keys(base: Side<'_, '_>, new: Side<'_, '_>) -> Vec<bool> {
    let key_counts = |side: Side<'_, '_>| {
        let g = &side.heap.graph;
        let mut by_ids: HashMap<(u32, u32), u64> = HashMap::new();
        for v in 0..g.node_count() {
            *by_ids.entry((g.type_id[v], g.stack[v])).or_default() += 1;
        }
        let mut by_name: HashMap<(String, String), u64> = HashMap::new();
        let mut names: HashMap<(u32, u32), (String, String)> = HashMap::new();
        for ((t, s), count) in by_ids {
            let name = (String::from_utf8_lossy(side.heap.snap.type_name(t)).into_owned(), side.heap.site_name(s));
            *by_name.entry(name.clone()).or_default() += count;
            names.insert((t, s), name);
        }
        (by_name, names)
    };
    let (before, _) = key_counts(base);
    let (after, names) = key_counts(new);
    let grew: HashMap<(u32, u32), bool> = names
        .into_iter()
        .map(|(ids, name)| {
            let grew = after.get(&name).copied().unwrap_or(0) > before.get(&name).copied().unwrap_or(0);
            (ids, grew)
        })
        .collect();
    let g = &new.heap.graph;
    (0..g.node_count()).map(|v| grew.get(&(g.type_id[v], g.stack[v])).copied().unwrap_or(false)).collect()
}

/// The marked reachable nodes whose immediate dominator is not marked: the tops of what is new,
/// by retained size, largest first, ties by identity.
fn outermost_retainers(side: Side<'_, '_>, marked: &[bool], limit: usize) -> (Vec<NodeRef>, usize) {
    let r = &side.analysis.retention;
    let g = &side.heap.graph;
    let mut nodes: Vec<u32> = (0..g.node_count() as u32)
        .filter(|&v| {
            let d = r.idom[v as usize];
            marked[v as usize]
                && d != UNREACHED
                && (d == VIRTUAL_ROOT || !marked.get(d as usize).copied().unwrap_or(false))
        })
        .collect();
    let order = |&v: &u32| (Reverse(r.retained[v as usize]), g.identity.get(v as usize), v);
    let cut = nodes.len().saturating_sub(limit);
    if nodes.len() > limit {
        nodes.select_nth_unstable_by_key(limit, order);
        nodes.truncate(limit);
    }
    nodes.sort_unstable_by_key(order);
    (nodes.into_iter().map(|v| NodeRef::of(side.heap, side.analysis, v)).collect(), cut)
}

// ---------------------------------------------------------------------------------------------
// Three snapshots: memlab's rule.

/// One step of a retainer path: a node, and the edge from the previous step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    /// The edge's field name, `[index]` or `+0xoffset`; null for the first step or no label.
    pub label: Option<String>,
}

/// Candidates grouped by allocation site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteGroup {
    pub site: String,
    pub objects: u64,
    pub bytes: u64,
    /// Member types, most bytes first: `{"name", "objects", "bytes"}`.
    pub types: Vec<Tally>,
}

/// Candidates grouped by the shape of the path that retains them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathGroup {
    /// What holds the path: `global root`, …, or `leak leader` for candidates no root reaches.
    pub start: String,
    /// The path's shape from the start to the group's outermost candidates: the start's type,
    /// then `.label → type` per step (`[] → type` for any index, `+0xoffset → type` for an
    /// offset). A run of equal steps is written once, so a list of any length is one shape.
    pub signature: Vec<String>,
    pub objects: u64,
    pub bytes: u64,
    /// One shortest path from the start to a candidate of the group (the first one found).
    pub example: Vec<Step>,
}

/// `heapsnap diff BASE TARGET FINAL`.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateReport {
    /// `heapsnap.candidates/1`.
    pub schema: &'static str,
    pub base: String,
    pub target: String,
    #[serde(rename = "final")]
    pub final_: String,
    /// Nodes of FINAL whose identity TARGET holds and BASE does not.
    pub candidates: Amount,
    pub by_site: Vec<SiteGroup>,
    pub omitted_sites: usize,
    pub by_path: Vec<PathGroup>,
    pub omitted_paths: usize,
}

const NONE: u32 = u32::MAX;

impl CandidateReport {
    pub fn build(base: &Heap<'_>, target: &Heap<'_>, last: Side<'_, '_>, limit: usize) -> CandidateReport {
        let (base_ids, target_ids) = (Identities::of(base), Identities::of(target));
        let heap = last.heap;
        let g = &heap.graph;
        let n = g.node_count();
        let candidate: Vec<bool> =
            g.identity.iter().map(|id| target_ids.contains(id) && !base_ids.contains(id)).collect();
        let mut total = Amount::default();
        let mut sites: HashMap<u32, Vec<u32>> = HashMap::new();
        for v in (0..n).filter(|&v| candidate[v]) {
            total.add(g.size.get(v));
            sites.entry(g.stack[v]).or_default().push(v as u32);
        }
        let mut by_site: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (stack, nodes) in sites {
            by_site.entry(heap.site_name(stack)).or_default().extend(nodes);
        }
        let mut by_site: Vec<SiteGroup> = by_site
            .into_iter()
            .map(|(site, nodes)| SiteGroup {
                site,
                objects: nodes.len() as u64,
                bytes: nodes.iter().map(|&v| g.size.get(v as usize)).sum(),
                types: type_tally(heap, &nodes),
            })
            .collect();
        by_site.sort_by(|a, b| {
            (Reverse(a.bytes), Reverse(a.objects), &a.site).cmp(&(Reverse(b.bytes), Reverse(b.objects), &b.site))
        });
        let omitted_sites = by_site.len().saturating_sub(limit);
        by_site.truncate(limit);
        let (by_path, omitted_paths) = path_groups(last, &candidate, limit);
        CandidateReport {
            schema: "heapsnap.candidates/1",
            base: base.path.display().to_string(),
            target: target.path.display().to_string(),
            final_: heap.path.display().to_string(),
            candidates: total,
            by_site,
            omitted_sites,
            by_path,
            omitted_paths,
        }
    }
}

/// A label as path shapes compare it: indices are all alike.
fn label_key(label: Label) -> u64 {
    match label {
        Label::None => 0,
        Label::Name(s) => 1 | (s as u64) << 2,
        Label::Index(_) => 2,
        Label::Offset(o) => 3 | o << 2,
    }
}

/// Groups candidates by the shape of their shortest retainer path, in linear time.
///
/// One breadth-first search over retaining edges from every root (then from every leak leader,
/// for what no root reaches) gives each node a parent on a shortest path. A candidate whose parent
/// is a candidate belongs to its parent's group; the others (the outermost) each start a group of
/// their path's shape. Shapes are interned step by step along the tree, so no path is walked
/// twice, and a step equal to the one before it adds nothing (a list of any length is one shape).
fn path_groups(side: Side<'_, '_>, candidate: &[bool], limit: usize) -> (Vec<PathGroup>, usize) {
    let heap = side.heap;
    let g = &heap.graph;
    let n = g.node_count();
    if !candidate.iter().any(|&c| c) {
        return (Vec::new(), 0);
    }
    let SearchTree { parent, start, order, starts, label } = SearchTree::of(side);

    let mut shapes: Vec<ShapeStep> = Vec::new();
    let mut interned: HashMap<(u32, u32, u32, u64), u32> = HashMap::new();
    let mut shape = vec![NONE; n];
    let mut group_of = vec![NONE; n];
    let mut group_index: HashMap<u32, u32> = HashMap::new();
    let mut groups: Vec<(u32, u32, Amount)> = Vec::new(); // (shape, first candidate, amount)
    for &v in &order {
        let vu = v as usize;
        let p = parent[vu];
        let is_start = p == v;
        let (up, step) = if is_start {
            (NONE, (g.type_id[vu], 0))
        } else {
            (shape[p as usize], (g.type_id[vu], label_key(label[vu])))
        };
        let repeats =
            !is_start && shapes.get(up as usize).is_some_and(|s| s.up != NONE && (s.type_id, s.label) == step);
        shape[vu] = if repeats {
            up
        } else {
            *interned.entry((up, start[vu], step.0, step.1)).or_insert_with(|| {
                shapes.push(ShapeStep { up, start: start[vu], type_id: step.0, label: step.1 });
                shapes.len() as u32 - 1
            })
        };
        if !candidate[vu] {
            continue;
        }
        let group = if !is_start && group_of[p as usize] != NONE {
            group_of[p as usize]
        } else {
            *group_index.entry(shape[vu]).or_insert_with(|| {
                groups.push((shape[vu], v, Amount::default()));
                groups.len() as u32 - 1
            })
        };
        group_of[vu] = group;
        groups[group as usize].2.add(g.size.get(vu));
    }
    // Largest first; ties by the first candidate found, which the search order fixes.
    groups.sort_by_key(|&(_, first, a)| (Reverse(a.bytes), Reverse(a.objects), g.identity.get(first as usize), first));
    let cut = groups.len().saturating_sub(limit);
    groups.truncate(limit);
    let groups = groups
        .into_iter()
        .map(|(s, first, a)| {
            let (start_name, signature) = describe(heap, &shapes, &starts, s);
            PathGroup {
                start: start_name,
                signature,
                objects: a.objects,
                bytes: a.bytes,
                example: example_path(heap, first, &parent, &label),
            }
        })
        .collect();
    (groups, cut)
}

/// Shortest paths over retaining edges from every root, then from every leak leader for what no
/// root reaches: one breadth-first search, linear in the graph.
pub struct SearchTree {
    /// Each reached node's predecessor on a shortest path; a start is its own parent; `NONE` for
    /// nodes never reached.
    pub parent: Vec<u32>,
    /// Each reached node's start, an index into `starts`.
    pub start: Vec<u32>,
    /// Reached nodes in search order: every parent before its children.
    pub order: Vec<u32>,
    /// What the starts are: `global root`, …, `leak leader`.
    pub starts: Vec<String>,
    /// The label of the edge from each node's parent.
    pub label: Vec<Label>,
}

impl SearchTree {
    pub fn of(side: Side<'_, '_>) -> SearchTree {
        let heap = side.heap;
        let g = &heap.graph;
        let n = g.node_count();
        let mut parent = vec![NONE; n];
        let mut start = vec![NONE; n]; // index into `starts` of each reached node's start
        let mut order: Vec<u32> = Vec::with_capacity(n);
        let mut starts: Vec<String> = Vec::new();
        // Roots by node, the first root of a node naming its start.
        let mut root_kind: BTreeMap<u32, String> = BTreeMap::new();
        for root in g.roots() {
            root_kind.entry(root.node).or_insert_with(|| format!("{} root", root.kind.name()));
        }
        let mut leaders: Vec<u32> = side.analysis.leaks.groups.iter().map(|gr| gr.leader).collect();
        leaders.sort_unstable();
        let seeds = root_kind.into_iter().chain(leaders.into_iter().map(|v| (v, "leak leader".to_string())));
        let mut queue = VecDeque::new();
        // Roots first, then leak leaders: each search runs to its end before the next seed kind, so
        // a node some root reaches never hangs off a leader.
        let mut seeds = seeds.peekable();
        while seeds.peek().is_some() {
            let leader_seeds = seeds.peek().is_some_and(|(_, k)| k == "leak leader");
            while let Some((v, kind)) = seeds.next_if(|(_, k)| (k == "leak leader") == leader_seeds) {
                if (v as usize) >= n || parent[v as usize] != NONE {
                    continue;
                }
                let s = starts.iter().position(|k| *k == kind).unwrap_or_else(|| {
                    starts.push(kind);
                    starts.len() - 1
                });
                parent[v as usize] = v;
                start[v as usize] = s as u32;
                queue.push_back(v);
            }
            while let Some(v) = queue.pop_front() {
                order.push(v);
                for &w in g.retaining(v) {
                    if parent[w as usize] == NONE {
                        parent[w as usize] = v;
                        start[w as usize] = start[v as usize];
                        queue.push_back(w);
                    }
                }
            }
        }

        // The label of each tree edge, from one pass over the edge records.
        let mut label = vec![Label::None; n];
        let mut labelled = vec![false; n];
        let _ = heap.snap.edges().visit(|from, edge| {
            let to = edge.to as usize;
            if to < n && edge.kind != EdgeKind::Weak && parent[to] == from && from != edge.to && !labelled[to] {
                labelled[to] = true;
                label[to] = edge.label;
            }
        });

        SearchTree { parent, start, order, starts, label }
    }

    /// The path from the start to `v`, or `None` when `v` was not reached.
    pub fn path(&self, heap: &Heap<'_>, v: u32) -> Option<(String, Vec<Step>)> {
        let s = *self.start.get(v as usize)?;
        if s == NONE {
            return None;
        }
        Some((
            self.starts.get(s as usize).cloned().unwrap_or_default(),
            example_path(heap, v, &self.parent, &self.label),
        ))
    }
}

/// One step of an interned path shape.
struct ShapeStep {
    /// The shape this step extends, `NONE` for the start.
    up: u32,
    start: u32,
    type_id: u32,
    label: u64,
}

/// A shape as its start's name and its steps, `label type`, from the start on.
fn describe(heap: &Heap<'_>, shapes: &[ShapeStep], starts: &[String], shape: u32) -> (String, Vec<String>) {
    let mut steps = Vec::new();
    let mut at = shape;
    let mut start_name = String::new();
    while let Some(s) = shapes.get(at as usize) {
        let type_name = String::from_utf8_lossy(heap.snap.type_name(s.type_id));
        let label = match s.label & 3 {
            _ if s.up == NONE => String::new(),
            0 => "→ ".to_string(),
            1 => format!(".{} → ", heap.string((s.label >> 2) as u32)),
            2 => "[] → ".to_string(),
            _ => format!("+{:#x} → ", s.label >> 2),
        };
        steps.push(format!("{label}{type_name}"));
        if s.up == NONE {
            start_name = starts.get(s.start as usize).cloned().unwrap_or_default();
            break;
        }
        at = s.up;
    }
    steps.reverse();
    (start_name, steps)
}

/// The path from the start to `v` along the search tree, with each edge's label.
fn example_path(heap: &Heap<'_>, v: u32, parent: &[u32], label: &[Label]) -> Vec<Step> {
    let g = &heap.graph;
    let mut path = Vec::new();
    let mut at = v;
    loop {
        let p = parent[at as usize];
        let first = p == at || p == NONE;
        path.push(Step {
            id: g.identity.get(at as usize),
            type_name: heap.type_name(at).into_owned(),
            label: if first { None } else { heap.label_name(label[at as usize]) },
        });
        if first {
            break;
        }
        at = p;
    }
    path.reverse();
    path
}

/// Objects and bytes of `nodes` per type name, most bytes first.
fn type_tally(heap: &Heap<'_>, nodes: &[u32]) -> Vec<Tally> {
    let mut by_name: BTreeMap<String, Amount> = BTreeMap::new();
    for &v in nodes {
        by_name.entry(heap.type_name(v).into_owned()).or_default().add(heap.graph.size.get(v as usize));
    }
    let mut rows: Vec<Tally> =
        by_name.into_iter().map(|(name, a)| Tally { name, objects: a.objects, bytes: a.bytes }).collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.objects.cmp(&a.objects)).then(a.name.cmp(&b.name)));
    rows
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
