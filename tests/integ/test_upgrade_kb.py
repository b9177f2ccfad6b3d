"""The upgrade scenarios of KB Q258547: a metering server whose service ignores SIGTERM
and whose agent is frozen, under each --on-stuck policy. A module of its own so it runs
beside test_upgrade."""
import os
import signal
import time

from harness import wait_for, wait_heartbeats
from test_upgrade import NEW, UpgradeSite, build_package, exe_of, old_version, report


class KB(UpgradeSite):
    def test_frozen_metering_server_is_deferred_then_catches_up(self):
        old = old_version()
        site = self.make_site(plain=2, meters=("m1", "m2"), stubborn=("m2",))
        pkg = build_package(site)
        m2 = site.agents["m2"]
        m2.proc.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
        took = time.monotonic() - t0
        self.assertEqual(rc, 3, report(err, run))
        self.assertEqual(run["state"], "deferred")
        ys = self.by_name(run)
        for name in ("a1", "a2", "m1"):
            self.assertEqual(ys[name]["state"], "upgraded", ys[name])
            self.assert_on(site, name, NEW)
        self.assertEqual(ys["m2"]["state"], "deferred")
        self.assertIn("agent not answering", ys["m2"]["reason"])
        self.assertEqual(site.systems()["m2"]["version"], old)
        # the run waited for the frozen system only as long as its stop timeout
        self.assertGreaterEqual(took, 3)
        self.assertLess(took, 3 + 25, report(err, run))
        # the server upgraded itself first, and runs the new version
        self.assertEqual(os.path.realpath(exe_of(site.server.pid)),
                         os.path.realpath(os.path.join(site.dir, "versions", NEW, "bin",
                                                       "siteward-server")))
        self.assertEqual(run["server"]["step"], "done")
        # the meter of m1 runs the new version's program
        meter = [s for s in site.systems()["m1"]["services"] if s["name"] == "meter"][0]
        self.assertIn(f"/versions/{NEW}/bin/siteward-meter", exe_of(meter["pid"]))
        # and says which version it is: the package's, not the one it was built as
        with open(os.path.join(site.agents["m1"].dir, "logs", "meter.log")) as f:
            started = [line for line in f if "listening on" in line]
        self.assertTrue(started[-1].rstrip().endswith(f"version {NEW}"), started[-1])
        # back from SIGSTOP: upgraded without anyone asking
        m2.proc.signal(signal.SIGCONT)
        wait_for(lambda: self.by_name(self.status(site))["m2"]["state"] == "upgraded", 60,
                 "m2 to catch up")
        self.assertEqual(self.status(site)["state"], "done")
        wait_for(lambda: self.running(site, "m2"), 15, "m2's meter")
        self.assert_on(site, "m2", NEW)

    def test_remove_role_policy(self):
        site = self.make_site(plain=1, meters=("m1",), stubborn=("m1",))
        pkg = build_package(site)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "2",
                                    "--on-stuck", "remove-role")
        self.assertEqual(rc, 0, report(err, run))
        ys = self.by_name(run)
        self.assertEqual(ys["m1"]["state"], "upgraded", ys["m1"])
        self.assertEqual(ys["m1"]["removed_roles"], ["software-metering"])
        self.assertIn("restored", ys["m1"]["reason"])
        self.assertIn("restore", ys["m1"]["times"])
        self.assertIn("software-metering", site.systems()["m1"]["roles"])
        wait_for(lambda: self.running(site, "m1"), 15, "m1's meter")
        self.assert_on(site, "m1", NEW)
        self.assert_on(site, "a1", NEW)

    def test_fail_policy_stops_with_nothing_half_switched(self):
        old = old_version()
        site = self.make_site(plain=3, meters=("m1",), stubborn=("m1",))
        pkg = build_package(site)
        site.agents["m1"].proc.signal(signal.SIGSTOP)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "2", "--on-stuck",
                                    "fail", "--parallel", "1")
        self.assertEqual(rc, 4, report(err, run))
        self.assertEqual(run["state"], "failed")
        self.assertIn("m1", run["reason"])
        site.agents["m1"].proc.signal(signal.SIGCONT)
        # m1 has gone through what waited for it while it was frozen
        wait_heartbeats(site, "m1", 2)
        for name, y in self.by_name(run).items():
            # every system whole: on the new version and upgraded, or on the old one
            # with its services running
            if y["state"] == "upgraded":
                self.assert_on(site, name, NEW)
            else:
                self.assertEqual(site.systems()[name]["version"], old, y)
                self.assertIn(y["state"], ("failed", "unchanged"), y)
                wait_for(lambda n=name: self.running(site, n), 15, f"{name}'s services")
                self.assertFalse(os.path.exists(os.path.join(site.agents[name].dir,
                                                             "current")))
        self.assertEqual(self.by_name(run)["m1"]["state"], "failed")
        # nothing happens to m1 by itself after a failed run, however often it is heard
        wait_heartbeats(site, "m1", 3)
        self.assertEqual(site.systems()["m1"]["version"], old)

    def test_kill_policy_escalates(self):
        site = self.make_site(plain=0, meters=("m1", "m2"), stubborn=("m1", "m2"))
        pkg = build_package(site)
        meters = {n: [s for s in site.systems()[n]["services"] if s["name"] == "meter"][0]
                  for n in ("m1", "m2")}
        m2 = site.agents["m2"]
        m2.proc.signal(signal.SIGSTOP)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "2", "--on-stuck",
                                    "kill")
        self.assertEqual(rc, 3, report(err, run))
        y = self.by_name(run)["m1"]
        self.assertEqual(y["state"], "upgraded", y)
        # SIGTERM was ignored for the stop timeout, then SIGKILL ended it
        self.assertGreaterEqual(y["times"]["stop"], 1500, y)
        self.assertFalse(os.path.exists(f"/proc/{meters['m1']['pid']}"))
        wait_for(lambda: self.running(site, "m1"), 15, "m1's meter again")
        self.assert_on(site, "m1", NEW)
        # an agent that does not answer cannot kill: deferred, and caught up with the
        # same escalation once it answers again
        y = self.by_name(run)["m2"]
        self.assertEqual(y["state"], "deferred", y)
        self.assertIn("agent not answering", y["reason"])
        m2.proc.signal(signal.SIGCONT)
        wait_for(lambda: self.by_name(self.status(site))["m2"]["state"] == "upgraded", 60,
                 "m2 to catch up")
        self.assertFalse(os.path.exists(f"/proc/{meters['m2']['pid']}"))
        wait_for(lambda: self.running(site, "m2"), 15, "m2's meter again")
        self.assert_on(site, "m2", NEW)

    def test_max_failures_stops_the_run(self):
        old = old_version()
        site = self.make_site(plain=4)
        pkg = build_package(site)
        frozen = ("a1", "a2", "a4")
        for name in frozen:
            site.agents[name].proc.signal(signal.SIGSTOP)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "2", "--parallel", "1",
                                    "--max-failures", "1")
        ended = int(time.time() * 1000)
        for name in frozen:
            site.agents[name].proc.signal(signal.SIGCONT)
        self.assertEqual(rc, 4, report(err, run))
        self.assertEqual(run["state"], "failed")
        self.assertIn("more than 1 systems deferred or failed", run["reason"])
        ys = self.by_name(run)
        # after the server's own switch the systems whose agents came back go first (a3);
        # the frozen ones, once the wait for them is over, in order, until the budget
        # is spent: a4 is never begun
        self.assertEqual([ys[n]["state"] for n in ("a1", "a2", "a3", "a4")],
                         ["deferred", "deferred", "upgraded", "unchanged"], run)
        # a run stopped by its budget leaves its deferred systems alone: the server hears
        # each again 5 s after the run, when a deferred one would be caught up (3 s on)
        for name in ("a1", "a2"):
            wait_heartbeats(site, name, 2, after_ms=ended + 5000)
        for name in ("a1", "a2", "a4"):
            self.assertEqual(site.systems()[name]["version"], old)
        self.assertEqual(self.status(site)["state"], "failed")
