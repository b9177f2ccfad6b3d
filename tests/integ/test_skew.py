"""Machines whose clocks are hours off the site server's, run under libfaketime: they
enroll, report, have their clock error shown, upload usage the server puts back on its
own clock, and are upgraded. A clock off beyond any certificate's validity is refused at
enrollment with one line saying what to do."""
import glob
import json
import os
import shutil
import subprocess
import time
import unittest

import test_upgrade as upgrade
from harness import Agent, Site, prog, wait_for

# libfaketime's thread-safe build (Debian package faketime): the agent has threads.
FAKETIME_LIB = (glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") or [""])[0]
HOUR_MS = 3600 * 1000
# A heartbeat's reading is late by its trip to the server; a loaded machine is slow.
TOLERANCE_MS = 30 * 1000
OFFSETS = {"behind": ("-3h", -3 * HOUR_MS), "ahead": ("+3h", 3 * HOUR_MS)}


def faked(offset):
    """The environment that sets a process's clock, and its children's, `offset` off.
    Monotonic clocks stay true, so libuv's timers keep working; file times stay true, so
    the folders the tests share are read as they are."""
    assert FAKETIME_LIB, "libfaketime is not installed: run scripts/install-deps"
    # an ASan build refuses to start with another library preloaded before its runtime
    asan = ":".join(o for o in (os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0")
                    if o)
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1", "ASAN_OPTIONS": asan}


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(v.split("=", 1) for v in f.read().decode(errors="replace").split("\0")
                    if "=" in v)


def enroll_skewed(test, site, name):
    """Enrolls the agent `name` of OFFSETS; it works, and says the clock is worth setting."""
    offset, skew = OFFSETS[name]
    a = Agent(site, name, faked(offset))
    r = a.init(site.token())
    test.assertEqual(r.returncode, 0, r.stderr)
    word = "behind" if skew < 0 else "ahead of"
    test.assertIn(f"this machine's clock is 3h 0m {word} the site server's; set the time",
                  r.stderr)
    site.agents[name] = a
    return a


class Skewed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            cls.site.start()
            cls.site.cli("product", "add", "skewtool", "--exe", "skewtool", "--licenses", "5")
            cls.tool = os.path.join(cls.site.tmp, "skewtool")
            shutil.copy("/bin/true", cls.tool)
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def agent(self, name):
        """The agent `name` of OFFSETS, enrolled and reporting (once per class)."""
        a = self.site.agents.get(name)
        if a is None:
            a = enroll_skewed(self, self.site, name)
            a.start()
        return a

    def test_skew_is_measured_shown_and_warned(self):
        for name, (_, skew) in OFFSETS.items():
            self.agent(name)
            s = self.site.systems()[name]
            self.assertLess(abs(s["clock_skew_ms"] - skew), TOLERANCE_MS, s)
            self.assertEqual(s["health"], "ok")
            word = "behind" if skew < 0 else "ahead of"
            self.assertIn(f"clock 3h 0m {word} the site server's", s["clock_note"])
            self.assertIn("timedatectl", s["clock_note"])
            # still a skew TLS copes with: nothing says otherwise
            self.assertNotIn("TLS fails", s["clock_note"])
        table = self.site.cli("systems").stdout
        self.assertIn("CLOCK", table)
        self.assertRegex(table, r"\nbehind +\S+ +\S+ +ok +\S+ ago +-3h 0m ")
        self.assertRegex(table, r"\nahead +\S+ +\S+ +ok +\S+ ago +\+3h 0m ")
        self.assertIn("note: behind: clock 3h 0m behind the site server's", table)
        # the server said so in its log, once per system
        log = self.site.server.log()
        for name in OFFSETS:
            self.assertEqual(log.count(f"system {name}: clock 3h 0m"), 1, log)

    def test_usage_lands_on_the_server_clock(self):
        for name, (offset, _) in OFFSETS.items():
            a = self.agent(name)
            t0 = time.time() * 1000
            # no metering server: siteward-run records the run for the agent to upload
            r = subprocess.run([prog("siteward-run"), "--agent", a.dir, "--", self.tool],
                               capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, **faked(offset)))
            t1 = time.time() * 1000
            self.assertEqual(r.returncode, 0, r.stderr)

            def uploaded():
                # id, product, exe, user, host, start, end, kind, wait, source, received
                return [row for row in self.site.db_fields("usage")
                        if row[4] == name and row[2] == "skewtool" and row[9] == "offline"]
            rows = wait_for(uploaded, 20, f"{name}'s run uploaded")
            self.assertEqual(len(rows), 1, rows)
            start, end = int(rows[0][5]), int(rows[0][6])
            self.assertEqual(rows[0][1], "skewtool")
            # on the server's clock, not three hours off it
            self.assertGreater(start, t0 - TOLERANCE_MS, (name, start - t0))
            self.assertLess(end, t1 + TOLERANCE_MS, (name, end - t1))
            self.assertLessEqual(start, end)


class SkewedUpgrade(upgrade.UpgradeSite):
    def test_skewed_systems_are_upgraded(self):
        site = Site(heartbeat=1)
        self.addCleanup(self.cleanup, site)
        site.start()
        for name in OFFSETS:
            a = enroll_skewed(self, site, name)
            # not the Python test services: under libfaketime with a true monotonic
            # clock, Python's time.sleep() fails with EINVAL
            a.add_service("work", "sleep 100000", stop_timeout="2")
            a.start()
            site.cli("role", "add", name, "test")
        for name in OFFSETS:
            wait_for(lambda n=name: self.running(site, n), 15, f"{name}'s service")
        pkg = upgrade.build_package(site)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
        self.assertEqual(rc, 0, upgrade.report(err, run))
        self.assertEqual({y["name"]: y["state"] for y in run["systems"]},
                         {n: "upgraded" for n in OFFSETS}, upgrade.report(err, run))
        for name, (_, skew) in OFFSETS.items():
            self.assert_on(site, name, upgrade.NEW)
            a = site.agents[name]
            # the clock is as wrong as before: the agent kept its environment across
            # its re-exec, and its services got it too
            s = site.systems()[name]
            self.assertLess(abs(s["clock_skew_ms"] - skew), TOLERANCE_MS, s)
            self.assertEqual(environ_of(a.proc.pid).get("FAKETIME"), OFFSETS[name][0])
            with open(os.path.join(a.dir, "services.state")) as f:
                work = json.load(f)["work"]
            self.assertEqual(environ_of(work["pid"]).get("FAKETIME"), OFFSETS[name][0])


class RefusedClock(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        try:
            cls.site.start()
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def test_clock_beyond_the_certificates_is_told_at_enrollment(self):
        # ten and twenty years: before the site CA starts, after the server's expires
        for name, offset, words in (("past", "-3650d", "3650d 0h behind"),
                                    ("future", "+7300d", "7300d 0h ahead of")):
            a = Agent(self.site, name, faked(offset))
            r = a.init(self.site.token())
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(
                r.stderr,
                "siteward-agent: cannot verify the site server's certificate: this "
                f"machine's clock is {words} the site server's; set the time (timedatectl "
                "/ chrony) and enroll again\n")
            self.assertFalse(os.path.exists(a.dir), "a refused enrollment wrote its folder")
        self.assertEqual(self.site.systems(), {})


if __name__ == "__main__":
    unittest.main()
