#!/usr/bin/env python3
"""Runs the integration tests: the real programs on loopback, driven from outside.

usage: run.py --build DIR [--db postgresql://…] [-k PATTERN]
"""
import argparse
import os
import sys
import time
import unittest

here = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--db", default="", help="run against this PostgreSQL server")
    ap.add_argument("-k", default=None, help="only tests whose name contains this")
    args = ap.parse_args()
    os.environ["SITEWARD_BUILD"] = os.path.abspath(args.build)
    if args.db:
        os.environ["SITEWARD_TEST_DB"] = args.db
    sys.path.insert(0, here)
    loader = unittest.TestLoader()
    if args.k:
        loader.testNamePatterns = [f"*{args.k}*"]
    suite = loader.discover(here, pattern="test_*.py", top_level_dir=here)
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    bad = len(result.failures) + len(result.errors)
    # An error in setUpClass is not a test run, but it is a failure.
    passed = max(0, result.testsRun - bad - len(result.skipped))
    print(f"integration: {time.monotonic() - t0:.1f}s")
    print(f"{passed} passed, {bad} failed, {len(result.skipped)} skipped")
    return 0 if bad == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
