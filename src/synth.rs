//! Synthetic heaps of any size with planted leaks of known size, for tests and benchmarks.
//!
//! The heap is streamed: nodes and their edges are computed from their index and the seed, so a
//! 10M-node heap is written in constant memory. Node indices are laid out in three regions:
//!
//! - *reachable*: node 0 (`globals`, a root) and segments shaped as linked lists, doubly linked
//!   lists, binary trees and hash tables. Every segment head is held by a root or by a node of an
//!   earlier segment, so everything here is reachable through strong edges. Extra edges bring the
//!   average out-degree to the one asked for: most point at nodes allocated nearby, some at a
//!   thousand shared hubs, and a share (`far_fraction`) anywhere at all. A few are weak and point
//!   anywhere, even at leaked nodes, which they must not keep alive.
//! - *leaked*: planted groups, each a contiguous range: a list, a ring, a doubly linked ring, a
//!   tree, a cycle hanging off a leaked block, and two leaders sharing one tail. Leaked nodes
//!   also point at reachable ones, which changes nothing.
//! - *possibly lost*: chains whose first node is held only through an interior edge or an interior
//!   root.
//!
//! [`Planted`] is the expected verdict, worked out from this plan alone.

use std::collections::HashMap;
use std::path::Path;

use hsnap::{Edge, EdgeKind, Label, Node, Root, RootKind};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use crate::atomic::{SnapshotWriter, write_snapshot};
use crate::error::Result;
use crate::report::Amount;

#[derive(Debug, Clone, Copy)]
pub struct SynthOptions {
    pub nodes: u32,
    /// Average out-degree.
    pub edges_per_node: f64,
    pub seed: u64,
    /// Share of nodes in planted leak groups.
    pub leaked_fraction: f64,
    /// Number of planted shapes (the shared-tail shape makes two groups).
    pub leak_shapes: u32,
    /// Share of nodes that are possibly lost.
    pub possibly_fraction: f64,
    /// Share of extra edges that point at a node chosen uniformly from the whole heap; the rest
    /// point at a neighbour in allocation order (4 in 5) or at one of [`HUBS`] shared objects.
    pub far_fraction: f64,
}

/// Objects many others point at, as heaps have them: type descriptors, prototypes, interned
/// strings, a logger.
pub const HUBS: u32 = 1024;

impl Default for SynthOptions {
    fn default() -> SynthOptions {
        SynthOptions {
            nodes: 10_000,
            edges_per_node: 4.0,
            seed: 1,
            leaked_fraction: 0.01,
            leak_shapes: 12,
            possibly_fraction: 0.001,
            far_fraction: 0.05,
        }
    }
}

/// The verdict a correct analysis must reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Planted {
    pub nodes: u64,
    pub edges: u64,
    pub reachable: Amount,
    pub possibly: Amount,
    pub leaked: Amount,
    pub direct: Amount,
    pub indirect: Amount,
    /// In leader address order.
    pub groups: Vec<PlantedGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlantedGroup {
    pub shape: &'static str,
    /// Identity of the directly lost node.
    pub leader: u64,
    pub objects: u64,
    pub bytes: u64,
    pub cycle: bool,
    pub site: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    List,
    DoublyLinked,
    Tree,
    Table,
    Ring,
    DoublyLinkedRing,
    Hanging,
    Shared,
}

impl Shape {
    const LEAKED: [Shape; 6] =
        [Shape::List, Shape::Ring, Shape::DoublyLinkedRing, Shape::Tree, Shape::Hanging, Shape::Shared];

    fn name(self) -> &'static str {
        match self {
            Shape::List => "list",
            Shape::DoublyLinked => "doubly linked list",
            Shape::Tree => "tree",
            Shape::Table => "hash table",
            Shape::Ring => "ring",
            Shape::DoublyLinkedRing => "doubly linked ring",
            Shape::Hanging => "cycle hanging off a block",
            Shape::Shared => "two leaders sharing a tail",
        }
    }

    fn min_len(self) -> u32 {
        match self {
            Shape::Hanging | Shape::Shared => 3,
            Shape::Ring | Shape::DoublyLinkedRing => 2,
            _ => 1,
        }
    }
}

/// A contiguous range of nodes with one shape.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u32,
    len: u32,
    shape: Shape,
    stack: u32,
}

const TYPES: [&str; 9] =
    ["globals", "list_node", "dlist_node", "tree_node", "hash_table", "entry", "ring_node", "buffer", "session"];
const T_GLOBALS: u32 = 0;
const T_BUFFER: u32 = 7;
const T_SESSION: u32 = 8;

/// (function, file, line) of each allocation site; stack k + 2 is main → site k (stack 1 is main).
const SITES: [(&str, &str, u32); 10] = [
    ("init_globals", "main.c", 12),
    ("list_push", "list.c", 42),
    ("dlist_insert", "dlist.c", 57),
    ("tree_insert", "tree.c", 88),
    ("table_grow", "table.c", 31),
    ("cache_insert", "cache.c", 120),
    ("ring_add", "ring.c", 19),
    ("session_open", "session.c", 203),
    ("parse_headers", "http.c", 77),
    ("buffer_alloc", "buffer.c", 9),
];

struct Plan {
    options: SynthOptions,
    reachable: Vec<Segment>,
    leaked: Vec<Segment>,
    /// Possibly lost chains.
    possibly: Vec<Segment>,
    /// Extra edges some nodes hold: segment heads, interior pointers to possibly lost chains.
    holders: HashMap<u32, Vec<Edge>>,
    roots: Vec<Root>,
    reachable_end: u32,
    leaked_end: u32,
}

fn segment_of(segments: &[Segment], v: u32) -> &Segment {
    &segments[segments.partition_point(|s| s.start <= v) - 1]
}

impl Plan {
    fn new(options: SynthOptions) -> Plan {
        let n = options.nodes.max(16);
        let mut rng = Pcg64Mcg::seed_from_u64(options.seed);
        let leaked_total = ((n as f64 * options.leaked_fraction) as u32).max(options.leak_shapes * 3);
        let possibly_total = ((n as f64 * options.possibly_fraction) as u32).max(2);
        let reachable_end = n.saturating_sub(leaked_total + possibly_total).max(1);
        let leaked_end = (reachable_end + leaked_total).min(n);
        let mut plan = Plan {
            options: SynthOptions { nodes: n, ..options },
            reachable: vec![Segment { start: 0, len: 1, shape: Shape::List, stack: 2 }],
            leaked: Vec::new(),
            possibly: Vec::new(),
            holders: HashMap::new(),
            roots: vec![Root { node: 0, kind: RootKind::Global, interior: false, name: 0 }],
            reachable_end,
            leaked_end,
        };
        plan.plan_reachable(&mut rng);
        plan.plan_leaked();
        plan.plan_possibly(&mut rng, n);
        plan
    }

    fn plan_reachable(&mut self, rng: &mut Pcg64Mcg) {
        let mut at = 1;
        while at < self.reachable_end {
            let len = match rng.random_range(0..100) {
                0..70 => rng.random_range(1..64),
                70..95 => rng.random_range(64..4096),
                _ => rng.random_range(4096..1_000_000),
            }
            .min(self.reachable_end - at);
            let (shape, stack) = match rng.random_range(0..4) {
                0 => (Shape::List, 3),
                1 => (Shape::DoublyLinked, 4),
                2 => (Shape::Tree, 5),
                _ => (Shape::Table, 6),
            };
            let len = if shape == Shape::Table { len.min(4096) } else { len };
            let holder = if rng.random_bool(0.3) || at < 64 {
                let kind = [RootKind::Global, RootKind::Stack, RootKind::Register, RootKind::ThreadLocal]
                    [rng.random_range(0..4)];
                self.roots.push(Root { node: at, kind, interior: false, name: 0 });
                None
            } else {
                Some(rng.random_range(0..at))
            };
            if let Some(h) = holder {
                self.holders.entry(h).or_default().push(Edge {
                    to: at,
                    kind: EdgeKind::Strong,
                    label: Label::Offset(8),
                });
            }
            self.reachable.push(Segment { start: at, len, shape, stack });
            at += len;
        }
    }

    fn plan_leaked(&mut self) {
        let total = self.leaked_end - self.reachable_end;
        let shapes = self.options.leak_shapes.max(1);
        let mut at = self.reachable_end;
        for i in 0..shapes {
            let shape = Shape::LEAKED[i as usize % Shape::LEAKED.len()];
            let share = total / shapes + u32::from(i < total % shapes);
            let len = share.max(shape.min_len()).min(self.leaked_end - at);
            if len < shape.min_len() {
                break;
            }
            let stack = match shape {
                Shape::Ring | Shape::DoublyLinkedRing => 8,
                Shape::Hanging | Shape::Shared => 9,
                _ => 7,
            };
            self.leaked.push(Segment { start: at, len, shape, stack });
            at += len;
        }
        // What the shapes could not use stays leaked as single blocks.
        while at < self.leaked_end {
            self.leaked.push(Segment { start: at, len: 1, shape: Shape::List, stack: 10 });
            at += 1;
        }
    }

    fn plan_possibly(&mut self, rng: &mut Pcg64Mcg, n: u32) {
        let mut at = self.leaked_end;
        while at < n {
            let len = rng.random_range(1..8).min(n - at);
            if self.possibly.len() % 4 == 3 {
                self.roots.push(Root { node: at, kind: RootKind::Stack, interior: true, name: 0 });
            } else {
                let holder = rng.random_range(0..self.reachable_end);
                let edge = Edge { to: at, kind: EdgeKind::Interior, label: Label::Offset(24) };
                self.holders.entry(holder).or_default().push(edge);
            }
            self.possibly.push(Segment { start: at, len, shape: Shape::List, stack: 11 });
            at += len;
        }
    }

    fn segment(&self, v: u32) -> &Segment {
        if v < self.reachable_end {
            segment_of(&self.reachable, v)
        } else if v < self.leaked_end {
            segment_of(&self.leaked, v)
        } else {
            segment_of(&self.possibly, v)
        }
    }

    fn node(&self, v: u32, address: u64) -> Node {
        let mut rng = node_rng(self.options.seed, v);
        let size = match rng.random_range(0..100) {
            0..80 => rng.random_range(1..5) * 16,
            80..98 => rng.random_range(5..64) * 16,
            _ => rng.random_range(64..4096) * 16,
        };
        let segment = self.segment(v);
        let type_id = match (v, segment.shape) {
            (0, _) => T_GLOBALS,
            (_, Shape::List) if v >= self.leaked_end => T_BUFFER,
            (_, Shape::List) => 1,
            (_, Shape::DoublyLinked) => 2,
            (_, Shape::Tree) => 3,
            (_, Shape::Table) if v == segment.start => 4,
            (_, Shape::Table) => 5,
            (_, Shape::Ring | Shape::DoublyLinkedRing) => 6,
            (_, Shape::Hanging | Shape::Shared) if v == segment.start => T_SESSION,
            (_, Shape::Shared) if v == segment.start + 1 => T_SESSION,
            (_, Shape::Hanging | Shape::Shared) => 6,
        };
        Node { identity: 1000 + v as u64, address, size, type_id, stack: segment.stack, flags: 0 }
    }

    /// The edges of the shape a node is in, as local indices within its segment.
    fn shape_edges(segment: &Segment, k: u32, out: &mut Vec<(u32, Label)>) {
        let len = segment.len;
        let next = Label::Name(STR_NEXT);
        match segment.shape {
            Shape::List => out.extend((k + 1 < len).then_some((k + 1, next))),
            Shape::DoublyLinked => {
                out.extend((k + 1 < len).then_some((k + 1, next)));
                out.extend((k > 0).then(|| (k - 1, Label::Name(STR_PREV))));
            }
            Shape::Tree => {
                out.extend([2 * k + 1, 2 * k + 2].into_iter().filter(|&c| c < len).map(|c| (c, Label::Name(STR_CHILD))))
            }
            Shape::Table => {
                if k == 0 {
                    out.extend((1..len).map(|i| (i, Label::Index(i as u64 - 1))));
                }
            }
            Shape::Ring => out.push(((k + 1) % len, next)),
            Shape::DoublyLinkedRing => {
                out.push(((k + 1) % len, next));
                out.push(((k + len - 1) % len, Label::Name(STR_PREV)));
            }
            Shape::Hanging => out.push((if k + 1 == len { 1 } else { k + 1 }, next)),
            Shape::Shared => out.extend((k + 1 < len).then(|| (if k == 0 { 2 } else { k + 1 }, next))),
        }
    }

    fn edges(&self, v: u32, out: &mut Vec<Edge>, local: &mut Vec<(u32, Label)>) {
        out.clear();
        local.clear();
        let segment = self.segment(v);
        Self::shape_edges(segment, v - segment.start, local);
        out.extend(local.iter().map(|&(k, label)| Edge { to: segment.start + k, kind: EdgeKind::Strong, label }));
        if let Some(held) = self.holders.get(&v) {
            out.extend_from_slice(held);
        }
        let mut rng = node_rng(self.options.seed ^ 0x9e37_79b9, v);
        let e = self.options.edges_per_node;
        let target = e.floor() as usize + usize::from(rng.random_bool(e.fract()));
        let reachable = self.reachable_end;
        for slot in out.len()..target {
            let far = self.options.far_fraction.clamp(0.0, 1.0);
            let pick = rng.random::<f64>();
            let to = if pick < far {
                rng.random_range(0..self.options.nodes)
            } else if pick < far + (1.0 - far) * 0.2 {
                rng.random_range(0..HUBS) * (reachable / HUBS).max(1)
            } else {
                let near = rng.random_range(1..256);
                if rng.random_bool(0.5) { v.saturating_sub(near) } else { v.saturating_add(near) }
            };
            let kind = match rng.random_range(0..100) {
                0..5 => EdgeKind::Weak,
                5..10 => EdgeKind::Interior,
                _ => EdgeKind::Strong,
            };
            // Only weak edges may point anywhere; the others stay inside the reachable region so
            // they cannot rescue a planted leak.
            let to = if kind == EdgeKind::Weak { to.min(self.options.nodes - 1) } else { to % reachable };
            out.push(Edge { to, kind, label: Label::Offset(8 * slot as u64) });
        }
    }
}

const STR_NEXT: u32 = 1;
const STR_PREV: u32 = 2;
const STR_CHILD: u32 = 3;

fn node_rng(seed: u64, v: u32) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v as u64)
}

/// Writes a synthetic heap to `path` and returns what an analysis must find in it.
pub fn write(path: &Path, options: SynthOptions) -> Result<Planted> {
    let plan = Plan::new(options);
    write_snapshot(path, |w| stream(&plan, w))
}

fn stream(plan: &Plan, w: &mut SnapshotWriter<'_>) -> std::io::Result<Planted> {
    w.meta(b"producer", b"heapsnap-synth")?;
    w.meta(b"producer.version", env!("CARGO_PKG_VERSION").as_bytes())?;
    w.meta(b"capture", b"synthetic")?;
    w.meta(b"pointer.width", b"8")?;
    w.meta(b"x.seed", plan.options.seed.to_string().as_bytes())?;
    for s in ["next", "prev", "child"] {
        w.string(s.as_bytes())?;
    }
    for name in TYPES {
        let s = w.string(name.as_bytes())?;
        w.type_(s)?;
    }
    let main_fn = w.string(b"main")?;
    let main_file = w.string(b"main.c")?;
    let main_frame = w.frame_symbol(main_fn, main_file, 30, 0)?;
    let main_stack = w.stack(0, main_frame)?;
    for (function, file, line) in SITES {
        let (f, fl) = (w.string(function.as_bytes())?, w.string(file.as_bytes())?);
        let frame = w.frame_symbol(f, fl, line, 0)?;
        w.stack(main_stack, frame)?;
    }

    let n = plan.options.nodes;
    let mut planted = Planted { nodes: n as u64, ..Planted::default() };
    let mut group_bytes = vec![0u64; plan.leaked.len()];
    let mut leader_bytes = vec![0u64; plan.leaked.len()];
    let mut address = 0x5555_0000_0000u64;
    for v in 0..n {
        let node = plan.node(v, address);
        address += node.size.next_multiple_of(16) + 16;
        w.node(&node)?;
        if v < plan.reachable_end {
            planted.reachable.add(node.size);
        } else if v < plan.leaked_end {
            planted.leaked.add(node.size);
            let g = plan.leaked.partition_point(|s| s.start <= v) - 1;
            group_bytes[g] += node.size;
            let segment = &plan.leaked[g];
            if v == segment.start || (segment.shape == Shape::Shared && v == segment.start + 1) {
                leader_bytes[g] += node.size;
                planted.direct.add(node.size);
            }
        } else {
            planted.possibly.add(node.size);
        }
    }
    planted.indirect = Amount {
        objects: planted.leaked.objects - planted.direct.objects,
        bytes: planted.leaked.bytes - planted.direct.bytes,
    };
    let (mut edges, mut local) = (Vec::new(), Vec::new());
    for v in 0..n {
        plan.edges(v, &mut edges, &mut local);
        w.edges(v, &edges)?;
        planted.edges += edges.len() as u64;
    }
    for root in &plan.roots {
        w.root(root)?;
    }
    for (g, segment) in plan.leaked.iter().enumerate() {
        let site = SITES[segment.stack as usize - 2].0;
        let leader = 1000 + segment.start as u64;
        let cycle = matches!(segment.shape, Shape::Ring | Shape::DoublyLinkedRing | Shape::Hanging);
        if segment.shape == Shape::Shared {
            let second = leader_bytes[g] - plan.node(segment.start, 0).size;
            planted.groups.push(PlantedGroup {
                shape: segment.shape.name(),
                leader,
                objects: segment.len as u64 - 1,
                bytes: group_bytes[g] - second,
                cycle,
                site,
            });
            planted.groups.push(PlantedGroup {
                shape: segment.shape.name(),
                leader: leader + 1,
                objects: 1,
                bytes: second,
                cycle,
                site,
            });
        } else {
            planted.groups.push(PlantedGroup {
                shape: segment.shape.name(),
                leader,
                objects: segment.len as u64,
                bytes: group_bytes[g],
                cycle,
                site,
            });
        }
    }
    Ok(planted)
}
