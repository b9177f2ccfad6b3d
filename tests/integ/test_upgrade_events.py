"""The site changing under an upgrade: a system removed while the run waits for it, one
enrolled again under its name mid-step. The machine's every step and event is driven in
tests/unit/test_upgrade_usys.c; these need the real programs."""
import json
import os
import shutil
import subprocess
import tempfile

from harness import prog, script, wait_for
from test_upgrade import NEW, UpgradeSite, build_tree, report


def hanging_package(site):
    """A package whose agent never comes back: it sleeps where the agent should run."""
    tree = build_tree(tempfile.mkdtemp(prefix="tree-", dir=site.tmp), migration=False)
    agent = os.path.join(tree, "bin", "siteward-agent")
    os.unlink(agent)
    with open(agent, "w") as f:
        f.write("#!/bin/sh\nexec sleep 600\n")
    os.chmod(agent, 0o755)
    out = os.path.join(site.tmp, f"siteward-{NEW}-hanging.pkg")
    site.cli("package", "build", "--version", NEW, "--from", tree, "-o", out)
    return out


class Events(UpgradeSite):
    def start_run(self, site, *args):
        cmd = [prog("siteward"), "--site", site.dir, "upgrade", "run", *args, "--json"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish_run(self, p):
        out, err = p.communicate(timeout=120)
        run = json.loads(out)
        self.assert_within_bound(run)
        return p.returncode, run, err

    def step_of(self, site, name):
        try:
            y = self.by_name(self.status(site))[name]
        except Exception:
            return None
        return y["state"], y["step"]

    def test_removed_while_the_run_waits_for_it(self):
        site = self.make_site(plain=1)
        pkg = hanging_package(site)
        server_pid = site.server.pid
        p = self.start_run(site, pkg, "--stop-timeout", "3")
        self.addCleanup(p.kill)
        # switched, and its agent is not coming back: the run polls it at `wait`
        wait_for(lambda: self.step_of(site, "a1") == ("active", "wait"), 90, "a1 at wait")
        site.cli("systems", "remove", "a1")
        rc, run, err = self.finish_run(p)
        # the server lived through it, and says what happened
        self.assertTrue(site.server.alive(), site.server.log()[-3000:])
        self.assertEqual(site.server.pid, server_pid)
        y = self.by_name(run)["a1"]
        self.assertEqual(y["state"], "removed", report(err, run))
        self.assertEqual(y["reason"], "removed from the site at step wait")
        self.assertEqual(run["state"], "done", report(err, run))
        self.assertEqual(run["counts"]["removed"], 1)
        self.assertEqual(rc, 0, report(err, run))
        # and goes on serving
        self.assertNotIn("a1", site.systems())

    def test_enrolled_again_mid_step_is_caught_up(self):
        site = self.make_site(plain=1)
        b = site.enroll("b1", start=False)
        # a service that ignores SIGTERM holds b1 at its stop step for the grace period
        b.add_service("work", script("stubborn.py"), stop_timeout="60")
        b.start()
        site.cli("role", "add", "b1", "test")
        wait_for(lambda: self.running(site, "b1"), 15, "b1's service")
        pkg = os.path.join(site.tmp, "new.pkg")
        tree = build_tree(tempfile.mkdtemp(prefix="tree-", dir=site.tmp), migration=False)
        site.cli("package", "build", "--version", NEW, "--from", tree, "-o", pkg)
        p = self.start_run(site, pkg, "--stop-timeout", "10")
        self.addCleanup(p.kill)
        wait_for(lambda: self.step_of(site, "b1") == ("active", "stop"), 90, "b1 at stop")
        # the machine is replaced: removed, and a new agent enrolls under its name
        site.cli("systems", "remove", "b1")
        b.stop()
        b.kill_services()
        shutil.rmtree(b.dir)
        site.enroll("b1")
        rc, run, err = self.finish_run(p)
        self.assertTrue(site.server.alive())
        self.assertEqual(self.by_name(run)["a1"]["state"], "upgraded")
        # removed at its stop; the new enrollment makes it deferred, also when the run
        # had ended before the new agent enrolled
        wait_for(lambda: self.by_name(self.status(site))["b1"]["state"] in
                 ("deferred", "upgraded"), 30, "b1 deferred once enrolled again")
        y = self.by_name(self.status(site))["b1"]
        if y["state"] == "deferred":
            self.assertIn("enrolled again", y["reason"])
        # the new agent reports, and is upgraded without anyone asking
        wait_for(lambda: self.by_name(self.status(site))["b1"]["state"] == "upgraded", 90,
                 "the new b1 to be caught up")
        self.assertEqual(self.status(site)["state"], "done")
        wait_for(lambda: site.systems()["b1"]["version"] == NEW, 15, "b1 to report " + NEW)

    def test_check_gives_the_bound_and_run_keeps_it(self):
        site = self.make_site(plain=2)
        tree = build_tree(tempfile.mkdtemp(prefix="tree-", dir=site.tmp), migration=False)
        pkg = os.path.join(site.tmp, "new.pkg")
        site.cli("package", "build", "--version", NEW, "--from", tree, "-o", pkg)
        check = site.cli_json("upgrade", "check", pkg, "--stop-timeout", "3")
        self.assertGreater(check["bound_ms"], 0)
        r = site.cli("upgrade", "run", pkg, "--stop-timeout", "3", check=False, timeout=180)
        self.assertEqual(r.returncode, 0, r.stderr)
        # said before anything was touched, and again in the report
        first = r.stderr.splitlines()[0]
        self.assertRegex(first, r"^upgrade \d+: 2 systems, at most [0-9.]+ s$")
        self.assertRegex(r.stdout, r"time: [0-9.]+ s of at most [0-9.]+ s")
        run = self.status(site)
        self.assert_within_bound(run)
        self.assertEqual(run["state"], "done")
        # check gave the bound of the run it described
        self.assertEqual(check["bound_ms"], run["bound_ms"])


if __name__ == "__main__":
    import unittest
    unittest.main()
