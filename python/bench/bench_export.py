"""Measure heapsnap_py.dump on a heap of about a million tracked objects.

    python3 bench/bench_export.py [N] [--no-labels] [--lists]

Default: N = 200000 records of five tracked objects each (~1M tracked, ~2M
nodes, ~3M edges).  --lists: N = 1000000 one-item lists instead (~1M
tracked, ~2M nodes, ~2M edges).

Reports tracked objects, references, leaf records, seconds (wall and CPU),
seconds per million tracked objects, file size, and the extra peak RSS
during the dump as a share of the heap (Linux: /proc/self/clear_refs resets
the high-water mark just before the dump).  When the heapsnap binary is
built (target/release/heapsnap, or HEAPSNAP_BIN), it then resolves the file
(`heapsnap convert`, in its own process) and reports the objects in the
snapshot, seconds per million of them, and the time heapsnap took.  Then one
summary line.  The targets: at most 1 s per million objects, extra memory
under half the heap.
Run it a few times (each run is a fresh process) and keep the best and the
median: for i in 1 2 3; do python3 bench/bench_export.py; done
"""

import gc
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import heapsnap_py  # noqa: E402


class Rec:
    def __init__(self, i):
        self.name = "rec-%d" % i                    # str, untracked
        self.value = i * 1.5                        # float, untracked
        self.tags = [i, i + 1, "t%d" % (i % 100)]   # list, tracked
        self.meta = {"id": i, "kids": [i]}          # dict + list, tracked
        self.pair = (self.name, self.tags)          # tuple, tracked


def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def resolved(path):
    """(objects in the snapshot, seconds heapsnap took to resolve it), or
    (0, 0) without a built heapsnap."""
    exe = os.environ.get("HEAPSNAP_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "release", "heapsnap")
    if not os.access(exe, os.X_OK):
        return 0, 0.0
    t = time.perf_counter()
    r = subprocess.run([exe, "convert", path, "-o", path + ".resolved"], capture_output=True,
                       text=True)
    dt = time.perf_counter() - t
    try:
        os.unlink(path + ".resolved")
    except OSError:
        pass
    m = re.search(r"(\d+) nodes", r.stdout + r.stderr)
    return (int(m.group(1)) if r.returncode == 0 and m else 0), dt


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    lists = "--lists" in sys.argv
    n = int(args[0]) if args else (1000000 if lists else 200000)
    labels = "--no-labels" not in sys.argv
    gc.disable()
    rss0 = status("VmRSS")
    data = [[i] for i in range(n)] if lists else [Rec(i) for i in range(n)]
    heap = status("VmRSS") - rss0
    tracked = len(gc.get_objects())
    out = "/tmp/bench-%d.hsnap" % os.getpid()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    before = status("VmRSS")
    t = time.perf_counter()
    c = time.process_time()
    st = heapsnap_py.dump(out, labels=labels)
    dt = time.perf_counter() - t
    cpu = time.process_time() - c
    peak = status("VmHWM")
    size = os.path.getsize(out)
    nodes, resolve = resolved(out)
    os.unlink(out)
    print("python %s, labels=%s" % (sys.version.split()[0], labels))
    print("tracked objects  %9d" % tracked)
    print("references       %9d" % st.references)
    print("leaf records     %9d  (untracked objects met, once per reference)" % st.leaves)
    print("time             %9.3f s  (CPU time %.3f s, steadier on a busy machine)" % (dt, cpu))
    print("tracked/s        %9.0f  -> %.2f s per million tracked objects" % (
        tracked / dt, dt / tracked * 1e6))
    if nodes:
        print("objects          %9d  in the snapshot (tracked and untracked) -> %.2f s per "
              "million" % (nodes, dt / nodes * 1e6))
        print("heapsnap resolve %9.3f s  (heapsnap convert, a separate process)" % resolve)
    print("file             %9.1f MB" % (size / 1e6))
    print("heap (RSS grew)  %9.1f MB while building" % (heap / 1e6))
    if reset:
        print("extra peak RSS   %9.1f MB during dump (%.0f%% of the heap's growth)" % (
            (peak - before) / 1e6, 100.0 * (peak - before) / heap))
    print("SUMMARY %s s/M-tracked=%.2f cpu-s/M-tracked=%.2f s/M-objects=%s extra=%s" % (
        "lists" if lists else "records", dt / tracked * 1e6, cpu / tracked * 1e6,
        "%.2f" % (dt / nodes * 1e6) if nodes else "n/a",
        "%.0f%%" % (100.0 * (peak - before) / heap) if reset else "n/a"))
    del data


if __name__ == "__main__":
    main()
