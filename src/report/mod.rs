//! Reports: each is a plain struct built from a heap and its analysis by a library call, rendered
//! as aligned text, Markdown or JSON (the JSON shapes are specified in `formats/json.md`), plus
//! Graphviz for pictures. Every name that came from a snapshot is escaped for where it goes.

pub mod check;
pub mod diff;
pub mod dot;
pub mod leaks;
pub mod path;
pub mod summary;
pub mod top;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use serde::Serialize;

use crate::analysis::Analysis;
use crate::heap::Heap;

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

/// A report that can be written in each [`Format`].
pub trait Report: Serialize {
    fn text(&self) -> String;
    fn markdown(&self) -> String;

    fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Markdown => self.markdown(),
            Format::Json => serde_json::to_string_pretty(self).expect("reports serialize") + "\n",
        }
    }
}

/// A node as reports describe it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRef {
    /// The node's identity.
    pub id: u64,
    #[serde(rename = "type")]
    pub type_name: String,
    pub address: u64,
    pub shallow: u64,
    pub retained: u64,
    /// Its allocation site: the innermost frame of its stack.
    pub site: String,
}

impl NodeRef {
    pub fn of(heap: &Heap<'_>, analysis: &Analysis, v: u32) -> NodeRef {
        let g = &heap.graph;
        NodeRef {
            id: g.identity.get(v as usize),
            type_name: heap.type_name(v).into_owned(),
            address: g.address.get(v as usize),
            shallow: g.size.get(v as usize),
            retained: analysis.retention.retained[v as usize],
            site: heap.site_name(g.stack[v as usize]),
        }
    }
}

/// A number of objects and the bytes they take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub objects: u64,
    pub bytes: u64,
}

impl Amount {
    pub fn add(&mut self, bytes: u64) {
        self.objects += 1;
        self.bytes += bytes;
    }

    /// "1.5 KiB in 12 objects"
    pub fn describe(&self) -> String {
        let noun = if self.objects == 1 { "object" } else { "objects" };
        format!("{} in {} {noun}", size(self.bytes), self.objects)
    }
}

/// Bytes for people: `512 B`, `1.50 KiB`.
pub fn size(bytes: u64) -> String {
    humansize::format_size(bytes, humansize::BINARY)
}

/// Text from a snapshot made safe for a terminal: control characters are shown escaped.
pub fn plain(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Text from a snapshot made safe for Markdown, inside a table cell or a line (never at the start
/// of one): it cannot end the cell, start a code span, emphasis, math or a link, or open an HTML
/// tag.
pub fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            '\n' | '\r' | '\t' => out.push(' '),
            '\\' | '*' | '_' | '[' | ']' | '~' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// An aligned plain-text table; columns whose flag in `right` is set are right-aligned.
pub fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row.iter().map(|c| plain(c)));
    }
    for (i, &r) in right.iter().enumerate() {
        if let Some(column) = t.column_mut(i) {
            column.set_cell_alignment(if r { CellAlignment::Right } else { CellAlignment::Left });
        }
    }
    let mut out: String = t.lines().map(|l| l.trim_end().to_string() + "\n").collect();
    if rows.is_empty() {
        out.clear();
    }
    out
}

/// A Markdown table; cells are escaped here.
pub fn md_table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n|", header.join(" | "));
    for i in 0..header.len() {
        out.push_str(if right.get(i) == Some(&true) { "---:|" } else { "---|" });
    }
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| md(c)).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// "… and 12 more" when a list was cut.
pub fn omitted(count: usize, what: &str) -> String {
    if count == 0 { String::new() } else { format!("… and {count} more {what}\n") }
}

/// The same after a Markdown table, with a blank line before it so it is not read as a row.
pub fn md_omitted(count: usize, what: &str) -> String {
    if count == 0 { String::new() } else { format!("\n{}", omitted(count, what)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escaping_defuses_hostile_names() {
        let hostile = "a|b`c<script>x</script>\n[link](http://x) *em* _u_";
        let escaped = md(hostile);
        assert!(!escaped.contains('|') || escaped.contains("&#124;"));
        for bad in ["<script>", "`", "\n", "[link]"] {
            assert!(!escaped.contains(bad), "{bad:?} survived in {escaped}");
        }
        let row = md_table(&["name"], &[false], &[vec![hostile.to_string()]]);
        assert_eq!(row.lines().count(), 3, "a name must not add table rows: {row}");
        assert_eq!(row.lines().nth(2).unwrap().matches(" | ").count(), 0);
    }

    #[test]
    fn plain_text_escapes_control_characters() {
        assert_eq!(plain("a\x1b[31mb\n"), "a\\u{1b}[31mb\\n");
        assert_eq!(plain("ok"), "ok");
    }
}
