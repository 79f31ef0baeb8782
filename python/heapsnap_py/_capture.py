"""Capture the calling interpreter's heap as an `.hsnap` graph.

What the graph holds (README.md explains why):

* Nodes: every object ``gc.get_objects()`` returns (the *tracked* objects),
  plus every object reachable from them through ``gc.get_referents`` that is
  not in that list (untracked objects: str, int, float, bytes, atomic tuples
  and dicts, static types, objects frozen with ``gc.freeze()``), transitively.
* Edges: exactly ``gc.get_referents(o)`` for every node, in its order, all
  *strong*, labelled where cheap (list/tuple index, str dict key, the
  ``__dict__`` of an instance or module).
* Roots, decided as the cycle collector decides them: a tracked object is a
  root when its reference count exceeds the references it gets from other
  tracked objects (gc_refs > 0).  An untracked node is a root when its
  reference count exceeds the references it gets from all nodes (something
  outside the graph holds it).  Immortal objects (3.12+) are roots by the same
  rule, their counts being huge; frozen objects are roots.  So the tracked
  nodes the roots cannot reach are exactly the cyclic garbage that
  ``gc.collect()`` would find at that moment, and the unreachable untracked
  nodes are what would be freed along with it.

How it stays out of its own way: working data lives in untracked forms
(``array.array``, ints, bytes) or in containers created *after*
``gc.get_objects()``, which no heap object refers to, so none of it enters the
graph.  References are counted by the interpreter itself: holding the list of
all referents raises each object's reference count by the number of times it
is referenced, so ``sys.getrefcount`` before and after gives every object's
in-graph count in two C-speed passes.

How it stays fast in pure Python: every per-object and per-edge step is a
chain of C-level ``map``/``compress``/``array`` operations, never a Python
loop.  Address -> node index lookups use a two-level direct-mapped table (16
KiB address regions, one 32-bit slot per 16 bytes; objects are at least 16
bytes apart), which costs a quarter of the address span the heap's objects
occupy instead of ~100 bytes per node for a dict; the same table, read region
by region, yields the nodes in address order without sorting.

How it stays small: big working lists are made a block at a time, the node
order is 4 bytes a node, and glibc's malloc_trim hands freed pages back
between steps.
"""

import gc
import os
import stat
import struct
import sys
import time
from array import array
from bisect import bisect_left
from collections import deque
from itertools import accumulate, chain, compress, islice, repeat
from operator import add, attrgetter, eq, ge, getitem, gt, is_, mul, not_, rshift, setitem, sub
from operator import and_

from . import _hsnap
from ._hsnap import bytes_field, uvarint

try:  # only used to tell whether a dict referent is an object's __dict__
    import ctypes as _ctypes
except Exception:  # pragma: no cover - ctypes missing on this build
    _ctypes = None

_get_referents = gc.get_referents
_getrefcount = sys.getrefcount
_getsizeof = sys.getsizeof
_is_tracked = gc.is_tracked

REGION_BITS = 14                    # 16 KiB address regions (pymalloc pools)
SLOT_SHIFT = 4                      # one slot per 16 bytes
SLOTS = 1 << (REGION_BITS - SLOT_SHIFT)
SLOT_MASK = SLOTS - 1
OWN = 0xFFFFFFFF                    # slot marker: the exporter's own objects
TMP = 0x80000000                    # temporary slot values while deduplicating
BLOCK = 1 << 16                     # referents per discovery step
BATCH = 1 << 13                     # nodes per NODE/EDGE batch
HUGE_SOURCE = 1 << 14               # a source with more edges: several records,
LABEL_INDEX_MAX = HUGE_SOURCE       # unlabelled, written a part at a time
GROUP_EDGES = 1 << 15               # edges encoded at once, at most (about)
CACHE_CAP = 1 << 11                 # bound on each encoding cache

_IMMORTAL = sys.version_info >= (3, 12)
_IMMORTAL_RC = 1 << 30
_is_immortal = getattr(sys, "_is_immortal", None)
_PTR = struct.calcsize("P")
_TPFLAGS_MANAGED_DICT = 1 << 4      # 3.11+
_TPFLAGS_HEAPTYPE = 1 << 9
_TPFLAGS_HAVE_GC = 1 << 14

# Type attributes are read through `type`'s own descriptors so that a
# metaclass cannot run code while we look.
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name_attr = type.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_type_dictoffset = type.__dict__["__dictoffset__"].__get__

_U32 = "I" if array("I").itemsize == 4 else "L"

# Recorded sizes are what the interpreter asked the allocator for (what
# tracemalloc counts), which is sys.getsizeof except for one-digit ints on
# 3.11+: those are made at sizeof(PyLongObject), the one-digit size rounded
# up to 8 bytes (32), where getsizeof says 28.  (An int parsed from text is
# asked for at 28; pymalloc hands out the same 32-byte block either way.)
_INT_ONE_DIGIT = int.__basicsize__ + int.__itemsize__
_INT_ONE_DIGIT_ALLOC = ((_INT_ONE_DIGIT + 7) & ~7) if sys.version_info >= (3, 11) \
    else _INT_ONE_DIGIT

CAT_PLAIN, CAT_SEQ, CAT_DICT, CAT_INST, CAT_NONE = 0, 1, 2, 3, 4
_ROOT_TAIL = b"\x04\x00\x00"        # kind 4 (gc root), flags 0, no name


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
# Address table
# ---------------------------------------------------------------------------

class _Regions(dict):
    """region number -> array of SLOTS 32-bit slots (0 = nothing stored)."""

    __slots__ = ()

    def __missing__(self, r):
        a = array(_U32, bytes(4 * SLOTS))
        self[r] = a
        return a


def _lookup(reg, addrs, empty):
    """Slot values for an array of addresses (0 where nothing is stored)."""
    return array(_U32, map(getitem,
                           map(reg.get, map(rshift, addrs, repeat(REGION_BITS)), repeat(empty)),
                           map(and_, map(rshift, addrs, repeat(SLOT_SHIFT)), repeat(SLOT_MASK))))


def _store(reg, addrs, values):
    deque(map(setitem,
              map(reg.__getitem__, map(rshift, addrs, repeat(REGION_BITS))),
              map(and_, map(rshift, addrs, repeat(SLOT_SHIFT)), repeat(SLOT_MASK)),
              values), maxlen=0)


# ---------------------------------------------------------------------------
# Encoding caches: C-speed dict hits, Python only on a miss
# ---------------------------------------------------------------------------

def _small_table():
    """uvarint encodings of 0 .. 2**14 - 1."""
    t = [bytes((v,)) for v in range(128)]
    t.extend(bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(128, 1 << 14))
    return t


def _cont_table():
    """The low 14 bits of a longer uvarint: two bytes, both continued."""
    return [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(1 << 14)]


def _uv(v, T, TC):
    if v < 16384:
        return T[v]
    if v < 268435456:
        return TC[v & 16383] + T[v >> 14]
    return uvarint(v)


class _Head(dict):
    """(to + 1 - from) -> encoded edge head, kind strong, has_label = lab."""

    __slots__ = ("lab", "T", "TC")

    def __init__(self, lab, T, TC):
        dict.__init__(self)
        self.lab = lab
        self.T = T
        self.TC = TC

    def __missing__(self, k):
        d = k - 1
        v = ((d << 4) if d >= 0 else (((-d) << 4) - 8)) | self.lab
        if v < 16384:
            b = self.T[v]
        elif v < 268435456:
            b = self.TC[v & 16383] + self.T[v >> 14]
        else:
            b = uvarint(v)
        if len(self) < CACHE_CAP:
            self[k] = b
        return b


class _HeadK(dict):
    """2 * (to + 1 - from) + has_label -> encoded edge head, kind strong."""

    __slots__ = ("T",)

    def __init__(self, T):
        dict.__init__(self)
        self.T = T

    def __missing__(self, k2):
        d = (k2 >> 1) - 1
        v = ((d << 4) if d >= 0 else (((-d) << 4) - 8)) | (k2 & 1)
        b = self.T[v] if v < 16384 else uvarint(v)
        if len(self) < CACHE_CAP:
            self[k2] = b
        return b


class _Pre(dict):
    """identity delta -> svarint(delta) twice (identity and address)."""

    __slots__ = ("T", "TC")

    def __init__(self, T, TC):
        dict.__init__(self)
        self.T = T
        self.TC = TC

    def __missing__(self, d):
        v = (d << 1) if d >= 0 else ((-d) << 1) - 1
        b = _uv(v, self.T, self.TC)
        b += b
        if len(self) < CACHE_CAP:
            self[d] = b
        return b


class _Suf(dict):
    """(getsizeof, type[, flags]) -> size, type, stack 0, flags; the size
    recorded is the allocated one (see `_INT_ONE_DIGIT`)."""

    __slots__ = ("T", "int_tid")

    def __init__(self, T):
        dict.__init__(self)
        self.T = T
        self.int_tid = -1           # the TYPE record of `int`, once registered

    def __missing__(self, key):
        T = self.T
        size, tid = key[0], key[1]
        if size == _INT_ONE_DIGIT and tid == self.int_tid:
            size = _INT_ONE_DIGIT_ALLOC
        flags = key[2] if len(key) > 2 else 0
        b = ((T[size] if size < 16384 else uvarint(size)) +
             (T[tid] if tid < 16384 else uvarint(tid)) + b"\x00" + T[flags])
        if len(self) < CACHE_CAP:
            self[key] = b
        return b


class _Fn(dict):
    """A dict that computes a missing value with `fn`, keeping at most CACHE_CAP."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        dict.__init__(self)
        self.fn = fn

    def __missing__(self, k):
        v = self.fn(k)
        if len(self) < CACHE_CAP:
            self[k] = v
        return v


class _Seq(dict):
    """count -> the element-index labels of a list/tuple of that length, in
    traversal order (order 1: 0, 1, ...; order -1: ..., 1, 0)."""

    __slots__ = ("L", "order")

    def __init__(self, L, order):
        dict.__init__(self)
        self.L = L
        self.order = order

    def __missing__(self, c):
        L = self.L
        v = tuple(L[:c]) if self.order == 1 else tuple(L[c - 1::-1])
        if c <= 64:
            self[c] = v
        return v


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------

def _calibrate():
    """References that map(sys.getrefcount, a_list) counts beyond the list's own."""
    probe = object()
    holder = [probe]
    got = next(map(_getrefcount, holder))
    return got - 2          # `probe` and `holder` are the two real references


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
    would otherwise stay resident and add to the peak.  None elsewhere."""
    if _ctypes is None:
        return None
    try:
        libc = _ctypes.CDLL(None)
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
    """Write an .hsnap of this interpreter's heap to the file descriptor `fd`
    (flushed and synced; closed in any case).

    The caller has disabled the collector.  Returns a Stats.
    """
    t0 = time.perf_counter()
    try:
        extra = _calibrate()
        objs = gc.get_objects()
    except BaseException:
        os.close(fd)
        raise
    # the file object is made now, so that it is not in the snapshot
    with os.fdopen(fd, "wb", buffering=_hsnap.FLUSH_BYTES) as f:
        graph = _discover(objs, extra)
        del objs
        t1 = time.perf_counter()
        ex = _Exporter(f, graph, labels)
        del graph
        try:
            ex.write(meta)
            s = ex.stats
        finally:
            ex.__dict__.clear()     # the caches refer back to ex: leave no cycle behind
        f.flush()
        if stat.S_ISREG(os.fstat(f.fileno()).st_mode):   # a pipe or a device cannot be synced
            os.fsync(f.fileno())
    t2 = time.perf_counter()
    s.seconds = t2 - t0
    s.discover_seconds = t1 - t0
    return s


def _discover(objs, extra):
    """Find the nodes and roots.  Takes over `objs` (the get_objects() list),
    which ends up holding every node (with None first).

    Returns ((objs, order): node i is objs[order[i]], nodes in address
    order; address table, empty region, root addresses, frozen addresses,
    number of tracked nodes)."""
    # -- 1. gc_refs of tracked objects -----------------------------------
    n = len(objs)
    rc_b = array("q", map(_getrefcount, objs))
    # the referents of every tracked object, a list per block of objects (one
    # list of them all would be copied as it grows)
    flat = [_get_referents(*objs[b:b + BLOCK]) for b in range(0, n, BLOCK)]
    # gc_refs = (rc_b - 1 - extra) - (rc_a - rc_b) > 0  <=>  2*rc_b - rc_a > 1 + extra,
    # with rc_a read a block at a time (an iterator: a slice would add a reference)
    root_mask = array("b")
    it = iter(objs)
    rc_a = rb = None
    for b in range(0, n, BLOCK):
        rc_a = array("q", map(_getrefcount, islice(it, BLOCK)))
        rb = rc_b[b:b + BLOCK]
        root_mask.extend(map(gt, map(sub, map(add, rb, rb), rc_a), repeat(1 + extra)))
    del rc_a, rc_b, rb, it

    # -- 2. untracked nodes, transitively; the address table --------------
    reg = _Regions()
    empty = array(_U32, bytes(4 * SLOTS))

    own = array("Q", map(id, (objs, flat, reg, empty, root_mask)))
    ulist = []          # untracked nodes; table value n + 1 + i
    occ = array("l")    # per ulist entry: references to it from `flat`, when
                        # `flat` is gone before counting (0: counted below)
    flats = []          # referent lists stay alive until counted
    n_multi = n_single = 0
    if gc.get_freeze_count() == 0:
        # Round one: the untracked referents of tracked objects.  No table
        # lookups are needed to find them, and one referenced once in all
        # cannot repeat: one reference each from its holder, `flat`, the
        # block slice and the candidate list, plus what map(getrefcount) adds.
        # `flat` goes before the table is built: the counts of the singles
        # are 1, those of the others are read off `mlist` below.
        single_rc = 4 + extra
        singles = []
        mlist = []          # every occurrence of the others
        mdist = []          # the others, once per block
        while flat:
            part = flat[-1]
            for b in range(0, len(part), BLOCK):
                _untracked_block(part[b:b + BLOCK], single_rc, singles, mlist, mdist)
            del part
            flat.pop()      # give the memory back as we go
        del flat
        _trim()
        _table_of_tracked(reg, objs, own)
        _dedup(reg, empty, mdist, n + 1, ulist)
        del mdist
        rc1 = array("q", map(_getrefcount, ulist))
        del mlist
        _trim()
        occ = array("l", map(sub, rc1, map(_getrefcount, ulist)))
        del rc1
        n_multi = len(ulist)
        n_single = len(singles)
        base = n + 1 + len(ulist)
        for b in range(0, len(singles), BLOCK):
            _store(reg, array("Q", map(id, singles[b:b + BLOCK])),
                   range(base + b, base + b + BLOCK))
        ulist.extend(singles)
        del singles
        _trim()
        frontier = _referents_of(ulist)
    else:
        _table_of_tracked(reg, objs, own)
        frontier = list(chain.from_iterable(flat))   # frozen objects exist: find
        del flat                                     # them by lookups
    flats.append(frontier)
    # Later rounds (and everything when objects are frozen): the referents
    # not in the table yet.
    while frontier:
        found = []
        for b in range(0, len(frontier), BLOCK):
            _new_block(reg, empty, frontier[b:b + BLOCK], n + len(ulist) + len(found) + 1,
                       found)
        if not found:
            break
        ulist.extend(found)
        frontier = _referents_of(found)
        flats.append(frontier)
        del found
    del frontier
    occ.extend(repeat(0, len(ulist) - n_single - len(occ)))

    # -- 3. roots among untracked nodes ----------------------------------
    # A single has one reference, from a tracked node: never a root.  For
    # the others (the multiples, then those of the later rounds):
    # ext = (ru_b - 1 - extra) - (ru_a - ru_b) - occ > 0, a block at a time.
    # (islice, not slices: a slice would hold one more reference.)
    s_end = n_multi + n_single
    ru_a = array("q", map(_getrefcount, islice(ulist, n_multi)))
    ru_a.extend(map(_getrefcount, islice(ulist, s_end, None)))
    flats.clear()
    uroot_mask = array("b")
    it = iter(ulist)
    for a, e in ((0, n_multi), (s_end, len(ulist))):
        if a == s_end:
            deque(islice(it, n_single), maxlen=0)      # skip the singles
            uroot_mask.frombytes(bytes(n_single))
        for b in range(a, e, BLOCK):
            k = min(BLOCK, e - b)
            j = b - (n_single if a == s_end else 0)      # position in ru_a, occ
            ru_b = array("q", map(_getrefcount, islice(it, k)))
            uroot_mask.extend(map(gt, map(sub, map(sub, map(add, ru_b, ru_b), ru_a[j:j + k]),
                                          occ[j:j + k]), repeat(1 + extra)))
    del ru_a, occ, it
    _trim()
    # Objects frozen by gc.freeze() are tracked but not in get_objects():
    # the collector never frees them, so they are roots.
    frozen_ids = set()
    if gc.get_freeze_count():
        frozen = array("b", map(_is_tracked, ulist))
        if any(frozen):
            frozen_ids = set(map(id, compress(ulist, frozen)))
            uroot_mask = array("b", map(max, uroot_mask, frozen))
        del frozen

    root_ids = array("Q", map(id, compress(objs, root_mask)))
    root_ids.extend(map(id, compress(ulist, uroot_mask)))
    del root_mask, uroot_mask
    _store(reg, own, repeat(0))         # edges to our own objects get dropped
    del own

    n_tracked = n
    objs.insert(0, None)                # so that table value v is objs[v]
    objs += ulist
    del ulist

    # -- 4. node order = address order, read off the table ---------------
    # order[i] is the table value (objs position) of node i: 4 bytes a node
    # rather than a second list of every object.
    order = array(_U32, [0]) * (len(objs) - 1)      # (no 4-byte-a-node bytes to copy from)
    slot_list = list(range(SLOTS))      # ints made once, not one per slot and region
    slots = None
    nxt = 1
    for r in sorted(reg):
        a = reg[r]
        slots = list(compress(slot_list, a))
        if not slots:
            del reg[r]
            continue
        k = len(slots)
        order[nxt - 1:nxt - 1 + k] = array(_U32, map(a.__getitem__, slots))
        # from now on the table maps an address to its node index + 1
        deque(map(a.__setitem__, slots, range(nxt, nxt + k)), maxlen=0)
        nxt += k
    del slots, slot_list
    _trim()
    if nxt != len(objs):  # pragma: no cover - would be a bug
        raise AssertionError("address table lost nodes: %d != %d" % (nxt - 1, len(objs) - 1))
    nodes = (objs, order)
    return nodes, reg, empty, root_ids, frozen_ids, n_tracked


def _referents_of(objs):
    """gc.get_referents(*objs), a block at a time: no argument tuple as long
    as `objs`."""
    if len(objs) <= BLOCK:
        return _get_referents(*objs)
    out = []
    for b in range(0, len(objs), BLOCK):
        out += _get_referents(*objs[b:b + BLOCK])
    return out


def _table_of_tracked(reg, objs, own):
    """Tracked object i gets table value i + 1; our own objects OWN (they are
    not nodes; on 3.9/3.10 our running frame refers to them)."""
    for b in range(0, len(objs), BLOCK):
        _store(reg, array("Q", map(id, objs[b:b + BLOCK])), range(b + 1, b + 1 + BLOCK))
    _store(reg, own, repeat(OWN))


def _untracked_block(part, single_rc, singles, mlist, mdist):
    """Round one: the untracked objects among `part`, a slice of the tracked
    objects' referents.  One whose count is single_rc is referenced once in
    all: it goes to `singles`.  Every occurrence of the others goes to
    `mlist` (to be counted), and each once to `mdist` (to be deduplicated
    across blocks)."""
    cand = array("b", map(not_, map(_is_tracked, part)))
    if not any(cand):
        return
    cobjs = list(compress(part, cand))
    single = array("b", map(eq, map(_getrefcount, cobjs), repeat(single_rc)))
    singles.extend(compress(cobjs, single))
    if not all(single):
        mo = list(compress(cobjs, map(not_, single)))
        mlist.extend(mo)
        mdist.extend(dict(zip(map(id, mo), mo)).values())


def _dedup(reg, empty, objs, base, out):
    """Append to `out` each distinct object of `objs` (none of which is in
    the table yet), giving them table values base, base + 1, ...: every
    occurrence writes its own number into its object's slot, the last one
    wins, and the winners are the distinct objects."""
    m = len(objs)
    if m >= OWN - TMP:  # pragma: no cover - 2**31 occurrences
        raise MemoryError("too many objects")
    for b in range(0, m, BLOCK):
        _store(reg, array("Q", map(id, objs[b:b + BLOCK])), range(TMP + b, TMP + b + BLOCK))
    for b in range(0, m, BLOCK):
        part = objs[b:b + BLOCK]
        addrs = array("Q", map(id, part))
        rep = array("b", map(eq, _lookup(reg, addrs, empty), range(TMP + b, TMP + b + BLOCK)))
        k = len(out)
        out.extend(compress(part, rep))
        _store(reg, array("Q", compress(addrs, rep)), range(base + k, base + len(out)))
        del part


def _new_block(reg, empty, part, base, found):
    """Append to `found` the objects of `part` not yet in the table, once
    each, giving them table values base, base + 1, ..."""
    addrs = array("Q", map(id, part))
    cand = array("b", map(not_, _lookup(reg, addrs, empty)))
    if not any(cand):
        return
    caddrs = array("Q", compress(addrs, cand))
    cobjs = list(compress(part, cand))
    m = len(caddrs)
    # dedupe: the last occurrence of an address wins its slot
    _store(reg, caddrs, range(TMP, TMP + m))
    rep = array("b", map(eq, _lookup(reg, caddrs, empty), range(TMP, TMP + m)))
    new = list(compress(cobjs, rep))
    _store(reg, array("Q", compress(caddrs, rep)), range(base, base + len(new)))
    found.extend(new)


class _Exporter:
    def __init__(self, f, graph, labels):
        self.nodes, self.reg, self.empty, self.root_ids, self.frozen_ids, self.n_tracked = graph
        self.w = _hsnap.Writer(f)
        self.labels = labels
        self.word = _WORD if labels else None
        self.strids = {}
        self.tids = {}       # id(type) -> type id
        self.tcat = {}       # id(type) -> edge category
        self.tslot = {}      # id(type) -> (dict pointer delta, back) for CAT_INST
        self.tname = {}      # name -> type id (types of one name share a record)
        self.prev_src = 0
        self.dropped = 0
        T = self.T = _small_table()
        TC = self.TC = _cont_table()
        self.PRE = _Pre(T, TC)
        self.SUF = _Suf(T)
        self.HEAD0 = _Head(0, T, TC)
        self.HEAD1 = _Head(1, T, TC)
        self.HEADK = _HeadK(T)
        self.PFX = _Fn(self._pfx)
        self.PFX1 = _Fn(self._pfx1)

        self.KLAB = _Fn(self._key_label)
        self.LABENC = _Fn(self._label)
        self.LIDX = [uvarint((i << 2) | 1) for i in range(256)]
        self.LFWD = _Seq(self.LIDX, 1)
        self.LREV = _Seq(self.LIDX, -1)

    # -- encodings ---------------------------------------------------------
    def _pfx(self, key):               # EDGE record: from delta, count
        d, c = key
        v = (d << 1) if d >= 0 else ((-d) << 1) - 1
        T = self.T
        return (T[v] if v < 16384 else uvarint(v)) + (T[c] if c < 16384 else uvarint(c))

    def _pfx1(self, d):                # EDGE record: from delta, count 1
        v = (d << 1) if d >= 0 else ((-d) << 1) - 1
        return (self.T[v] if v < 16384 else uvarint(v)) + b"\x01"

    @staticmethod
    def _label(v):
        return uvarint(v) if v else b""

    def strid(self, s, cache=True):
        sid = self.strids.get(s)
        if sid is None:
            w = self.w
            sid = w.counts[b"STRS"] + 1
            w.add(b"STRS", bytes_field(s.encode("utf-8", "surrogatepass")))
            if cache or len(self.strids) < CACHE_CAP:
                self.strids[s] = sid
        return sid

    def _key_label(self, k):           # label bytes for a str dict key
        return uvarint(self.strid(k, cache=False) << 2)

    def _register_types(self, ts):
        for t in dict(zip(map(id, ts), ts)).values():
            if id(t) in self.tids:
                continue
            name = type_name(t)
            tid = self.tname.get(name)
            if tid is None:
                tid = self.tname[name] = self.w.counts[b"TYPE"]
                self.w.add(b"TYPE", uvarint(self.strid(name)))
            self.tids[id(t)] = tid
            if t is int:
                self.SUF.int_tid = tid
            try:
                gcable = bool(_type_flags(t) & _TPFLAGS_HAVE_GC)
            except Exception:
                gcable = True
            cat = CAT_PLAIN if gcable else CAT_NONE
            if not gcable:
                pass
            elif (t is list or t is tuple) and _SEQ_ORDER[t] != 0:
                cat = CAT_SEQ
            elif t is dict and _DICT_OK:
                cat = CAT_DICT
            elif self.word is not None:
                slot = _dict_slot(t)
                if slot is not None:
                    self.tslot[id(t)] = slot
                    cat = CAT_INST
            self.tcat[id(t)] = cat

    # -- the file ----------------------------------------------------------
    def write(self, meta):
        w = self.w
        if meta:
            w.add(b"META", meta, 0)     # whole records, already encoded
            w.flush(b"META")
        allv, order = self.nodes
        N = len(order)
        prev_id = 0
        frozen_ids = self.frozen_ids
        need_flags = _IMMORTAL or bool(frozen_ids)
        tids = self.tids
        PRE = self.PRE.__getitem__
        SUF = self.SUF.__getitem__
        for b0 in range(0, N, BATCH):
            batch = list(map(allv.__getitem__, order[b0:b0 + BATCH]))
            ids = array("Q", map(id, batch))
            ts = list(map(type, batch))
            tkeys = array("Q", map(id, ts))
            try:
                tl = array("q", map(tids.__getitem__, tkeys))
            except KeyError:
                self._register_types(ts)
                tl = array("q", map(tids.__getitem__, tkeys))
            del ts
            try:
                sizes = array("q", map(_getsizeof, batch))
            except Exception:
                sizes = array("q", map(_safe_sizeof, batch))
            if need_flags:
                if _is_immortal is not None:
                    imm = map(_is_immortal, batch)
                elif _IMMORTAL:
                    imm = map(gt, map(_getrefcount, batch), repeat(_IMMORTAL_RC))
                else:
                    imm = repeat(False)
                if frozen_ids:
                    imm = map(max, imm, map(frozen_ids.__contains__, ids))
                keys = zip(sizes, tl, map(mul, imm, repeat(2)))
            else:
                keys = zip(sizes, tl)
            w.add(b"NODE", b"".join(chain.from_iterable(zip(
                map(PRE, map(sub, ids, chain((prev_id,), ids))),
                map(SUF, keys)))), len(batch))
            prev_id = ids[-1]
            del ids, tl, sizes, keys
            self._edges(batch, b0, tkeys)
            if b0 % (4 * BATCH) == 0:
                _trim()
        self.nodes = None
        del batch, allv, order
        self._roots()
        w.finish()
        self.stats = Stats(nodes=N, tracked=self.n_tracked, edges=w.counts[b"EDGE"],
                           roots=w.counts[b"ROOT"], strings=w.counts[b"STRS"],
                           types=w.counts[b"TYPE"], dropped_edges=self.dropped,
                           bytes=w.bytes_written)

    def _roots(self):
        if not self.root_ids:
            return
        rt = _lookup(self.reg, self.root_ids, self.empty)
        rt = sorted(set(compress(rt, rt)))
        T = self.T
        for s in range(0, len(rt), BATCH):
            part = rt[s:s + BATCH]
            enc = [T[i - 1] if i <= 16384 else uvarint(i - 1) for i in part]
            self.w.add(b"ROOT", b"".join(map(add, enc, repeat(_ROOT_TAIL))), len(part))

    # -- edges -------------------------------------------------------------
    def _edges(self, batch, b0, tkeys):
        # Sources by category; objects of non-GC types have no referents.
        buckets = ([], [], [], [], [])
        deque(map(list.append, map(buckets.__getitem__, map(self.tcat.__getitem__, tkeys)),
                  range(len(batch))), maxlen=0)
        for cat in (CAT_PLAIN, CAT_SEQ, CAT_DICT, CAT_INST):
            lj = buckets[cat]
            if not lj:
                continue
            srcs = list(map(batch.__getitem__, lj))
            F = None
            if cat == CAT_SEQ:              # a list's or tuple's referents are its items
                cnts = array("q", map(len, srcs))
            elif cat == CAT_DICT:           # len(d) each when all are str-keyed
                cnts = array("q", map(len, srcs))
                F = _get_referents(*srcs)
                if len(F) != sum(cnts):
                    cnts = array("q", map(len, map(_get_referents, srcs)))
            else:
                RL = list(map(_get_referents, srcs))
                cnts = array("q", map(len, RL))
                F = list(chain.from_iterable(RL))
                del RL
            idx = array("q", map(add, lj, repeat(b0)))
            if not all(cnts):
                sel = array("b", map(bool, cnts))
                if not any(sel):
                    continue
                srcs, idx, cnts = self._sub(srcs, idx, cnts, sel)
                F = None if cat == CAT_DICT else F      # (no referents dropped)
            if max(cnts) > HUGE_SOURCE:
                big = array("b", map(gt, cnts, repeat(HUGE_SOURCE)))
                for o, i in zip(compress(srcs, big), compress(idx, big)):
                    self._huge(o, i)
                srcs, idx, cnts = self._sub(srcs, idx, cnts, map(not_, big))
                F = None
                if not srcs:
                    continue
            # keep the edges handled at once (and so memory) bounded
            ends = list(accumulate(cnts))
            a = fa = 0
            while a < len(srcs):
                b = max(bisect_left(ends, ends[a] - cnts[a] + GROUP_EDGES, a), a + 1)
                b = min(b, len(srcs))
                fb = ends[b - 1]
                part = (srcs[a:b], idx[a:b], cnts[a:b], None if F is None else F[fa:fb])
                if cat == CAT_PLAIN or not self.labels:
                    self._group(*part[:3], CAT_PLAIN, part[3])
                elif cat == CAT_SEQ:
                    self._seqs(*part[:3])
                elif cat == CAT_DICT:
                    self._dicts(*part)
                else:
                    self._insts(*part)
                a, fa = b, fb

    def _group(self, srcs, idx, cnts, kind, F=None, extra=None):
        """EDGE records for sources `srcs` (node indices `idx`, edge counts `cnts`).

        kind: CAT_PLAIN (no labels), CAT_SEQ (element index; `extra` is the
        traversal order), CAT_DICT (keys of the str-keyed dicts `srcs`, or
        the keys in `extra`), or
        CAT_INST (explicit per-edge label values in `extra`, 0 for none)."""
        if F is None:
            F = _get_referents(*srcs)
        T = _lookup(self.reg, array("Q", map(id, F)), self.empty)
        del F
        if 0 in T:
            # A referent that is not a node (one of ours, or one that appeared
            # after discovery): drop those edges, and the labels with them.
            keep = array("b", map(bool, T))
            self.dropped += len(T) - sum(keep)
            acc = [0]
            acc.extend(accumulate(keep))
            ends = list(accumulate(cnts))
            starts = [0] + ends[:-1]
            newc = array("q", map(sub, map(acc.__getitem__, ends), map(acc.__getitem__, starts)))
            T = array(_U32, compress(T, keep))
            sel = array("b", map(bool, newc))
            idx = array("q", compress(idx, sel))
            cnts = array("q", compress(newc, sel))
            kind = CAT_PLAIN
            if not cnts:
                return
        one = max(cnts) == 1        # one edge per source: simpler streams
        D = map(sub, T, idx if one else chain.from_iterable(map(repeat, idx, cnts)))
        fdel = map(sub, idx, chain((self.prev_src,), idx))
        if kind == CAT_PLAIN:
            heads = map(self.HEAD0.__getitem__, D)
            labs = None
        elif kind == CAT_SEQ:
            # the element indexes of each source, in traversal order
            labs = chain.from_iterable(map((self.LFWD if extra == 1 else self.LREV)
                                           .__getitem__, cnts))
            heads = map(self.HEAD1.__getitem__, D)
        elif kind == CAT_DICT:              # the keys, given or of the dicts
            labs = map(self.KLAB.__getitem__, extra if extra is not None
                       else chain.from_iterable(map(dict.keys, srcs)))
            heads = map(self.HEAD1.__getitem__, D)
        else:                               # key 2*(to+1-from) + has_label
            labs = map(self.LABENC.__getitem__, extra)
            heads = map(self.HEADK.__getitem__,
                        map(add, map(mul, D, repeat(2)), map(bool, extra)))
        if one:
            recs = map(add, map(self.PFX1.__getitem__, fdel), heads)
            if labs is not None:
                recs = map(add, recs, labs)
            self.w.add(b"EDGE", b"".join(recs), len(T))
        else:
            # One list of pieces (head, or head and label, per edge), the
            # record prefix (from delta, count) glued onto each record's
            # first piece, one join.
            if labs is None:
                P = list(heads)
                starts = list(islice(accumulate(chain((0,), cnts)), len(cnts)))
            else:
                P = [None] * (2 * len(T))
                P[0::2] = list(heads)
                P[1::2] = list(labs)
                starts = list(islice(accumulate(chain((0,), map(add, cnts, cnts))), len(cnts)))
            deque(map(P.__setitem__, starts,
                      map(add, map(self.PFX.__getitem__, zip(fdel, cnts)),
                          map(P.__getitem__, starts))), maxlen=0)
            self.w.add(b"EDGE", b"".join(P), len(T))
        self.prev_src = idx[-1]

    @staticmethod
    def _sub(srcs, idx, cnts, sel):
        if not isinstance(sel, array):
            sel = array("b", sel)
        return (list(compress(srcs, sel)), array("q", compress(idx, sel)),
                array("q", compress(cnts, sel)))

    def _seqs(self, srcs, idx, cnts):
        if max(cnts) > LABEL_INDEX_MAX:
            long_ = array("b", map(gt, cnts, repeat(LABEL_INDEX_MAX)))
            self._group(*self._sub(srcs, idx, cnts, long_), CAT_PLAIN)
            srcs, idx, cnts = self._sub(srcs, idx, cnts, map(not_, long_))
            if not srcs:
                return
        m = max(cnts)
        L = self.LIDX
        if m > len(L):
            L.extend(uvarint((i << 2) | 1) for i in range(len(L), max(m, 2 * len(L))))
        if _SEQ_ORDER[list] == _SEQ_ORDER[tuple]:
            self._group(srcs, idx, cnts, CAT_SEQ, None, _SEQ_ORDER[list])
            return
        # lists and tuples traversed in different directions
        fwd = array("b", map(eq, map(_SEQ_ORDER.__getitem__, map(type, srcs)), repeat(1)))
        for sel, order in ((fwd, 1), (array("b", map(not_, fwd)), -1)):
            if any(sel):
                self._group(*self._sub(srcs, idx, cnts, sel), CAT_SEQ, None, order)

    def _dicts(self, srcs, idx, cnts, F=None):
        """A str-keyed dict lists only its values, in key order: label them
        with the keys.  A general dict lists value, key, value, key..."""
        uni = array("b", map(eq, cnts, map(len, srcs)))
        if all(uni):
            self._udicts(srcs, idx, cnts, F)
            return
        if any(uni):
            self._udicts(*self._sub(srcs, idx, cnts, uni))
        os_, oidx, ocnt = self._sub(srcs, idx, cnts, map(not_, uni))
        # general dicts: per-dict work, but only for those with a str key
        lab_sel = array("b", (len(r) == 2 * len(d) and str in set(map(type, dict.keys(d)))
                              and all(map(is_, dict.keys(d), r[1::2]))
                              for d, r in zip(os_, map(_get_referents, os_))))
        if not all(lab_sel):
            self._group(*self._sub(os_, oidx, ocnt, map(not_, lab_sel)), CAT_PLAIN)
        if any(lab_sel):
            ls, lidx, lcnt = self._sub(os_, oidx, ocnt, lab_sel)
            labs = array("Q")
            for d in ls:
                for k in dict.keys(d):
                    labs.append((self.strid(k, cache=False) << 2) if type(k) is str else 0)
                    labs.append(0)
            self._group(ls, lidx, lcnt, CAT_INST, None, labs)

    def _udicts(self, us, idx, cnts, F=None):
        if F is None:
            F = _get_referents(*us)
        if all(map(is_, chain.from_iterable(map(dict.values, us)), F)):
            self._group(us, idx, cnts, CAT_DICT, F)
            return
        # A split (instance) dict whose insertion order differs from its
        # shared keys' order: find those and leave them unlabelled.
        del F
        good = array("b", (all(map(is_, dict.values(d), _get_referents(d))) for d in us))
        if any(good):
            self._group(*self._sub(us, idx, cnts, good), CAT_DICT)
        if not all(good):
            self._group(*self._sub(us, idx, cnts, map(not_, good)), CAT_PLAIN)

    def _insts(self, srcs, idx, cnts, F=None):
        """Objects that may have an instance dict: label the edge to it, after
        checking in memory that the dict referent is the one in the object's
        dict slot (on 3.11+ most instances keep their values inline and have
        no dict at all)."""
        if F is None:
            F = _get_referents(*srcs)
        slots = list(map(self.tslot.__getitem__, map(id, map(type, srcs))))
        back = array("q", map(getitem, slots, repeat(1)))
        ends = array("q", accumulate(cnts))
        pos = array("q", map(sub, ends, back))
        cand = array("b", map(and_, map(ge, cnts, back),
                              map(is_, map(type, map(F.__getitem__, pos)), repeat(dict))))
        if any(cand):
            ci = list(compress(range(len(cand)), cand))
            addr = map(add, map(id, map(srcs.__getitem__, ci)),
                       map(getitem, map(slots.__getitem__, ci), repeat(0)))
            hit = array("b", map(eq, map(attrgetter("value"), map(self.word, addr)),
                                 map(id, map(F.__getitem__, map(pos.__getitem__, ci)))))
            cand = array("b", bytes(len(cand)))
            deque(map(setitem, repeat(cand), compress(ci, hit), repeat(1)), maxlen=0)
        if not any(cand):
            self._group(srcs, idx, cnts, CAT_PLAIN, F)
            return
        del F
        if not all(cand):
            self._group(*self._sub(srcs, idx, cnts, map(not_, cand)), CAT_PLAIN)
        ls, lidx, lcnt = self._sub(srcs, idx, cnts, cand)
        lback = array("q", compress(back, cand))
        labs = array("Q", bytes(8 * sum(lcnt)))
        lab = self.strid("__dict__") << 2
        deque(map(setitem, repeat(labs), map(sub, accumulate(lcnt), lback), repeat(lab)),
              maxlen=0)
        self._group(ls, lidx, lcnt, CAT_INST, None, labs)

    def _huge(self, o, i):
        """A source with more than HUGE_SOURCE edges: several records of at
        most HUGE_SOURCE edges, so that memory stays bounded.  A str-keyed
        dict keeps its key labels; the rest go unlabelled."""
        t = type(o)
        if (t is list or t is tuple) and _SEQ_ORDER[t] != 0:
            # Its referents are its items: slices of it, in traversal order,
            # and no list of all of them at once.
            n = len(o)
            for s in range(0, n, HUGE_SOURCE):
                if _SEQ_ORDER[t] == 1:
                    part = o[s:s + HUGE_SOURCE]
                else:
                    a = n - 1 - s
                    part = o[a:a - HUGE_SOURCE:-1] if a >= HUGE_SOURCE else o[a::-1]
                self._group((), array("q", [i]), array("q", [len(part)]), CAT_PLAIN, part)
            return
        F = _get_referents(o)
        keys = None
        if (self.labels and type(o) is dict and _DICT_OK and len(F) == len(o)
                and all(map(is_, dict.values(o), F))):
            keys = iter(dict.keys(o))
        for s in range(0, len(F), HUGE_SOURCE):
            part = F[s:s + HUGE_SOURCE]
            if keys is None:
                self._group((), array("q", [i]), array("q", [len(part)]), CAT_PLAIN, part)
            else:
                self._group((), array("q", [i]), array("q", [len(part)]), CAT_DICT, part,
                            list(islice(keys, len(part))))
