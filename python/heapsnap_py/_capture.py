"""Capture the calling interpreter's heap as an `.hsnap` graph.

How the graph is decided (README.md explains why):

* Nodes: every object ``gc.get_objects()`` returns (the *tracked* objects),
  plus every object reachable from them through ``gc.get_referents`` that is
  not in that list (untracked objects: str, int, float, bytes, atomic tuples
  and dicts, static types, objects frozen with ``gc.freeze()``), transitively.
* Edges: exactly ``gc.get_referents(o)`` for every node, all *strong*, with
  labels where cheap (list/tuple index, str dict key, ``__dict__``).
* Roots, decided as the cycle collector decides them: a tracked object is a
  root when its reference count exceeds the references it gets from other
  tracked objects (gc_refs > 0).  An untracked node is a root when its
  reference count exceeds the references it gets from all nodes (something
  outside the graph holds it).  Immortal (3.12+) objects are roots by the
  same rule (their count is huge); frozen objects are roots.  So the tracked
  nodes that the roots cannot reach are exactly the cyclic garbage that
  ``gc.collect()`` would find at that moment, and the unreachable untracked
  nodes are what would be freed along with it.

Working data is kept in untracked forms (``array.array``, ints, bytes) or in
containers created *after* ``gc.get_objects()``, which no heap object refers
to, so it never enters the graph.  References are counted by the interpreter
itself: holding the list of all referents raises each object's reference count
by the number of times it is referenced, so ``sys.getrefcount`` before and
after gives the in-graph count of every object in two C-speed passes.

Address -> node index lookups use a two-level direct-mapped table (256 KiB
address regions, one 32-bit slot per 16 bytes): a quarter of the address span
the heap occupies, instead of ~100 bytes per node for a dict.
"""

import gc
import struct
import sys
import time
from array import array
from bisect import bisect_right
from collections import deque
from itertools import accumulate, chain, compress, islice, repeat
from operator import add, and_, eq, getitem, gt, is_, mul, not_, rshift, setitem, sub

from . import _hsnap
from ._hsnap import uvarint, bytes_field

try:  # only used to tell whether a dict referent is an instance's __dict__
    import ctypes as _ctypes
except Exception:  # pragma: no cover - ctypes missing on this build
    _ctypes = None

_get_referents = gc.get_referents
_getrefcount = sys.getrefcount
_getsizeof = sys.getsizeof
_is_tracked = gc.is_tracked

REGION_BITS = 18                    # 256 KiB address regions
SLOT_SHIFT = 4                      # one slot per 16 bytes (objects are >= 16 bytes)
SLOTS = 1 << (REGION_BITS - SLOT_SHIFT)
SLOT_MASK = SLOTS - 1
OWN = 0xFFFFFFFF                    # slot marker: the exporter's own objects
TMP = 0x80000000                    # temporary slot values during discovery
BLOCK = 1 << 16                     # referents per discovery step
BATCH = 1 << 15                     # nodes per NODE/EDGE batch
LABEL_INDEX_MAX = 1 << 16           # list/tuple elements: labelled up to this length
HUGE_SOURCE = 1 << 20               # edges per record at most
CACHE_CAP = 1 << 17                 # bound on each encoding cache

_IMMORTAL = sys.version_info >= (3, 12)
_IMMORTAL_RC = 1 << 30
_is_immortal = getattr(sys, "_is_immortal", None)
_PTR = struct.calcsize("P")
_TPFLAGS_MANAGED_DICT = 1 << 4      # 3.11+

# Type attributes are read through `type`'s own descriptors so that a
# metaclass cannot run code while we look.
_type_module = type.__dict__["__module__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_type_name_attr = type.__dict__["__name__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_type_dictoffset = type.__dict__["__dictoffset__"].__get__

_U32 = "I" if array("I").itemsize == 4 else "L"

CAT_PLAIN, CAT_SEQ, CAT_DICT, CAT_INST = 0, 1, 2, 3


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


_SEQ_ORDER = {list: _seq_order(list), tuple: _seq_order(tuple)}
_ROOT_TAIL = b"\x04\x00\x00"        # kind 4 (gc root), flags 0, no name


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


class _Cache(dict):
    """A dict that computes a missing value with `fn`, keeping at most `cap`."""

    __slots__ = ("fn", "cap")

    def __init__(self, fn, cap=CACHE_CAP):
        dict.__init__(self)
        self.fn = fn
        self.cap = cap

    def __missing__(self, k):
        v = self.fn(k)
        if len(self) < self.cap:
            self[k] = v
        return v


def _zz(v):
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def _calibrate():
    """References that map(sys.getrefcount, a_list) counts beyond the list's own."""
    probe = object()
    holder = [probe]
    got = next(map(_getrefcount, holder))
    return got - 2          # `probe` and `holder` are the two real references


def type_name(t):
    """`module.Qualname`, bare for builtins."""
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


def _inst_dict_mode(t):
    """How to find an instance's dict pointer: (True, 0) managed, (False, off), or None."""
    try:
        flags = _type_flags(t)
        off = _type_dictoffset(t)
    except Exception:
        return None
    if sys.version_info >= (3, 11) and flags & _TPFLAGS_MANAGED_DICT:
        return (True, 0)
    if off > 0:
        return (False, off)
    return None


class _Probe:
    """Checks the instance-dict layout assumptions once, at import."""


def _make_dict_reader():
    """f(obj, mode) -> address stored in obj's dict slot; None if unusable."""
    if _ctypes is None:
        return None
    try:
        word = _ctypes.c_size_t.from_address
    except Exception:  # pragma: no cover
        return None
    tagged = sys.version_info[:2] == (3, 12)    # 3.12: dict-or-values, values tagged 1

    def read(obj, mode):
        managed, off = mode
        if managed:
            v = word(id(obj) - 3 * _PTR).value
            if tagged and v & 1:
                return 0
            return v
        return word(id(obj) + off).value

    p = _Probe()
    q = _Probe()
    p.a = q.a = 1
    d = p.__dict__                  # materialized; q's stays inline on 3.11+
    mode = _inst_dict_mode(_Probe)
    try:
        ok = (mode is not None and read(p, mode) == id(d)
              and read(q, mode) not in (id(d), id(q)))
    except Exception:  # pragma: no cover
        ok = False
    return read if ok else None


_DICT_READ = _make_dict_reader()


class Stats:
    """What a dump wrote (returned by dump())."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "Stats(%s)" % ", ".join("%s=%r" % kv for kv in sorted(self.__dict__.items()))


def capture(f, labels=True, meta=()):
    """Write an .hsnap of this interpreter's heap to the binary file `f`.

    The caller has disabled the collector.  Returns a Stats.
    """
    t0 = time.perf_counter()
    extra = _calibrate()
    dict_read = _DICT_READ if labels else None
    objs = gc.get_objects()
    graph = _discover(objs, extra)
    t1 = time.perf_counter()
    ex = _Exporter(f, graph, labels, dict_read)
    graph = None
    try:
        ex.write(meta)
        s = ex.stats
    finally:
        ex.__dict__.clear()     # the caches refer back to ex: leave no cycle behind
    t2 = time.perf_counter()
    s.seconds = t2 - t0
    s.discover_seconds = t1 - t0
    return s


def _discover(objs, extra):
    """Find the nodes and roots.  Consumes `objs` (the get_objects() list).

    Returns (nodes in address order, address table, root addresses,
    frozen addresses, number of tracked nodes)."""
    # -- 1. gc_refs of tracked objects -----------------------------------
    objs.sort(key=id)
    n = len(objs)
    rc_b = array("q", map(_getrefcount, objs))
    flat = _get_referents(*objs)
    rc_a = array("q", map(_getrefcount, objs))
    # gc_refs = (rc_b - 1 - extra) - (rc_a - rc_b) > 0  <=>  2*rc_b - rc_a > 1 + extra
    root_mask = array("b", map(gt, map(sub, map(add, rc_b, rc_b), rc_a), repeat(1 + extra)))
    del rc_a, rc_b

    # -- 2. address table, untracked nodes (transitively) ----------------
    reg = _Regions()
    empty = array(_U32, bytes(4 * SLOTS))
    _store(reg, array("Q", map(id, objs)), range(1, n + 1))
    own = array("Q", map(id, (objs, flat, reg, empty, root_mask)))
    _store(reg, own, repeat(OWN))

    ulist = []          # untracked nodes; table value n+1+i
    flats = [flat]      # every referent list stays alive until counted
    frontier = flat
    while frontier:
        found = []
        for b in range(0, len(frontier), BLOCK):
            _discover_block(reg, empty, frontier[b:b + BLOCK], n + len(ulist) + len(found) + 1,
                            found)
        if not found:
            break
        ulist.extend(found)
        frontier = _get_referents(*found)
        flats.append(frontier)
        del found
    del frontier

    # -- 3. roots among untracked nodes ----------------------------------
    ru_a = array("q", map(_getrefcount, ulist))
    del flat
    flats.clear()
    ru_b = array("q", map(_getrefcount, ulist))
    # ext = (ru_b - 1 - extra) - (ru_a - ru_b) > 0
    uroot_mask = array("b", map(gt, map(sub, map(add, ru_b, ru_b), ru_a), repeat(1 + extra)))
    del ru_a, ru_b
    # Objects frozen by gc.freeze() are tracked but not in get_objects():
    # the collector never frees them, so they are roots.
    frozen = array("b", map(_is_tracked, ulist))
    frozen_ids = set()
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
    objs.extend(ulist)
    del ulist

    # -- 4. node order = address order, read off the table ---------------
    nodes = []
    slot_range = range(SLOTS)
    nxt = 1
    for r in sorted(reg):
        a = reg[r]
        pos = array(_U32, compress(a, a))
        if not pos:
            del reg[r]
            continue
        k = len(pos)
        # the table now maps an address to final index + 1
        deque(map(setitem, repeat(a), list(compress(slot_range, a)), range(nxt, nxt + k)),
              maxlen=0)
        nxt += k
        nodes.extend(map(objs.__getitem__, map(sub, pos, repeat(1))))
    if len(nodes) != len(objs):  # pragma: no cover - would be a bug
        raise AssertionError("address table lost nodes: %d != %d" % (len(nodes), len(objs)))
    objs.clear()
    return nodes, reg, empty, root_ids, frozen_ids, n_tracked


def _discover_block(reg, empty, part, base, found):
    """Append to `found` the objects of `part` not yet in the table, once
    each, giving them table values base, base+1, ..."""
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
    def __init__(self, f, graph, labels, dict_read):
        self.nodes, self.reg, self.empty, self.root_ids, self.frozen_ids, self.n_tracked = graph
        self.w = _hsnap.Writer(f)
        self.labels = labels
        self.dict_read = dict_read
        self.strids = {}
        self.tids = {}       # id(type) -> type id
        self.tcat = {}       # id(type) -> edge category
        self.tmode = {}      # id(type) -> instance-dict mode
        self.tname = {}      # name -> type id (types of one name share a record)
        self.prev_src = 0
        self.dropped = 0
        self.PRE = _Cache(self._pre)
        self.SUF = _Cache(self._suf)
        self.HEAD0 = _Cache(lambda k: uvarint(_zz(k - 1) << 3))
        self.HEAD1 = _Cache(lambda k: uvarint((_zz(k - 1) << 3) | 1))
        self.HEADB = _Cache(lambda k: (self.HEAD0[k], self.HEAD1[k]))
        self.LABENC = _Cache(lambda v: uvarint(v) if v else b"")
        self.PFX = _Cache(lambda key: uvarint(_zz(key[0])) + uvarint(key[1]))
        self.KLAB = _Cache(self._key_label)
        self.LIDX = [uvarint((i << 2) | 1) for i in range(256)]

    # -- encodings -------------------------------------------------------
    @staticmethod
    def _pre(d):                       # identity delta, address delta
        e = uvarint(_zz(d))
        return e + e

    @staticmethod
    def _suf(key):                     # size, type, stack 0, flags
        size, tid, flags = key
        return uvarint(size) + uvarint(tid) + b"\x00" + uvarint(flags)

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
            cat = CAT_PLAIN
            if self.labels:
                if (t is list or t is tuple) and _SEQ_ORDER[t] != 0:
                    cat = CAT_SEQ
                elif t is dict:
                    cat = CAT_DICT
                elif self.dict_read is not None:
                    mode = _inst_dict_mode(t)
                    if mode is not None:
                        self.tmode[id(t)] = mode
                        cat = CAT_INST
            self.tcat[id(t)] = cat

    # -- the file ----------------------------------------------------------
    def write(self, meta):
        w = self.w
        for k, v in meta:
            w.add(b"META", bytes_field(k) + bytes_field(v), 0)
        w.flush(b"META")
        nodes = self.nodes
        N = len(nodes)
        prev_id = 0
        frozen_ids = self.frozen_ids
        need_flags = _IMMORTAL or bool(frozen_ids)
        for b0 in range(0, N, BATCH):
            batch = nodes[b0:b0 + BATCH]
            ids = array("Q", map(id, batch))
            ts = list(map(type, batch))
            tkeys = array("Q", map(id, ts))
            try:
                tl = array("q", map(self.tids.__getitem__, tkeys))
            except KeyError:
                self._register_types(ts)
                tl = array("q", map(self.tids.__getitem__, tkeys))
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
                flags = array("b", map(mul, imm, repeat(2)))
            else:
                flags = repeat(0)
            w.add(b"NODE", b"".join(chain.from_iterable(zip(
                map(self.PRE.__getitem__, map(sub, ids, chain((prev_id,), ids))),
                map(self.SUF.__getitem__, zip(sizes, tl, flags))))), len(batch))
            prev_id = ids[-1]
            del ids, tl, sizes, flags
            self._edges(batch, b0, tkeys)
        self.nodes = None
        del batch, nodes
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
        for s in range(0, len(rt), BATCH):
            part = rt[s:s + BATCH]
            self.w.add(b"ROOT", b"".join(map(add, map(uvarint, map(sub, part, repeat(1))),
                                             repeat(_ROOT_TAIL))), len(part))

    # -- edges -------------------------------------------------------------
    def _edges(self, batch, b0, tkeys):
        C = array("q", map(len, map(_get_referents, batch)))
        if not any(C):
            return
        rng = range(b0, b0 + len(batch))
        if max(C) > HUGE_SOURCE:
            for j in compress(range(len(batch)), map(gt, C, repeat(HUGE_SOURCE))):
                self._huge(batch[j], b0 + j)
                C[j] = 0
        if self.labels:
            cats = array("b", map(self.tcat.__getitem__, tkeys))
        else:
            cats = array("b", bytes(len(batch)))
        has = array("b", map(bool, C))
        for cat in (CAT_PLAIN, CAT_SEQ, CAT_DICT, CAT_INST):
            sel = array("b", map(and_, map(eq, cats, repeat(cat)), has))
            if not any(sel):
                continue
            srcs = list(compress(batch, sel))
            idx = array("q", compress(rng, sel))
            cnts = array("q", compress(C, sel))
            if cat == CAT_PLAIN:
                self._group(srcs, idx, cnts, CAT_PLAIN)
            elif cat == CAT_SEQ:
                self._seqs(srcs, idx, cnts)
            elif cat == CAT_DICT:
                self._dicts(srcs, idx, cnts)
            else:
                self._insts(srcs, idx, cnts)

    def _group(self, srcs, idx, cnts, kind, F=None, extra=None):
        """EDGE records for sources `srcs` (node indices `idx`, edge counts `cnts`).

        kind: CAT_PLAIN (no labels), CAT_SEQ (element index), CAT_DICT (the
        keys of str-keyed dicts `srcs`), or CAT_INST (explicit per-edge label
        values in `extra`, 0 for none)."""
        if F is None:
            F = _get_referents(*srcs)
        T = _lookup(self.reg, array("Q", map(id, F)), self.empty)
        if 0 in T:
            # A referent that is not a node (one of ours, or one that appeared
            # after discovery): drop those edges, and their labels.
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
        D = map(sub, T, chain.from_iterable(map(repeat, idx, cnts)))
        if kind == CAT_PLAIN:
            pieces = map(self.HEAD0.__getitem__, D)
            per = cnts
        else:
            if kind == CAT_SEQ:
                if extra == 1:      # referents in index order
                    pos = chain.from_iterable(map(range, cnts))
                else:               # in reverse: c-1, c-2, ..., 0
                    pos = chain.from_iterable(map(range, map(sub, cnts, repeat(1)),
                                                  repeat(-1), repeat(-1)))
                labs = map(self.LIDX.__getitem__, pos)
                heads = map(self.HEAD1.__getitem__, D)
            elif kind == CAT_DICT:
                labs = map(self.KLAB.__getitem__, chain.from_iterable(map(dict.keys, srcs)))
                heads = map(self.HEAD1.__getitem__, D)
            else:
                labs = map(self.LABENC.__getitem__, extra)
                heads = map(getitem, map(self.HEADB.__getitem__, D), map(bool, extra))
            pieces = chain.from_iterable(zip(heads, labs))
            per = map(add, cnts, cnts)
        prefixes = map(self.PFX.__getitem__, zip(map(sub, idx, chain((self.prev_src,), idx)), cnts))
        it = iter(pieces)
        recs = list(map(add, prefixes, map(b"".join, map(islice, repeat(it), per))))
        self.w.add_records(b"EDGE", recs, len(T))
        self.prev_src = idx[-1]

    def _seqs(self, srcs, idx, cnts):
        m = max(cnts)
        if m > LABEL_INDEX_MAX:
            long_ = array("b", map(gt, cnts, repeat(LABEL_INDEX_MAX)))
            short = array("b", map(not_, long_))
            self._group(list(compress(srcs, long_)), array("q", compress(idx, long_)),
                        array("q", compress(cnts, long_)), CAT_PLAIN)
            srcs = list(compress(srcs, short))
            if not srcs:
                return
            idx = array("q", compress(idx, short))
            cnts = array("q", compress(cnts, short))
            m = max(cnts)
        L = self.LIDX
        if m > len(L):
            L.extend(uvarint((i << 2) | 1) for i in range(len(L), max(m, 2 * len(L))))
        # lists and tuples may be traversed in different directions
        fwd = array("b", (_SEQ_ORDER[type(o)] == 1 for o in srcs)) \
            if _SEQ_ORDER[list] != _SEQ_ORDER[tuple] else None
        if fwd is None:
            self._group(srcs, idx, cnts, CAT_SEQ, None, _SEQ_ORDER[list])
            return
        for sel, order in ((fwd, 1), (array("b", map(not_, fwd)), -1)):
            if any(sel):
                self._group(list(compress(srcs, sel)), array("q", compress(idx, sel)),
                            array("q", compress(cnts, sel)), CAT_SEQ, None, order)

    def _dicts(self, srcs, idx, cnts):
        """str-keyed dicts list only their values, in key order: label them
        with the keys; general dicts list value, key, value, key..."""
        lens = array("q", map(len, srcs))
        uni = array("b", map(eq, cnts, lens))
        if any(uni):
            us = list(compress(srcs, uni))
            F = _get_referents(*us)
            ok = all(map(is_, chain.from_iterable(map(dict.values, us)), F))
            if ok:
                self._group(us, array("q", compress(idx, uni)), array("q", compress(cnts, uni)),
                            CAT_DICT, F)
            else:
                # A split (instance) dict whose insertion order differs from
                # its shared keys' order: find those, leave them unlabelled.
                good = array("b", (all(map(is_, dict.values(d), _get_referents(d))) for d in us))
                bad = array("b", map(not_, good))
                uidx = array("q", compress(idx, uni))
                ucnt = array("q", compress(cnts, uni))
                if any(good):
                    self._group(list(compress(us, good)), array("q", compress(uidx, good)),
                                array("q", compress(ucnt, good)), CAT_DICT)
                if any(bad):
                    self._group(list(compress(us, bad)), array("q", compress(uidx, bad)),
                                array("q", compress(ucnt, bad)), CAT_PLAIN)
            del us, F
        other = array("b", map(not_, uni))
        if not any(other):
            return
        os_ = list(compress(srcs, other))
        oidx = array("q", compress(idx, other))
        ocnt = array("q", compress(cnts, other))
        # general dicts: per-dict work, but only for those with a str key
        lab_sel = array("b", (len(r) == 2 * len(d) and any(type(k) is str for k in dict.keys(d))
                              and all(map(is_, dict.keys(d), r[1::2]))
                              for d, r in zip(os_, map(_get_referents, os_))))
        plain = array("b", map(not_, lab_sel))
        if any(plain):
            self._group(list(compress(os_, plain)), array("q", compress(oidx, plain)),
                        array("q", compress(ocnt, plain)), CAT_PLAIN)
        if any(lab_sel):
            ls = list(compress(os_, lab_sel))
            labs = array("Q")
            for d in ls:
                for k in dict.keys(d):
                    labs.append((self.strid(k, cache=False) << 2) if type(k) is str else 0)
                    labs.append(0)
            self._group(ls, array("q", compress(oidx, lab_sel)),
                        array("q", compress(ocnt, lab_sel)), CAT_INST, None, labs)

    def _insts(self, srcs, idx, cnts):
        """Objects that may have an instance dict: label the edge to it."""
        F = _get_referents(*srcs)
        cand = list(compress(range(len(F)), map(is_, map(type, F), repeat(dict))))
        if not cand:
            self._group(srcs, idx, cnts, CAT_PLAIN, F)
            return
        ends = list(accumulate(cnts))
        read = self.dict_read
        tmode = self.tmode
        labelled = {}                      # source position -> edge position
        for p in cand:
            j = bisect_right(ends, p)
            o = srcs[j]
            try:
                if read(o, tmode[id(type(o))]) == id(F[p]):
                    labelled[j] = p
            except Exception:
                pass
        del F
        if not labelled:
            self._group(srcs, idx, cnts, CAT_PLAIN)
            return
        sel = array("b", bytes(len(srcs)))
        for j in labelled:
            sel[j] = 1
        rest = array("b", map(not_, sel))
        if any(rest):
            self._group(list(compress(srcs, rest)), array("q", compress(idx, rest)),
                        array("q", compress(cnts, rest)), CAT_PLAIN)
        lab = self.strid("__dict__") << 2
        labs = array("Q")
        starts = [0] + ends[:-1]
        for j in sorted(labelled):
            c = cnts[j]
            row = array("Q", bytes(8 * c))
            row[labelled[j] - starts[j]] = lab
            labs.extend(row)
        self._group(list(compress(srcs, sel)), array("q", compress(idx, sel)),
                    array("q", compress(cnts, sel)), CAT_INST, None, labs)

    def _huge(self, o, i):
        """A source with more than HUGE_SOURCE edges: several records, unlabelled."""
        F = _get_referents(o)
        for s in range(0, len(F), HUGE_SOURCE):
            part = F[s:s + HUGE_SOURCE]
            self._group((), array("q", [i]), array("q", [len(part)]), CAT_PLAIN, part)


def _safe_sizeof(o):
    try:
        return _getsizeof(o)
    except Exception:
        return 0
