"""python -m heapsnap_py run [-o PATH] [-q] [--no-labels] script.py [args...]

Runs the script as `__main__` (like runpy.run_path, with sys.argv set to the
script and its arguments, and sys.path[0] its directory), writes a snapshot
when it ends (PATH, by default heapsnap-<pid>.hsnap in the starting
directory), and one more each time the process gets SIGUSR2 while it runs
(PATH with .1, .2, ... before its extension).  The script's stdout and exit
status are its own; heapsnap_py only writes to stderr.
"""

import argparse
import io
import os
import signal
import sys
import types

from . import dump


def numbered(path, k):
    root, ext = os.path.splitext(path)
    return "%s.%d%s" % (root, k, ext)


class _Snapper:
    def __init__(self, path, quiet, labels):
        self.path = path
        self.quiet = quiet
        self.labels = labels
        self.count = 0
        self.busy = False
        self.pending = 0

    def snap(self, path):
        self.busy = True
        try:
            try:
                st = dump(path, labels=self.labels)
            except Exception as e:           # never kill the program over a snapshot
                if not self.quiet:
                    sys.stderr.write("heapsnap_py: snapshot %s failed: %r\n" % (path, e))
                return
            if not self.quiet:
                sys.stderr.write("heapsnap_py: wrote %s (%d tracked objects, %d references, "
                                 "%.2f s)\n" % (path, st.tracked, st.references, st.seconds))
                sys.stderr.flush()
        finally:
            self.busy = False
        while self.pending:                  # signals that came in meanwhile
            self.pending -= 1
            self.on_signal()

    def on_signal(self, signum=None, frame=None):
        del frame
        if self.busy:
            self.pending += 1
            return
        self.count += 1
        self.snap(numbered(self.path, self.count))


def _run_script(script, args):
    """exec the script in a fresh __main__ module that stays alive afterwards."""
    sys.argv[:] = [script] + list(args)
    if os.path.isdir(script) or not os.path.isfile(script):
        import runpy                          # a directory or zip with __main__.py
        sys.path.insert(0, script)
        return runpy.run_path(script, run_name="__main__")
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    with io.open_code(script) as f:
        code = compile(f.read(), script, "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=script, __cached__=None, __doc__=None, __loader__=None,
                         __package__="", __spec__=None)
    sys.modules["__main__"] = main
    exec(code, main.__dict__)
    return main


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m heapsnap_py",
                                 description="Write .hsnap heap snapshots of a Python program.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a script; snapshot at exit and on SIGUSR2")
    run.add_argument("-o", "--output", metavar="PATH",
                     help="snapshot path (default heapsnap-<pid>.hsnap)")
    run.add_argument("-q", "--quiet", action="store_true", help="say nothing on stderr")
    run.add_argument("--no-labels", action="store_true", help="no edge labels (faster)")
    run.add_argument("script")
    run.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)

    path = os.path.abspath(ns.output or "heapsnap-%d.hsnap" % os.getpid())
    snapper = _Snapper(path, ns.quiet, not ns.no_labels)
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, snapper.on_signal)
    err = None
    try:
        mod = _run_script(ns.script, ns.args)
    except BaseException as e:                # SystemExit, KeyboardInterrupt, errors
        err = e
        mod = None
    snapper.snap(path)                        # the script's state as it ends
    del mod
    if err is None:
        return 0
    if isinstance(err, (SystemExit, KeyboardInterrupt)):
        raise err
    tb = err.__traceback__
    # drop our own frame from the traceback, as if the script ran directly
    sys.excepthook(type(err), err, tb.tb_next if tb is not None else None)
    return 1


if __name__ == "__main__":
    sys.exit(main())
