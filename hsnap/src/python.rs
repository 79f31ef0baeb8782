//! The address-keyed records of version 1.1 (`PYBT`, `PYTY`, `PYEX`; section 3.1 of the
//! specification), for writers that know their objects by address and cannot number them cheaply.
//!
//! A `PYBT` record is read as a [`Batch`]: views of its fixed-width columns where they lie in the
//! file, nothing copied. Parsing checks the framing of each record (kind, width bits, every column
//! inside the record, dense positions, sparse positions, the sum of the reference counts) before
//! anything is built on it; type ids and string ids are checked once the whole file is read, as
//! the types and strings may come after the batches. Resolving the batches into nodes, edges and
//! roots is left to the reader's user (heapsnap's `import::python`).
//!
//! [`BatchColumns`] encodes a record from owned columns, for tests and synthetic files; it checks
//! nothing, so that tests can write damaged records with it.

use nom::bytes::complete::take;
use nom::{Parser, number::complete::u8 as byte};

use crate::FormatError;
use crate::parse::{Fail, In, Res, fail};
use crate::read::uvarint;

/// What a batch's sources are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Kind 0: tracked objects, given as nodes with their references.
    Objects,
    /// Kind 1: objects given as leaves of earlier batches; the record gives their references only.
    References,
    /// Kind 2: sources of earlier records; the record gives more of their references.
    Continuation,
}

/// Leaf flag bit 0: a frozen object (`gc.freeze()`).
pub const LEAF_FROZEN: u8 = 1;
/// `PYTY` trait bit 0: the references are the elements of a sequence, labelled by index.
pub const TRAIT_SEQUENCE: u64 = 1;
/// `PYTY` trait bit 1: the sequence's references come last element first.
pub const TRAIT_REVERSED: u64 = 2;

/// A column of little-endian values of one width (1, 4 or 8 bytes), where it lies in the file.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    bytes: &'a [u8],
    width: usize,
    offset: u64,
}

impl<'a> Column<'a> {
    pub fn len(&self) -> usize {
        self.bytes.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes per value: 1, 4 or 8.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Value `i`; panics when `i` is not below [`Column::len`], as slice indexing does.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        let at = i * self.width;
        match self.width {
            8 => u64::from_le_bytes(self.bytes[at..at + 8].try_into().expect("8 bytes")),
            4 => u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes")) as u64,
            _ => self.bytes[at] as u64,
        }
    }

    /// The values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        let width = self.width;
        self.bytes.chunks_exact(width).map(move |c| match width {
            8 => u64::from_le_bytes(c.try_into().expect("8 bytes")),
            4 => u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64,
            _ => c[0] as u64,
        })
    }

    /// The byte offset in the file of value `i` (of the column's end for `i == len`).
    pub fn offset_of(&self, i: usize) -> u64 {
        self.offset + (i * self.width) as u64
    }
}

/// One `PYBT` record. Columns a kind-1 record does not have are empty.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub kind: BatchKind,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// References the writer held to every source while reading its refcount.
    pub source_bias: u64,
    /// References the writer held to every leaf while reading its refcount, besides one per
    /// occurrence of its address among this batch's targets.
    pub leaf_bias: u64,
    pub source_address: Column<'a>,
    pub source_type: Column<'a>,
    pub source_size: Column<'a>,
    pub source_refcount: Column<'a>,
    /// References of each source: its targets follow those of the sources before it.
    pub reference_count: Column<'a>,
    pub targets: Column<'a>,
    /// Positions of the densely labelled sources, increasing.
    pub dense_sources: Column<'a>,
    /// A string id per reference of the dense sources, in order; 0 for none.
    pub dense_labels: Column<'a>,
    /// Per dense label, the address of the object it names the reference to: it applies only when
    /// the reference is to that address.
    pub dense_targets: Column<'a>,
    pub sparse_source: Column<'a>,
    pub sparse_index: Column<'a>,
    pub sparse_label: Column<'a>,
    pub leaf_address: Column<'a>,
    pub leaf_type: Column<'a>,
    pub leaf_size: Column<'a>,
    pub leaf_refcount: Column<'a>,
    pub leaf_flags: Column<'a>,
}

impl Batch<'_> {
    pub fn sources(&self) -> usize {
        self.source_address.len()
    }

    pub fn leaves(&self) -> usize {
        self.leaf_address.len()
    }

    pub fn references(&self) -> usize {
        self.targets.len()
    }

    /// Checks what parsing could not: type ids below `types` and string ids below `strings`.
    pub(crate) fn check_references(&self, types: usize, strings: usize) -> Result<(), FormatError> {
        let in_range =
            |column: &Column<'_>, limit: usize, what: &str| match column.iter().position(|v| v >= limit as u64) {
                Some(i) => Err(FormatError::new(
                    column.offset_of(i),
                    format!("{what} {} out of range (the file has {limit})", column.get(i)),
                )),
                None => Ok(()),
            };
        in_range(&self.source_type, types, "PYBT source type")?;
        in_range(&self.leaf_type, types, "PYBT leaf type")?;
        in_range(&self.dense_labels, strings, "PYBT dense label string id")?;
        in_range(&self.sparse_label, strings, "PYBT sparse label string id")
    }
}

/// One `PYTY` record: what the references of a type's objects are, and the least such an object
/// occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeTraits {
    pub type_id: u32,
    /// [`TRAIT_SEQUENCE`], [`TRAIT_REVERSED`]; other bits reserved.
    pub traits: u64,
    /// A smaller size is raised to this; 0 for none.
    pub size_floor: u64,
}

impl TypeTraits {
    pub fn is_sequence(&self) -> bool {
        self.traits & TRAIT_SEQUENCE != 0
    }

    pub fn is_reversed(&self) -> bool {
        self.traits & TRAIT_REVERSED != 0
    }
}

/// The address-keyed records of a file, in file order.
#[derive(Debug, Default)]
pub(crate) struct Records<'a> {
    pub batches: Vec<Batch<'a>>,
    pub types: Vec<TypeTraits>,
    /// Where each of `types` is in the file, for the errors found once the file is read.
    pub type_offsets: Vec<u64>,
    pub excluded: Vec<u64>,
}

impl Records<'_> {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty() && self.types.is_empty() && self.excluded.is_empty()
    }

    /// The checks that need the whole file: ids in range, one `PYTY` record per type.
    pub fn check_references(&self, types: usize, strings: usize) -> Result<(), FormatError> {
        for batch in &self.batches {
            batch.check_references(types, strings)?;
        }
        let mut seen = vec![false; types];
        for (t, &offset) in self.types.iter().zip(&self.type_offsets) {
            match seen.get_mut(t.type_id as usize) {
                None => {
                    return Err(FormatError::new(
                        offset,
                        format!("PYTY type {} out of range (the file has {types})", t.type_id),
                    ));
                }
                Some(true) => {
                    return Err(FormatError::new(offset, format!("a second PYTY record for type {}", t.type_id)));
                }
                Some(slot) => *slot = true,
            }
        }
        Ok(())
    }
}

/// A `PYTY` record.
pub(crate) fn type_traits(i: In<'_>) -> Res<'_, TypeTraits> {
    let (rest, type_id) = uvarint(i)?;
    let Ok(type_id) = u32::try_from(type_id) else {
        return fail(i, format!("expected a type id below 2^32, found {type_id}"));
    };
    let (rest, traits) = uvarint(rest)?;
    let (rest, size_floor) = uvarint(rest)?;
    Ok((rest, TypeTraits { type_id, traits, size_floor }))
}

/// A `PYBT` record; `file` is the whole file, which column offsets are counted from.
pub(crate) fn batch<'a>(i: In<'a>, file: &'a [u8]) -> Res<'a, Batch<'a>> {
    let offset_of = |at: In<'_>| (at.as_ptr() as usize - file.as_ptr() as usize) as u64;
    let at = |offset: u64| &file[offset as usize..];
    let start = i;
    let (i, kind) = one_byte(i)?;
    let kind = match kind {
        0 => BatchKind::Objects,
        1 => BatchKind::References,
        2 => BatchKind::Continuation,
        _ => return fail(start, format!("unknown PYBT kind {kind} (expected 0, 1 or 2)")),
    };
    let (rest, widths) = one_byte(i)?;
    if widths & !3 != 0 {
        return fail(i, format!("PYBT width bits {widths:#04x}: only bits 0 and 1 are defined"));
    }
    let size_width = if widths & 1 != 0 { 8 } else { 4 };
    let refcount_width = if widths & 2 != 0 { 8 } else { 4 };
    let mut header = [0u64; 7];
    let mut i = rest;
    for v in &mut header {
        (i, *v) = uvarint(i)?;
    }
    let [sources, references, dense, sparse, leaves, source_bias, leaf_bias] = header;
    let objects = if kind == BatchKind::Objects { sources } else { 0 };
    let mut col = |count: u64, width: usize, what: &str| -> Result<Column<'a>, nom::Err<Fail<'a>>> {
        let (rest, column) = column(i, count, width, what, offset_of(i))?;
        i = rest;
        Ok(column)
    };
    let source_address = col(sources, 8, "source addresses")?;
    let source_type = col(objects, 4, "source types")?;
    let source_size = col(objects, size_width, "source sizes")?;
    let source_refcount = col(objects, refcount_width, "source refcounts")?;
    let reference_count = col(sources, 4, "reference counts")?;
    let sum: u64 = reference_count.iter().sum();
    if sum != references {
        let what = format!("the reference counts sum to {sum}, the PYBT record declares {references} references");
        return fail(at(reference_count.offset), what);
    }
    let targets = col(references, 8, "targets")?;
    let dense_sources = col(dense, 4, "dense source positions")?;
    let mut labels = 0u64;
    let mut previous = None;
    for (k, position) in dense_sources.iter().enumerate() {
        if position >= sources || previous.is_some_and(|p| position <= p) {
            let what = format!("dense source position {position}: expected increasing positions below {sources}");
            return fail(at(dense_sources.offset_of(k)), what);
        }
        previous = Some(position);
        labels += reference_count.get(position as usize);
    }
    let dense_labels = col(labels, 4, "dense labels")?;
    let dense_targets = col(labels, 8, "dense targets")?;
    let sparse_source = col(sparse, 4, "sparse source positions")?;
    let sparse_index = col(sparse, 4, "sparse reference indices")?;
    let sparse_label = col(sparse, 4, "sparse labels")?;
    for (k, (source, index)) in sparse_source.iter().zip(sparse_index.iter()).enumerate() {
        if source >= sources {
            let what = format!("sparse source position {source}: expected a position below {sources}");
            return fail(at(sparse_source.offset_of(k)), what);
        }
        let count = reference_count.get(source as usize);
        if index >= count {
            let what = format!("sparse reference index {index}: source {source} has {count} references");
            return fail(at(sparse_index.offset_of(k)), what);
        }
    }
    let leaf_address = col(leaves, 8, "leaf addresses")?;
    let leaf_type = col(leaves, 4, "leaf types")?;
    let leaf_size = col(leaves, size_width, "leaf sizes")?;
    let leaf_refcount = col(leaves, refcount_width, "leaf refcounts")?;
    let leaf_flags = col(leaves, 1, "leaf flags")?;
    let batch = Batch {
        kind,
        offset: offset_of(start),
        source_bias,
        leaf_bias,
        source_address,
        source_type,
        source_size,
        source_refcount,
        reference_count,
        targets,
        dense_sources,
        dense_labels,
        dense_targets,
        sparse_source,
        sparse_index,
        sparse_label,
        leaf_address,
        leaf_type,
        leaf_size,
        leaf_refcount,
        leaf_flags,
    };
    Ok((i, batch))
}

/// `count` values of `width` bytes at the start of `i`, which is at `offset` in the file: the
/// length is checked against what the record has left before anything is taken.
fn column<'a>(i: In<'a>, count: u64, width: usize, what: &str, offset: u64) -> Res<'a, Column<'a>> {
    if count == 0 {
        return Ok((i, Column { bytes: &[], width, offset }));
    }
    match count.checked_mul(width as u64) {
        Some(len) if len <= i.len() as u64 => {
            let (rest, bytes) = take(len as usize).parse(i)?;
            Ok((rest, Column { bytes, width, offset }))
        }
        _ => fail(
            i,
            format!("expected {what}: {count} values of {width} bytes, the PYBT record has {} bytes left", i.len()),
        ),
    }
}

fn one_byte(i: In<'_>) -> Res<'_, u8> {
    byte.parse(i).or_else(|_: nom::Err<Fail<'_>>| fail(i, "expected a byte, found the end of the record"))
}

/// The columns of one `PYBT` record, owned: what a test or a synthetic writer fills and encodes.
/// The counts in the record's header are the lengths of `source_address`, `targets`,
/// `dense_sources`, `sparse_source` and `leaf_address`; a kind-1 record leaves out the source
/// type, size and refcount columns. Nothing is checked.
#[derive(Debug, Clone, Default)]
pub struct BatchColumns {
    pub kind: u8,
    /// Bit 0: sizes as `u64`; bit 1: refcounts as `u64` (else `u32`, truncated).
    pub widths: u8,
    pub source_bias: u64,
    pub leaf_bias: u64,
    pub source_address: Vec<u64>,
    pub source_type: Vec<u32>,
    pub source_size: Vec<u64>,
    pub source_refcount: Vec<u64>,
    pub reference_count: Vec<u32>,
    pub targets: Vec<u64>,
    pub dense_sources: Vec<u32>,
    pub dense_labels: Vec<u32>,
    /// Left empty, each dense label names the target it lies beside.
    pub dense_targets: Vec<u64>,
    pub sparse_source: Vec<u32>,
    pub sparse_index: Vec<u32>,
    pub sparse_label: Vec<u32>,
    pub leaf_address: Vec<u64>,
    pub leaf_type: Vec<u32>,
    pub leaf_size: Vec<u64>,
    pub leaf_refcount: Vec<u64>,
    pub leaf_flags: Vec<u8>,
}

impl BatchColumns {
    /// A source and its targets; `type_id`, `size` and `refcount` are left out of a kind-1 record.
    pub fn push_source(&mut self, address: u64, type_id: u32, size: u64, refcount: u64, targets: &[u64]) {
        self.source_address.push(address);
        self.source_type.push(type_id);
        self.source_size.push(size);
        self.source_refcount.push(refcount);
        self.reference_count.push(targets.len() as u32);
        self.targets.extend_from_slice(targets);
    }

    /// A label on reference `index` of the source at `source`.
    pub fn push_sparse(&mut self, source: u32, index: u32, label: u32) {
        self.sparse_source.push(source);
        self.sparse_index.push(index);
        self.sparse_label.push(label);
    }

    pub fn push_leaf(&mut self, address: u64, type_id: u32, size: u64, refcount: u64, flags: u8) {
        self.leaf_address.push(address);
        self.leaf_type.push(type_id);
        self.leaf_size.push(size);
        self.leaf_refcount.push(refcount);
        self.leaf_flags.push(flags);
    }

    /// The targets of the dense sources' references, in order: the dense targets that make every
    /// dense label apply.
    fn dense_sources_targets(&self) -> Vec<u64> {
        let mut starts = vec![0usize];
        for &count in &self.reference_count {
            starts.push(starts.last().expect("one start") + count as usize);
        }
        let span = |s: u32| starts.get(s as usize).zip(starts.get(s as usize + 1));
        let targets = self.dense_sources.iter().filter_map(|&s| span(s)).flat_map(|(&a, &b)| &self.targets[a..b]);
        targets.copied().take(self.dense_labels.len()).collect()
    }

    /// Sets the width bits to what the sizes and refcounts need.
    pub fn fit_widths(&mut self) {
        let wide = |values: &[u64], more: &[u64]| values.iter().chain(more).any(|&v| v > u32::MAX as u64);
        self.widths = wide(&self.source_size, &self.leaf_size) as u8
            | (wide(&self.source_refcount, &self.leaf_refcount) as u8) << 1;
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let size_wide = self.widths & 1 != 0;
        let refcount_wide = self.widths & 2 != 0;
        out.push(self.kind);
        out.push(self.widths);
        let header = [
            self.source_address.len() as u64,
            self.targets.len() as u64,
            self.dense_sources.len() as u64,
            self.sparse_source.len() as u64,
            self.leaf_address.len() as u64,
            self.source_bias,
            self.leaf_bias,
        ];
        let mut varint = [0u8; crate::varint::MAX_LEN];
        for v in header {
            let n = crate::varint::put_u(&mut varint, v);
            out.extend_from_slice(&varint[..n]);
        }
        let u64s =
            |out: &mut Vec<u8>, values: &[u64]| values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        let u32s =
            |out: &mut Vec<u8>, values: &[u32]| values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        let sized = |out: &mut Vec<u8>, values: &[u64], wide: bool| {
            values.iter().for_each(|&v| match wide {
                true => out.extend_from_slice(&v.to_le_bytes()),
                false => out.extend_from_slice(&(v as u32).to_le_bytes()),
            })
        };
        u64s(out, &self.source_address);
        if self.kind == 0 {
            u32s(out, &self.source_type);
            sized(out, &self.source_size, size_wide);
            sized(out, &self.source_refcount, refcount_wide);
        }
        u32s(out, &self.reference_count);
        u64s(out, &self.targets);
        u32s(out, &self.dense_sources);
        u32s(out, &self.dense_labels);
        if self.dense_targets.is_empty() {
            u64s(out, &self.dense_sources_targets());
        } else {
            u64s(out, &self.dense_targets);
        }
        u32s(out, &self.sparse_source);
        u32s(out, &self.sparse_index);
        u32s(out, &self.sparse_label);
        u64s(out, &self.leaf_address);
        u32s(out, &self.leaf_type);
        sized(out, &self.leaf_size, size_wide);
        sized(out, &self.leaf_refcount, refcount_wide);
        out.extend_from_slice(&self.leaf_flags);
    }
}
