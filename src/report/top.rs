//! `heapsnap top`: what retains the most memory, by object, by type or by allocation site.

use std::collections::HashMap;

use serde::Serialize;

use super::{NodeRef, Report, md, md_omitted, md_table, omitted, size, table};
use crate::analysis::Analysis;
use crate::analysis::dominators::UNREACHED;
use crate::analysis::retained::KeyTotal;
use crate::heap::Heap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Object,
    Type,
    Site,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopReport {
    /// `heapsnap.top/1`: the shape of this document, as `formats/json.md` specifies it.
    pub schema: &'static str,
    pub snapshot: String,
    pub by: By,
    /// Bytes the roots keep alive in all (still reachable and possibly lost).
    pub held_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<NodeRef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<KeyRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sites: Option<Vec<KeyRow>>,
    /// Rows left out by the limit.
    pub omitted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub name: String,
    pub objects: u64,
    pub shallow: u64,
    /// Each dominator subtree counted once.
    pub retained: u64,
}

impl TopReport {
    pub fn build(heap: &Heap<'_>, analysis: &Analysis, by: By, limit: usize) -> TopReport {
        let g = &heap.graph;
        let r = &analysis.retention;
        let reached = |v: &usize| r.idom[*v] != UNREACHED;
        let mut report = TopReport {
            schema: "heapsnap.top/1",
            snapshot: heap.path.display().to_string(),
            by,
            held_bytes: (0..g.node_count()).filter(reached).map(|v| g.size.get(v)).sum(),
            objects: None,
            types: None,
            sites: None,
            omitted: 0,
        };
        match by {
            By::Object => {
                report.omitted = (0..g.node_count()).filter(reached).count().saturating_sub(limit);
                report.objects = Some(r.top(limit).into_iter().map(|v| NodeRef::of(heap, analysis, v)).collect());
            }
            By::Type => {
                let totals = r.by_key(g, &g.type_id);
                let name = |t: &KeyTotal| String::from_utf8_lossy(heap.snap.type_name(t.key)).into_owned();
                let (rows, cut) = key_rows(totals.iter().map(|t| (name(t), *t)), limit);
                report.types = Some(rows);
                report.omitted = cut;
            }
            By::Site => {
                // Stacks are the unit of the dominator walk; sites (innermost frames) merge
                // stacks, so a site's retained size is the sum over its stacks.
                let totals = r.by_key(g, &g.stack);
                let mut sites: HashMap<String, KeyTotal> = HashMap::new();
                for t in totals {
                    let s = sites.entry(heap.site_name(t.key)).or_default();
                    s.objects += t.objects;
                    s.shallow += t.shallow;
                    s.retained += t.retained;
                }
                let (rows, cut) = key_rows(sites.into_iter(), limit);
                report.sites = Some(rows);
                report.omitted = cut;
            }
        }
        report
    }

    fn header(&self) -> (&'static [&'static str], &'static [bool], Vec<Vec<String>>) {
        let key_cells = |rows: &[KeyRow]| -> Vec<Vec<String>> {
            rows.iter()
                .map(|k| vec![size(k.retained), size(k.shallow), k.objects.to_string(), k.name.clone()])
                .collect()
        };
        match (&self.objects, &self.types, &self.sites) {
            (Some(objects), _, _) => (
                &["retained", "shallow", "id", "type", "site"],
                &[true, true, true, false, false],
                objects
                    .iter()
                    .map(|o| {
                        vec![size(o.retained), size(o.shallow), o.id.to_string(), o.type_name.clone(), o.site.clone()]
                    })
                    .collect(),
            ),
            (_, Some(types), _) => {
                (&["retained", "shallow", "objects", "type"], &[true, true, true, false], key_cells(types))
            }
            (_, _, Some(sites)) => {
                (&["retained", "shallow", "objects", "site"], &[true, true, true, false], key_cells(sites))
            }
            _ => (&[], &[], Vec::new()),
        }
    }

    fn title(&self) -> String {
        let by = match self.by {
            By::Object => "objects",
            By::Type => "types",
            By::Site => "allocation sites",
        };
        format!("{by} by retained size ({} held by roots)", size(self.held_bytes))
    }
}

fn key_rows(totals: impl Iterator<Item = (String, KeyTotal)>, limit: usize) -> (Vec<KeyRow>, usize) {
    let mut rows: Vec<KeyRow> =
        totals.map(|(name, t)| KeyRow { name, objects: t.objects, shallow: t.shallow, retained: t.retained }).collect();
    rows.sort_by(|a, b| b.retained.cmp(&a.retained).then(b.shallow.cmp(&a.shallow)).then(a.name.cmp(&b.name)));
    let cut = rows.len().saturating_sub(limit);
    rows.truncate(limit);
    (rows, cut)
}

impl Report for TopReport {
    fn text(&self) -> String {
        let (header, right, rows) = self.header();
        let mut out = format!("{}: {}\n", super::plain(&self.snapshot), self.title());
        out += &table(header, right, &rows);
        out += &omitted(self.omitted, "rows");
        out
    }

    fn markdown(&self) -> String {
        let (header, right, rows) = self.header();
        let mut out = format!("**{}**: {}\n\n", md(&self.snapshot), self.title());
        out += &md_table(header, right, &rows);
        out += &md_omitted(self.omitted, "rows");
        out
    }
}
