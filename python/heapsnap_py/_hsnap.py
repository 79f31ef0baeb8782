"""Low-level `.hsnap` encoding: varints, records and chunk framing.

Everything here follows ``formats/hsnap.md`` (version 1.1: the exporter writes
the address-keyed records of its section 3.1).  The writer keeps
one buffer per record kind and flushes a buffer as one chunk once it holds
about ``FLUSH_BYTES``; records never span chunks because callers only ever
append whole records.
"""

import mmap
import os
import struct
import zlib

MAGIC = b"\x89HSNAP\r\n"
MAJOR = 1
MINOR = 1
HEADER = MAGIC + struct.pack("<HHI", MAJOR, MINOR, 0)

# Compiled once: struct.pack(fmt) would add to the struct module's cache, which
# is a heap object, while a snapshot is being taken.
_U32LE = struct.Struct("<I")

FLUSH_BYTES = 1 << 18          # ~256 KiB chunks (and buffers: less memory)
MAX_CHUNK = 64 << 20           # spec: writers keep chunks at most 64 MiB

_U64 = (1 << 64) - 1

# Encodings of 0..127 (one byte each), used by uvarint() and by callers.
BYTE = tuple(bytes((i,)) for i in range(256))


def uvarint(v):
    """Unsigned LEB128, shortest form.  0 <= v < 2**64."""
    if v < 0x80:
        if v < 0:
            raise ValueError("uvarint of a negative value")
        return BYTE[v]
    if v > _U64:
        raise ValueError("uvarint wider than 64 bits")
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def wrap_signed(v):
    """Reduce v modulo 2**64 and read it as a signed 64-bit value."""
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


def zigzag(v):
    """(v << 1) ^ (v >> 63) for a signed 64-bit v (v is wrapped first)."""
    v = wrap_signed(v)
    return (v << 1) if v >= 0 else ((-v) << 1) - 1


def svarint(v):
    return uvarint(zigzag(v))


def bytes_field(b):
    return uvarint(len(b)) + b


# zlib.crc32 gives the GIL away for more than 5 KiB (CPython's zlibmodule.c); a
# snapshot must keep it (see MappedFile), so checksums go a piece at a time.
_CRC_PIECE = 5 << 10


def crc32(data, crc=0):
    """zlib.crc32 of a bytes-like object, without giving the GIL away."""
    view = memoryview(data).cast("B")
    if len(view) <= _CRC_PIECE:
        return zlib.crc32(view, crc)
    for at in range(0, len(view), _CRC_PIECE):
        crc = zlib.crc32(view[at:at + _CRC_PIECE], crc)
    return crc


_GIVE_BACK = 1 << 20


class MappedFile:
    """A regular file written through a shared memory map.

    Copying into the map never gives the GIL away, where a write() does: while
    the exporter holds what gc.get_objects() returned, another thread must not
    run, as the list can hold a tuple that thread is still building (a resize
    needs its only reference).  The file is made `reserve` bytes long first
    (sparse: untouched pages take no space) and cut to what was written by
    close(); a larger snapshot grows the map, which gives the GIL away once.
    Written pages are handed back every MiB so that they do not count in the
    process's resident memory; the page cache keeps them."""

    def __init__(self, fd, reserve):
        self.fd = fd
        self.size = 0
        self.given_back = 0
        os.ftruncate(fd, reserve)
        self.map = mmap.mmap(fd, reserve)

    def write(self, data):
        view = memoryview(data).cast("B")
        end = self.size + len(view)
        if end > len(self.map):
            self.map.resize(max(end, 2 * len(self.map)))
        for at in range(0, len(view), _GIVE_BACK):      # a MiB at a time, handed back
            piece = view[at:at + _GIVE_BACK]
            self.map[self.size:self.size + len(piece)] = piece
            self.size += len(piece)
            if self.size - self.given_back >= _GIVE_BACK:
                self.give_back()

    def give_back(self):
        done = self.size - self.size % mmap.PAGESIZE
        if done > self.given_back and hasattr(self.map, "madvise"):
            self.map.madvise(mmap.MADV_DONTNEED, self.given_back, done - self.given_back)
            self.given_back = done

    def close(self):
        """Unmap, and cut the file to what was written."""
        self.map.close()
        os.ftruncate(self.fd, self.size)


def chunk(tag, payload):
    """One framed chunk: tag, u32 length, payload, u32 CRC-32 of all three."""
    if len(tag) != 4:
        raise ValueError("chunk tags are 4 bytes")
    if len(payload) > MAX_CHUNK:
        raise ValueError("chunk larger than 64 MiB")
    head = tag + _U32LE.pack(len(payload))
    crc = crc32(payload, crc32(head))
    return head + payload + _U32LE.pack(crc)


# Record kinds in the order DONE counts them (version 1.1: eleven counts).
DONE_ORDER = (b"STRS", b"TYPE", b"MODS", b"FRMS", b"STKS", b"NODE", b"EDGE", b"ROOT",
              b"PYBT", b"PYTY", b"PYEX")


class Writer:
    """Streams chunks to a binary file object.

    ``add(tag, data, records, items)`` appends ``data`` (which must be a
    concatenation of whole records of kind ``tag``) to that kind's buffer;
    ``records`` is the number of records in it and ``items`` what DONE counts
    for it (equal to ``records`` except for EDGE, where DONE counts single
    edges).  Small additions are coalesced; a buffer reaching FLUSH_BYTES is
    written out as one chunk.
    """

    def __init__(self, f, flush_bytes=FLUSH_BYTES):
        self.f = f
        self.flush_bytes = flush_bytes
        self.bufs = {}
        self.counts = dict.fromkeys(DONE_ORDER, 0)
        self.bytes_written = 0
        self.chunks = 0
        self.f.write(HEADER)
        self.bytes_written += len(HEADER)

    def _emit(self, tag, *parts):
        """Write one chunk whose payload is `parts` (bytes-like), without
        joining or copying them."""
        if len(tag) != 4:
            raise ValueError("chunk tags are 4 bytes")
        n = sum(memoryview(p).nbytes for p in parts)
        if n > MAX_CHUNK:
            raise ValueError("chunk larger than 64 MiB")
        head = tag + _U32LE.pack(n)
        crc = crc32(head)
        for p in parts:
            crc = crc32(p, crc)
        write = self.f.write
        write(head)
        for p in parts:
            write(p)
        write(_U32LE.pack(crc))
        self.bytes_written += n + 12
        self.chunks += 1

    def record(self, tag, parts):
        """One record made of `parts`, written as a chunk of its own after
        what is buffered of its kind: the big batch records."""
        self.flush(tag)
        self._emit(tag, *parts)
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def add(self, tag, data, items=1):
        buf = self.bufs.get(tag)
        if buf is None:
            buf = self.bufs[tag] = bytearray()
        if buf and len(buf) + len(data) > MAX_CHUNK // 2:
            self.flush(tag)
        if not buf and len(data) >= self.flush_bytes:
            self._emit(tag, data)          # big enough: a chunk of its own
        else:
            buf += data
            if len(buf) >= self.flush_bytes:
                self.flush(tag)
        self.counts[tag] = self.counts.get(tag, 0) + items

    def flush(self, tag):
        buf = self.bufs.get(tag)
        if buf:
            self._emit(tag, buf)
            buf.clear()

    def flush_all(self, order=None):
        for tag in order or list(self.bufs):
            self.flush(tag)

    def finish(self):
        """Flush every buffer (strings and types first) and write DONE."""
        self.flush_all([t for t in DONE_ORDER if t in self.bufs] +
                       [t for t in self.bufs if t not in DONE_ORDER])
        self._emit(b"DONE", b"".join(uvarint(self.counts[t]) for t in DONE_ORDER))
