"""heapsnap-py: write `.hsnap` heap snapshots of a CPython interpreter.

    import heapsnap_py
    heapsnap_py.dump("app.hsnap")

or run a script under it:

    python -m heapsnap_py run [-o PATH] script.py [args...]

The snapshot holds every object the cycle collector tracks plus the untracked
objects they reach, the references `gc.get_referents` reports, and the roots
the collector would use, so that the objects `heapsnap leaks` reports as
unreachable are the ones `gc.collect()` would free.  Standard library only.
"""

import gc
import os
import shutil
import stat
from array import array
import struct
import sys
import tempfile
import threading
import time

from ._capture import Stats, capture, type_name
from ._hsnap import bytes_field

__all__ = ["dump", "type_name", "Stats", "__version__"]
__version__ = "0.1.0"

_lock = threading.RLock()
_busy = array("b", [0])    # not a global rebinding: the module's dict stays as it was


def _meta():
    """META records, encoded now: one bytes object, which no snapshot shows."""
    m = [
        (b"producer", b"heapsnap-py"),
        (b"producer.version", __version__.encode()),
        (b"capture", b"python"),
        (b"pointer.width", str(struct.calcsize("P")).encode()),
        (b"process.id", str(os.getpid()).encode()),
    ]
    argv = getattr(sys, "orig_argv", None) or [sys.executable] + list(sys.argv)
    for a in argv:
        m.append((b"process.arg", os.fsencode(a) if isinstance(a, str) else bytes(a)))
    m.append((b"time.unix.ns", str(time.time_ns()).encode()))
    m.append((b"python.version", sys.version.encode("utf-8", "replace")))
    m.append((b"python.implementation", sys.implementation.name.encode()))
    return b"".join(bytes_field(k) + bytes_field(v) for k, v in m)


def _is_special(path):
    """Whether `path` exists and is neither a regular file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def dump(path, labels=True):
    """Write an .hsnap snapshot of this interpreter's heap to `path`.

    The file is written to a temporary file in the same directory and renamed
    over `path` once complete (a `path` that is not a regular file, such as
    /dev/null or a pipe, is written to directly).  The cycle collector is disabled while the
    snapshot is taken (and restored after); it is never run.  `labels=False`
    skips edge labels (a little faster).  Returns a `Stats`.
    Dumps are serialized: one requested by another thread waits; one requested
    in the same thread while a snapshot is being taken (from a signal handler)
    raises RuntimeError.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    with _lock:                 # other threads wait; this thread may re-enter...
        if _busy[0]:            # ...but not in the middle of a snapshot
            raise RuntimeError("heapsnap_py.dump() called while this thread is taking a "
                               "snapshot (from a signal handler?)")
        _busy[0] = 1
        was_enabled = gc.isenabled()
        gc.disable()
        old_interval = sys.getswitchinterval()
        sys.setswitchinterval(max(old_interval, 1.0))
        tmp = None
        try:
            meta = _meta()
            if _is_special(path):
                # /dev/null, a pipe: not to be renamed over (that would replace the device)
                # nor mapped; the snapshot is taken to a temporary file, then copied.
                fd, tmp = tempfile.mkstemp(prefix="heapsnap-py-", suffix=".hsnap")
                stats = capture(fd, labels=labels, meta=meta)  # closes fd
                with open(tmp, "rb") as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            else:
                fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp", dir=d)
                stats = capture(fd, labels=labels, meta=meta)  # closes fd
                os.replace(tmp, path)
                tmp = None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            sys.setswitchinterval(old_interval)
            if was_enabled:
                gc.enable()
            _busy[0] = 0
    stats.path = path
    return stats
