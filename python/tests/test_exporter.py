"""Tests for heapsnap_py.

The `.hsnap` reader here is written from formats/hsnap.md alone and shares no
code with the exporter: varints, chunk framing, CRCs, record parsing, range
checks and the DONE counts.
"""

import gc
import os
import signal
import struct
import subprocess
import sys
import time
import types
import weakref
import zlib
from array import array
from collections import Counter, deque

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
if PKG_ROOT not in sys.path:
    sys.path.insert(0, PKG_ROOT)

import heapsnap_py  # noqa: E402

# ---------------------------------------------------------------------------
# A minimal independent decoder
# ---------------------------------------------------------------------------

MAGIC = b"\x89HSNAP\r\n"
KNOWN = {b"META", b"STRS", b"TYPE", b"MODS", b"FRMS", b"STKS", b"NODE", b"EDGE", b"ROOT", b"DONE",
         b"PYBT", b"PYTY", b"PYEX"}


class Corrupt(Exception):
    pass


class Cursor:
    def __init__(self, data, start, end):
        self.d = data
        self.p = start
        self.end = end

    def u8(self):
        if self.p >= self.end:
            raise Corrupt("record runs past its chunk at %d" % self.p)
        v = self.d[self.p]
        self.p += 1
        return v

    def uv(self):
        v = 0
        shift = 0
        for i in range(10):
            b = self.u8()
            if i == 9 and b > 1:
                raise Corrupt("uvarint overflows 64 bits at %d" % self.p)
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
        raise Corrupt("uvarint longer than 10 bytes at %d" % self.p)

    def sv(self):
        u = self.uv()
        return (u >> 1) ^ -(u & 1)

    def column(self, width, n):
        """n little-endian values of `width` bytes."""
        if n < 0 or self.p + width * n > self.end:
            raise Corrupt("column runs past its chunk at %d" % self.p)
        a = array({1: "B", 4: "I", 8: "Q"}[width])
        a.frombytes(self.d[self.p:self.p + width * n])
        if sys.byteorder == "big" and width > 1:
            a.byteswap()
        self.p += width * n
        return a

    def raw(self):
        n = self.uv()
        if self.p + n > self.end:
            raise Corrupt("bytes run past chunk at %d" % self.p)
        b = self.d[self.p:self.p + n]
        self.p += n
        return b


class Snapshot:
    pass


def wrap64(v):
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def decode(data):
    """Parse and validate a whole .hsnap; return a Snapshot."""
    if len(data) < 16 or data[:8] != MAGIC:
        raise Corrupt("bad magic")
    major, minor, _ = struct.unpack_from("<HHI", data, 8)
    if major != 1 or minor > 1:
        raise Corrupt("unknown major version %d" % major)
    s = Snapshot()
    s.meta = []
    s.strings = [None]
    s.types = []
    s.mods = 0
    s.frames = 0
    s.stacks = 0
    s.ident = []
    s.addr = []
    s.size = []
    s.type = []
    s.stack = []
    s.flags = []
    s.edges = []        # (from, to, kind, label)
    s.roots = []        # (node, kind, flags, name)
    s.chunks = []
    s.batches = []
    s.pyty = {}
    s.excluded = []
    done = None
    p = 16
    last_ident = last_addr = 0
    last_from = 0
    while True:
        if done is not None:
            if p != len(data):
                raise Corrupt("bytes after DONE at %d" % p)
            break
        if p + 8 > len(data):
            raise Corrupt("truncated chunk header at %d" % p)
        tag = data[p:p + 4]
        if not all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!" for c in tag):
            raise Corrupt("bad tag %r at %d" % (tag, p))
        (n,) = struct.unpack_from("<I", data, p + 4)
        if p + 8 + n + 4 > len(data):
            raise Corrupt("truncated chunk %r at %d" % (tag, p))
        (crc,) = struct.unpack_from("<I", data, p + 8 + n)
        if zlib.crc32(data[p:p + 8 + n]) != crc:
            raise Corrupt("CRC mismatch in %r at %d" % (tag, p))
        s.chunks.append((tag, n))
        c = Cursor(data, p + 8, p + 8 + n)
        if tag not in KNOWN:
            if 0x41 <= tag[0] <= 0x5A:
                raise Corrupt("unknown critical chunk %r" % tag)
        elif tag == b"META":
            while c.p < c.end:
                s.meta.append((c.raw(), c.raw()))
        elif tag == b"STRS":
            while c.p < c.end:
                s.strings.append(c.raw())
        elif tag == b"TYPE":
            while c.p < c.end:
                s.types.append(c.uv())
        elif tag == b"NODE":
            while c.p < c.end:
                last_ident = wrap64(last_ident + c.sv())
                last_addr = wrap64(last_addr + c.sv())
                s.ident.append(last_ident & ((1 << 64) - 1))
                s.addr.append(last_addr & ((1 << 64) - 1))
                s.size.append(c.uv())
                s.type.append(c.uv())
                s.stack.append(c.uv())
                s.flags.append(c.uv())
        elif tag == b"EDGE":
            while c.p < c.end:
                last_from = wrap64(last_from + c.sv())
                cnt = c.uv()
                if cnt < 1:
                    raise Corrupt("edge record with count 0")
                for _ in range(cnt):
                    head = c.uv()
                    z = head >> 3
                    kind = (head >> 1) & 3
                    if kind == 3:
                        raise Corrupt("reserved edge kind")
                    label = None
                    if head & 1:
                        lv = c.uv()
                        lk = lv & 3
                        if lk == 3:
                            raise Corrupt("reserved label kind")
                        label = (lk, lv >> 2)
                    to = last_from + ((z >> 1) ^ -(z & 1))
                    s.edges.append((last_from, to, kind, label))
        elif tag == b"ROOT":
            while c.p < c.end:
                s.roots.append((c.uv(), c.u8(), c.uv(), c.uv()))
        elif tag == b"PYBT":
            while c.p < c.end:
                s.batches.append(batch(c))
        elif tag == b"PYTY":
            while c.p < c.end:
                t, traits, floor = c.uv(), c.uv(), c.uv()
                if t in s.pyty:
                    raise Corrupt("two PYTY records for type %d" % t)
                s.pyty[t] = (traits, floor)
        elif tag == b"PYEX":
            while c.p < c.end:
                s.excluded.append(c.uv())
        elif tag == b"DONE":
            done = [c.uv() for _ in range(8 if minor == 0 else 11)]
            if c.p != c.end:
                raise Corrupt("junk in DONE")
        else:
            raise Corrupt("chunk kind %r not expected from this writer" % tag)
        if c.p != c.end and tag in KNOWN:
            raise Corrupt("chunk %r not made of whole records" % tag)
        p += 8 + n + 4
    if done is None:
        raise Corrupt("no DONE")
    got = [len(s.strings) - 1, len(s.types), s.mods, s.frames, s.stacks,
           len(s.ident), len(s.edges), len(s.roots)]
    if minor:
        got += [len(s.batches), len(s.pyty), len(s.excluded)]
    if got != done:
        raise Corrupt("DONE counts %r, file has %r" % (done, got))
    if s.batches:
        if s.ident or s.edges or s.roots:
            raise Corrupt("both NODE/EDGE/ROOT and PYBT records")
        resolve(s)
    nn = len(s.ident)
    ns = len(s.strings)
    for t in s.types:
        if not 0 <= t < ns:
            raise Corrupt("type name out of range")
    for t in s.type:
        if not 0 <= t < len(s.types):
            raise Corrupt("node type out of range")
    for st in s.stack:
        if st != 0:
            raise Corrupt("this writer writes no stacks")
    for f, t, k, lab in s.edges:
        if not (0 <= f < nn and 0 <= t < nn):
            raise Corrupt("edge endpoint out of range")
        if lab is not None and lab[0] == 0 and not 0 <= lab[1] < ns:
            raise Corrupt("label strref out of range")
    for node, kind, flags, name in s.roots:
        if not 0 <= node < nn or not 0 <= name < ns:
            raise Corrupt("root out of range")
    s.done = done
    s.node_of = {ident: i for i, ident in enumerate(s.ident)}
    return s


def batch(c):
    """One PYBT record (formats/hsnap.md, section 3.1)."""
    b = Snapshot()
    b.kind, widths = c.u8(), c.u8()
    if b.kind > 2 or widths & ~3:
        raise Corrupt("unknown batch kind or width bits at %d" % c.p)
    sw, rw = (8 if widths & 1 else 4), (8 if widths & 2 else 4)
    S, R, D, P, L, b.source_bias, b.leaf_bias = (c.uv() for _ in range(7))
    b.addr = c.column(8, S)
    if b.kind == 0:
        b.type, b.size, b.rc = c.column(4, S), c.column(sw, S), c.column(rw, S)
    b.count = c.column(4, S)
    if sum(b.count) != R:
        raise Corrupt("reference counts do not add up")
    b.targets = c.column(8, R)
    b.dense_at = c.column(4, D)
    if list(b.dense_at) != sorted(set(b.dense_at)) or any(x >= S for x in b.dense_at):
        raise Corrupt("dense positions")
    b.dense = c.column(4, sum(b.count[x] for x in b.dense_at))
    b.dense_targets = c.column(8, len(b.dense))
    b.sparse_at, b.sparse_index, b.sparse = c.column(4, P), c.column(4, P), c.column(4, P)
    for x, i in zip(b.sparse_at, b.sparse_index):
        if x >= S or i >= b.count[x]:
            raise Corrupt("sparse label out of range")
    b.leaf_addr, b.leaf_type = c.column(8, L), c.column(4, L)
    b.leaf_size, b.leaf_rc, b.leaf_flags = c.column(sw, L), c.column(rw, L), c.column(1, L)
    return b


def resolve(s):
    """Nodes, edges and roots from the batches, by the spec's "Resolving"."""
    excluded = set(s.excluded)
    node = {}       # address -> [type, size, true count, frozen, given by a kind-0 source]
    for b in s.batches:
        if b.kind == 0:
            for a, t, z, rc in zip(b.addr, b.type, b.size, b.rc):
                node[a] = [t, z, max(rc - b.source_bias, 0), 0, True, rc]
    for b in s.batches:
        occ = Counter(b.targets)
        for a, t, z, rc, fl in zip(b.leaf_addr, b.leaf_type, b.leaf_size, b.leaf_rc, b.leaf_flags):
            if a not in node:
                node[a] = [t, z, max(rc - b.leaf_bias - occ[a], 0), fl & 1, False, rc]
    for a in excluded:
        node.pop(a, None)
    order = sorted(node)
    index = {a: i for i, a in enumerate(order)}
    for a in order:
        t, z, _, frozen, _, rc = node[a]
        if not 0 <= t < len(s.types):
            raise Corrupt("type out of range")
        floor = s.pyty.get(t, (0, 0))[1]
        s.ident.append(a)
        s.addr.append(a)
        s.size.append(max(z, floor))
        s.type.append(t)
        s.stack.append(0)
        s.flags.append(2 if frozen or rc >= 1 << 30 else 0)
    s.dropped = 0
    given = set()       # kind-1 addresses given
    sources = set()     # addresses whose references a kind 0 or 1 record gave
    continued = {a for b in s.batches if b.kind == 2 for a in b.addr}
    for b in s.batches:
        start = 0
        dense_from, skip = {}, 0
        for y in b.dense_at:
            dense_from[y] = skip
            skip += b.count[y]
        sparse = {}
        for y, i, lab in zip(b.sparse_at, b.sparse_index, b.sparse):
            sparse.setdefault(y, []).append((i, lab))
        for x, (a, n) in enumerate(zip(b.addr, b.count)):
            refs = b.targets[start:start + n]
            start += n
            if b.kind == 1:
                if a in given:
                    continue
                given.add(a)
                if a not in excluded and (a not in node or node[a][4]):
                    raise Corrupt("kind-1 source %x is no leaf" % a)
            if b.kind == 2 and a not in sources:
                raise Corrupt("kind-2 source %x continues nothing" % a)
            sources.add(a)
            if a in excluded:
                continue
            f = index[a]
            labels = [None] * n
            traits = s.pyty.get(s.type[f], (0, 0))[0]
            if traits & 1 and a not in continued:
                labels = [(1, n - 1 - i if traits & 2 else i) for i in range(n)]
            if x in dense_from:
                skip = dense_from[x]
                for i, (lab, to) in enumerate(zip(b.dense[skip:skip + n],
                                                  b.dense_targets[skip:skip + n])):
                    if lab and to == refs[i]:
                        labels[i] = (0, lab)
            for i, lab in sparse.get(x, ()):
                labels[i] = (0, lab)
            for r, lab in zip(refs, labels):
                if r in index:
                    s.edges.append((f, index[r], 0, lab))
                else:
                    s.dropped += 1
    inside = [0] * len(order)
    for f, t, k, lab in s.edges:
        if node[order[f]][4] or not node[order[t]][4]:
            inside[t] += 1
    for i, a in enumerate(order):
        t, z, true, frozen, tracked, rc = node[a]
        if true > inside[i] or frozen or rc >= 1 << 30:
            s.roots.append((i, 4, 0, 0))


def load(path):
    with open(path, "rb") as f:
        return decode(f.read())


def reachable(s):
    adj = [[] for _ in s.ident]
    for f, t, k, lab in s.edges:
        if k != 1:
            adj[f].append(t)
    seen = bytearray(len(s.ident))
    todo = deque()
    for node, kind, flags, name in s.roots:
        if not seen[node]:
            seen[node] = 1
            todo.append(node)
    while todo:
        x = todo.popleft()
        for y in adj[x]:
            if not seen[y]:
                seen[y] = 1
                todo.append(y)
    return seen


def type_name_of(s, i):
    return s.strings[s.types[s.type[i]]].decode()


def labels_from(s, i):
    out = {}
    for f, t, k, lab in s.edges:
        if f == i and lab is not None:
            out[t] = lab if lab[0] != 0 else (0, s.strings[lab[1]].decode())
    return out


# ---------------------------------------------------------------------------
# The writer against the spec's worked example
# ---------------------------------------------------------------------------

def test_worked_example_bytes():
    from heapsnap_py import _hsnap as h

    body = [h.MAGIC + struct.pack("<HHI", 1, 0, 0)]     # the example is a version 1.0 file
    body.append(h.chunk(b"STRS", h.bytes_field(b"node")))
    body.append(h.chunk(b"TYPE", h.uvarint(1)))
    node = (h.svarint(1) + h.svarint(0x1000) + h.uvarint(16) + b"\0\0\0" +
            h.svarint(1) + h.svarint(0x10) + h.uvarint(16) + b"\0\0\0")
    body.append(h.chunk(b"NODE", node))
    edge = (h.svarint(0) + h.uvarint(1) + h.uvarint(h.zigzag(1) << 3) +
            h.svarint(1) + h.uvarint(1) + h.uvarint(h.zigzag(-1) << 3))
    body.append(h.chunk(b"EDGE", edge))
    body.append(h.chunk(b"DONE", bytes([1, 1, 0, 0, 0, 2, 2, 0])))
    got = b"".join(body)

    def framed(tag, payload):
        head = tag + struct.pack("<I", len(payload))
        return head + payload + struct.pack("<I", zlib.crc32(head + payload))

    want = (bytes.fromhex("89 48 53 4E 41 50 0D 0A 01 00 00 00 00 00 00 00") +
            framed(b"STRS", bytes.fromhex("04 6E 6F 64 65")) +
            framed(b"TYPE", bytes.fromhex("01")) +
            framed(b"NODE", bytes.fromhex("02 80 40 10 00 00 00 02 20 10 00 00 00")) +
            framed(b"EDGE", bytes.fromhex("00 01 10 02 01 08")) +
            framed(b"DONE", bytes.fromhex("01 01 00 00 00 02 02 00")))
    assert got == want
    fixture = os.path.join(os.path.dirname(PKG_ROOT), "fixtures", "two-cycle.hsnap")
    if os.path.exists(fixture):          # the reference implementation's bytes
        with open(fixture, "rb") as f:
            assert f.read() == want
    s = decode(got)
    assert s.ident == [1, 2] and s.addr == [0x1000, 0x1010] and s.size == [16, 16]
    assert [(f, t) for f, t, k, lab in s.edges] == [(0, 1), (1, 0)]
    assert not any(reachable(s))


def test_varints():
    from heapsnap_py import _hsnap as h

    for v in [0, 1, 127, 128, 300, 2 ** 32, 2 ** 63, 2 ** 64 - 1]:
        c = Cursor(h.uvarint(v), 0, len(h.uvarint(v)))
        assert c.uv() == v and c.p == c.end
    assert len(h.uvarint(2 ** 64 - 1)) == 10
    with pytest.raises(ValueError):
        h.uvarint(2 ** 64)
    for v in [0, 1, -1, 63, -64, 2 ** 62, -(2 ** 63), 2 ** 63 - 1]:
        e = h.svarint(v)
        assert Cursor(e, 0, len(e)).sv() == v
    assert h.zigzag(-1) == 1 and h.zigzag(1) == 2 and h.zigzag(-(2 ** 63)) == 2 ** 64 - 1


def test_decoder_catches_corruption(tmp_path):
    p = tmp_path / "x.hsnap"
    heapsnap_py.dump(p)
    data = p.read_bytes()
    decode(data)
    with pytest.raises(Corrupt):
        decode(data[:-1])                                   # truncated DONE
    with pytest.raises(Corrupt):
        decode(data + b"\0")                                # bytes after DONE
    bad = bytearray(data)
    bad[40] ^= 0x55
    with pytest.raises(Corrupt):
        decode(bytes(bad))                                  # CRC


# ---------------------------------------------------------------------------
# (c) framing of a real snapshot
# ---------------------------------------------------------------------------

def test_framing_and_contents(tmp_path):
    keep = {"answer": [42, "x" * 100], "t": (1, 2)}
    p = tmp_path / "snap.hsnap"
    stats = heapsnap_py.dump(p)
    assert not [f for f in os.listdir(tmp_path) if f != "snap.hsnap"]   # no temp left
    s = load(p)
    assert s.done[5:8] == [0, 0, 0]             # no NODE, EDGE, ROOT: address-keyed batches
    assert s.done[8] == stats.batches == len(s.batches)
    assert stats.references == sum(len(b.targets) for b in s.batches)
    assert stats.tracked == sum(len(b.addr) for b in s.batches if b.kind == 0)
    assert stats.leaves == sum(len(b.leaf_addr) for b in s.batches)
    assert len(s.ident) > 1000 and len(s.edges) > len(s.ident) // 2
    # META first, DONE last, chunks within the spec's 64 MiB
    assert s.chunks[0][0] == b"META" and s.chunks[-1][0] == b"DONE"
    assert all(n <= 64 << 20 for _, n in s.chunks)
    meta = dict(s.meta)
    assert meta[b"producer"] == b"heapsnap-py"
    assert meta[b"capture"] == b"python"
    assert meta[b"pointer.width"] == str(struct.calcsize("P")).encode()
    assert meta[b"process.id"] == str(os.getpid()).encode()
    assert int(meta[b"time.unix.ns"]) > 1.6e18
    assert len(set(s.ident)) == len(s.ident)
    assert s.ident == sorted(s.ident) and s.ident == s.addr
    assert all(f & ~3 == 0 for f in s.flags)
    # node fields for a known object
    i = s.node_of[id(keep)]
    assert type_name_of(s, i) == "dict"
    assert s.size[i] == sys.getsizeof(keep)
    labs = labels_from(s, i)
    assert labs[s.node_of[id(keep["answer"])]] == (0, "answer")
    assert labs[s.node_of[id(keep["t"])]] == (0, "t")
    lst = s.node_of[id(keep["answer"])]
    labs = labels_from(s, lst)
    assert labs[s.node_of[id(keep["answer"][1])]] == (1, 1)
    assert type_name_of(s, s.node_of[id(keep["answer"][1])]) == "str"
    # every referent of a dumped object is a node, as is every dict value
    assert s.node_of.get(id(keep["t"])) is not None
    assert not s.stack or max(s.stack) == 0
    assert s.dropped == 0


def test_edges_are_get_referents(tmp_path):
    """Every node's edges are exactly gc.get_referents(o), in order."""
    from array import array
    pinned = gc.get_objects()          # keeps ids valid after the dump
    before = [array("Q", map(id, gc.get_referents(o))) for o in pinned]
    p = tmp_path / "e.hsnap"
    heapsnap_py.dump(p)
    after = [array("Q", map(id, gc.get_referents(o))) for o in pinned]
    s = load(p)
    assert s.dropped == 0
    out = {}
    for f, t, k, lab in s.edges:
        out.setdefault(f, []).append(t)
        assert k == 0
    checked = skipped = 0
    bad = []
    for o, b, a in zip(pinned, before, after):
        i = s.node_of[id(o)]
        assert type_name_of(s, i) == heapsnap_py.type_name(type(o))
        if b != a or o is pinned:
            skipped += 1               # changed by the test machinery meanwhile
            continue
        if out.get(i, []) != [s.node_of.get(r) for r in b]:
            bad.append(type(o).__name__)
        checked += 1
    assert not bad
    assert checked > 1000 and skipped < 50


def test_big_containers(tmp_path, monkeypatch):
    """A source with more references than a record takes (HUGE, lowered here)
    is written over several records, its edges still exactly its referents;
    a big str-keyed dict below the limit keeps its labels, the split list
    loses its index labels."""
    from heapsnap_py import _capture
    monkeypatch.setattr(_capture, "HUGE", 30000)
    big = [str(i) for i in range(70000)]
    bigd = {"k%d" % i: i * 1000 for i in range(20000)}
    small = (big, bigd)
    p = tmp_path / "big.hsnap"
    heapsnap_py.dump(p)
    s = load(p)
    assert s.dropped == 0
    assert [b.kind for b in s.batches].count(2) == 2          # big: 30000 + 30000 + 10000
    for o in (big, bigd, small):
        i = s.node_of[id(o)]
        got = [t for f, t, k, lab in s.edges if f == i]
        assert got == [s.node_of[id(r)] for r in gc.get_referents(o)]
    i = s.node_of[id(small)]
    assert labels_from(s, i) == {s.node_of[id(big)]: (1, 0), s.node_of[id(bigd)]: (1, 1)}
    assert labels_from(s, s.node_of[id(big)]) == {}
    labs = labels_from(s, s.node_of[id(bigd)])
    assert labs[s.node_of[id(bigd["k123"])]] == (0, "k123")


class Thing:
    def __init__(self):
        self.payload = [1, 2, 3]


def test_instance_dict_label_and_types(tmp_path):
    t = Thing()
    t.__dict__[0] = "x"     # a dict of its own (3.11+ keeps values inline otherwise)
    u = Thing()
    p = tmp_path / "i.hsnap"
    heapsnap_py.dump(p)
    s = load(p)
    i = s.node_of[id(t)]
    assert type_name_of(s, i) == __name__ + ".Thing"
    labs = labels_from(s, i)
    from heapsnap_py import _capture
    if _capture._WORD is not None:
        assert labs.get(s.node_of[id(t.__dict__)]) == (0, "__dict__")
        assert labs[s.node_of[id(t.__dict__)]] == (0, "__dict__")
    # u's attributes (inline on 3.11+) are edges straight from u
    j = s.node_of[id(u)]
    targets = {t_ for f, t_, k, lab in s.edges if f == j}
    if sys.version_info >= (3, 11):
        assert s.node_of[id(u.payload)] in targets


def test_module_dict_label_and_flags(tmp_path):
    p = tmp_path / "m.hsnap"
    heapsnap_py.dump(p)
    s = load(p)
    from heapsnap_py import _capture
    m = s.node_of[id(heapsnap_py)]
    assert type_name_of(s, m) == "module"
    if _capture._WORD is not None:
        assert labels_from(s, m)[s.node_of[id(heapsnap_py.__dict__)]] == (0, "__dict__")
    roots = {r[0] for r in s.roots}
    assert all(kind == 4 and flags == 0 for _, kind, flags, _ in s.roots)
    none = s.node_of[id(None)]
    assert none in roots
    if sys.version_info >= (3, 12):
        assert s.flags[none] & 2                 # immortal
    else:
        assert not any(f & 2 for f in s.flags)


def test_frozen_objects_are_roots(tmp_path):
    """gc.freeze() moves objects out of gc.get_objects() and out of reach of
    the collector.  Those the heap refers to become nodes, and roots (the
    collector never frees them); frozen objects nothing unfrozen refers to
    cannot be enumerated from Python and are left out."""
    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        a = ["frozen"]
        a.append(a)
        ida = id(a)
        gc.freeze()                  # a: never collected from now on
        try:
            b = ["young", a]
            b.append(b)
            idb = id(b)
            del a, b                     # b: young garbage that refers to a
            p = tmp_path / "f.hsnap"
            heapsnap_py.dump(p)
        finally:
            gc.unfreeze()
        s = load(p)
        seen = reachable(s)
        assert s.dropped == 0
        assert seen[s.node_of[ida]] and s.flags[s.node_of[ida]] & 2
        assert not seen[s.node_of[idb]]
        assert len(set(s.ident)) == len(s.ident)
    finally:
        gc.collect()
        if was:
            gc.enable()


# ---------------------------------------------------------------------------
# (a) the a/b cycle
# ---------------------------------------------------------------------------

GLOBAL_KEEP = [["still", "here"]]


def make_cycle():
    a = ["a"]
    b = ["b"]
    a.append(b)
    b.append(a)
    ids = (id(a), id(b))
    del a, b
    return ids


def test_cycle_is_unreachable(tmp_path):
    was = gc.isenabled()
    gc.disable()
    try:
        ida, idb = make_cycle()
        local = {"k": [1, 2, 3]}
        p = tmp_path / "cycle.hsnap"
        heapsnap_py.dump(p)
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
    s = load(p)
    seen = reachable(s)
    na, nb = s.node_of[ida], s.node_of[idb]
    assert not seen[na] and not seen[nb]
    edges = {(f, t) for f, t, k, lab in s.edges}
    assert (na, nb) in edges and (nb, na) in edges
    # their element strings are referenced only by the dead lists? no: "a" and
    # "b" are interned constants, so they stay reachable.
    for o in (GLOBAL_KEEP, GLOBAL_KEEP[0], GLOBAL_KEEP[0][0], local, local["k"], sys.modules,
              heapsnap_py, heapsnap_py.dump, Thing):
        assert seen[s.node_of[id(o)]], o
    # the exporter's own working containers are not in the graph
    assert len(s.ident) < len(gc.get_objects()) * 4


def test_gc_state_restored(tmp_path):
    gc.enable()
    heapsnap_py.dump(tmp_path / "x.hsnap")
    assert gc.isenabled()
    gc.disable()
    heapsnap_py.dump(tmp_path / "y.hsnap")
    assert not gc.isenabled()
    gc.enable()


def test_dump_makes_no_garbage(tmp_path):
    was = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        heapsnap_py.dump(tmp_path / "x.hsnap")
        assert gc.collect() == 0
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------------------
# (b) object for object against gc.collect() under DEBUG_SAVEALL
# ---------------------------------------------------------------------------

class Node:
    def __init__(self, name):
        self.name = name
        self.other = None


class WithDel:
    deleted = 0

    def __init__(self):
        self.me = self

    def __del__(self):
        WithDel.deleted += 1


class Slotted:
    __slots__ = ("peer", "data")


def _closure_cycle():
    box = {}

    def inner():
        return box
    box["f"] = inner


def _exception_cycle():
    try:
        raise ValueError("boom")
    except ValueError as e:
        err = e
    holder = [err]
    err.holder = holder        # exception -> traceback -> frame -> locals -> err


def _generator_cycle():
    def gen():
        me = yield
        yield me
    g = gen()
    next(g)
    g.send(g)               # the suspended frame holds g


def _build_garbage():
    # lists
    a, b = [1], [2]
    a.append(b)
    b.append(a)
    selfref = []
    selfref.append(selfref)
    # dicts, with non-str keys and untracked payloads
    d1 = {"x": 1.5, 7: "seven", "t": (1, 2, "atomic"), "atomic": {"k": 1},
          "s": "".join(["uni", "que"])}
    d2 = {"back": d1}
    d1["next"] = d2
    # instances, inline and materialized dicts
    n1, n2 = Node("one"), Node("two")
    n1.other, n2.other = n2, n1
    n3 = Node("three")
    n3.__dict__["other"] = n3
    # bound method stored on its own instance
    n4 = Node("four")
    n4.cb = n4.__init__
    # __del__ in a cycle (finalized, then saved)
    WithDel()
    # slots
    s1, s2 = Slotted(), Slotted()
    s1.peer, s2.peer = s2, s1
    s1.data = "payload" * 10
    # tuple in a cycle (tracked) holding an atomic tuple (untracked)
    lst = []
    tup = (lst, (1, 2, 3), "s")
    lst.append(tup)
    # weakref inside a cycle, and a weakref with callback
    w = Node("weak")
    w.ref = weakref.ref(w)
    w.cbref = weakref.ref(w, lambda r: None)
    # closures, exceptions with tracebacks, generators, classes
    _closure_cycle()
    _exception_cycle()
    type("Ephemeral", (object,), {"x": 1})
    # sets and frozensets referencing cycles
    fs = Node("fs")
    fs.s = {frozenset([1, 2]), 3}
    fs.me = [fs]
    # module object in a cycle
    m = types.ModuleType("ghost")
    m.me = m
    return [id(x) for x in (a, b, selfref, d1, d2, n1, n2, n3, n4, s1, s2, lst, tup, w, fs, m)]


def test_generator_cycle_is_unreachable(tmp_path):
    """A suspended generator whose frame refers to it is cyclic garbage, but
    gc.collect() closes it while finalizing, which breaks the cycle and frees
    it before DEBUG_SAVEALL could save it: it never shows in gc.garbage, so it
    is checked here rather than in test_matches_gc_collect."""
    was = gc.isenabled()
    gc.disable()
    old_debug = gc.get_debug()
    try:
        gc.collect()

        def gen():
            me = yield
            yield me
        g = gen()
        next(g)
        g.send(g)
        gid = id(g)
        wr = weakref.ref(g)
        del g, gen
        p = tmp_path / "g.hsnap"
        heapsnap_py.dump(p)
        s = load(p)
        assert not reachable(s)[s.node_of[gid]]
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        assert wr() is None and gid not in {id(o) for o in gc.garbage}
    finally:
        gc.set_debug(old_debug)
        gc.garbage.clear()
        gc.collect()
        if was:
            gc.enable()


def _build_live():
    live = []
    x, y = [1], [2]
    x.append(y)
    y.append(x)
    live.append(x)                       # a cycle that is still referenced
    n = Node("alive")
    n.other = n
    live.append(n)
    live.append({"deep": [[[]]]})
    return live


def test_matches_gc_collect(tmp_path):
    was = gc.isenabled()
    gc.disable()
    old_debug = gc.get_debug()
    try:
        gc.collect()
        assert not gc.garbage
        gc.set_debug(gc.DEBUG_SAVEALL)
        live = _build_live()
        expected_some = _build_garbage()
        p = tmp_path / "b.hsnap"
        heapsnap_py.dump(p)
        tracked = {id(o) for o in gc.get_objects()}      # tracked ids at dump time
        gc.collect()
        garbage_ids = {id(o) for o in gc.garbage}
        s = load(p)
        seen = reachable(s)
        predicted = {s.ident[i] for i in range(len(s.ident)) if not seen[i]}
        predicted_tracked = predicted & tracked
        assert set(expected_some) <= garbage_ids        # the corpus really is garbage
        missing = garbage_ids - predicted_tracked
        extra = predicted_tracked - garbage_ids
        assert not missing, [type_name_of(s, s.node_of[i]) if i in s.node_of else "?"
                             for i in list(missing)[:20]]
        assert not extra, [type_name_of(s, s.node_of[i]) for i in list(extra)[:20]]
        assert garbage_ids == predicted_tracked
        for o in live:
            assert seen[s.node_of[id(o)]]
        # untracked objects only the garbage referenced are unreachable too
        d1 = next(o for o in gc.garbage if type(o) is dict and "x" in o)
        assert not gc.is_tracked(d1["atomic"])
        assert not seen[s.node_of[id(d1["atomic"])]]     # an atomic dict
        assert not seen[s.node_of[id(d1["s"])]]          # a str made at run time
        assert seen[s.node_of[id(d1["t"])]]              # a constant: the code holds it
    finally:
        gc.set_debug(old_debug)
        gc.garbage.clear()
        gc.collect()
        if was:
            gc.enable()


def _heapsnap_bin():
    """The Rust CLI, if built: $HEAPSNAP_BIN, target/{release,debug}, PATH."""
    import shutil
    cands = [os.environ.get("HEAPSNAP_BIN")]
    root = os.path.dirname(PKG_ROOT)
    cands += [os.path.join(root, "target", k, "heapsnap") for k in ("release", "debug")]
    cands.append(shutil.which("heapsnap"))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def test_heapsnap_resolves_as_the_spec_says(tmp_path, monkeypatch):
    """heapsnap's resolution of the address-keyed batches (`heapsnap convert`,
    the Rust reader) equals the one this file's decoder makes from the spec:
    the same nodes, edges with their labels, and roots, on a heap with
    cycles, untracked containers, split sources and a split dict."""
    exe = _heapsnap_bin()
    if exe is None:
        pytest.skip("heapsnap CLI not built (cargo build --release, or set HEAPSNAP_BIN)")
    from heapsnap_py import _capture
    monkeypatch.setattr(_capture, "HUGE", 5000)
    keep = [list(range(12000)), {"a": (1, "x"), "b": [None]}, tuple("abc")]
    first, other = TwoAttrs(), TwoAttrs()
    first.x, first.y = 1, 2
    other.y, other.x = [3], [4]
    keep.append(other.__dict__)
    ring = [[]]
    ring[0].append(ring)
    del ring
    raw = tmp_path / "raw.hsnap"
    heapsnap_py.dump(raw)
    out = tmp_path / "resolved.hsnap"
    r = subprocess.run([exe, "convert", str(raw), "-o", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    mine, theirs = load(raw), load(out)
    assert not theirs.batches and theirs.done[8:] == []
    for field in ("ident", "addr", "size", "type", "flags"):
        assert getattr(theirs, field) == getattr(mine, field), field
    def edges(s):       # by source, each source's in order; name labels as text
        return [(f, t, k, lab if lab is None or lab[0] else (0, s.strings[lab[1]]))
                for f, t, k, lab in sorted(s.edges, key=lambda e: e[0])]
    assert edges(theirs) == edges(mine)
    assert theirs.roots == mine.roots
    assert [type_name_of(theirs, i) for i in range(0, len(theirs.ident), 97)] == \
        [type_name_of(mine, i) for i in range(0, len(mine.ident), 97)]


def test_end_to_end_with_heapsnap_leaks(tmp_path):
    """`heapsnap leaks --format json --members` (the Rust reader) lists as
    leak members exactly the nodes the roots cannot reach; on tracked
    objects, exactly gc.garbage."""
    import json
    exe = _heapsnap_bin()
    if exe is None:
        pytest.skip("heapsnap CLI not built (cargo build --release, or set HEAPSNAP_BIN)")
    was = gc.isenabled()
    gc.disable()
    old_debug = gc.get_debug()
    try:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        live = _build_live()
        _build_garbage()
        p = tmp_path / "e2e.hsnap"
        heapsnap_py.dump(p)
        tracked = {id(o) for o in gc.get_objects()}
        gc.collect()
        garbage_ids = {id(o) for o in gc.garbage}
    finally:
        gc.set_debug(old_debug)
        gc.garbage.clear()
        gc.collect()
        if was:
            gc.enable()
    r = subprocess.run([exe, "leaks", "-q", "--no-cache", "--format", "json", "--members",
                        "-n", "1000000000", str(p)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert not report.get("omitted_groups")
    members = set()
    for g in report["groups"]:
        members.update(g["members"])
    s = load(p)
    seen = reachable(s)
    assert members == {s.ident[i] for i in range(len(s.ident)) if not seen[i]}
    assert members & tracked == garbage_ids
    assert not {id(o) for o in live} & members


# ---------------------------------------------------------------------------
# (d) python -m heapsnap_py run
# ---------------------------------------------------------------------------

SCRIPT = r'''
import os, sys, time
print("start", sys.argv[1:], __name__)
sys.stdout.flush()
junk = [[i] for i in range(1000)]
go = sys.argv[1]
deadline = time.time() + 30
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
print("done", len(junk))
sys.exit(3)
'''


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_run_cli(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(SCRIPT)
    go = tmp_path / "go"
    out = tmp_path / "out.hsnap"
    # plain run, for reference
    go.write_text("")
    plain = subprocess.run([sys.executable, str(script), str(go)], capture_output=True,
                           text=True, timeout=60)
    go.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "heapsnap_py", "run", "-o", str(out),
                             str(script), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=str(tmp_path))
    try:
        first = proc.stdout.readline()
        assert first.startswith("start")
        proc.send_signal(signal.SIGUSR2)
        one = tmp_path / "out.1.hsnap"
        deadline = time.time() + 30
        while not one.exists() and time.time() < deadline:
            time.sleep(0.02)
        assert one.exists()
        go.write_text("")
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == plain.returncode == 3
    assert first + rest == plain.stdout
    s1 = load(one)
    s = load(out)
    assert len(s1.ident) > 1000 and len(s.ident) > 1000
    meta = dict(s.meta)
    assert meta[b"process.id"] == str(proc.pid).encode()


def test_run_cli_default_path_and_exception(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("import sys\nprint('hi')\nraise KeyError('x')\n")
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                           timeout=60)
    r = subprocess.run([sys.executable, "-m", "heapsnap_py", "run", str(script)],
                       capture_output=True, text=True, env=_env(), cwd=str(tmp_path), timeout=60)
    assert r.returncode == plain.returncode == 1
    assert r.stdout == plain.stdout == "hi\n"
    assert "KeyError: 'x'" in r.stderr
    snaps = [f for f in os.listdir(tmp_path) if f.startswith("heapsnap-") and f.endswith(".hsnap")]
    assert len(snaps) == 1
    load(tmp_path / snaps[0])


def test_pipe_target_is_written_not_replaced(tmp_path):
    # A target that is not a regular file (a pipe here, /dev/null alike) is
    # written to directly: renaming over it would replace it.
    import stat
    import threading
    fifo = str(tmp_path / "out.fifo")
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    heapsnap_py.dump(fifo)
    reader.join(30)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced"
    s = decode(got[0])
    assert len(s.ident) > 100 and s.done[8] == len(s.batches) > 0
    assert os.listdir(str(tmp_path)) == ["out.fifo"], "no temporary file left"


class TwoAttrs:
    pass


def test_dict_labels_name_the_right_values(tmp_path):
    """An instance dict whose insertion order differs from its shared keys'
    may list its values in another order than its keys: every label still
    names its own value."""
    first = TwoAttrs()
    first.x, first.y = ["x0"], ["y0"]
    other = TwoAttrs()
    other.y, other.x = ["y1"], ["x1"]
    d, df = other.__dict__, first.__dict__       # made now, before the dump
    plain = {"p": ["p0"], "q": ["q0"]}
    p = tmp_path / "d.hsnap"
    heapsnap_py.dump(p)
    s = load(p)
    for o in (d, plain, df):
        labs = labels_from(s, s.node_of[id(o)])
        for k, v in o.items():
            got = labs.get(s.node_of[id(v)])
            assert got in (None, (0, k)), (k, got)
    assert labels_from(s, s.node_of[id(plain)]) == {
        s.node_of[id(plain["p"])]: (0, "p"), s.node_of[id(plain["q"])]: (0, "q")}


def test_a_thread_building_a_tuple_is_not_broken(tmp_path, monkeypatch):
    """gc.get_objects() hands out the tuples other threads are still building:
    tuple() of a generator resizes its tuple as it grows, which needs the only
    reference to it.  Such a thread must not run while the dump holds that
    tuple, or it fails with SystemError; so the dump never gives the GIL away
    until it lets go of what gc.get_objects() returned.  Here the builder
    waits, with 10 items in a tuple of 10, until the snapshot has been taken."""
    import threading
    waiting, go = threading.Event(), threading.Event()
    errors = []

    def items():
        for i in range(30):
            if i == 10:         # the next item makes tuple() resize its tuple
                waiting.set()
                go.wait(30)
            yield i

    def build():
        try:
            tuple(items())
        except SystemError as e:        # "bad argument to internal function"
            errors.append(e)

    builder = threading.Thread(target=build)
    builder.start()
    assert waiting.wait(30)
    real = gc.get_objects

    def get_objects(*args):
        objs = real(*args)
        go.set()                # from now on the builder only waits for the GIL
        return objs

    monkeypatch.setattr(gc, "get_objects", get_objects)
    heapsnap_py.dump(tmp_path / "t.hsnap")
    monkeypatch.undo()
    builder.join(30)
    assert go.is_set() and not errors, errors
    load(tmp_path / "t.hsnap")
