"""Capture the calling interpreter's heap as an `.hsnap` file.

The file is written in the address-keyed form of formats/hsnap.md, section
3.1: objects in batches, each known by its address (`id()`), each reference
by the address it points to, each object with its reference count as the
interpreter reports it.  heapsnap numbers the objects, resolves the
references and decides the roots when it opens the file.  That split is what
makes a pure-Python exporter fast: numbering objects needs one lookup per
reference, the one step Python cannot take at C speed within the memory
bound, while reading addresses, types, sizes and counts can all be done by
C-level `map`s over whole batches.

What a batch holds:

* Sources: a slice of ``gc.get_objects()`` (the *tracked* objects, kind 0)
  with address, type, size, refcount and ``gc.get_referents``; or untracked
  containers met earlier (kind 1) with only their referents.
* Leaves: the untracked objects among the batch's referents (str, int,
  float, bytes, atomic tuples and dicts, static types), with address, type,
  size and refcount, once per occurrence: heapsnap keeps the first.
  Untracked containers among them are queued, once each, as kind-1 sources.
* Labels: str dict keys and the ``__dict__`` reference of an instance or
  module; list and tuple indices follow from the type (``PYTY``).

Roots are the collector's: a tracked object is a root when its count exceeds
the references other tracked objects hold, an untracked one when its count
exceeds the references all objects hold.  Counts are read while the exporter
holds a known number of references to each object (the batch's biases: the
`objs` list and the batch slice for sources; for leaves, the leaf list,
which holds one reference per occurrence in the batch), so heapsnap can
subtract them.  Between ``gc.get_objects()`` and the last count, the
exporter holds heap objects only in those lists, the batch's referent
lists, and the queue of untracked containers, whose counts were read before
they were queued; everything else it keeps is ints, bytes and arrays.

Objects frozen with ``gc.freeze()`` are tracked but not in
``gc.get_objects()``: when there are any, a target counts as a leaf when its
address is not among the tracked objects (a set of them is made for that),
and frozen leaves are flagged and queued like untracked containers.
"""

import gc
import mmap
import os
import struct
import sys
import time
from array import array
from collections import deque
from itertools import accumulate, chain, compress, count, filterfalse, repeat
from operator import add, and_, attrgetter, eq, ge, gt, is_, itemgetter, mul, not_, sub

from . import _hsnap
from ._hsnap import bytes_field, uvarint

try:  # reads list item arrays and instance dict slots; all of it optional
    import ctypes as _ctypes
except Exception:  # pragma: no cover - ctypes missing on this build
    _ctypes = None

_get_referents = gc.get_referents
_getrefcount = sys.getrefcount
_getsizeof = sys.getsizeof
_is_tracked = gc.is_tracked

BATCH = 1 << 13                     # sources per batch
HUGE = 1 << 20                      # references per record, at most, of a source with more
KEY_CACHE = 1 << 16                 # str keys whose string id is remembered (by address)

_PTR = struct.calcsize("P")
_LITTLE = sys.byteorder == "little"
_TPFLAGS_MANAGED_DICT = 1 << 4      # 3.11+
_TPFLAGS_HEAPTYPE = 1 << 9
_TPFLAGS_HAVE_GC = 1 << 14

TRAIT_SEQUENCE = 1                  # PYTY traits
TRAIT_REVERSED = 2
KIND_GC = 1                         # _Types.kind bits: objects may have referents,
KIND_DICT = 2                       # are exact dicts,
KIND_BACK1 = 4                      # may have an instance dict, their last referent (modules),
KIND_BACK2 = 8                      # or the one before their type (instances of classes)


def _table(f):
    """A bytes.translate table: f(kind bits) for each byte value."""
    return bytes(map(f, range(256)))


_IS_GC = _table(lambda k: k & KIND_GC)
_IS_DICT = _table(lambda k: (k & KIND_DICT) >> 1)
_IS_BACK1 = _table(lambda k: int(k & (KIND_BACK1 | KIND_BACK2) == KIND_BACK1))
_IS_BACK2 = _table(lambda k: int(k & (KIND_BACK1 | KIND_BACK2) == KIND_BACK2))
_IS_MIXED = _table(lambda k: int(k & (KIND_BACK1 | KIND_BACK2) == KIND_BACK1 | KIND_BACK2))

# Type attributes are read through `type`'s own descriptors so that a
# metaclass cannot run code while we look.
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name_attr = type.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_type_dictoffset = type.__dict__["__dictoffset__"].__get__

# Recorded sizes are what the interpreter asked the allocator for (what
# tracemalloc counts), which is sys.getsizeof except for one-digit ints on
# 3.11+: those are made at sizeof(PyLongObject), the one-digit size rounded
# up to 8 bytes (32), where getsizeof says 28.  (An int parsed from text is
# asked for at 28; pymalloc hands out the same 32-byte block either way.)
_INT_ONE_DIGIT = int.__basicsize__ + int.__itemsize__
_INT_ONE_DIGIT_ALLOC = ((_INT_ONE_DIGIT + 7) & ~7) if sys.version_info >= (3, 11) \
    else _INT_ONE_DIGIT

def _seq_order(t):
    """+1 if gc.get_referents lists a t's items in index order, -1 if in
    reverse (CPython's list and tuple traversals run backwards), else 0."""
    a, b, c = [0], [1], [2]
    r = _get_referents(t((a, b, c)))
    if len(r) == 3 and r[0] is a and r[1] is b and r[2] is c:
        return 1
    if len(r) == 3 and r[0] is c and r[1] is b and r[2] is a:
        return -1
    return 0


def _dict_order():
    """True if a str-keyed dict's referents are its values in order, and a
    general dict's are value, key, value, key..."""
    x, y = [0], [1]
    ok = _get_referents({"a": x, "b": y}) == [x, y]
    r = _get_referents({"a": x, 1: y})
    return ok and len(r) == 4 and r[0] is x and r[1] == "a" and r[2] is y and r[3] == 1


_SEQ_ORDER = {list: _seq_order(list), tuple: _seq_order(tuple)}
_DICT_OK = _dict_order()


# ---------------------------------------------------------------------------
# Reading addresses and counts a batch at a time
# ---------------------------------------------------------------------------

def _addresses_by_id(objs):
    """The addresses of the items of `objs`, as little-endian u64 bytes."""
    a = array("Q", map(id, objs))
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


def _make_list_reader():
    """f(list) -> the addresses of its items, as little-endian u64 bytes,
    copied straight from the list's item array: no int object per item.
    None when this interpreter's list layout is not the one checked here."""
    if _ctypes is None or not _LITTLE or _PTR != 8:
        return None
    try:
        item_array = _ctypes.c_void_p.from_address
        string_at = _ctypes.string_at
        offset = tuple.__basicsize__            # sizeof(PyVarObject): where ob_item is

        def read(lst):
            n = len(lst)
            return string_at(item_array(id(lst) + offset).value, 8 * n) if n else b""

        probe = [object(), "x", 1.5, None]
        probe.append(probe)
        ok = read(probe) == array("Q", map(id, probe)).tobytes() and read([]) == b""
        probe.clear()
    except Exception:  # pragma: no cover
        return None
    return read if ok else None


_list_addresses = _make_list_reader() or _addresses_by_id


def _u32_or_u64(f, objs):
    """array("I") of f(o) for each of `objs`, or array("Q") when a value needs it."""
    try:
        return array("I", map(f, objs))
    except OverflowError:
        return array("Q", map(f, objs))


def _sizes(objs):
    try:
        return _u32_or_u64(_getsizeof, objs)
    except Exception:           # a __sizeof__ that raises
        return _u32_or_u64(_safe_sizeof, objs)


def _same_width(a, b):
    """Both arrays as wide as the wider one."""
    if a.typecode == b.typecode:
        return a, b
    return array("Q", a), array("Q", b)


def _calibrate():
    """The biases of a batch: references a source's count includes besides the
    heap's (the `objs` list, the batch slice, and whatever
    map(sys.getrefcount, ...) adds), and those a leaf's includes besides the
    heap's and one per occurrence in the leaf list."""
    probe = object()
    holder = [probe]
    part = holder[0:1]
    source = next(map(_getrefcount, part)) - 1          # minus `probe`
    leaves = [probe]
    del holder, part
    leaf = next(map(_getrefcount, leaves)) - 2          # minus `probe` and `leaves`
    return source, leaf


def type_name(t):
    """`module.Qualname` of a type, bare for builtins."""
    qn = mod = None
    try:
        qn = _type_qualname(t)
    except Exception:
        pass
    if not isinstance(qn, str):
        try:
            qn = _type_name_attr(t)
        except Exception:
            qn = "?"
    try:
        mod = _type_module(t)
    except Exception:
        pass
    if not isinstance(mod, str) or mod == "builtins":
        return qn
    return mod + "." + qn


def _safe_sizeof(o):
    try:
        return _getsizeof(o)
    except Exception:
        return 0


def _dict_slot(t):
    """(delta, back) for objects of type t that have an instance dict:
    the dict pointer is at id(o) + delta, and when present the dict is the
    back-th referent from the end (heap types: just before the type itself;
    modules: last).  None when t has no dict we can find cheaply."""
    try:
        flags = _type_flags(t)
        off = _type_dictoffset(t)
    except Exception:
        return None
    if flags & _TPFLAGS_HEAPTYPE:
        back = 2
    elif isinstance(t, type) and issubclass(t, type(sys)) and off > 0:
        back = 1                                   # module objects
    else:
        return None
    if sys.version_info >= (3, 11) and flags & _TPFLAGS_MANAGED_DICT:
        return (-3 * _PTR, back)
    if off > 0:
        return (off, back)
    return None


class _Probe:
    """Checks the instance-dict layout assumptions once, at import."""


def _make_word_reader():
    """C-level f(address) -> ctypes word (use .value); None if unusable."""
    if _ctypes is None:
        return None
    try:
        word = _ctypes.c_size_t.from_address
    except Exception:  # pragma: no cover
        return None
    p = _Probe()
    q = _Probe()
    p.a = q.a = 1
    d = p.__dict__                 # materialized; q's values stay inline on 3.11+
    d[0] = 0                       # a non-str key: a dict of its own on 3.13+ too
    s = _dict_slot(_Probe)
    try:
        ok = (s is not None and word(id(p) + s[0]).value == id(d)
              and word(id(q) + s[0]).value != id(d)
              and _get_referents(p)[-s[1]] is d and _get_referents(p)[-1] is _Probe)
        m = type(sys)("_heapsnap_probe")
        sm = _dict_slot(type(m))
        ok = ok and sm is not None and word(id(m) + sm[0]).value == id(m.__dict__) \
            and _get_referents(m)[-sm[1]] is m.__dict__
    except Exception:  # pragma: no cover
        ok = False
    return word if ok else None


_WORD = _make_word_reader()


def _make_trim():
    """glibc's malloc_trim(0), which gives the free pages inside the heap
    back to the system: the big arrays and lists freed between the steps
    would otherwise stay resident and add to the peak.  Called through
    PyDLL, which keeps the GIL (CDLL gives it away).  None elsewhere."""
    if _ctypes is None:
        return None
    try:
        libc = _ctypes.PyDLL(None)
        f = libc.malloc_trim
        f.argtypes = [_ctypes.c_size_t]
        f.restype = _ctypes.c_int
        return f
    except Exception:
        return None


_MALLOC_TRIM = _make_trim()


def _trim():
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Stats:
    """What a dump wrote (returned by dump())."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "Stats(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self.__dict__.items()))


# ---------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------

def capture(fd, labels=True, meta=b""):
    """Write an .hsnap of this interpreter's heap to `fd`, a regular file
    open for reading and writing (synced, and closed in any case).

    The caller has disabled the collector.  Returns a Stats.

    From gc.get_objects() until its list is let go, nothing here gives the
    GIL away (see _hsnap.MappedFile): the file is written through a memory
    map, checksums are taken a piece at a time, malloc_trim is called with
    the GIL held.
    """
    t0 = time.perf_counter()
    try:
        biases = _calibrate()
        frames = _own_frames()
        out = _hsnap.MappedFile(fd, _reserve())
        objs = gc.get_objects()
    except BaseException:
        os.close(fd)
        raise
    try:
        # made now, so that none of it is in `objs`
        own = array("Q", [id(objs)])
        own.extend(frames)
        ex = _Exporter(out, labels, biases)
        try:
            ex.write(objs, own, meta)
            s = ex.stats
        finally:
            del objs
            ex.__dict__.clear()     # the caches refer back to ex: leave no cycle behind
        out.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    s.seconds = time.perf_counter() - t0
    return s


def _reserve():
    """Bytes to make the file before the snapshot: more than it can take, so
    that the map never grows (which would give the GIL away).  A snapshot
    takes at most about 5 bytes per byte of heap (a reference to a shared
    object: 8 bytes in the heap, 37 in the file), and the reservation is
    sparse.  Eight times the resident size, and 64 MiB more."""
    page = mmap.PAGESIZE
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * page
    except (OSError, ValueError, IndexError):
        try:
            import resource
            resident = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            resident = 1 << 30
    return (64 << 20) + 8 * resident


def _own_frames():
    """Before 3.11 running frames are tracked objects, and the exporter's own
    (dump, capture) refer to its working lists: their ids, to leave them out.
    From 3.11 on, frames are objects only when asked for, so there are none."""
    if sys.version_info >= (3, 11):
        return ()
    out = []
    f = sys._getframe(1)
    while f is not None and f.f_globals.get("__name__", "").startswith(__package__ or "heapsnap_py"):
        out.append(id(f))
        f = f.f_back
    del f
    return out


def _drop(objs, addresses):
    """Remove the objects at `addresses` from `objs`, by identity (list.remove
    would call __eq__ methods).  gc.get_objects() leaves its own list out, so
    only frames (before 3.11) are ever found."""
    drop = set(addresses)
    drop.discard(id(objs))
    if drop:
        keep = bytes(map(not_, map(drop.__contains__, map(id, objs))))
        if 0 in keep:
            objs[:] = compress(objs, keep)


def _referents_part(o, a):
    """gc.get_referents(o)[a:a + HUGE], for a list or tuple straight from o
    (in traversal order), so that a huge one is not copied once a part."""
    t = type(o)
    order = _SEQ_ORDER.get(t, 0) if t is list or t is tuple else 0
    if order > 0:
        return list(o[a:a + HUGE])
    if order < 0:
        n = len(o)
        part = list(o[max(n - a - HUGE, 0):n - a])
        part.reverse()
        return part
    return _get_referents(o)[a:a + HUGE]


class _Types:
    """Type ids (TYPE records, one per type name) and what the batches need to
    know of each type."""

    def __init__(self, exporter):
        self.ex = exporter
        self.ids = {}           # id(type) -> type id
        self.by_name = {}       # type name -> type id
        self.kind = bytearray()  # type id -> KIND_* bits
        self.low = None         # the kinds of type ids 0..255, a translate table
        self.slots = {}         # id(type) -> (dict pointer delta, back), see _dict_slot

    def of(self, objs):
        """array("I") of the type ids of `objs`."""
        try:
            return array("I", map(self.ids.__getitem__, map(id, map(type, objs))))
        except KeyError:
            self._register(list(map(type, objs)))
            return array("I", map(self.ids.__getitem__, map(id, map(type, objs))))

    def kinds(self, tids):
        """bytes: the KIND_* bits of each type id of `tids`."""
        if tids and max(tids) < 256:        # one byte each: translated at C speed
            if self.low is None:
                self.low = bytes(self.kind[:256]).ljust(256, b"\0")
            return tids.tobytes()[0 if _LITTLE else 3::4].translate(self.low)
        return bytes(map(self.kind.__getitem__, tids))

    def _register(self, ts):
        ex = self.ex
        for t in dict(zip(map(id, ts), ts)).values():
            if id(t) in self.ids:
                continue
            name = type_name(t)
            tid = self.by_name.get(name)
            if tid is None:
                tid = self.by_name[name] = ex.w.counts[b"TYPE"]
                ex.w.add(b"TYPE", uvarint(ex.strid(name)))
                self.kind.append(0)
                self._traits(t, tid)
            self.ids[id(t)] = tid
            try:
                gcable = bool(_type_flags(t) & _TPFLAGS_HAVE_GC)
            except Exception:
                gcable = True
            kind = KIND_GC if gcable else 0
            if t is dict and _DICT_OK:
                kind |= KIND_DICT
            slot = _dict_slot(t) if ex.word is not None else None
            if slot is not None:
                self.slots[id(t)] = slot
                kind |= KIND_BACK1 if slot[1] == 1 else KIND_BACK2
            self.kind[tid] |= kind          # types of one name share a type id
            self.low = None

    def _traits(self, t, tid):
        traits = floor = 0
        if (t is list or t is tuple) and _SEQ_ORDER[t]:
            traits = TRAIT_SEQUENCE | (TRAIT_REVERSED if _SEQ_ORDER[t] < 0 else 0)
        if t is int and _INT_ONE_DIGIT_ALLOC != _INT_ONE_DIGIT:
            floor = _INT_ONE_DIGIT_ALLOC
        if traits or floor:
            self.ex.w.add(b"PYTY", uvarint(tid) + uvarint(traits) + uvarint(floor))


class _Exporter:
    def __init__(self, f, labels, biases):
        self.w = _hsnap.Writer(f)
        self.labels = labels
        self.word = _WORD if labels else None
        self.source_bias, self.leaf_bias = biases
        self.strids = {}        # names the exporter makes (types, "__dict__") -> string id
        self.keyids = {}        # id(str key) -> string id, at most about KEY_CACHE
        self.types = _Types(self)
        self.tracked = None     # ids of the tracked objects, only when some are frozen
        self.queued = set()     # ids of the containers queued for their referents
        self.queue = []
        self.references = self.leaves = 0

    def strid(self, s):
        sid = self.strids.get(s)
        if sid is None:
            sid = self.strids[s] = self.w.counts[b"STRS"] + 1
            self.w.add(b"STRS", bytes_field(s.encode("utf-8", "surrogatepass")))
        return sid

    # -- the file ----------------------------------------------------------
    def write(self, objs, own, meta):
        """Takes over `objs`, the gc.get_objects() list."""
        w = self.w
        if meta:
            w.add(b"META", meta, 0)     # whole records, already encoded
            w.flush(b"META")
        w.add(b"PYEX", b"".join(map(uvarint, own)), len(own))
        _drop(objs, own)
        if gc.get_freeze_count():
            self.tracked = set(map(id, objs))
        n = len(objs)
        for b in range(0, n, BATCH):
            self._batch(0, objs[b:b + BATCH])
            if b % (16 * BATCH) == 0:
                _trim()
        del objs
        while self.queue:
            work, self.queue = self.queue, []
            for b in range(0, len(work), BATCH):
                self._batch(1, work[b:b + BATCH])
            del work
        w.finish()
        self.stats = Stats(tracked=n, references=self.references, leaves=self.leaves,
                           containers=len(self.queued), batches=w.counts[b"PYBT"],
                           strings=w.counts[b"STRS"], types=w.counts[b"TYPE"],
                           bytes=w.bytes_written)

    def _batch(self, kind, blk, counts=None):
        """PYBT records for the sources `blk` (kind 0: tracked objects, with
        their node data; kind 1: queued containers, references only)."""
        if kind == 0 and counts is None:
            counts = _u32_or_u64(_getrefcount, blk)   # first: see the biases
        referents = list(map(_get_referents, blk))
        per_source = array("I", map(len, referents))
        if blk and max(per_source) > HUGE:
            del referents
            self._split(kind, blk, counts, per_source)
            return
        tids = self.types.of(blk)
        sources = [_list_addresses(blk)]
        if kind == 0:
            sources += [tids, _sizes(blk), counts]
        flat = [list(chain.from_iterable(referents))]
        del referents
        labels = self._labels(blk, tids, per_source, flat[0]) if self.labels else None
        self._record(kind, sources, per_source, flat, labels)

    def _split(self, kind, blk, counts, per_source):
        """A batch with a source of more than HUGE references: the others as
        one batch, and each of those in records of at most HUGE references
        (kind 2 continues the references of the record before)."""
        big = bytes(map(gt, per_source, repeat(HUGE)))
        small = bytes(map(not_, big))
        if 1 in small:
            self._batch(kind, list(compress(blk, small)),
                        array(counts.typecode, compress(counts, small)) if kind == 0 else None)
        for o, n, rc in zip(compress(blk, big), compress(per_source, big),
                            compress(counts, big) if kind == 0 else repeat(0)):
            for a in range(0, n, HUGE):
                part = [_referents_part(o, a)]     # no list of them all stays behind
                k = kind if a == 0 else 2
                sources = [_list_addresses([o])]
                if k == 0:
                    sources += [self.types.of([o]), _sizes([o]), array(counts.typecode, [rc])]
                self._record(k, sources, array("I", [len(part[0])]), part, None)

    def _record(self, kind, sources, per_source, box, labels):
        """Write one PYBT record.  `sources`: the source columns; `box`: a
        list holding the flat list of their referents, which this takes
        over (so that no other reference to it is left when the leaves'
        counts are read)."""
        flat = box.pop()
        types = self.types
        targets = _list_addresses(flat)
        if self.tracked is None:
            leaves = list(filterfalse(_is_tracked, flat))
        else:
            leaves = list(compress(flat, map(not_, map(self.tracked.__contains__, map(id, flat)))))
        del flat
        leaf_counts = _u32_or_u64(_getrefcount, leaves)   # see the leaf bias
        leaf_addresses = _list_addresses(leaves)
        leaf_tids = types.of(leaves)
        leaf_sizes = _sizes(leaves)
        # leaf flag bit 0, frozen: a tracked leaf is one gc.freeze() moved out of get_objects()
        frozen = bytes(len(leaves)) if self.tracked is None else bytes(map(_is_tracked, leaves))
        if leaves and _get_referents(*leaves):      # some leaf is a container with referents
            self._enqueue(compress(leaves, types.kinds(leaf_tids).translate(_IS_GC)))
        del leaves

        if kind == 0:
            _, tids, sizes, counts = sources
            sources[2], leaf_sizes = _same_width(sizes, leaf_sizes)
            sources[3], leaf_counts = _same_width(counts, leaf_counts)
        sizes, counts = leaf_sizes, leaf_counts
        dense_at, dense, dense_to, sparse_at, sparse_index, sparse = \
            labels or (array("I"), array("I"), [], array("I"), array("I"), array("I"))
        columns = sources + [per_source, targets, dense_at, dense] + dense_to + [
            sparse_at, sparse_index, sparse, leaf_addresses, leaf_tids, leaf_sizes, leaf_counts]
        if not _LITTLE:
            for c in columns:
                if isinstance(c, array):
                    c.byteswap()
        widths = (sizes.itemsize == 8) | ((counts.itemsize == 8) << 1)
        n_refs = len(targets) // 8
        head = bytes((kind, widths)) + b"".join(map(uvarint, (
            len(per_source), n_refs, len(dense_at), len(sparse_at), len(leaf_tids),
            self.source_bias, self.leaf_bias)))
        self.w.record(b"PYBT", [head] + columns + [frozen])
        self.references += n_refs
        self.leaves += len(leaf_tids)

    def _enqueue(self, containers):
        """Queue the untracked containers (and frozen objects) not queued yet."""
        containers = list(containers)
        by_id = dict(zip(map(id, containers), containers))
        new = by_id.keys() - self.queued
        if new:
            self.queued |= new
            self.queue.extend(map(by_id.__getitem__, new))

    # -- labels ------------------------------------------------------------
    def _labels(self, blk, tids, per_source, flat):
        """(dense positions, dense labels, dense targets (a list of bytes),
        sparse positions, sparse indexes, sparse labels) of a batch."""
        out = (array("I"), array("I"), [], array("I"), array("I"), array("I"))
        kinds = self.types.kinds(tids)
        dicts = kinds.translate(_IS_DICT)
        inst = ((kinds.translate(_IS_BACK2), 2), (kinds.translate(_IS_BACK1), 1),
                (kinds.translate(_IS_MIXED), 0)) if self.word is not None and flat else ()
        inst = [(mask, back) for mask, back in inst if 1 in mask]
        if 1 in dicts or inst:
            ends = array("Q", accumulate(per_source))
            if 1 in dicts:
                self._dict_labels(blk, array("I", compress(count(), dicts)), per_source, ends,
                                  flat, out)
            for mask, back in inst:
                self._instance_labels(blk, array("I", compress(count(), mask)), back,
                                      per_source, ends, flat, out)
        return out

    def _dict_labels(self, blk, at, per_source, ends, flat, out):
        """A str-keyed dict's referents are its values, in key order: each gets
        its key as a dense label, with the value it expects, which heapsnap
        checks (a split dict's referents can be in another order).  A general
        dict's are value, key, value, key...: each value with a str key gets
        it as a sparse label."""
        dense_at, dense, dense_to, sparse_at, sparse_index, sparse = out
        dicts = list(map(blk.__getitem__, at))
        lens = array("Q", map(len, dicts))
        refs = array("Q", map(per_source.__getitem__, at))
        uni = bytes(map(eq, refs, lens))
        if 1 in uni:
            u_dicts = dicts if 0 not in uni else list(compress(dicts, uni))
            dense_at.extend(at if 0 not in uni else compress(at, uni))
            dense.extend(self._key_ids(list(chain.from_iterable(map(dict.keys, u_dicts)))))
            dense_to.append(_list_addresses(list(chain.from_iterable(map(dict.values, u_dicts)))))
        general = bytes(map(and_, map(eq, refs, map(mul, lens, repeat(2))), lens))
        if not any(general):
            return
        for p, d in zip(compress(at, general), compress(dicts, general)):
            keys = list(dict.keys(d))
            if not any(map(is_, map(type, keys), repeat(str))):
                continue
            seg = flat[ends[p] - per_source[p]:ends[p]]
            if not all(map(is_, keys, seg[1::2])):
                continue
            for i, k in enumerate(keys):
                if type(k) is str:
                    sparse_at.append(p)
                    sparse_index.append(2 * i)
                    sparse.append(self._key_ids([k])[0])

    def _key_ids(self, keys):
        """array("I") of the string ids of the str `keys`, writing the new ones."""
        ids = array("Q", map(id, keys))
        cache = self.keyids
        out = array("I", map(cache.get, ids, repeat(0)))
        if all(out):
            return out
        miss = array("I", compress(count(), map(not_, out)))
        first = dict(zip(map(ids.__getitem__, miss), map(keys.__getitem__, miss)))
        text = list(map(str.encode, first.values(), repeat("utf-8"), repeat("surrogatepass")))
        w = self.w
        base = w.counts[b"STRS"] + 1
        w.add(b"STRS", b"".join(chain.from_iterable(zip(map(uvarint, map(len, text)), text))),
              len(text))
        if len(cache) + len(first) > KEY_CACHE:
            cache.clear()
        cache.update(zip(first, range(base, base + len(text))))
        deque(map(out.__setitem__, miss, map(cache.__getitem__, map(ids.__getitem__, miss))),
              maxlen=0)
        return out

    def _instance_labels(self, blk, at, back, per_source, ends, flat, out):
        """An instance's (or module's) reference to its __dict__: the
        referent `back` from the end of its referents (0: look it up per
        type), when it is a dict and the object's dict slot in memory holds
        it.  On 3.11+ most instances keep their values inline and have no
        dict at all."""
        sparse_at, sparse_index, sparse = out[3:]
        slots = self.types.slots
        if back:
            pos = array("q", map(sub, map(ends.__getitem__, at), repeat(back)))
        else:
            backs = [slots.get(id(type(blk[p])), (0, 1))[1] for p in at]
            pos = array("q", map(sub, map(ends.__getitem__, at), backs))
        # (a position outside the object's own referents cannot hold its dict: the
        # slot check below fails there)
        cand = bytes(map(is_, map(type, map(flat.__getitem__, pos)), repeat(dict)))
        if 1 not in cand:
            return
        at, pos = array("I", compress(at, cand)), array("q", compress(pos, cand))
        objs = list(map(blk.__getitem__, at))
        # The dict slot of each object's own type (delta 0, its refcount, when the type has
        # none: never an address), read in memory and compared with the candidate dict.
        delta = map(itemgetter(0), map(slots.get, map(id, map(type, objs)), repeat((0, 0))))
        word = map(attrgetter("value"), map(self.word, map(add, map(id, objs), delta)))
        index = array("q", map(sub, pos, map(sub, map(ends.__getitem__, at),
                                             map(per_source.__getitem__, at))))
        hit = bytes(map(and_, map(eq, word, map(id, map(flat.__getitem__, pos))),
                        map(ge, index, repeat(0))))
        del objs
        if 1 in hit:
            sparse_at.extend(compress(at, hit))
            sparse_index.extend(compress(index, hit))
            sparse.extend(repeat(self.strid("__dict__"), hit.count(1)))
