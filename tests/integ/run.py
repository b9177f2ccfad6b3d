#!/usr/bin/env python3
"""Runs the integration tests: the real programs on loopback, driven from outside.

usage: run.py --build DIR [--db postgresql://…] [-k PATTERN] [-j JOBS]

Test modules run in parallel, each in its own process (-j, default 4): the tests spend
most of their time waiting on the programs' timers, not on the processors.
"""
import argparse
import concurrent.futures
import os
import re
import resource
import subprocess
import sys
import time
import unittest

here = os.path.dirname(os.path.abspath(__file__))


def run_module(name, pattern):
    """Runs one test module in this process; prints its report; returns counts."""
    sys.path.insert(0, here)
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = [f"*{pattern}*"]
    suite = loader.loadTestsFromName(name)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    bad = len(result.failures) + len(result.errors)
    passed = max(0, result.testsRun - bad - len(result.skipped))
    # what the module and the programs it ran cost the processors, to see where a
    # pass's time goes
    cpu = sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))
    print(f"COUNTS {passed} {bad} {len(result.skipped)} {cpu:.1f}")
    return 0 if bad == 0 else 1


# Modules that take a minute or more, the longest last.
LONGEST = ["test_machines", "test_console", "test_agent_upgrade", "test_metering_server", "test_fleet", "test_upgrade",
           "test_services", "test_metering", "test_upgrade_kb"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--db", default="", help="run against this PostgreSQL server")
    ap.add_argument("-k", default=None, help="only tests whose name contains this")
    ap.add_argument("-j", type=int, default=4, help="test modules run at once")
    ap.add_argument("--module", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ["SITEWARD_BUILD"] = os.path.abspath(args.build)
    if args.db:
        os.environ["SITEWARD_TEST_DB"] = args.db
    if args.module:
        return run_module(args.module, args.k)

    # the longest first, so that no long one is left to run alone at the end
    modules = sorted((f[:-3] for f in os.listdir(here)
                      if f.startswith("test_") and f.endswith(".py")),
                     key=lambda m: (-LONGEST.index(m) if m in LONGEST else 1, m))
    t0 = time.monotonic()
    totals = [0, 0, 0]
    costs = []

    def one(mod):
        argv = [sys.executable, os.path.abspath(__file__), "--build", args.build,
                "--module", mod] + (["-k", args.k] if args.k else [])
        t = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(),
                           timeout=1800)
        return mod, p, time.monotonic() - t

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.j)) as pool:
        for mod, p, wall in pool.map(one, modules):
            out = p.stdout + p.stderr
            m = re.search(r"^COUNTS (\d+) (\d+) (\d+) ([\d.]+)$", p.stdout, re.M)
            counts = [int(x) for x in m.groups()[:3]] if m else [0, 1, 0]
            costs.append((wall, float(m.group(4)) if m else 0.0, mod))
            if not m:
                out += f"\n{mod}: the module did not finish (exit {p.returncode})\n"
            for i in range(3):
                totals[i] += counts[i]
            print(f"==== {mod}: {counts[0]} passed, {counts[1]} failed, "
                  f"{counts[2]} skipped")
            print("\n".join(l for l in out.splitlines() if not l.startswith("COUNTS ")))
            sys.stdout.flush()
    print("\nmodules by time taken (wall s, CPU s of the module and its programs):")
    for wall, cpu, mod in sorted(costs, reverse=True):
        print(f"  {mod:28} {wall:6.1f} {cpu:6.1f}")
    print(f"integration: {time.monotonic() - t0:.1f}s")
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 0 if totals[1] == 0 and totals[0] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
