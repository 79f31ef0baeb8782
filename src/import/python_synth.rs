//! Synthetic address-keyed snapshots (version 1.1 `PYBT`, `PYTY`, `PYEX` records) shaped like
//! the pure-Python exporter's, of any size: for the resolver's benchmark and for tests beyond the
//! hand-made examples.
//!
//! The heap, numbered by object id and laid out at scrambled addresses (so neither the batches nor
//! the references come in address order):
//!
//! - a module dict (`dict`, held from outside: a root) with the tree's first instance and the
//!   class `Obj` (held from outside too);
//! - per k: an instance `Obj` whose `__dict__` (a sparse label) is a dict with a unique name
//!   (`str`), a unique id (`int`, 28 bytes, raised to the `int` floor of 32), a popular count (one
//!   of 256 immortal `int`s), its tree children `left`/`right` (instances 2k+1, 2k+2); every 4th a
//!   `parent` back (a cycle); every 8th `tags`, an untracked tuple (its references, its name and
//!   one of 64 popular strings held from outside, in a kind-1 batch after its own); every 16th
//!   `items`, a list (a sequence) of its children; every 100th a `native` object the exporter
//!   never describes (dropped);
//! - the exporter's own list (`PYEX`), referencing every 1000th instance;
//! - a leaked cycle of [`LEAKED`] instances whose dicts hold each other's instances, each with
//!   its unique name and id: 4 × [`LEAKED`] objects that no root reaches.
//!
//! Kind-0 batches hold [`BATCH`] sources, leaves are given in every batch that meets them (so
//! popular ones many times), and refcounts are what the exporter would read: the references from
//! every described object, one more for what is held from outside, and the biases.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use hsnap::Writer;
use hsnap::python::{BatchColumns, TRAIT_REVERSED, TRAIT_SEQUENCE};
use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// Kind-0 sources per batch.
pub const BATCH: usize = 8192;
/// Instances in the leaked cycle.
pub const LEAKED: u64 = 3;
const SOURCE_BIAS: u64 = 2;
const LEAF_BIAS: u64 = 1;
const IMMORTAL: u64 = u32::MAX as u64;

#[derive(Debug, Clone, Copy)]
pub struct PySynthOptions {
    /// Instances in the tree (each with its dict, name and id: about 4.2 nodes each).
    pub instances: u64,
    pub seed: u64,
}

/// What was written, and what a correct resolution finds.
#[derive(Debug, Clone, PartialEq)]
pub struct PyPlanted {
    pub nodes: u64,
    /// References that become edges (those of described objects to described objects).
    pub edges: u64,
    /// References to objects never described.
    pub dropped: u64,
    /// Addresses of the leaked objects.
    pub leaked: Vec<u64>,
    pub bytes: u64,
}

// Types (TYPE ids) and strings (STRS ids, from 1).
const T_DICT: u32 = 0;
const T_OBJ: u32 = 1;
const T_TYPE: u32 = 2;
const T_STR: u32 = 3;
const T_INT: u32 = 4;
const T_TUPLE: u32 = 5;
const T_LIST: u32 = 6;
const TYPE_NAMES: [&str; 7] = ["dict", "Obj", "type", "str", "int", "tuple", "list"];
const LABELS: [&str; 10] = ["name", "id", "count", "left", "right", "parent", "tags", "items", "native", "__dict__"];
/// The string id of label `k` of [`LABELS`]: after the type names.
fn label(k: usize) -> u32 {
    (TYPE_NAMES.len() + k + 1) as u32
}
const NAME: usize = 0;
const ID: usize = 1;
const COUNT: usize = 2;
const LEFT: usize = 3;
const RIGHT: usize = 4;
const PARENT: usize = 5;
const TAGS: usize = 6;
const ITEMS: usize = 7;
const NATIVE: usize = 8;
const DICT: usize = 9;

// Object ids: fixed ones, then six per k (instance, dict, name, id, tags, items).
const MODULE: u64 = 0;
const CLASS: u64 = 1;
const OWN_LIST: u64 = 2;
const INTS: u64 = 3;
const POPULAR: u64 = INTS + 256;
const FIRST_K: u64 = POPULAR + 64;
const SLOTS: u64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Instance = 0,
    Dict = 1,
    Name = 2,
    Id = 3,
    Tags = 4,
    Items = 5,
}

fn id(k: u64, slot: Slot) -> u64 {
    FIRST_K + SLOTS * k + slot as u64
}

/// One reference: the target's id (or an address never described) and its label.
#[derive(Debug, Clone, Copy)]
enum Target {
    Object(u64),
    Native(u64),
}

struct Plan {
    instances: u64,
    /// Address bits of the scrambled id space.
    bits: u32,
    seed: u64,
}

impl Plan {
    fn leaked(&self, k: u64) -> bool {
        k >= self.instances
    }

    fn all_k(&self) -> u64 {
        self.instances + LEAKED
    }

    /// A bijection of ids onto 16-byte-aligned addresses in one region.
    fn address(&self, object: u64) -> u64 {
        let mask = (1u64 << self.bits) - 1;
        let mut x = object.wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1).wrapping_add(self.seed) & mask;
        x ^= x >> (self.bits / 2);
        0x7f00_0000_0000 + 16 * x
    }

    fn exists(&self, object: u64) -> bool {
        if (POPULAR..FIRST_K).contains(&object) {
            // Held by the tuples of every 8th k.
            return (0..self.instances).step_by(8).any(|k| k % 64 == object - POPULAR);
        }
        if (INTS..POPULAR).contains(&object) {
            // The count of k is int k % 256.
            return object - INTS < self.all_k();
        }
        if object < FIRST_K {
            return true;
        }
        let (k, slot) = ((object - FIRST_K) / SLOTS, (object - FIRST_K) % SLOTS);
        match slot {
            4 => k % 8 == 0 && !self.leaked(k),
            5 => k % 16 == 0 && !self.leaked(k),
            _ => k < self.all_k(),
        }
    }

    /// The references of a tracked object or a tuple, with their labels (0 for none).
    fn references(&self, object: u64, out: &mut Vec<(Target, u32)>) {
        out.clear();
        let o = Target::Object;
        match object {
            MODULE => out.extend([(o(id(0, Slot::Instance)), label(LEFT)), (o(CLASS), 0)]),
            CLASS => {}
            OWN_LIST => out.extend((0..self.instances).step_by(1000).map(|k| (o(id(k, Slot::Instance)), 0))),
            _ if object < FIRST_K => {}
            _ => {
                let (k, slot) = ((object - FIRST_K) / SLOTS, (object - FIRST_K) % SLOTS);
                match slot {
                    0 => out.extend([(o(id(k, Slot::Dict)), label(DICT)), (o(CLASS), 0)]),
                    1 => self.dict(k, out),
                    4 => out.extend([(o(id(k, Slot::Name)), 0), (o(POPULAR + k % 64), 0)]),
                    5 => out.extend(
                        [1, 2]
                            .map(|c| 2 * k + c)
                            .iter()
                            .filter(|&&c| c < self.instances)
                            .map(|&c| (o(id(c, Slot::Instance)), 0)),
                    ),
                    _ => {}
                }
            }
        }
    }

    fn dict(&self, k: u64, out: &mut Vec<(Target, u32)>) {
        let o = Target::Object;
        out.push((o(id(k, Slot::Name)), label(NAME)));
        out.push((o(id(k, Slot::Id)), label(ID)));
        out.push((o(INTS + k % 256), label(COUNT)));
        if self.leaked(k) {
            let next = self.instances + (k - self.instances + 1) % LEAKED;
            out.push((o(id(next, Slot::Instance)), label(PARENT)));
            return;
        }
        for (child, name) in [(2 * k + 1, LEFT), (2 * k + 2, RIGHT)] {
            if child < self.instances {
                out.push((o(id(child, Slot::Instance)), label(name)));
            }
        }
        if k > 0 && k % 4 == 0 {
            out.push((o(id((k - 1) / 2, Slot::Instance)), label(PARENT)));
        }
        if k % 8 == 0 {
            out.push((o(id(k, Slot::Tags)), label(TAGS)));
        }
        if k % 16 == 0 {
            out.push((o(id(k, Slot::Items)), label(ITEMS)));
        }
        if k % 100 == 0 {
            out.push((Target::Native(0x5500_0000_0000 + 16 * k), label(NATIVE)));
        }
    }

    /// Type, size, and references held from outside (immortal objects: [`IMMORTAL`] in all).
    fn describe(&self, object: u64) -> (u32, u64, u64) {
        match object {
            MODULE => (T_DICT, 640, 1),
            CLASS => (T_TYPE, 904, 1),
            OWN_LIST => (T_LIST, 56, 0),
            _ if object < POPULAR => (T_INT, 28, IMMORTAL),
            _ if object < FIRST_K => (T_STR, 53, 1),
            _ => match (object - FIRST_K) % SLOTS {
                0 => (T_OBJ, 48, 0),
                1 => (T_DICT, 232 + 8 * (object % 5), 0),
                2 => (T_STR, 49 + object % 40, 0),
                3 => (T_INT, 28, 0),
                4 => (T_TUPLE, 56, 0),
                _ => (T_LIST, 72, 0),
            },
        }
    }

    fn tracked(&self, object: u64) -> bool {
        matches!(self.describe(object).0, T_DICT | T_OBJ | T_TYPE | T_LIST)
    }

    /// The tracked objects, in the order `gc.get_objects()` might give them.
    fn tracked_objects(&self) -> impl Iterator<Item = u64> + '_ {
        let per_k = (0..self.all_k())
            .flat_map(|k| [Slot::Instance, Slot::Dict, Slot::Items].map(|s| id(k, s)))
            .filter(|&o| self.exists(o));
        [MODULE, CLASS, OWN_LIST].into_iter().chain(per_k)
    }
}

/// Writes a synthetic snapshot to `path` (under a temporary name, renamed when complete).
pub fn write(path: &Path, options: PySynthOptions) -> Result<PyPlanted> {
    let ids = FIRST_K + SLOTS * (options.instances + LEAKED);
    let plan = Plan { instances: options.instances, bits: 64 - ids.leading_zeros() + 1, seed: options.seed };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = NamedTempFile::new_in(dir).map_err(Error::io(path))?;
    let mut buffer = vec![0u8; 1 << 20];
    let sink = BufWriter::with_capacity(1 << 20, temp);
    let mut w = Writer::with_minor_version(sink, &mut buffer, 1).map_err(Error::io(path))?;
    let mut planted = fill(&plan, &mut w).map_err(Error::io(path))?;
    let mut sink = w.finish().map_err(Error::io(path))?;
    sink.flush().map_err(Error::io(path))?;
    let temp = sink.into_inner().map_err(|e| e.into_error()).map_err(Error::io(path))?;
    planted.bytes = temp.as_file().metadata().map_err(Error::io(path))?.len();
    temp.persist(path).map_err(|e| e.error).map_err(Error::io(path))?;
    Ok(planted)
}

fn fill<S: hsnap::Sink>(plan: &Plan, w: &mut Writer<'_, S>) -> std::io::Result<PyPlanted> {
    w.meta(b"capture", b"python")?;
    w.meta(b"producer", b"heapsnap-python-synth")?;
    for name in TYPE_NAMES.iter().chain(&LABELS) {
        w.string(name.as_bytes())?;
    }
    for t in 0..TYPE_NAMES.len() as u32 {
        w.type_(t + 1)?;
    }
    w.python_type(T_INT, 0, 32)?;
    w.python_type(T_LIST, TRAIT_SEQUENCE, 0)?;
    w.python_type(T_TUPLE, TRAIT_SEQUENCE | TRAIT_REVERSED, 0)?;

    // References each object gets from described objects (the exporter's own list is not one).
    let ids = FIRST_K + SLOTS * plan.all_k();
    let mut incoming = vec![0u32; ids as usize];
    let mut refs = Vec::new();
    let mut planted = PyPlanted { nodes: 0, edges: 0, dropped: 0, leaked: Vec::new(), bytes: 0 };
    for object in (0..ids).filter(|&o| o != OWN_LIST && plan.exists(o)) {
        plan.references(object, &mut refs);
        for &(target, _) in &refs {
            match target {
                Target::Object(t) => {
                    incoming[t as usize] += 1;
                    planted.edges += 1;
                }
                Target::Native(_) => planted.dropped += 1,
            }
        }
        planted.nodes += 1;
    }
    let refcount = |object: u64| {
        let outside = plan.describe(object).2;
        if outside == IMMORTAL { IMMORTAL } else { incoming[object as usize] as u64 + outside }
    };

    let tracked: Vec<u64> = plan.tracked_objects().collect();
    let mut record = Vec::new();
    for sources in tracked.chunks(BATCH) {
        let mut batch = BatchColumns { source_bias: SOURCE_BIAS, leaf_bias: LEAF_BIAS, ..BatchColumns::default() };
        let mut tuples = Vec::new();
        let mut objects = Vec::new();
        for (position, &object) in sources.iter().enumerate() {
            plan.references(object, &mut refs);
            target_ids(&refs, &mut objects);
            let (type_id, size, _) = plan.describe(object);
            let targets: Vec<u64> = refs.iter().map(|&(t, _)| target_address(plan, t)).collect();
            batch.push_source(plan.address(object), type_id, size, refcount(object) + SOURCE_BIAS, &targets);
            let labels: Vec<u32> = refs.iter().map(|&(_, l)| l).collect();
            if type_id == T_OBJ {
                batch.push_sparse(position as u32, 0, labels[0]);
            } else if labels.iter().any(|&l| l != 0) {
                batch.dense_sources.push(position as u32);
                batch.dense_labels.extend(labels);
            }
            tuples.extend(refs.iter().filter_map(|&(t, _)| match t {
                Target::Object(t) if plan.describe(t).0 == T_TUPLE => Some(t),
                _ => None,
            }));
        }
        add_leaves(plan, &mut batch, &objects, &refcount);
        write_batch(w, &mut batch, &mut record)?;
        if !tuples.is_empty() {
            objects.clear();
            let mut batch =
                BatchColumns { kind: 1, source_bias: SOURCE_BIAS, leaf_bias: LEAF_BIAS, ..BatchColumns::default() };
            for &tuple in &tuples {
                plan.references(tuple, &mut refs);
                target_ids(&refs, &mut objects);
                let targets: Vec<u64> = refs.iter().map(|&(t, _)| target_address(plan, t)).collect();
                batch.push_source(plan.address(tuple), 0, 0, 0, &targets);
            }
            add_leaves(plan, &mut batch, &objects, &refcount);
            write_batch(w, &mut batch, &mut record)?;
        }
    }
    w.python_excluded(plan.address(OWN_LIST))?;
    for k in plan.instances..plan.all_k() {
        planted.leaked.extend([Slot::Instance, Slot::Dict, Slot::Name, Slot::Id].map(|s| plan.address(id(k, s))));
    }
    planted.leaked.sort_unstable();
    Ok(planted)
}

fn target_address(plan: &Plan, target: Target) -> u64 {
    match target {
        Target::Object(t) => plan.address(t),
        Target::Native(address) => address,
    }
}

/// Gives the untracked objects among the batch's targets (`objects`, the ids of its targets in
/// order) as leaves, each once, with the refcount the exporter reads while it holds the targets.
fn add_leaves(plan: &Plan, batch: &mut BatchColumns, objects: &[u64], refcount: &dyn Fn(u64) -> u64) {
    let mut occurrences: HashMap<u64, u64> = HashMap::new();
    let mut order = Vec::new();
    for &object in objects.iter().filter(|&&o| o != NOT_DESCRIBED && !plan.tracked(o)) {
        let seen = occurrences.entry(object).or_insert(0);
        if *seen == 0 {
            order.push(object);
        }
        *seen += 1;
    }
    for object in order {
        let (type_id, size, _) = plan.describe(object);
        let count = refcount(object);
        let count = if count == IMMORTAL { IMMORTAL } else { count + LEAF_BIAS + occurrences[&object] };
        batch.push_leaf(plan.address(object), type_id, size, count, 0);
    }
}

/// The id of a target that is no object of the plan.
const NOT_DESCRIBED: u64 = u64::MAX;

/// Appends the references in `refs` to `objects`, by id.
fn target_ids(refs: &[(Target, u32)], objects: &mut Vec<u64>) {
    objects.extend(refs.iter().map(|&(t, _)| match t {
        Target::Object(t) => t,
        Target::Native(_) => NOT_DESCRIBED,
    }));
}

fn write_batch<S: hsnap::Sink>(
    w: &mut Writer<'_, S>,
    batch: &mut BatchColumns,
    record: &mut Vec<u8>,
) -> std::io::Result<()> {
    batch.fit_widths();
    record.clear();
    batch.encode(record);
    w.python_batch(record)
}
