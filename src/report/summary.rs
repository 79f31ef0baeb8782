//! `heapsnap summary`: what the snapshot holds, by type and by allocation site.

use std::collections::HashMap;

use serde::Serialize;

use super::{Amount, Report, md, md_omitted, md_table, omitted, size, table};
use crate::analysis::Analysis;
use crate::analysis::reach::Class;
use crate::heap::Heap;

#[derive(Debug, Clone, Serialize)]
pub struct SummaryReport {
    /// `heapsnap.summary/1`: the shape of this document, as `formats/json.md` specifies it.
    pub schema: &'static str,
    pub snapshot: String,
    /// The `capture` metadata: allocator, python, v8, synthetic.
    pub capture: String,
    pub producer: String,
    pub nodes: u64,
    pub edges: u64,
    pub roots: u64,
    pub totals: Amount,
    pub reachable: Amount,
    pub possibly: Amount,
    pub leaked: Amount,
    /// Shallow totals per type, most bytes first.
    pub by_type: Vec<KeyRow>,
    pub omitted_types: usize,
    /// Shallow totals per allocation site (innermost frame), most bytes first.
    pub by_site: Vec<KeyRow>,
    pub omitted_sites: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub name: String,
    pub objects: u64,
    pub bytes: u64,
}

impl SummaryReport {
    pub fn build(heap: &Heap<'_>, analysis: &Analysis, limit: usize) -> SummaryReport {
        let g = &heap.graph;
        let meta = |key| heap.snap.meta_value(key).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let (mut totals, mut reachable, mut possibly, mut leaked) = Default::default();
        let mut by_type: HashMap<u32, Amount> = HashMap::new();
        let mut by_stack: HashMap<u32, Amount> = HashMap::new();
        for v in 0..g.node_count() {
            let bytes = g.size.get(v);
            Amount::add(&mut totals, bytes);
            match analysis.reach.class[v] {
                Class::Reachable => Amount::add(&mut reachable, bytes),
                Class::Possibly => Amount::add(&mut possibly, bytes),
                Class::Leaked => Amount::add(&mut leaked, bytes),
            }
            by_type.entry(g.type_id[v]).or_default().add(bytes);
            by_stack.entry(g.stack[v]).or_default().add(bytes);
        }
        let type_name = |t: u32| String::from_utf8_lossy(heap.snap.type_name(t)).into_owned();
        let (by_type, omitted_types) = rows(by_type.into_iter().map(|(t, a)| (type_name(t), a)), limit);
        // Stacks that differ only in their callers share a site.
        let mut by_site: HashMap<String, Amount> = HashMap::new();
        for (stack, a) in by_stack {
            let site = by_site.entry(heap.site_name(stack)).or_default();
            site.objects += a.objects;
            site.bytes += a.bytes;
        }
        let (by_site, omitted_sites) = rows(by_site.into_iter(), limit);
        SummaryReport {
            schema: "heapsnap.summary/1",
            snapshot: heap.path.display().to_string(),
            capture: meta("capture"),
            producer: [meta("producer"), meta("producer.version")].join(" ").trim().to_string(),
            nodes: g.node_count() as u64,
            edges: g.edge_count() as u64,
            roots: g.roots().len() as u64,
            totals,
            reachable,
            possibly,
            leaked,
            by_type,
            omitted_types,
            by_site,
            omitted_sites,
        }
    }

    fn overview(&self) -> Vec<Vec<String>> {
        let mut rows = vec![
            vec!["capture".to_string(), format!("{} ({})", self.capture, self.producer)],
            vec!["nodes".to_string(), format!("{} ({})", self.nodes, size(self.totals.bytes))],
            vec!["edges".to_string(), self.edges.to_string()],
            vec!["roots".to_string(), self.roots.to_string()],
        ];
        for (what, a) in
            [("still reachable", self.reachable), ("possibly lost", self.possibly), ("leaked", self.leaked)]
        {
            rows.push(vec![what.to_string(), a.describe()]);
        }
        rows
    }
}

/// Rows sorted by bytes, cut at `limit`, and the number cut.
fn rows(totals: impl Iterator<Item = (String, Amount)>, limit: usize) -> (Vec<KeyRow>, usize) {
    let mut rows: Vec<KeyRow> = totals.map(|(name, a)| KeyRow { name, objects: a.objects, bytes: a.bytes }).collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(b.objects.cmp(&a.objects)).then(a.name.cmp(&b.name)));
    let cut = rows.len().saturating_sub(limit);
    rows.truncate(limit);
    (rows, cut)
}

fn key_rows(rows: &[KeyRow]) -> Vec<Vec<String>> {
    rows.iter().map(|r| vec![size(r.bytes), r.objects.to_string(), r.name.clone()]).collect()
}

impl Report for SummaryReport {
    fn text(&self) -> String {
        let mut out = format!("{}\n", super::plain(&self.snapshot));
        out += &table(&["", ""], &[false, false], &self.overview());
        out += "\nby type:\n";
        out += &table(&["bytes", "objects", "type"], &[true, true, false], &key_rows(&self.by_type));
        out += &omitted(self.omitted_types, "types");
        out += "\nby allocation site:\n";
        out += &table(&["bytes", "objects", "site"], &[true, true, false], &key_rows(&self.by_site));
        out += &omitted(self.omitted_sites, "sites");
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("**{}**\n\n", md(&self.snapshot));
        out += &md_table(&["", ""], &[false, false], &self.overview());
        out += "\n### By type\n\n";
        out += &md_table(&["bytes", "objects", "type"], &[true, true, false], &key_rows(&self.by_type));
        out += &md_omitted(self.omitted_types, "types");
        out += "\n### By allocation site\n\n";
        out += &md_table(&["bytes", "objects", "site"], &[true, true, false], &key_rows(&self.by_site));
        out += &md_omitted(self.omitted_sites, "sites");
        out
    }
}
