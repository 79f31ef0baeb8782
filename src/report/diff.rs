//! `heapsnap diff`: rendering of [`DiffReport`] (two snapshots) and [`CandidateReport`] (three).

use std::fmt::Write;

use super::{Report, md, md_omitted, md_table, omitted, plain, size, table};
use crate::diff::{CandidateReport, DiffReport, GroupGrowth, GrowthRow, Matching, PathGroup, Step};
use crate::report::NodeRef;

/// A signed size: `+1.50 KiB`, `-512 B`, `0 B`.
pub fn signed_size(bytes: i64) -> String {
    match bytes {
        0 => "0 B".to_string(),
        b if b > 0 => format!("+{}", size(b as u64)),
        b => format!("-{}", size(b.unsigned_abs())),
    }
}

/// A signed count: `+3`, `-2`, `0`.
pub fn signed(n: i64) -> String {
    if n > 0 { format!("+{n}") } else { n.to_string() }
}

const GROWTH_HEADER: [&str; 6] = ["Δ bytes", "Δ objects", "Δ retained", "bytes", "objects", "born"];

fn growth_header(key: &'static str, identity: bool) -> (Vec<&'static str>, Vec<bool>) {
    let mut header: Vec<&str> = GROWTH_HEADER.to_vec();
    if !identity {
        header.pop();
    }
    header.push(key);
    let right = header.iter().map(|h| *h != key).collect();
    (header, right)
}

/// Rows of a growth table: the changes, NEW's totals, then the name.
pub fn growth_rows(rows: &[GrowthRow]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            let mut row = vec![
                signed_size(r.bytes),
                signed(r.objects),
                signed_size(r.retained),
                size(r.new.bytes),
                r.new.objects.to_string(),
            ];
            if let Some(born) = r.born {
                row.push(born.objects.to_string());
            }
            row.push(r.name.clone());
            row
        })
        .collect()
}

const GROUP_HEADER: [&str; 8] = ["status", "Δ bytes", "groups", "objects", "bytes", "cycle", "leader type", "site"];
const GROUP_RIGHT: [bool; 8] = [false, true, true, true, true, false, false, false];

fn group_rows(rows: &[GroupGrowth]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|g| {
            vec![
                g.status.to_string(),
                signed_size(g.bytes),
                format!("{} → {}", g.base.groups, g.new.groups),
                g.new.objects.to_string(),
                size(g.new.bytes),
                if g.cycle { "yes" } else { "" }.to_string(),
                g.leader_type.clone(),
                g.site.clone(),
            ]
        })
        .collect()
}

pub const RETAINER_HEADER: [&str; 5] = ["retained", "shallow", "id", "type", "site"];
pub const RETAINER_RIGHT: [bool; 5] = [true, true, true, false, false];

pub fn retainer_rows(rows: &[NodeRef]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|o| vec![size(o.retained), size(o.shallow), o.id.to_string(), o.type_name.clone(), o.site.clone()])
        .collect()
}

impl DiffReport {
    fn headline(&self) -> String {
        let how = match self.matching {
            Matching::Identity => "matched by identity",
            Matching::Key => "matched by type and site",
        };
        format!(
            "{} in {} objects ({how}: {})",
            signed_size(self.growth.bytes),
            signed(self.growth.objects),
            self.matching_reason
        )
    }

    fn lifetimes_line(&self) -> Option<String> {
        self.lifetimes
            .map(|l| format!("born {}; freed {}; kept {}", l.born.describe(), l.freed.describe(), l.kept.describe()))
    }

    fn retainer_title(&self) -> &'static str {
        match self.matching {
            Matching::Identity => {
                "new retainers (objects born after BASE that no other new object dominates), largest first"
            }
            Matching::Key => "top retainers of a type and site that grew, largest first",
        }
    }
}

impl Report for DiffReport {
    fn text(&self) -> String {
        let identity = self.matching == Matching::Identity;
        let mut out = format!("{} → {}: {}\n", plain(&self.base), plain(&self.new), plain(&self.headline()));
        if let Some(line) = self.lifetimes_line() {
            out += &line;
            out.push('\n');
        }
        for (title, key, rows, cut, what) in [
            ("growth by type, largest first:", "type", &self.by_type, self.omitted_types, "types"),
            ("growth by allocation site, largest first:", "site", &self.by_site, self.omitted_sites, "sites"),
        ] {
            if rows.is_empty() {
                continue;
            }
            let (header, right) = growth_header(key, identity);
            write!(out, "\n{title}\n").unwrap();
            out += &table(&header, &right, &growth_rows(rows));
            out += &omitted(cut, what);
        }
        if !self.leak_groups.is_empty() {
            out += "\nleak groups that are new or grew:\n";
            out += &table(&GROUP_HEADER, &GROUP_RIGHT, &group_rows(&self.leak_groups));
            out += &omitted(self.omitted_leak_groups, "kinds of groups");
        }
        if !self.new_retainers.is_empty() {
            write!(out, "\n{}:\n", self.retainer_title()).unwrap();
            out += &table(&RETAINER_HEADER, &RETAINER_RIGHT, &retainer_rows(&self.new_retainers));
            out += &omitted(self.omitted_retainers, "retainers");
        }
        out
    }

    fn markdown(&self) -> String {
        let identity = self.matching == Matching::Identity;
        let mut out = format!("**{} → {}**: {}\n\n", md(&self.base), md(&self.new), md(&self.headline()));
        if let Some(line) = self.lifetimes_line() {
            out += &md(&line);
            out += "\n\n";
        }
        for (title, key, rows, cut, what) in [
            ("Growth by type", "type", &self.by_type, self.omitted_types, "types"),
            ("Growth by allocation site", "site", &self.by_site, self.omitted_sites, "sites"),
        ] {
            if rows.is_empty() {
                continue;
            }
            let (header, right) = growth_header(key, identity);
            write!(out, "### {title}\n\n").unwrap();
            out += &md_table(&header, &right, &growth_rows(rows));
            out += &md_omitted(cut, what);
            out.push('\n');
        }
        if !self.leak_groups.is_empty() {
            out += "### Leak groups that are new or grew\n\n";
            out += &md_table(&GROUP_HEADER, &GROUP_RIGHT, &group_rows(&self.leak_groups));
            out += &md_omitted(self.omitted_leak_groups, "kinds of groups");
            for (i, g) in self.leak_groups.iter().enumerate().filter(|(_, g)| !g.stack.is_empty()) {
                out += &details(&format!("kind {} allocation stack (leader #{})", i + 1, g.example_leader), &g.stack);
            }
            out.push('\n');
        }
        if !self.new_retainers.is_empty() {
            let title = self.retainer_title();
            write!(out, "### {}{}\n\n", title[..1].to_uppercase(), &title[1..]).unwrap();
            out += &md_table(&RETAINER_HEADER, &RETAINER_RIGHT, &retainer_rows(&self.new_retainers));
            out += &md_omitted(self.omitted_retainers, "retainers");
        }
        out
    }
}

/// A folded list: `<details><summary>title</summary>` then one escaped item a line.
pub fn details(title: &str, items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|f| format!("  - {}", md(f))).collect();
    format!("\n<details><summary>{}</summary>\n\n{}\n\n</details>\n", md(title), items.join("\n"))
}

/// A retainer path as one line per step: `global root: globals #1000`, `.next → list_node #1001`.
/// Paths longer than [`PATH_LINES`] steps keep their first and last steps.
pub fn path_lines(start: &str, steps: &[Step]) -> Vec<String> {
    let mut lines = all_path_lines(start, steps);
    if lines.len() > PATH_LINES {
        let tail = lines.split_off(lines.len() - (PATH_LINES - 4));
        let cut = lines.len() - 3;
        lines.truncate(3);
        lines.push(format!("… {cut} more steps"));
        lines.extend(tail);
    }
    lines
}

/// Steps of a retainer path shown at most.
pub const PATH_LINES: usize = 12;

fn all_path_lines(start: &str, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| match (&s.label, i) {
            (_, 0) => format!("{start}: {} #{}", s.type_name, s.id),
            (Some(label), _) => format!("{label} → {} #{}", s.type_name, s.id),
            (None, _) => format!("→ {} #{}", s.type_name, s.id),
        })
        .collect()
}

const SITE_HEADER: [&str; 4] = ["bytes", "objects", "site", "types"];
const SITE_RIGHT: [bool; 4] = [true, true, false, false];
const PATH_HEADER: [&str; 5] = ["#", "bytes", "objects", "start", "path"];
const PATH_RIGHT: [bool; 5] = [true, true, true, false, false];

impl CandidateReport {
    fn headline(&self) -> String {
        if self.candidates.objects == 0 {
            return "no leak candidates: nothing born between BASE and TARGET is alive at FINAL".to_string();
        }
        format!("{} born between BASE and TARGET and alive at FINAL", self.candidates.describe())
    }

    fn site_rows(&self) -> Vec<Vec<String>> {
        self.by_site
            .iter()
            .map(|s| {
                let mut types: Vec<String> =
                    s.types.iter().take(3).map(|t| format!("{} ×{}", t.name, t.objects)).collect();
                if s.types.len() > 3 {
                    types.push(format!("(+{} types)", s.types.len() - 3));
                }
                vec![size(s.bytes), s.objects.to_string(), s.site.clone(), types.join(", ")]
            })
            .collect()
    }

    fn path_rows(&self) -> Vec<Vec<String>> {
        self.by_path
            .iter()
            .enumerate()
            .map(|(i, p)| {
                vec![(i + 1).to_string(), size(p.bytes), p.objects.to_string(), p.start.clone(), p.signature.join(" ")]
            })
            .collect()
    }
}

fn example_lines(p: &PathGroup) -> Vec<String> {
    path_lines(&p.start, &p.example)
}

impl Report for CandidateReport {
    fn text(&self) -> String {
        let mut out =
            format!("{} → {} → {}: {}\n", plain(&self.base), plain(&self.target), plain(&self.final_), self.headline());
        if !self.by_site.is_empty() {
            out += "\nleak candidates by allocation site, largest first:\n";
            out += &table(&SITE_HEADER, &SITE_RIGHT, &self.site_rows());
            out += &omitted(self.omitted_sites, "sites");
        }
        if !self.by_path.is_empty() {
            out += "\nleak candidates by retainer path, largest first:\n";
            out += &table(&PATH_HEADER, &PATH_RIGHT, &self.path_rows());
            out += &omitted(self.omitted_paths, "paths");
            for (i, p) in self.by_path.iter().enumerate() {
                write!(out, "\npath {} example:\n", i + 1).unwrap();
                for line in example_lines(p) {
                    writeln!(out, "  {}", plain(&line)).unwrap();
                }
            }
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "**{} → {} → {}**: {}\n\n",
            md(&self.base),
            md(&self.target),
            md(&self.final_),
            md(&self.headline())
        );
        if !self.by_site.is_empty() {
            out += "### Leak candidates by allocation site\n\n";
            out += &md_table(&SITE_HEADER, &SITE_RIGHT, &self.site_rows());
            out += &md_omitted(self.omitted_sites, "sites");
            out.push('\n');
        }
        if !self.by_path.is_empty() {
            out += "### Leak candidates by retainer path\n\n";
            out += &md_table(&PATH_HEADER, &PATH_RIGHT, &self.path_rows());
            out += &md_omitted(self.omitted_paths, "paths");
            for (i, p) in self.by_path.iter().enumerate() {
                out += &details(&format!("path {} example", i + 1), &example_lines(p));
            }
        }
        out
    }
}
