//! Synthetic V8 heap snapshots (`.heapsnapshot` JSON) of any size, streamed to disk, for the
//! benchmark against memlab and for tests beyond what Node can write quickly (more than 2^24 nodes).
//!
//! The file has the shape Node 20 writes: the same `snapshot.meta` (seven node fields, three edge
//! fields, the same node and edge type lists), one record per line, then `trace_function_infos`,
//! `trace_tree`, `samples`, `locations` and `strings`. Every node and edge is computed from its index
//! and the seed, so nothing is kept per node and a file of several gigabytes takes constant memory.
//!
//! The node indices are laid out as:
//!
//! - `0` the synthetic root, with an `element` edge to `(GC roots)` and a `shortcut` to `global`;
//!   `1` `(GC roots)`; `2` `global`, which holds the body, the chain, a WeakMap and its key.
//! - `3..7` a WeakMap as V8 writes one: the `WeakMap` object, its table (an `array`), one key
//!   (`WMKey`) and one value (`WMValue`). The table has `weak` edges to the key and to the value;
//!   the key and the table each have an `internal` edge to the value named `N / part of key (WMKey
//!   @K) -> value (WMValue @V) pair in WeakMap (table @T)`.
//! - the *body*: a binary tree in index order (node k holds 2k+1 and 2k+2), of objects, strings,
//!   arrays, closures, system objects, code, numbers and object shapes, plus 0 to 4 extra edges per
//!   node (half to an ancestor, 2 in 10 to a sibling or a grandchild, 2 in 10 to one of the first
//!   1024 nodes, 1 in 10 anywhere; some `weak`, `shortcut` or `internal`). About 3 edges per node, as in Node's
//!   snapshots. Extra edges stay inside the body.
//! - a *chain* of `ChainLink` objects of [`LINK_SIZE`] bytes, each holding the next by `next`: its
//!   head retains exactly `chain × LINK_SIZE` bytes.
//! - a *leaked cycle* of three `LeakedCycle` objects of [`LEAKED_SIZE`] bytes that nothing reaches
//!   (V8 itself never writes unreachable objects; it is here to have a known leak).
//!
//! [`V8Planted`] says where each planted thing is and what a correct analysis finds.

use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// Self size of each chain link.
pub const LINK_SIZE: u64 = 24;
/// Self size of each node of the leaked cycle.
pub const LEAKED_SIZE: u64 = 40;
/// Self size of the WeakMap's value.
pub const VALUE_SIZE: u64 = 4096;
/// Self size of the WeakMap's key.
pub const KEY_SIZE: u64 = 16;
/// Nodes that are neither body nor chain: root, `(GC roots)`, `global`, the four of the WeakMap,
/// the leaked cycle.
pub const FIXED_NODES: u64 = 10;
/// Nodes of the body that extra edges favour (hubs: prototypes, maps, interned strings).
const HUBS: u64 = 1024;

#[derive(Debug, Clone, Copy)]
pub struct V8SynthOptions {
    /// All nodes, planted ones included.
    pub nodes: u64,
    /// Links in the chain.
    pub chain: u64,
    pub seed: u64,
    /// Extra edges besides the body's tree (about 2 a node); without them the body is a tree and
    /// the file smallest (for tests of size limits).
    pub extra_edges: bool,
}

/// Where the planted structures are (node indices) and what they retain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V8Planted {
    pub nodes: u64,
    pub edges: u64,
    pub weakmap_table: u64,
    pub weakmap_key: u64,
    pub weakmap_value: u64,
    pub chain_head: u64,
    pub chain_tail: u64,
    pub leaked: [u64; 3],
    /// Bytes in the file.
    pub bytes: u64,
}

/// The V8 node id of node `index`: odd and increasing, as V8's are.
pub fn node_id(index: u64) -> u64 {
    2 * index + 1
}

// Node and edge type numbers, positions in the lists of `META`.
const HIDDEN: u8 = 0;
const ARRAY: u8 = 1;
const STRING: u8 = 2;
const OBJECT: u8 = 3;
const CODE: u8 = 4;
const CLOSURE: u8 = 5;
const NUMBER: u8 = 7;
const SYNTHETIC: u8 = 9;
const CONCATENATED: u8 = 10;
const SHAPE: u8 = 14;

const CONTEXT: u8 = 0;
const ELEMENT: u8 = 1;
const PROPERTY: u8 = 2;
const INTERNAL: u8 = 3;
const HIDDEN_EDGE: u8 = 4;
const SHORTCUT: u8 = 5;
const WEAK: u8 = 6;

const META: &str = concat!(
    r#"{"meta":{"node_fields":["type","name","id","self_size","edge_count","trace_node_id","detachedness"],"#,
    r#""node_types":[["hidden","array","string","object","code","closure","regexp","number","native","#,
    r#""synthetic","concatenated string","sliced string","symbol","bigint","object shape"],"#,
    r#""string","number","number","number","number","number"],"#,
    r#""edge_fields":["type","name_or_index","to_node"],"#,
    r#""edge_types":[["context","element","property","internal","hidden","shortcut","weak"],"#,
    r#""string_or_number","node"],"#,
    r#""trace_function_info_fields":["function_id","name","script_name","script_id","line","column"],"#,
    r#""trace_node_fields":["id","function_info_index","count","size","children"],"#,
    r#""sample_fields":["timestamp_us","last_assigned_id"],"#,
    r#""location_fields":["object_index","script_id","line","column"]},"#
);

// The strings table: fixed names first, then the pools.
const FIXED_STRINGS: &[&str] = &[
    "",
    "(GC roots)",
    "global",
    "body",
    "chain",
    "wmKey",
    "weakMap",
    "table",
    "WeakMap",
    "WMKey",
    "WMValue",
    "ChainLink",
    "next",
    "LeakedCycle",
    "weak",
    "map",
    "(object elements)",
    "system / Context",
    "system / Map",
    "heap number",
];
const S_EMPTY: u64 = 0;
const S_GC_ROOTS: u64 = 1;
const S_GLOBAL: u64 = 2;
const S_BODY: u64 = 3;
const S_CHAIN: u64 = 4;
const S_WMKEY_PROP: u64 = 5;
const S_WEAKMAP_PROP: u64 = 6;
const S_TABLE: u64 = 7;
const S_WEAKMAP: u64 = 8;
const S_WMKEY: u64 = 9;
const S_WMVALUE: u64 = 10;
const S_CHAIN_LINK: u64 = 11;
const S_NEXT: u64 = 12;
const S_LEAKED: u64 = 13;
const S_WEAK: u64 = 14;
const S_MAP: u64 = 15;
const S_ELEMENTS: u64 = 16;
const S_CONTEXT: u64 = 17;
const S_SHAPE: u64 = 18;
const S_NUMBER: u64 = 19;
/// The two ephemeron edge names (key → value, table → value) follow the fixed strings.
const S_EPHEMERON_KEY: u64 = FIXED_STRINGS.len() as u64;
const S_EPHEMERON_TABLE: u64 = S_EPHEMERON_KEY + 1;
const CLASS_NAMES: &[&str] =
    &["Object", "Array", "Map", "Set", "Promise", "Request", "Response", "User", "Session", "Buffer", "Node", "Item"];
const PROPERTY_NAMES: &[&str] =
    &["id", "name", "value", "parent", "children", "next", "prev", "data", "cache", "handler", "options", "state"];
const FUNCTION_NAMES: &[&str] = &["", "onData", "resolve", "reject", "callback", "handle", "emit", "listener"];
/// Distinct string contents (`s0`, `s1`, …) that string nodes are named by.
const STRING_CONTENTS: u64 = 5000;
const S_CLASSES: u64 = S_EPHEMERON_TABLE + 1;
const S_PROPERTIES: u64 = S_CLASSES + CLASS_NAMES.len() as u64;
const S_FUNCTIONS: u64 = S_PROPERTIES + PROPERTY_NAMES.len() as u64;
const S_CONTENTS: u64 = S_FUNCTIONS + FUNCTION_NAMES.len() as u64;

/// SplitMix64: a well-mixed 64-bit value from a counter, so node `k` looks the same in every pass.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One node record and what its edges look like.
#[derive(Debug, Clone, Copy)]
struct NodeRecord {
    kind: u8,
    name: u64,
    size: u64,
    edges: u64,
}

/// One edge record: type, name or index, target node index.
type EdgeRecord = (u8, u64, u64);

/// The plan: node and edge records from indices.
struct Plan {
    nodes: u64,
    body_start: u64,
    body: u64,
    chain_start: u64,
    leaked_start: u64,
    seed: u64,
    extra_edges: bool,
}

const GLOBAL: u64 = 2;
const WEAKMAP: u64 = 3;
const TABLE: u64 = 4;
const KEY: u64 = 5;
const VALUE: u64 = 6;

impl Plan {
    fn new(options: V8SynthOptions) -> Result<Plan> {
        if options.nodes < FIXED_NODES + options.chain + 1 {
            return Err(Error::Usage(format!(
                "a synthetic V8 snapshot needs at least {} nodes for a chain of {}",
                FIXED_NODES + options.chain + 1,
                options.chain
            )));
        }
        if options.nodes >= u32::MAX as u64 - 1 {
            return Err(Error::Usage("a synthetic V8 snapshot has fewer than 2^32 - 2 nodes".into()));
        }
        let body_start = 7;
        let body = options.nodes - FIXED_NODES - options.chain;
        let chain_start = body_start + body;
        Ok(Plan {
            nodes: options.nodes,
            body_start,
            body,
            chain_start,
            leaked_start: chain_start + options.chain,
            seed: options.seed,
            extra_edges: options.extra_edges,
        })
    }

    fn hash(&self, k: u64) -> u64 {
        mix(self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ k)
    }

    /// Tree children of body node `k` (body-relative).
    fn children(&self, k: u64) -> std::ops::Range<u64> {
        let first = (2 * k + 1).min(self.body);
        first..(2 * k + 3).min(self.body)
    }

    fn extras(&self, h: u64) -> u64 {
        if self.extra_edges { (h >> 20) % 5 } else { 0 }
    }

    fn node(&self, v: u64) -> NodeRecord {
        let fixed = |kind, name, size, edges| NodeRecord { kind, name, size, edges };
        match v {
            0 => fixed(SYNTHETIC, S_EMPTY, 0, 2),
            1 => fixed(SYNTHETIC, S_GC_ROOTS, 0, 1),
            GLOBAL => fixed(OBJECT, S_GLOBAL, 64, 4),
            WEAKMAP => fixed(OBJECT, S_WEAKMAP, 24, 1),
            TABLE => fixed(ARRAY, S_EMPTY, 48, 3),
            KEY => fixed(OBJECT, S_WMKEY, KEY_SIZE, 1),
            VALUE => fixed(OBJECT, S_WMVALUE, VALUE_SIZE, 0),
            v if v >= self.leaked_start => fixed(OBJECT, S_LEAKED, LEAKED_SIZE, 1),
            v if v >= self.chain_start => fixed(OBJECT, S_CHAIN_LINK, LINK_SIZE, (v + 1 < self.leaked_start) as u64),
            v => self.body_node(v - self.body_start),
        }
    }

    fn body_node(&self, k: u64) -> NodeRecord {
        let h = self.hash(k);
        let pick = |names: u64, base: u64| base + (h >> 8) % names;
        let small = (h >> 24) % 32;
        let (kind, name, size) = match h % 100 {
            0..35 => (OBJECT, pick(CLASS_NAMES.len() as u64, S_CLASSES), 16 + 8 * (small % 8)),
            35..50 => (STRING, pick(STRING_CONTENTS, S_CONTENTS), 16 + 4 * small),
            50..60 => (ARRAY, if small < 16 { S_ELEMENTS } else { S_EMPTY }, 16 + 8 * small),
            60..68 => (CLOSURE, pick(FUNCTION_NAMES.len() as u64, S_FUNCTIONS), 32),
            68..76 => (HIDDEN, S_CONTEXT, 24 + 8 * (small % 4)),
            76..82 => (CODE, S_EMPTY, 64 + 16 * small),
            82..88 => (NUMBER, S_NUMBER, 16),
            88..95 => (SHAPE, S_SHAPE, 40),
            _ => (CONCATENATED, pick(STRING_CONTENTS, S_CONTENTS), 32),
        };
        let edges = self.children(k).count() as u64 + self.extras(h);
        NodeRecord { kind, name, size, edges }
    }

    /// The `j`th edge of node `v`.
    fn edge(&self, v: u64, j: u64) -> EdgeRecord {
        let body = |k: u64| self.body_start + k;
        match v {
            0 => [(ELEMENT, 1, 1), (SHORTCUT, S_GLOBAL, GLOBAL)][j as usize],
            1 => (ELEMENT, 1, GLOBAL),
            GLOBAL => [
                (PROPERTY, S_BODY, body(0)),
                (PROPERTY, S_CHAIN, self.chain_start),
                (PROPERTY, S_WMKEY_PROP, KEY),
                (PROPERTY, S_WEAKMAP_PROP, WEAKMAP),
            ][j as usize],
            WEAKMAP => (INTERNAL, S_TABLE, TABLE),
            TABLE => [(WEAK, S_WEAK, KEY), (WEAK, S_WEAK, VALUE), (INTERNAL, S_EPHEMERON_TABLE, VALUE)][j as usize],
            KEY => (INTERNAL, S_EPHEMERON_KEY, VALUE),
            v if v >= self.leaked_start => {
                let next = self.leaked_start + (v - self.leaked_start + 1) % 3;
                (PROPERTY, S_NEXT, next)
            }
            v if v >= self.chain_start => (PROPERTY, S_NEXT, v + 1),
            v => self.body_edge(v - self.body_start, j),
        }
    }

    fn body_edge(&self, k: u64, j: u64) -> EdgeRecord {
        let h = self.hash(k);
        let kind = self.body_node(k).kind;
        let children = self.children(k);
        let (target, extra) = if j < children.end - children.start {
            (children.start + j, None)
        } else {
            let x = mix(h ^ j.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let r = (x >> 8) % 1_000_000;
            let target = match x % 10 {
                // An ancestor 1 to 8 levels up (a parent pointer, an owner, a shared context).
                0..5 => ((k + 1) >> (1 + r % 8)).saturating_sub(1),
                // A sibling or a grandchild: near in the tree, as objects allocated together are.
                5..7 => match r % 2 {
                    0 if k > 0 => (((k - 1) ^ 1) + 1).min(self.body - 1),
                    _ => (4 * k + 3 + r % 4).min(self.body - 1),
                },
                7..9 => r % HUBS.min(self.body),
                _ => (x >> 8) % self.body,
            };
            (target, Some(x))
        };
        let property = |x: u64| S_PROPERTIES + x % PROPERTY_NAMES.len() as u64;
        let (edge_type, name) = match extra.map(|x| (x >> 40) % 100) {
            Some(0..4) => (WEAK, S_WEAK),
            Some(4..6) => (SHORTCUT, property(h >> 12)),
            Some(6..30) => (INTERNAL, S_MAP),
            _ => match kind {
                ARRAY => (ELEMENT, j),
                HIDDEN => (HIDDEN_EDGE, j),
                CLOSURE => (CONTEXT, property(h >> 12)),
                _ => (PROPERTY, property((h >> 12) + j)),
            },
        };
        (edge_type, name, self.body_start + target)
    }

    /// A location for some objects and closures: (script id, line, column).
    fn location(&self, v: u64) -> Option<(u64, u64, u64)> {
        if v < self.body_start || v >= self.chain_start {
            return None;
        }
        let h = self.hash(v - self.body_start);
        let record = self.body_node(v - self.body_start);
        let placed = matches!(record.kind, OBJECT | CLOSURE) && (h >> 32) % 4 == 0;
        placed.then(|| (1 + (h >> 40) % 20, (h >> 44) % 1000, (h >> 54) % 80))
    }

    fn strings(&self) -> Vec<String> {
        let mut strings: Vec<String> = FIXED_STRINGS.iter().map(|s| s.to_string()).collect();
        let ephemeron = |n: u32| {
            format!(
                "{n} / part of key (WMKey @{}) -> value (WMValue @{}) pair in WeakMap (table @{})",
                node_id(KEY),
                node_id(VALUE),
                node_id(TABLE)
            )
        };
        strings.push(ephemeron(1));
        strings.push(ephemeron(3));
        strings.extend(CLASS_NAMES.iter().chain(PROPERTY_NAMES).chain(FUNCTION_NAMES).map(|s| s.to_string()));
        strings.extend((0..STRING_CONTENTS).map(|n| format!("s{n}")));
        strings
    }
}

/// A buffer of JSON text flushed to the file in large writes.
struct Out {
    file: BufWriter<NamedTempFile>,
    buffer: Vec<u8>,
    bytes: u64,
}

impl Out {
    fn number(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.buffer.extend_from_slice(&digits[n..]);
    }

    fn text(&mut self, s: &str) {
        self.buffer.extend_from_slice(s.as_bytes());
    }

    /// Numbers separated by commas; records after the first start with a newline and a comma, as
    /// V8 writes them.
    fn record(&mut self, first: bool, values: &[u64]) -> std::io::Result<()> {
        if !first {
            self.text("\n,");
        }
        for (i, &v) in values.iter().enumerate() {
            if i > 0 {
                self.buffer.push(b',');
            }
            self.number(v);
        }
        self.spill()
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.buffer.len() >= 1 << 20 {
            self.file.write_all(&self.buffer)?;
            self.bytes += self.buffer.len() as u64;
            self.buffer.clear();
        }
        Ok(())
    }
}

/// Writes a synthetic V8 snapshot to `path` (under a temporary name, renamed when complete).
pub fn write(path: &Path, options: V8SynthOptions) -> Result<V8Planted> {
    let plan = Plan::new(options)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = NamedTempFile::new_in(dir).map_err(Error::io(path))?;
    let mut out = Out { file: BufWriter::with_capacity(1 << 20, temp), buffer: Vec::with_capacity(2 << 20), bytes: 0 };
    let edges = fill(&plan, &mut out).map_err(Error::io(path))?;
    out.file.write_all(&out.buffer).map_err(Error::io(path))?;
    let bytes = out.bytes + out.buffer.len() as u64;
    let temp = out.file.into_inner().map_err(|e| e.into_error()).map_err(Error::io(path))?;
    temp.persist(path).map_err(|e| e.error).map_err(Error::io(path))?;
    Ok(V8Planted {
        nodes: plan.nodes,
        edges,
        weakmap_table: TABLE,
        weakmap_key: KEY,
        weakmap_value: VALUE,
        chain_head: plan.chain_start,
        chain_tail: plan.leaked_start - 1,
        leaked: [0, 1, 2].map(|i| plan.leaked_start + i),
        bytes,
    })
}

/// Writes the whole document; returns the number of edges.
fn fill(plan: &Plan, out: &mut Out) -> std::io::Result<u64> {
    let edge_count: u64 = (0..plan.nodes).map(|v| plan.node(v).edges).sum();
    out.text("{\"snapshot\":");
    out.text(META);
    out.text("\"node_count\":");
    out.number(plan.nodes);
    out.text(",\"edge_count\":");
    out.number(edge_count);
    out.text(",\"trace_function_count\":0},\n\"nodes\":[");
    for v in 0..plan.nodes {
        let n = plan.node(v);
        out.record(v == 0, &[n.kind as u64, n.name, node_id(v), n.size, n.edges, 0, 0])?;
    }
    out.text("],\n\"edges\":[");
    let mut first = true;
    for v in 0..plan.nodes {
        for j in 0..plan.node(v).edges {
            let (kind, name, to) = plan.edge(v, j);
            out.record(first, &[kind as u64, name, to * 7])?;
            first = false;
        }
    }
    out.text("],\n\"trace_function_infos\":[],\n\"trace_tree\":[],\n\"samples\":[],\n\"locations\":[");
    let mut first = true;
    for v in plan.body_start..plan.chain_start {
        if let Some((script, line, column)) = plan.location(v) {
            out.record(first, &[v * 7, script, line, column])?;
            first = false;
        }
    }
    out.text("],\n\"strings\":[");
    for (i, s) in plan.strings().iter().enumerate() {
        if i > 0 {
            out.text("\n,");
        }
        // Every string here is plain ASCII without quotes or backslashes.
        out.buffer.push(b'"');
        out.text(s);
        out.buffer.push(b'"');
        out.spill()?;
    }
    out.text("]}\n");
    Ok(edge_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_snapshot_is_valid_json_with_the_counts_it_claims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.heapsnapshot");
        let planted = write(&path, V8SynthOptions { nodes: 5000, chain: 100, seed: 7, extra_edges: true }).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let nodes = value["nodes"].as_array().unwrap();
        let edges = value["edges"].as_array().unwrap();
        let strings = value["strings"].as_array().unwrap().len() as u64;
        assert_eq!(planted.bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!((nodes.len() as u64 / 7, edges.len() as u64 / 3), (planted.nodes, planted.edges));
        assert_eq!(value["snapshot"]["edge_count"].as_u64(), Some(planted.edges));
        let sum: u64 = nodes.chunks(7).map(|n| n[4].as_u64().unwrap()).sum();
        assert_eq!(sum, planted.edges);
        for e in edges.chunks(3) {
            let to = e[2].as_u64().unwrap();
            assert!(to % 7 == 0 && to / 7 < planted.nodes);
            if e[0].as_u64() != Some(ELEMENT as u64) && e[0].as_u64() != Some(HIDDEN_EDGE as u64) {
                assert!(e[1].as_u64().unwrap() < strings);
            }
        }
        assert!(nodes.chunks(7).all(|n| n[1].as_u64().unwrap() < strings));
        // About three edges a node, as in Node's snapshots.
        let per_node = planted.edges as f64 / planted.nodes as f64;
        assert!((2.5..3.5).contains(&per_node), "{per_node}");
    }

    #[test]
    fn too_few_nodes_for_the_chain_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.heapsnapshot");
        assert!(write(&path, V8SynthOptions { nodes: 20, chain: 100, seed: 1, extra_edges: true }).is_err());
        assert!(!path.exists());
    }
}
