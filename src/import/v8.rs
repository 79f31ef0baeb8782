//! V8 heap snapshots (`.heapsnapshot`: Chrome DevTools, Node's `v8.writeHeapSnapshot`) to `.hsnap`.
//!
//! The input is parsed where it is mapped, in two passes and without a JSON tree: the first finds
//! where each top-level value starts (the `strings` array comes after `nodes` and `edges`); the
//! second reads `snapshot.meta`, then the strings (each unescaped once and written straight to the
//! output), the locations, the nodes (written as they are read) and the edges (written node by
//! node). What is kept meanwhile is 4 bytes a node (its edge count), 16 a string and small tables;
//! [`convert_and_build`] also builds the graph as it writes (the graph of the output, which then
//! need not be decoded). The input's pages are given back behind each pass over it
//! ([`SnapshotFile::release`]), so a file of several gigabytes never counts whole in the resident set.
//!
//! Fields are found by their names in `snapshot.meta`, never by position. The mapping:
//!
//! - Node *i* of the `nodes` array is node *i* of the `.hsnap`; its V8 `id` is the identity,
//!   `self_size` the size, the address is 0, and `detachedness == 2` sets the detached flag.
//! - Types are named as in DevTools' summary view: an `object` or `native` node by its name
//!   (`Map`, `Leaky`, `Detached HTMLDivElement`), a `synthetic` one by its name (`(GC roots)`), and
//!   the others by their kind: `(string)` (also concatenated and sliced strings), `(closure)`,
//!   `(compiled code)`, `(system)` for `hidden`, `(number)`, `(regexp)`, `(symbol)`, `(bigint)`,
//!   `(object shape)`; an `array` is `(array)`, followed by its name when it has one
//!   (`(array) (object elements)`). A kind this code does not know is `(kind)`.
//! - Edges retain (strong) when DevTools counts them as *essential* for its dominator tree. These
//!   are weak: `weak` edges, `shortcut` edges except those leaving the root, and the `internal`
//!   edges from a WeakMap's table to a value (named `… part of key (…) -> value (…) pair in WeakMap
//!   (table @ID)`, leaving the node whose id is ID; see [`weakmap_table`], which cites DevTools'
//!   code). Self edges are kept strong: they change nothing. DevTools' last rule is not applied (nor
//!   by memlab): objects reached from the root's `shortcut` targets (a page's `Window`, Node's
//!   `global`) through non-weak edges are *page-owned*, and an edge from an object that is not to
//!   one that is (from `(GC roots)`' handles, say) is not essential there (`markPageOwnedNodes`). `element` and `hidden` edges are labelled with their index, the
//!   others with their name.
//! - Node 0, V8's synthetic root, is the single root (kind gc-root, named `(root)`), so the
//!   dominator tree is rooted where DevTools roots it and retained sizes agree with DevTools' and
//!   memlab's. A node that no essential path from node 0 reaches is *leaked* for heapsnap, where
//!   DevTools hangs it under the root. V8 writes a snapshot right after a full collection, so such
//!   nodes are rare (none in the snapshots of Node 20 we tried).
//! - A `locations` entry (object, script id, line, column; 0-based) becomes the node's allocation
//!   stack of one frame: function `script ID`, no file, line and column counted from 1.
//! - Metadata: `capture` = `v8`, `producer` = the snapshot's `title` or `v8`, `pointer.width` = 8.
//!
//! Sizes: positions in the file are `usize` and error offsets `u64`, so files of several gigabytes
//! convert; node and string indices are `u32` (at most 2^32 - 2 of each, checked, with an error
//! otherwise), far beyond 2^24 nodes (DevTools' limit, it is said). (The graph then loaded
//! indexes edges with `u32`: at most 2^32 edges, a JSON file of about 60 GB.)
//!
//! Strings are UTF-8: `\uXXXX` escapes are decoded (surrogate pairs joined, a lone surrogate
//! becomes U+FFFD); raw bytes are copied as they are.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use hsnap::{Edge, EdgeKind, FormatError, Label, Node, Root, RootKind};
use nom::Parser;
use nom::bytes::complete::{tag, take_while};

use crate::atomic::{SnapshotWriter, write_snapshot_synced};
use crate::error::{Error, Result};
use crate::graph::{Builder, Graph};
use crate::heap::SnapshotFile;
use crate::progress::Progress;

/// What a conversion read and wrote.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct ConvertStats {
    pub nodes: u64,
    pub edges: u64,
    pub strings: u64,
    pub types: u64,
    /// Nodes given an allocation site from `locations`.
    pub locations: u64,
    /// Edges written as weak: V8's weak edges and DevTools' other non-essential edges.
    pub weak_edges: u64,
    pub seconds: f64,
}

/// Whether `bytes` look like a V8 heap snapshot: optional whitespace, then `{"snapshot"`.
pub fn looks_like(bytes: &[u8]) -> bool {
    let rest = skip_ws(bytes);
    let Some(rest) = rest.strip_prefix(b"{") else { return false };
    skip_ws(rest).starts_with(b"\"snapshot\"")
}

/// Converts the V8 heap snapshot `input` to the `.hsnap` file `output` (written under a temporary
/// name and renamed when complete). Malformed input is an [`Error::Format`] naming `input`, the byte
/// offset and what was expected there; `output` is then left untouched.
pub fn convert(input: &Path, output: &Path, progress: &Progress) -> Result<ConvertStats> {
    Ok(convert_with(input, output, false, progress)?.0)
}

/// [`convert`] to a temporary file, building the graph at the same time: it is the graph
/// [`Graph::load`](crate::graph::Graph::load) would make of `output`, without decoding it again.
/// The output is not synced to disk (it dies with the process).
pub fn convert_and_build(input: &Path, output: &Path, progress: &Progress) -> Result<(ConvertStats, Graph)> {
    let (stats, graph) = convert_with(input, output, true, progress)?;
    Ok((stats, graph.expect("a graph was asked for")))
}

fn convert_with(
    input: &Path,
    output: &Path,
    build: bool,
    progress: &Progress,
) -> Result<(ConvertStats, Option<Graph>)> {
    let start = Instant::now();
    let file = SnapshotFile::open(input)?;
    let bytes = file.bytes();
    let format = |source: FormatError| Error::Format { path: input.to_path_buf(), source };
    let layout = Layout::scan(bytes, &|range| file.release(range)).map_err(format)?;
    let meta = Meta::parse(bytes, &layout).map_err(format)?;
    let bar = progress.bar("converting", bytes.len() as u64);
    let builder = build.then(Builder::default);
    let written = write_snapshot_synced(output, !build, |w| {
        let stats = ConvertStats::default();
        Converter { bytes, file: &file, layout: &layout, meta: &meta, bar: &bar, done: 0, stats, builder }
            .run(w)
            .map_err(io::Error::other)
    });
    bar.finish_and_clear();
    match written {
        Ok((mut stats, graph)) => {
            stats.seconds = start.elapsed().as_secs_f64();
            Ok((stats, graph))
        }
        Err(Error::Io { path, source }) => match source.into_inner().map(|e| e.downcast::<FormatError>()) {
            Some(Ok(source)) => Err(format(*source)),
            Some(Err(other)) => Err(Error::Io { path, source: io::Error::other(other) }),
            None => Err(Error::Io { path, source: io::Error::other("i/o error") }),
        },
        Err(other) => Err(other),
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing primitives. Every input slice is a suffix of the whole file, so an error's byte offset is
// the file's length minus the length of the slice where it happened.

use hsnap::parse::{Fail, In, Res, fail, failure};

/// A [`FormatError`] at the position of `at` in `bytes`.
fn error_at(bytes: &[u8], at: &[u8], what: impl Into<String>) -> FormatError {
    FormatError::new((bytes.len() - at.len()) as u64, what)
}

fn to_format(bytes: &[u8], e: nom::Err<Fail<'_>>) -> FormatError {
    match e {
        nom::Err::Error(f) | nom::Err::Failure(f) => error_at(bytes, f.at, f.what),
        nom::Err::Incomplete(_) => FormatError::new(bytes.len() as u64, "unexpected end of file"),
    }
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(i: In<'_>) -> In<'_> {
    // Most values follow their separator directly.
    if i.first().is_none_or(|&c| !is_ws(c)) {
        return i;
    }
    let n = i.iter().position(|&c| !is_ws(c)).unwrap_or(i.len());
    &i[n..]
}

fn ws(i: In<'_>) -> Res<'_, ()> {
    take_while(is_ws).map(|_| ()).parse(i)
}

/// Whitespace, then the punctuation `c`.
fn punct<'a>(c: &'static str, what: &'static str) -> impl Fn(In<'a>) -> Res<'a, ()> {
    move |i| {
        let (i, ()) = ws(i)?;
        match tag::<_, _, Fail<'a>>(c.as_bytes()).parse(i) {
            Ok((rest, _)) => Ok((rest, ())),
            Err(_) => fail(i, what),
        }
    }
}

/// A string's raw (still escaped) bytes, after optional whitespace.
fn string_raw(i: In<'_>) -> Res<'_, In<'_>> {
    let (i, ()) = ws(i)?;
    let Some(body) = i.strip_prefix(b"\"") else { return fail(i, "expected a string") };
    let mut k = 0;
    loop {
        let Some(n) = body[k..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20) else {
            return fail(&body[body.len()..], "expected the end of a string, found the end of the file");
        };
        k += n;
        match body[k] {
            b'"' => return Ok((&body[k + 1..], &body[..k])),
            b'\\' if k + 1 < body.len() => k += 2,
            b'\\' => return fail(&body[k..], "expected an escape after `\\`, found the end of the file"),
            _ => return fail(&body[k..], "expected `\"` or a character, found a control character in a string"),
        }
    }
}

/// Unescapes a string's raw bytes into `out`; on error, the offset in `raw` and what was expected.
fn unescape(raw: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), (usize, &'static str)> {
    out.clear();
    let mut k = 0;
    while k < raw.len() {
        if raw[k] != b'\\' {
            let end = raw[k..].iter().position(|&c| c == b'\\').map_or(raw.len(), |p| k + p);
            out.extend_from_slice(&raw[k..end]);
            k = end;
            continue;
        }
        let escape = raw.get(k + 1).copied();
        k += 2;
        let c = match escape {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 8,
            Some(b'f') => 12,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let high = hex4(raw, k)?;
                k += 4;
                let code = match high {
                    0xD800..0xDC00 => match raw.get(k..k + 2) {
                        Some(b"\\u") => match hex4(raw, k + 2)? {
                            low @ 0xDC00..0xE000 => {
                                k += 6;
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            }
                            _ => 0xFFFD,
                        },
                        _ => 0xFFFD,
                    },
                    0xDC00..0xE000 => 0xFFFD,
                    code => code,
                };
                let c = char::from_u32(code).unwrap_or('\u{FFFD}');
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err((k - 1, "expected one of `\"\\/bfnrtu` after `\\`")),
        };
        out.push(c);
    }
    Ok(())
}

fn hex4(raw: &[u8], at: usize) -> std::result::Result<u32, (usize, &'static str)> {
    let digits = raw.get(at..at + 4).ok_or((at, "expected four hex digits after `\\u`"))?;
    let mut v = 0;
    for &d in digits {
        let h = (d as char).to_digit(16).ok_or((at, "expected four hex digits after `\\u`"))?;
        v = v << 4 | h;
    }
    Ok(v)
}

/// A string, unescaped into `out`.
fn string_into<'a>(i: In<'a>, out: &mut Vec<u8>) -> Res<'a, ()> {
    let (rest, raw) = string_raw(i)?;
    match unescape(raw, out) {
        Ok(()) => Ok((rest, ())),
        Err((at, what)) => fail(&skip_ws(i)[1 + at..], what),
    }
}

/// A non-negative integer that fits in 64 bits, right here. The loop is the converter's inner
/// loop: up to 19 digits cannot overflow, so only longer numbers are checked.
fn digits(i: In<'_>) -> Res<'_, u64> {
    let mut v: u64 = 0;
    let mut n = 0;
    while let Some(&d) = i.get(n).filter(|d| d.is_ascii_digit()) {
        if n >= 19 {
            v = match v.checked_mul(10).and_then(|v| v.checked_add((d - b'0') as u64)) {
                Some(v) => v,
                None => return fail(i, "integer too large"),
            };
        } else {
            v = v * 10 + (d - b'0') as u64;
        }
        n += 1;
    }
    if n == 0 || (n > 1 && i[0] == b'0') || matches!(i.get(n), Some(b'.' | b'e' | b'E')) {
        return fail(i, "expected a non-negative integer");
    }
    Ok((&i[n..], v))
}

/// Skips any JSON value, iteratively (V8's `trace_tree` nests as deep as the call stacks were).
fn skip_value(i: In<'_>) -> Res<'_, ()> {
    let mut open: Vec<u8> = Vec::new();
    let mut i = i;
    loop {
        // A value.
        let (rest, ()) = ws(i)?;
        i = rest;
        match i.first() {
            Some(b'"') => i = string_raw(i)?.0,
            Some(b'[') => {
                i = skip_ws(&i[1..]);
                if let Some(rest) = i.strip_prefix(b"]") {
                    i = rest;
                } else {
                    open.push(b'[');
                    continue;
                }
            }
            Some(b'{') => {
                i = skip_ws(&i[1..]);
                if let Some(rest) = i.strip_prefix(b"}") {
                    i = rest;
                } else {
                    open.push(b'{');
                    i = string_raw(i)?.0;
                    i = punct(":", "expected `:` after an object's key")(i)?.0;
                    continue;
                }
            }
            Some(b't') if i.starts_with(b"true") => i = &i[4..],
            Some(b'f') if i.starts_with(b"false") => i = &i[5..],
            Some(b'n') if i.starts_with(b"null") => i = &i[4..],
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let n = i.iter().position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
                i = &i[n.unwrap_or(i.len())..];
            }
            _ => return fail(i, "expected a JSON value"),
        }
        // Close what the value ended.
        loop {
            let Some(&top) = open.last() else { return Ok((i, ())) };
            i = skip_ws(i);
            match (top, i.first()) {
                (_, Some(b',')) => {
                    i = &i[1..];
                    if top == b'{' {
                        i = string_raw(i)?.0;
                        i = punct(":", "expected `:` after an object's key")(i)?.0;
                    }
                    break;
                }
                (b'[', Some(b']')) | (b'{', Some(b'}')) => {
                    open.pop();
                    i = &i[1..];
                }
                (b'[', _) => return fail(i, "expected `,` or `]`"),
                _ => return fail(i, "expected `,` or `}`"),
            }
        }
    }
}

/// Reads an array of non-negative integers in records of `width`.
struct Numbers<'a> {
    rest: In<'a>,
    first: bool,
    done: bool,
}

impl<'a> Numbers<'a> {
    /// Starts at `[` (after optional whitespace).
    fn open(i: In<'a>, what: &'static str) -> Result<Numbers<'a>, nom::Err<Fail<'a>>> {
        let (rest, ()) = punct("[", what)(i)?;
        Ok(Numbers { rest, first: true, done: false })
    }

    /// Fills `out` with the next record, or returns false at the array's end.
    fn record(&mut self, out: &mut [u64], what: &'static str) -> Result<bool, nom::Err<Fail<'a>>> {
        if let Some(rest) = self.plain_record(out) {
            self.rest = rest;
            return Ok(true);
        }
        self.careful_record(out, what)
    }

    /// The converter's inner loop: a record after the first, away from the array's end, whose
    /// numbers are each a separator (`,` with at most 4 whitespace bytes on either side) and at
    /// most 18 digits, with no leading zero and not followed by `.`, `e` or `E`. Anything else
    /// returns `None`, having changed nothing, and [`Numbers::careful_record`] reads it again and
    /// explains. Each number takes at most `LONGEST` bytes, so away from the end nothing is read
    /// past the slice.
    #[inline]
    fn plain_record(&self, out: &mut [u64]) -> Option<In<'a>> {
        const LONGEST: usize = 4 + 1 + 4 + 18 + 1;
        let i = self.rest;
        if self.done || self.first || i.len() <= LONGEST * out.len() {
            return None;
        }
        let mut k = 0;
        let skip_ws = |k: &mut usize| {
            let mut n = 0;
            while is_ws(i[*k]) {
                *k += 1;
                n += 1;
                if n > 4 {
                    return false;
                }
            }
            true
        };
        for slot in out {
            if !skip_ws(&mut k) || i[k] != b',' {
                return None;
            }
            k += 1;
            if !skip_ws(&mut k) {
                return None;
            }
            let start = k;
            let mut v = 0u64;
            while i[k].is_ascii_digit() {
                v = v * 10 + (i[k] - b'0') as u64;
                k += 1;
                if k - start > 18 {
                    return None;
                }
            }
            let n = k - start;
            if n == 0 || (n > 1 && i[start] == b'0') || matches!(i[k], b'.' | b'e' | b'E') {
                return None;
            }
            *slot = v;
        }
        Some(&i[k..])
    }

    /// [`Numbers::record`] one number at a time, with every check and its error.
    fn careful_record(&mut self, out: &mut [u64], what: &'static str) -> Result<bool, nom::Err<Fail<'a>>> {
        if self.done {
            return Ok(false);
        }
        for (k, slot) in out.iter_mut().enumerate() {
            let i = skip_ws(self.rest);
            if let Some(rest) = i.strip_prefix(b"]") {
                if k != 0 {
                    return Err(failure(i, format!("expected the rest of {what} (records of {} numbers)", out.len())));
                }
                self.rest = rest;
                self.done = true;
                return Ok(false);
            }
            let i = if self.first {
                i
            } else {
                match i.strip_prefix(b",") {
                    Some(rest) => skip_ws(rest),
                    None => return Err(failure(i, "expected `,` or `]`")),
                }
            };
            self.first = false;
            let (rest, v) = digits(i)?;
            *slot = v;
            self.rest = rest;
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Pass 1: where each top-level value starts.

#[derive(Debug, Default)]
struct Layout {
    snapshot: Option<usize>,
    nodes: Option<usize>,
    edges: Option<usize>,
    strings: Option<usize>,
    locations: Option<usize>,
    /// Where the top-level object closes, for errors about what is missing.
    end: usize,
}

impl Layout {
    /// Finds the members; `release` is given each value's bytes once they are skipped, so that a
    /// large file's pages do not stay resident (pass 2 reads them again, section by section).
    fn scan(bytes: &[u8], release: &dyn Fn(std::ops::Range<usize>)) -> Result<Layout, FormatError> {
        Layout::parse(bytes, release).map_err(|e| to_format(bytes, e))
    }

    fn parse<'a>(bytes: &'a [u8], release: &dyn Fn(std::ops::Range<usize>)) -> Result<Layout, nom::Err<Fail<'a>>> {
        let mut layout = Layout::default();
        let (mut i, ()) = punct("{", "expected `{`: a V8 heap snapshot is a JSON object")(bytes)?;
        if let Some(rest) = skip_ws(i).strip_prefix(b"}") {
            i = rest;
        } else {
            loop {
                let key_at = skip_ws(i);
                let (rest, key) = string_raw(i)?;
                let (rest, ()) = punct(":", "expected `:` after an object's key")(rest)?;
                let value = skip_ws(rest);
                let at = bytes.len() - value.len();
                let slot = match key {
                    b"snapshot" => Some(&mut layout.snapshot),
                    b"nodes" => Some(&mut layout.nodes),
                    b"edges" => Some(&mut layout.edges),
                    b"strings" => Some(&mut layout.strings),
                    b"locations" => Some(&mut layout.locations),
                    _ => None,
                };
                if let Some(slot) = slot {
                    if slot.is_some() {
                        return Err(failure(key_at, "a key that appears once (this one is repeated)"));
                    }
                    *slot = Some(at);
                }
                i = match key {
                    // Arrays of numbers: their `]` is the first one. Pass 2 checks what is inside.
                    b"nodes" | b"edges" | b"locations" if value.starts_with(b"[") => {
                        match Layout::array_end(value, |n| release(at..at + n)) {
                            Some(n) => &value[n + 1..],
                            None => return Err(failure(value, "expected `]`, found the end of the file")),
                        }
                    }
                    _ => skip_value(value)?.0,
                };
                release(at..bytes.len() - i.len());
                let after = skip_ws(i);
                match after.first() {
                    Some(b',') => i = &after[1..],
                    Some(b'}') => {
                        i = &after[1..];
                        break;
                    }
                    _ => return Err(failure(after, "expected `,` or `}`")),
                }
            }
        }
        layout.end = bytes.len() - i.len() - 1;
        let i = skip_ws(i);
        if !i.is_empty() {
            return Err(failure(i, "expected the end of the file after the snapshot object"));
        }
        Ok(layout)
    }

    /// Where the first `]` of `value` is, searched a window at a time: `done(n)` is told after
    /// each window that the first `n` bytes are searched.
    fn array_end(value: &[u8], done: impl Fn(usize)) -> Option<usize> {
        const WINDOW: usize = 16 << 20;
        let mut from = 0;
        while from < value.len() {
            let to = (from + WINDOW).min(value.len());
            if let Some(n) = memchr::memchr(b']', &value[from..to]) {
                return Some(from + n);
            }
            from = to;
            done(from);
        }
        None
    }

    /// The start of a member that must be there; its absence is reported at the closing `}`.
    fn required(&self, at: Option<usize>, name: &str) -> Result<usize, FormatError> {
        at.ok_or_else(|| FormatError::new(self.end as u64, format!("expected a `{name}` member before `}}`")))
    }
}

// ---------------------------------------------------------------------------------------------
// `snapshot.meta`: a small object, parsed into a small tree.

enum Json<'a> {
    Str(Vec<u8>),
    Other,
    Array(Vec<(In<'a>, Json<'a>)>),
    Object(Vec<(Vec<u8>, In<'a>, Json<'a>)>),
}

const MAX_META_DEPTH: usize = 16;

fn json(i: In<'_>, depth: usize) -> Res<'_, Json<'_>> {
    let i = skip_ws(i);
    match i.first() {
        Some(b'"') => {
            let mut s = Vec::new();
            let (rest, ()) = string_into(i, &mut s)?;
            Ok((rest, Json::Str(s)))
        }
        Some(b'[' | b'{') if depth >= MAX_META_DEPTH => fail(i, "`snapshot` nested no deeper than 16 levels"),
        Some(b'[') => {
            let mut items = Vec::new();
            let mut i = skip_ws(&i[1..]);
            if let Some(rest) = i.strip_prefix(b"]") {
                return Ok((rest, Json::Array(items)));
            }
            loop {
                let at = skip_ws(i);
                let (rest, v) = json(at, depth + 1)?;
                items.push((at, v));
                let rest = skip_ws(rest);
                match rest.first() {
                    Some(b',') => i = &rest[1..],
                    Some(b']') => return Ok((&rest[1..], Json::Array(items))),
                    _ => return fail(rest, "expected `,` or `]`"),
                }
            }
        }
        Some(b'{') => {
            let mut members = Vec::new();
            let mut i = skip_ws(&i[1..]);
            if let Some(rest) = i.strip_prefix(b"}") {
                return Ok((rest, Json::Object(members)));
            }
            loop {
                let mut key = Vec::new();
                let (rest, ()) = string_into(i, &mut key)?;
                let (rest, ()) = punct(":", "expected `:` after an object's key")(rest)?;
                let at = skip_ws(rest);
                let (rest, v) = json(at, depth + 1)?;
                members.push((key, at, v));
                let rest = skip_ws(rest);
                match rest.first() {
                    Some(b',') => i = &rest[1..],
                    Some(b'}') => return Ok((&rest[1..], Json::Object(members))),
                    _ => return fail(rest, "expected `,` or `}`"),
                }
            }
        }
        _ => {
            let (rest, ()) = skip_value(i)?;
            Ok((rest, Json::Other))
        }
    }
}

impl<'a> Json<'a> {
    fn get(&self, key: &str) -> Option<(In<'a>, &Json<'a>)> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _, _)| k == key.as_bytes()).map(|(_, at, v)| (*at, v)),
            _ => None,
        }
    }

    /// A list of strings, as the `*_fields` and type lists are.
    fn strings(&self, at: In<'a>, what: &str) -> Result<Vec<Vec<u8>>, nom::Err<Fail<'a>>> {
        let Json::Array(items) = self else {
            return Err(nom::Err::Failure(Fail { at, what: format!("expected {what}: an array of strings").into() }));
        };
        items
            .iter()
            .map(|(at, v)| match v {
                Json::Str(s) => Ok(s.clone()),
                _ => Err(nom::Err::Failure(Fail { at, what: format!("expected a string in {what}").into() })),
            })
            .collect()
    }
}

/// Node kinds, by the names in `snapshot.meta.node_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum NodeKind {
    Hidden,
    Array,
    String,
    Object,
    Code,
    Closure,
    Regexp,
    Number,
    Native,
    Synthetic,
    Symbol,
    BigInt,
    ObjectShape,
    /// A kind this code does not know: its index in `node_types`.
    Other(u32),
}

impl NodeKind {
    fn of(name: &[u8], index: u32) -> NodeKind {
        match name {
            b"hidden" => NodeKind::Hidden,
            b"array" => NodeKind::Array,
            b"string" | b"concatenated string" | b"sliced string" => NodeKind::String,
            b"object" => NodeKind::Object,
            b"code" => NodeKind::Code,
            b"closure" => NodeKind::Closure,
            b"regexp" => NodeKind::Regexp,
            b"number" => NodeKind::Number,
            b"native" => NodeKind::Native,
            b"synthetic" => NodeKind::Synthetic,
            b"symbol" => NodeKind::Symbol,
            b"bigint" => NodeKind::BigInt,
            b"object shape" => NodeKind::ObjectShape,
            _ => NodeKind::Other(index),
        }
    }
}

/// Edge kinds, by the names in `snapshot.meta.edge_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeType {
    /// `element` and `hidden`: named by an index.
    Indexed,
    Weak,
    Shortcut,
    Internal,
    /// `context`, `property` and any other: named by a string.
    Named,
}

impl EdgeType {
    fn of(name: &[u8]) -> EdgeType {
        match name {
            b"element" | b"hidden" => EdgeType::Indexed,
            b"weak" => EdgeType::Weak,
            b"shortcut" => EdgeType::Shortcut,
            b"internal" => EdgeType::Internal,
            _ => EdgeType::Named,
        }
    }
}

/// Where each field is in a record, and what the type numbers mean.
struct Meta {
    title: Option<Vec<u8>>,
    node_width: usize,
    node_type: usize,
    node_name: usize,
    node_id: usize,
    node_size: usize,
    node_edges: usize,
    node_detached: Option<usize>,
    node_kinds: Vec<NodeKind>,
    node_kind_names: Vec<Vec<u8>>,
    edge_width: usize,
    edge_type: usize,
    edge_name: usize,
    edge_to: usize,
    edge_types: Vec<EdgeType>,
    location_width: usize,
    location_object: usize,
    location_script: usize,
    location_line: usize,
    location_column: usize,
}

impl Meta {
    fn parse(bytes: &[u8], layout: &Layout) -> Result<Meta, FormatError> {
        let at = layout.required(layout.snapshot, "snapshot")?;
        Meta::from_json(&bytes[at..]).map_err(|e| to_format(bytes, e))
    }

    fn from_json(i: In<'_>) -> Result<Meta, nom::Err<Fail<'_>>> {
        let (_, snapshot) = json(i, 0)?;
        let failure = |at, what: String| nom::Err::Failure(Fail { at, what: what.into() });
        let (meta_at, meta) = snapshot.get("meta").ok_or_else(|| failure(i, "expected `snapshot.meta`".into()))?;
        let title = match snapshot.get("title") {
            Some((_, Json::Str(s))) => Some(s.clone()),
            _ => None,
        };
        let list = |key: &str| -> Result<(In<'_>, Vec<Vec<u8>>), nom::Err<Fail<'_>>> {
            let (at, v) = meta.get(key).ok_or_else(|| failure(meta_at, format!("expected `meta.{key}`")))?;
            Ok((at, v.strings(at, &format!("`meta.{key}`"))?))
        };
        let position = |fields: &[Vec<u8>], at, list: &str, name: &str| {
            fields
                .iter()
                .position(|f| f == name.as_bytes())
                .ok_or_else(|| failure(at, format!("expected `{name}` among `meta.{list}`")))
        };
        // `node_types[i]` describes field i; the `type` field's entry is the list of kind names.
        let types_of = |key: &str, field: usize| -> Result<Vec<Vec<u8>>, nom::Err<Fail<'_>>> {
            let (at, v) = meta.get(key).ok_or_else(|| failure(meta_at, format!("expected `meta.{key}`")))?;
            match v {
                Json::Array(items) => match items.get(field) {
                    Some((at, v)) => v.strings(at, &format!("`meta.{key}[{field}]` (the type names)")),
                    None => Err(failure(at, format!("expected `meta.{key}[{field}]` (the type names)"))),
                },
                _ => Err(failure(at, format!("expected `meta.{key}`: an array"))),
            }
        };

        let (at, node_fields) = list("node_fields")?;
        let node_type = position(&node_fields, at, "node_fields", "type")?;
        let node_kind_names = types_of("node_types", node_type)?;
        let node_kinds = node_kind_names.iter().enumerate().map(|(k, n)| NodeKind::of(n, k as u32)).collect();
        let (edge_at, edge_fields) = list("edge_fields")?;
        let edge_type = position(&edge_fields, edge_at, "edge_fields", "type")?;
        let edge_types = types_of("edge_types", edge_type)?.iter().map(|n| EdgeType::of(n)).collect();
        let (location_fields, location_at) = match meta.get("location_fields") {
            Some((at, v)) => (v.strings(at, "`meta.location_fields`")?, at),
            None => (["object_index", "script_id", "line", "column"].map(|s| s.as_bytes().to_vec()).into(), meta_at),
        };
        Ok(Meta {
            title,
            node_width: node_fields.len(),
            node_type,
            node_name: position(&node_fields, at, "node_fields", "name")?,
            node_id: position(&node_fields, at, "node_fields", "id")?,
            node_size: position(&node_fields, at, "node_fields", "self_size")?,
            node_edges: position(&node_fields, at, "node_fields", "edge_count")?,
            node_detached: node_fields.iter().position(|f| f == b"detachedness"),
            node_kinds,
            node_kind_names,
            edge_width: edge_fields.len(),
            edge_type,
            edge_name: position(&edge_fields, edge_at, "edge_fields", "name_or_index")?,
            edge_to: position(&edge_fields, edge_at, "edge_fields", "to_node")?,
            edge_types,
            location_width: location_fields.len(),
            location_object: position(&location_fields, location_at, "location_fields", "object_index")?,
            location_script: position(&location_fields, location_at, "location_fields", "script_id")?,
            location_line: position(&location_fields, location_at, "location_fields", "line")?,
            location_column: position(&location_fields, location_at, "location_fields", "column")?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Pass 2: the conversion.

/// A type's name: fixed, a V8 string, or `(array) NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TypeName {
    Fixed(&'static str),
    Kind(u32),
    String(u32),
    Array(u32),
}

struct Converter<'a, 'b> {
    bytes: &'a [u8],
    /// The mapped input, whose pages the passes over nodes and edges give back behind them.
    file: &'b SnapshotFile,
    layout: &'b Layout,
    meta: &'b Meta,
    /// The bar counts the bytes of the passes over strings, nodes and edges (in that order, though
    /// strings come last in the file): `done` of them are behind the current pass.
    bar: &'b indicatif::ProgressBar,
    done: u64,
    stats: ConvertStats,
    /// The graph being built beside the file, when asked for.
    builder: Option<Builder>,
}

/// Edges of consecutive sources, handed to the thread that writes them: each source with its
/// number of edges, and the edges.
#[derive(Default)]
struct EdgeBatch {
    sources: Vec<(u32, u32)>,
    edges: Vec<Edge>,
}

/// Type ids already given, by (V8 node type, named) for types that do not depend on the name, and
/// by name for those that do; `u32::MAX` when not yet given.
struct TypeMemo {
    by_kind: Vec<u32>,
    by_name: Vec<u32>,
    by_array_name: Vec<u32>,
}

/// Per V8 string index, what the converter needs to know besides its hsnap id (index + 1).
struct Strings {
    count: u64,
    /// Where each string's opening quote is: for names read again (array types), and to tell
    /// empty names (`""`).
    starts: Vec<usize>,
    /// WeakMap table ids named by `… pair in WeakMap (table @ID)` edge names, by string index.
    weakmap_tables: HashMap<u32, u64>,
}

impl Converter<'_, '_> {
    fn run(mut self, w: &mut SnapshotWriter<'_>) -> Result<(ConvertStats, Option<Graph>), FormatError> {
        let io = |e: io::Error| FormatError::new(0, format!("writing the converted snapshot: {e}"));
        let meta = self.meta;
        w.meta(b"capture", b"v8").map_err(io)?;
        w.meta(b"producer", meta.title.as_deref().unwrap_or(b"v8")).map_err(io)?;
        w.meta(b"pointer.width", b"8").map_err(io)?;

        let strings = self.strings(w)?;
        let stacks = self.locations(w)?;
        let (edge_counts, tables) = self.nodes(w, &strings, &stacks)?;
        self.edges(w, &strings, &edge_counts, &tables)?;
        let name = self.fixed_string(w, "(root)")?;
        let root = Root { node: 0, kind: RootKind::GcRoot, interior: false, name };
        w.root(&root).map_err(io)?;
        Ok((self.stats, self.builder.map(|b| b.finish(vec![root]))))
    }

    /// Moves the bar to `rest` in the pass over the section that starts at byte `start`.
    fn advance(&self, start: usize, rest: In<'_>) {
        self.bar.set_position(self.done + (self.bytes.len() - rest.len()).saturating_sub(start) as u64);
    }

    /// Gives back the input's pages from `start` to `rest`, read and not needed again.
    fn release(&self, start: usize, rest: In<'_>) {
        self.file.release(start..self.bytes.len() - rest.len());
    }

    /// Counts the section from `start` to `rest` as done.
    fn finish_section(&mut self, start: usize, rest: In<'_>) {
        self.done += (self.bytes.len() - rest.len()).saturating_sub(start) as u64;
        self.bar.set_position(self.done);
    }

    fn fail(&self, at: In<'_>, what: impl Into<String>) -> FormatError {
        error_at(self.bytes, at, what)
    }

    fn nom(&self, e: nom::Err<Fail<'_>>) -> FormatError {
        to_format(self.bytes, e)
    }

    fn fixed_string(&mut self, w: &mut SnapshotWriter<'_>, s: &str) -> Result<u32, FormatError> {
        self.stats.strings += 1;
        w.string(s.as_bytes()).map_err(|e| FormatError::new(0, format!("writing the converted snapshot: {e}")))
    }

    /// Writes every V8 string, in order: V8 string `k` is hsnap string `k + 1`.
    fn strings(&mut self, w: &mut SnapshotWriter<'_>) -> Result<Strings, FormatError> {
        let bytes = self.bytes;
        let at = self.layout.required(self.layout.strings, "strings")?;
        let (mut i, ()) =
            punct("[", "expected `[`: `strings` is an array of strings")(&bytes[at..]).map_err(|e| self.nom(e))?;
        let mut strings = Strings { count: 0, starts: Vec::new(), weakmap_tables: HashMap::new() };
        let mut text = Vec::new();
        let mut first = true;
        loop {
            i = skip_ws(i);
            if i.starts_with(b"]") {
                break;
            }
            if !first {
                i = match i.strip_prefix(b",") {
                    Some(rest) => rest,
                    None => return Err(self.fail(i, "expected `,` or `]` in `strings`")),
                };
            }
            first = false;
            i = skip_ws(i);
            let start = bytes.len() - i.len();
            let (rest, ()) = string_into(i, &mut text).map_err(|e| self.nom(e))?;
            i = rest;
            if strings.count >= u32::MAX as u64 - 1 {
                return Err(self.fail(i, "at most 2^32 - 2 strings"));
            }
            if let Some(table) = weakmap_table(&text) {
                strings.weakmap_tables.insert(strings.count as u32, table);
            }
            strings.starts.push(start);
            w.string(&text).map_err(|e| self.fail(i, format!("writing the converted snapshot: {e}")))?;
            if strings.count % 65536 == 0 {
                self.advance(at, i);
            }
            strings.count += 1;
        }
        self.finish_section(at, i);
        self.stats.strings += strings.count;
        Ok(strings)
    }

    /// Reads `locations` and writes a frame and a stack for each distinct place; returns the stack
    /// of each node that has one, by node index.
    fn locations(&mut self, w: &mut SnapshotWriter<'_>) -> Result<Vec<(u32, u32)>, FormatError> {
        let Some(at) = self.layout.locations else { return Ok(Vec::new()) };
        let m = self.meta;
        let io = |e: io::Error| FormatError::new(0, format!("writing the converted snapshot: {e}"));
        let mut numbers = Numbers::open(&self.bytes[at..], "expected `[`: `locations` is an array of numbers")
            .map_err(|e| self.nom(e))?;
        let mut record = vec![0u64; m.location_width];
        let mut places: HashMap<(u64, u64, u64), u32> = HashMap::new();
        let mut order: Vec<(u64, u64, u64)> = Vec::new();
        let mut located: Vec<(u32, u32)> = Vec::new();
        loop {
            let here = numbers.rest;
            if !numbers.record(&mut record, "a location").map_err(|e| self.nom(e))? {
                break;
            }
            let object = record[m.location_object];
            if object % m.node_width as u64 != 0 || object / m.node_width as u64 >= u32::MAX as u64 - 1 {
                return Err(self.fail(skip_ws(here), "expected a location's object_index: a node's offset in `nodes`"));
            }
            let place = (record[m.location_script], record[m.location_line], record[m.location_column]);
            let next = places.len() as u32;
            let frame = *places.entry(place).or_insert_with(|| {
                order.push(place);
                next
            });
            located.push(((object / m.node_width as u64) as u32, frame));
        }
        // Strings, then frames, then stacks: one chunk of each rather than three per place.
        let mut scripts: HashMap<u64, u32> = HashMap::new();
        for &(script, _, _) in &order {
            if let std::collections::hash_map::Entry::Vacant(entry) = scripts.entry(script) {
                entry.insert(self.fixed_string(w, &format!("script {script}"))?);
            }
        }
        let number = |v: u64| u32::try_from(v.saturating_add(1)).unwrap_or(0);
        for &(script, line, column) in &order {
            w.frame_symbol(scripts[&script], 0, number(line), number(column)).map_err(io)?;
        }
        let mut stacks = Vec::with_capacity(order.len());
        for frame in 0..order.len() as u32 {
            stacks.push(w.stack(0, frame).map_err(io)?);
        }
        for entry in &mut located {
            entry.1 = stacks[entry.1 as usize];
        }
        located.sort_unstable_by_key(|&(node, _)| node);
        located.dedup_by_key(|&mut (node, _)| node);
        self.stats.locations = located.len() as u64;
        Ok(located)
    }

    /// Writes the nodes as they are read; returns each node's edge count and the nodes that are
    /// WeakMap tables named by edges (by index: their ids).
    fn nodes(
        &mut self,
        w: &mut SnapshotWriter<'_>,
        strings: &Strings,
        stacks: &[(u32, u32)],
    ) -> Result<(Vec<u32>, HashMap<u32, u64>), FormatError> {
        let m = self.meta;
        let at = self.layout.required(self.layout.nodes, "nodes")?;
        let mut numbers = Numbers::open(&self.bytes[at..], "expected `[`: `nodes` is an array of numbers")
            .map_err(|e| self.nom(e))?;
        let table_ids: std::collections::HashSet<u64> = strings.weakmap_tables.values().copied().collect();
        let mut tables = HashMap::new();
        let mut types: HashMap<TypeName, u32> = HashMap::new();
        // The same type is looked up for most nodes: remembered by (V8 type, named) and by name, so
        // the map above is asked once per type rather than once per node.
        let mut memo = TypeMemo {
            by_kind: vec![u32::MAX; 2 * m.node_kinds.len()],
            by_name: vec![u32::MAX; strings.count as usize],
            by_array_name: vec![u32::MAX; strings.count as usize],
        };
        let mut type_names: Vec<TypeName> = Vec::new();
        let mut edge_counts: Vec<u32> = Vec::new();
        let mut record = vec![0u64; m.node_width];
        let mut stacks = stacks.iter().peekable();
        loop {
            let here = skip_ws(numbers.rest);
            if !numbers.record(&mut record, "a node").map_err(|e| self.nom(e))? {
                break;
            }
            let index = edge_counts.len() as u32;
            if index >= u32::MAX - 1 {
                return Err(self.fail(here, "at most 2^32 - 2 nodes"));
            }
            let kind_index = record[m.node_type] as usize;
            let kind = match m.node_kinds.get(kind_index) {
                Some(&kind) => kind,
                None => return Err(self.fail(here, "expected a node type: an index into `meta.node_types`")),
            };
            let name = record[m.node_name];
            if name >= strings.count {
                return Err(self.fail(here, "expected a node name: an index into `strings`"));
            }
            let name = name as u32;
            let named = self.bytes.get(strings.starts[name as usize] + 1) != Some(&b'"');
            let type_name = match kind {
                NodeKind::Object | NodeKind::Native if named => TypeName::String(name),
                NodeKind::Object => TypeName::Fixed("(object)"),
                NodeKind::Native => TypeName::Fixed("(native)"),
                NodeKind::Synthetic if named => TypeName::String(name),
                NodeKind::Synthetic => TypeName::Fixed("(synthetic)"),
                NodeKind::Array if named => TypeName::Array(name),
                NodeKind::Array => TypeName::Fixed("(array)"),
                NodeKind::Hidden => TypeName::Fixed("(system)"),
                NodeKind::String => TypeName::Fixed("(string)"),
                NodeKind::Code => TypeName::Fixed("(compiled code)"),
                NodeKind::Closure => TypeName::Fixed("(closure)"),
                NodeKind::Regexp => TypeName::Fixed("(regexp)"),
                NodeKind::Number => TypeName::Fixed("(number)"),
                NodeKind::Symbol => TypeName::Fixed("(symbol)"),
                NodeKind::BigInt => TypeName::Fixed("(bigint)"),
                NodeKind::ObjectShape => TypeName::Fixed("(object shape)"),
                NodeKind::Other(k) => TypeName::Kind(k),
            };
            let slot = match type_name {
                TypeName::String(name) => &mut memo.by_name[name as usize],
                TypeName::Array(name) => &mut memo.by_array_name[name as usize],
                TypeName::Fixed(_) | TypeName::Kind(_) => &mut memo.by_kind[2 * kind_index + named as usize],
            };
            if *slot == u32::MAX {
                let next = type_names.len() as u32;
                *slot = *types.entry(type_name).or_insert_with(|| {
                    type_names.push(type_name);
                    next
                });
            }
            let type_id = *slot;
            let mut stack = 0;
            while let Some(&&(node, s)) = stacks.peek() {
                if node > index {
                    break;
                }
                if node == index {
                    stack = s;
                }
                stacks.next();
            }
            let edges = u32::try_from(record[m.node_edges])
                .map_err(|_| self.fail(here, "expected a node's edge_count below 2^32"))?;
            let identity = record[m.node_id];
            if !table_ids.is_empty() && table_ids.contains(&identity) {
                tables.insert(index, identity);
            }
            let detached = m.node_detached.is_some_and(|f| record[f] == 2);
            let node = Node {
                identity,
                address: 0,
                size: record[m.node_size],
                type_id,
                stack,
                flags: if detached { Node::DETACHED } else { 0 },
            };
            w.node(&node).map_err(|e| self.fail(here, format!("writing the converted snapshot: {e}")))?;
            if let Some(builder) = &mut self.builder {
                builder.node(&node);
            }
            edge_counts.push(edges);
            if index % 65536 == 0 {
                self.advance(at, here);
                self.release(at, here);
            }
        }
        self.finish_section(at, numbers.rest);
        self.release(at, numbers.rest);
        if edge_counts.is_empty() {
            return Err(self.fail(&self.bytes[at..], "expected at least one node (the root)"));
        }
        if stacks.next().is_some() {
            let at = self.layout.locations.unwrap_or(0);
            return Err(self.fail(&self.bytes[at..], "expected every location's object_index to name a node"));
        }
        self.stats.nodes = edge_counts.len() as u64;
        self.stats.types = type_names.len() as u64;
        // The types, named now that every node has been seen.
        let mut fixed: HashMap<String, u32> = HashMap::new();
        let io = |e: io::Error| FormatError::new(0, format!("writing the converted snapshot: {e}"));
        let mut names = Vec::with_capacity(type_names.len());
        for &t in &type_names {
            let text = match t {
                TypeName::String(s) => {
                    names.push(s + 1);
                    continue;
                }
                TypeName::Fixed(s) => s.to_string(),
                TypeName::Kind(k) => format!("({})", String::from_utf8_lossy(&m.node_kind_names[k as usize])),
                TypeName::Array(s) => {
                    // The name is written again, after `(array) `; it is short (`(object elements)`).
                    let mut text = Vec::new();
                    let at = &self.bytes[strings.starts[s as usize]..];
                    string_into(at, &mut text).map_err(|e| self.nom(e))?;
                    format!("(array) {}", String::from_utf8_lossy(&text))
                }
            };
            let id = match fixed.get(&text) {
                Some(&id) => id,
                None => {
                    let id = self.fixed_string(w, &text)?;
                    fixed.insert(text, id);
                    id
                }
            };
            names.push(id);
        }
        for name in names {
            w.type_(name).map_err(io)?;
        }
        Ok((edge_counts, tables))
    }

    /// Reads the edges and writes them: the writing (encoding records, checksums, the file) on a
    /// second thread, fed batches of a few thousand edges, so that it overlaps the parsing.
    fn edges(
        &mut self,
        w: &mut SnapshotWriter<'_>,
        strings: &Strings,
        edge_counts: &[u32],
        tables: &HashMap<u32, u64>,
    ) -> Result<(), FormatError> {
        const BATCH: usize = 1 << 14;
        let write_error = |e: io::Error| FormatError::new(0, format!("writing the converted snapshot: {e}"));
        std::thread::scope(|scope| {
            let (full, to_write) = std::sync::mpsc::sync_channel::<EdgeBatch>(2);
            let (give_back, written_batches) = std::sync::mpsc::channel::<EdgeBatch>();
            let writer = scope.spawn(move || -> io::Result<()> {
                for batch in to_write {
                    let mut at = 0;
                    for &(from, count) in &batch.sources {
                        let end = at + count as usize;
                        w.edges(from, &batch.edges[at..end])?;
                        at = end;
                    }
                    let _ = give_back.send(batch);
                }
                Ok(())
            });
            let mut batch = EdgeBatch::default();
            let parsed = self.parse_edges(strings, edge_counts, tables, |from, edges| {
                batch.sources.push((from, edges.len() as u32));
                batch.edges.extend_from_slice(edges);
                if batch.edges.len() >= BATCH {
                    let mut next = written_batches.try_recv().unwrap_or_default();
                    next.sources.clear();
                    next.edges.clear();
                    if full.send(std::mem::replace(&mut batch, next)).is_err() {
                        // The writer stopped on an error, reported below.
                        return Err(FormatError::new(0, "writing the converted snapshot stopped"));
                    }
                }
                Ok(())
            });
            if parsed.is_ok() && !batch.sources.is_empty() {
                let _ = full.send(batch);
            }
            drop(full);
            // A write error first: it is why parsing stopped, if it did.
            writer.join().expect("the edge writer does not panic").map_err(write_error)?;
            parsed
        })
    }

    /// Reads the edges, giving each node's (at least one) to `emit` in order.
    fn parse_edges(
        &mut self,
        strings: &Strings,
        edge_counts: &[u32],
        tables: &HashMap<u32, u64>,
        mut emit: impl FnMut(u32, &[Edge]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let m = self.meta;
        let at = self.layout.required(self.layout.edges, "edges")?;
        let mut numbers = Numbers::open(&self.bytes[at..], "expected `[`: `edges` is an array of numbers")
            .map_err(|e| self.nom(e))?;
        let node_count = edge_counts.len() as u64;
        let width = m.node_width as u64;
        let mut record = vec![0u64; m.edge_width];
        let mut out: Vec<Edge> = Vec::new();
        if let Some(builder) = &mut self.builder {
            builder.start_edges(edge_counts.iter().map(|&c| c as usize).sum());
        }
        for (from, &count) in edge_counts.iter().enumerate() {
            let from = from as u32;
            // Looked up once a node, not once an internal edge (a third of them, in Node's heaps).
            let table_id = if tables.is_empty() { None } else { tables.get(&from) };
            out.clear();
            for _ in 0..count {
                let here = skip_ws(numbers.rest);
                if !numbers.record(&mut record, "an edge").map_err(|e| self.nom(e))? {
                    return Err(self.fail(here, "expected an edge: the nodes' edge counts say there are more"));
                }
                let to = record[m.edge_to];
                if to % width != 0 || to / width >= node_count {
                    return Err(self.fail(here, "expected an edge's to_node: a node's offset in `nodes`"));
                }
                let to = (to / width) as u32;
                let Some(&kind) = m.edge_types.get(record[m.edge_type] as usize) else {
                    return Err(self.fail(here, "expected an edge type: an index into `meta.edge_types`"));
                };
                let name = record[m.edge_name];
                let label = if kind == EdgeType::Indexed {
                    Label::Index(name)
                } else if name < strings.count {
                    Label::Name(name as u32 + 1)
                } else {
                    return Err(self.fail(here, "expected an edge name: an index into `strings`"));
                };
                let weak = match kind {
                    EdgeType::Weak => true,
                    EdgeType::Shortcut => from != 0,
                    EdgeType::Internal => {
                        table_id.is_some_and(|&id| strings.weakmap_tables.get(&(name as u32)) == Some(&id))
                    }
                    EdgeType::Indexed | EdgeType::Named => false,
                };
                self.stats.weak_edges += weak as u64;
                out.push(Edge { to, kind: if weak { EdgeKind::Weak } else { EdgeKind::Strong }, label });
            }
            if !out.is_empty() {
                emit(from, &out)?;
                if let Some(builder) = &mut self.builder {
                    builder.edges(from, &out);
                }
            }
            self.stats.edges += count as u64;
            if from % 65536 == 0 {
                self.advance(at, numbers.rest);
                self.release(at, numbers.rest);
            }
        }
        let here = skip_ws(numbers.rest);
        if numbers.record(&mut record, "an edge").map_err(|e| self.nom(e))? {
            return Err(self.fail(here, "expected `]`: more edges than the nodes' edge counts say"));
        }
        self.finish_section(at, numbers.rest);
        self.release(at, numbers.rest);
        Ok(())
    }
}

/// The table id in the name V8 gives an ephemeron edge, `N / part of key (K @1) -> value (V @2) pair
/// in WeakMap (table @ID)`; `None` for any other name. V8 gives this name to two `internal` edges
/// to the value, one from the key and one from the table; DevTools does not count the table's as
/// essential (the value lives as long as key and table both do; the key's edge gives the more
/// useful dominators). This is DevTools' test exactly: `tryParseWeakMapEdgeName` and
/// `computeIsEssentialEdge` in devtools-frontend's
/// `front_end/entrypoints/heap_snapshot_worker/HeapSnapshot.ts` match the name against
/// `^\d+ / part of key \(.*? @\d+\) -> value \(.*? @\d+\) pair in WeakMap \(table @(\d+)\)$` (where
/// `.` is any character but a line terminator) and drop the edge when it leaves the node whose id is
/// the table id. memlab 2.0.5 keeps it, so there a WeakMap table retains its values.
fn weakmap_table(name: &[u8]) -> Option<u64> {
    let prefix = name.iter().take_while(|c| c.is_ascii_digit()).count();
    if prefix == 0 {
        return None;
    }
    let rest = name[prefix..].strip_prefix(b" / part of key (")?.strip_suffix(b")")?;
    let (rest, table) = trailing_number(rest)?;
    let rest = rest.strip_suffix(b") pair in WeakMap (table @")?;
    // `K @\d+) -> value (V @\d+`, neither name holding a line terminator.
    let (rest, _value) = trailing_number(rest)?;
    let rest = rest.strip_suffix(b" @")?;
    let line_break = |w: &[u8]| matches!(w, [b'\n', ..] | [b'\r', ..] | [0xE2, 0x80, 0xA8 | 0xA9]);
    if (0..rest.len()).any(|i| line_break(&rest[i..rest.len().min(i + 3)])) {
        return None;
    }
    const MIDDLE: &[u8] = b") -> value (";
    let splits = (0..rest.len()).filter(|&i| rest[i..].starts_with(MIDDLE));
    let mut keys = splits.map(|i| trailing_number(&rest[..i]).and_then(|(key, _)| key.strip_suffix(b" @")));
    keys.any(|key| key.is_some()).then(|| std::str::from_utf8(table).ok()?.parse().ok())?
}

/// Splits the digits (at least one) off the end of `text`.
fn trailing_number(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = text.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    (digits > 0).then(|| text.split_at(text.len() - digits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescaped(raw: &str) -> Result<String, (usize, &'static str)> {
        let mut out = Vec::new();
        unescape(raw.as_bytes(), &mut out).map(|()| String::from_utf8(out).unwrap())
    }

    #[test]
    fn unescapes_json_strings() {
        assert_eq!(unescaped(r#"a\"b\\c\/d\n\t"#).unwrap(), "a\"b\\c/d\n\t");
        assert_eq!(unescaped(r"\u00e9\u4e2d").unwrap(), "é中");
        assert_eq!(unescaped(r"\ud83d\ude00!").unwrap(), "😀!");
        assert_eq!(unescaped(r"\ud83dx").unwrap(), "\u{FFFD}x");
        assert_eq!(unescaped(r"\ude00").unwrap(), "\u{FFFD}");
        assert!(unescaped(r"\u12").is_err());
        assert!(unescaped(r"\q").is_err());
        assert!(unescaped("\\").is_err());
    }

    #[test]
    fn numbers_and_values() {
        assert_eq!(digits(b"42,").unwrap().1, 42);
        assert_eq!(digits(b"18446744073709551615]").unwrap().1, u64::MAX);
        assert!(digits(b"-1").is_err());
        assert!(digits(b"1.5").is_err());
        assert!(digits(b"01").is_err());
        assert!(digits(b"18446744073709551616").is_err());
        assert!(digits(b"99999999999999999999").is_err());
        assert_eq!(skip_value(br#" {"a": [1, {"b": null}, "x]"], "c": true} tail"#).unwrap().0, b" tail");
        assert!(skip_value(br#"{"a": [1, 2}"#).is_err());
        assert!(skip_value(b"[[[[").is_err());
    }

    #[test]
    fn recognises_weakmap_edges() {
        let name = b"3 / part of key (Object @11) -> value (Foo @13) pair in WeakMap (table @17)";
        assert_eq!(weakmap_table(name), Some(17));
        // Names may hold anything but a line break, `@` and `) -> value (` included.
        let odd = "12 / part of key (a) -> value (b @3 @4) -> value (c) d @5) pair in WeakMap (table @6)";
        assert_eq!(weakmap_table(odd.as_bytes()), Some(6));
        assert_eq!(weakmap_table(b"1 / part of key ( @1) -> value ( @2) pair in WeakMap (table @5)"), Some(5));
        // DevTools' regular expression needs the leading index, the ids, and no line terminator.
        assert_eq!(weakmap_table(b"part of key (a @1) -> value (b @2) pair in WeakMap (table @5)"), None);
        assert_eq!(weakmap_table(b"1 / part of key (a @) -> value (b @2) pair in WeakMap (table @5)"), None);
        assert_eq!(weakmap_table(b"1 / part of key (a @1) -> value (b @2) pair in WeakMap (table @)"), None);
        assert_eq!(weakmap_table(b"1 / part of key (a @1) -> value (b\n @2) pair in WeakMap (table @5)"), None);
        let separator = "1 / part of key (a @1) -> value (b\u{2028} @2) pair in WeakMap (table @5)";
        assert_eq!(weakmap_table(separator.as_bytes()), None);
        assert_eq!(weakmap_table(b"1 / part of key (a @1) -> value (b @2) pair in WeakMap (table @5) "), None);
        assert_eq!(weakmap_table(b"table"), None);
        assert_eq!(weakmap_table(b"pair in WeakMap (table @)"), None);
    }

    #[test]
    fn looks_like_v8() {
        assert!(looks_like(b"{\"snapshot\":{}}"));
        assert!(looks_like(b" \n{ \"snapshot\""));
        assert!(!looks_like(b"\x89HSNAP\r\n"));
        assert!(!looks_like(b"{\"nodes\":[]}"));
    }
}
