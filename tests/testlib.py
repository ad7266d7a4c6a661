"""testlib.py - what the Python tests share: where the repository, the build
and ../shared are, one pass/fail tally, and the last line tests/run_all.sh
reads ("N passed, M failed, K skipped").  Tests that need ../shared are
skipped by name when it is missing (a fresh clone has none), never passed."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BUILD", "build")
SHARED = os.path.normpath(os.environ.get("EMBER_SHARED", os.path.join(ROOT, "..", "shared")))
EMBER = os.path.join(ROOT, BUILD, "ember")

passed = 0
failed = 0
skipped = []


def record(ok, line=None):
    """Count one result; print line (if any) as its report."""
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    if line is not None:
        print(line)
        sys.stdout.flush()
    return ok


def check(cond, msg, verbose=False):
    """One assertion: "FAIL: msg" when it fails ("ok    msg" too if verbose)."""
    if cond:
        return record(True, "ok    " + msg if verbose else None)
    return record(False, "FAIL: " + msg)


def missing_shared(what):
    """../shared (or the part of it a test needs) is absent: skipped, by name."""
    skipped.append(what)
    print("SKIP: %s not found (../shared test data); the checks that need it did not run" % what)
    sys.stdout.flush()


def summary():
    """Print the last line and return the exit code."""
    print("%d passed, %d failed, %d skipped" % (passed, failed, len(skipped)))
    return 1 if failed else 0
