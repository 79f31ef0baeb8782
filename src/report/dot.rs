//! `heapsnap dot`: Graphviz drawings of what a node references or what references it, as objgraph's
//! `show_refs` and `show_backrefs` draw them.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

use hsnap::{EdgeKind, Label};

use super::size;
use crate::analysis::Analysis;
use crate::analysis::reach::Class;
use crate::heap::Heap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the node references.
    Refs,
    /// What keeps the node alive (retaining edges into it).
    Backrefs,
}

/// The nodes within `depth` edges of `start` in `direction`, at most `max_nodes` of them.
pub fn dot(
    heap: &Heap<'_>,
    analysis: &Analysis,
    start: u32,
    direction: Direction,
    depth: u32,
    max_nodes: usize,
) -> String {
    let g = &heap.graph;
    let mut level: HashMap<u32, u32> = HashMap::from([(start, 0)]);
    let mut order = vec![start];
    let mut queue = VecDeque::from([start]);
    let mut edges: Vec<(u32, u32, EdgeKind)> = Vec::new();
    let mut truncated = false;
    while let Some(v) = queue.pop_front() {
        if level[&v] == depth {
            continue;
        }
        let next: Vec<(u32, u32, EdgeKind)> = match direction {
            Direction::Refs => g.edges(v).map(|(w, k)| (v, w, k)).collect(),
            Direction::Backrefs => {
                let mut from: Vec<u32> = g.retainers(v).to_vec();
                from.dedup();
                from.into_iter().map(|u| (u, v, g.retaining_kind(u, v).unwrap_or(EdgeKind::Strong))).collect()
            }
        };
        for (from, to, kind) in next {
            let other = if direction == Direction::Refs { to } else { from };
            if !level.contains_key(&other) {
                if order.len() == max_nodes {
                    truncated = true;
                    continue;
                }
                level.insert(other, level[&v] + 1);
                order.push(other);
                queue.push_back(other);
            }
            edges.push((from, to, kind));
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let sources: Vec<u32> = edges.iter().map(|e| e.0).collect();
    let labels = heap.labels(&sources);

    let mut out = String::from(
        "digraph heapsnap {\n  node [shape=box, style=filled, fillcolor=white, fontname=\"monospace\"];\n",
    );
    for &v in &order {
        let i = v as usize;
        let text = format!(
            "{}\n{} (retains {})\n#{}",
            heap.type_name(v),
            size(g.size.get(i)),
            size(analysis.retention.retained[i]),
            g.identity.get(i)
        );
        let mut attrs = format!("label=\"{}\"", escape(&text));
        match analysis.reach.class[i] {
            Class::Leaked => attrs += ", fillcolor=\"#f4b6b6\"",
            Class::Possibly => attrs += ", fillcolor=\"#f7deb0\"",
            Class::Reachable => {}
        }
        if g.root_nodes().binary_search(&v).is_ok() {
            attrs += ", peripheries=2";
        }
        if v == start {
            attrs += ", penwidth=3";
        }
        writeln!(out, "  n{v} [{attrs}];").unwrap();
    }
    for (from, to, kind) in edges {
        let mut attrs = Vec::new();
        if let Some(label) = heap.label_name(labels.get(&(from, to, kind)).copied().unwrap_or(Label::None)) {
            attrs.push(format!("label=\"{}\"", escape(&label)));
        }
        match kind {
            EdgeKind::Weak => attrs.push("style=dashed".to_string()),
            EdgeKind::Interior => attrs.push("style=dotted".to_string()),
            EdgeKind::Strong => {}
        }
        writeln!(out, "  n{from} -> n{to} [{}];", attrs.join(", ")).unwrap();
    }
    if truncated {
        writeln!(out, "  more [shape=plaintext, style=\"\", label=\"(more than {max_nodes} nodes: cut)\"];").unwrap();
    }
    out.push_str("}\n");
    out
}

/// Text for a double-quoted Graphviz string: quotes and backslashes escaped, newlines as `\n`
/// line breaks, other control characters dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_keeps_names_inside_their_string() {
        assert_eq!(super::escape("a\"];\\ n1 -> n2 [x=\"\n"), "a\\\"];\\\\ n1 -> n2 [x=\\\"\\n");
    }
}
