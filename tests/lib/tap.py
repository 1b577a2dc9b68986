"""Shared by Kyso's Python tests: one "ok - name" / "not ok - name: why"
line per check, a tally, and the small helpers every harness needs. A test
ends with summary(), whose last line ("N passed, M failed") CI reads."""
import subprocess
import sys


class Fail(Exception):
    """A check's own verdict: the message says what was wrong."""


class _Tally:
    passed = 0
    failed = 0


tally = _Tally()


def report(name, passed, detail=""):
    if passed:
        tally.passed += 1
        print("ok - %s%s" % (name, " (%s)" % detail if detail else ""))
    else:
        tally.failed += 1
        print("not ok - %s: %s" % (name, detail))
    sys.stdout.flush()


def check(name, fn, *args):
    """Runs fn(*args); a returned string is shown as the detail of a pass.
    Any exception fails the check: a broken harness never passes."""
    try:
        detail = fn(*args)
    except Fail as e:
        report(name, False, str(e))
        return False
    except Exception as e:
        report(name, False, "%s: %s" % (type(e).__name__, e))
        return False
    report(name, True, detail if isinstance(detail, str) else "")
    return True


def diag(text):
    for line in str(text).splitlines():
        print("# " + line)
    sys.stdout.flush()


def excerpt(b, n=600):
    if isinstance(b, bytes):
        b = b.decode("utf-8", "replace")
    b = b.strip()
    return b if len(b) <= n else b[:n] + "..."


def run(argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("timeout", 60)
    return subprocess.run(argv, **kw)


def tail(path, n=25):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "(%s)" % e


def summary():
    """Prints the closing line; the exit status: 0 only if something ran and nothing failed."""
    print("%d passed, %d failed" % (tally.passed, tally.failed))
    sys.stdout.flush()
    return 1 if tally.failed or not tally.passed else 0
