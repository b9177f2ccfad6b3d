"""Software distribution to machines of their own (machines.py: network, PID and mount
namespaces, an overlay root each, the real dpkg running the package's maintainer script
in it). A deployment to five where one has dpkg's lock held and one is stopped mid-run
ends within the bound it printed, the held one deferred with its holder named, the
stopped one caught up when started; nothing reaches this machine's own root; the
inventory follows the install and the removal as deltas; a tampered package is refused
on the machine."""
import json
import os
import select
import subprocess
import time
import unittest

import machines
from harness import Site, wait_for

NAMES = ["m1", "m2", "m3", "m4", "m5"]
PKG = "sw-machine-hello"
MARK = "/var/lib/sw-machine-hello/postinst-ran"


def build_deb(tmp, version):
    """A .deb of PKG at `version` whose postinst leaves MARK in the root it runs in."""
    top = os.path.join(tmp, f"mpkg-{version}")
    os.makedirs(os.path.join(top, "DEBIAN"))
    os.makedirs(os.path.join(top, f"usr/share/{PKG}"))
    with open(os.path.join(top, "DEBIAN/control"), "w") as f:
        f.write(f"Package: {PKG}\nVersion: {version}\nArchitecture: all\n"
                "Maintainer: siteward tests <tests@example.org>\n"
                "Description: a package for siteward's machine tests\n")
    with open(os.path.join(top, "DEBIAN/postinst"), "w") as f:
        f.write(f"#!/bin/sh\nset -e\nmkdir -p {os.path.dirname(MARK)}\n"
                f"echo {version} > {MARK}\n")
    os.chmod(os.path.join(top, "DEBIAN/postinst"), 0o755)
    with open(os.path.join(top, f"usr/share/{PKG}/payload"), "wb") as f:
        f.write(os.urandom(32 * 1024))
    out = os.path.join(tmp, f"{PKG}_{version}_all.deb")
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", top, out], check=True,
                   capture_output=True, timeout=60)
    return out


def installed_in(status_path):
    """PKG's version in a dpkg status file, or None."""
    with open(status_path) as f:
        for stanza in f.read().split("\n\n"):
            if f"Package: {PKG}\n" in stanza + "\n" and "ok installed" in stanza:
                for line in stanza.splitlines():
                    if line.startswith("Version: "):
                        return line[9:]
    return None


WHY_NOT = machines.why_not()


@unittest.skipIf(WHY_NOT, WHY_NOT)
class Machines(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.net = machines.SiteNet("10.71.0")
        try:
            # on SQLite in either pass: the server is in the test's own network, and
            # the PostgreSQL server of the pass is on this machine's loopback; the
            # deployment engine's queries run on PostgreSQL in test_deploy
            cls.site = site = Site(heartbeat=1, address=cls.net.server, sqlite=True, extra_conf={
                "deploy.fetch_base_s": "5", "deploy.lock_wait_s": "2",
                "deploy.install_timeout_s": "30"})
            site.start()
            cls.m = {}
            for i, name in enumerate(NAMES):
                m = cls.m[name] = machines.Machine(site, cls.net, name, 10 + i)
                m.enroll()
                if name == "m3":
                    # dpkg, slowly: the machine is stopped while it runs
                    wrapper = os.path.join(m.dir, "slow-dpkg")
                    with open(wrapper, "w") as f:
                        f.write(f"#!/bin/sh\ntouch {m.dir}/dpkg-started\nsleep 3\n"
                                "exec dpkg \"$@\"\n")
                    os.chmod(wrapper, 0o755)
                    with open(os.path.join(m.dir, "agent.conf"), "a") as f:
                        f.write(f"[deploy]\ndpkg = {wrapper}\n")
                m.start()
            site.cli("collection", "add", "fleet", "--systems", ",".join(NAMES))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            if getattr(cls, "site", None):
                cls.site.close()
        finally:
            cls.net.close()

    def installed(self, name):
        return installed_in(self.m[name].file("/var/lib/dpkg/status"))

    def systems_with(self):
        return {y["system"]: y["version"] for y in
                self.site.cli_json("software", "--package", PKG)["systems"]}

    def test_deploy_to_machines_of_their_own(self):
        site, m = self.site, self.m
        deb = build_deb(site.tmp, "1.0-1")
        # dpkg's lock held on m2, by a program of that machine
        holder = m["m2"].run("python3", "-c",
                             "import fcntl, sys, time\n"
                             "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
                             "fcntl.lockf(f, fcntl.LOCK_EX)\n"
                             "print('locked', flush=True)\ntime.sleep(600)\n",
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(machines.end, holder)
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        self.assertTrue(ready and holder.stdout.readline().strip() == "locked",
                        "the lock holder on m2 did not take the lock")

        t0 = time.monotonic()
        p = subprocess.Popen([os.path.join(os.environ["SITEWARD_BUILD"], "siteward"), "--json",
                              "deploy", deb, "--to", "fleet", "--parallel", "5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, SITEWARD_SITE=site.dir))
        self.addCleanup(lambda: p.poll() is None and (p.kill(), p.wait(10)))
        # m3's dpkg has begun: the machine is stopped mid-run
        wait_for(lambda: os.path.exists(os.path.join(m["m3"].dir, "dpkg-started")), 60,
                 "m3's dpkg to start")
        m["m3"].stop()
        out, err = p.communicate(timeout=300)
        took = time.monotonic() - t0
        self.assertEqual(p.returncode, 1, err)  # not all done: two deferred
        d = json.loads(out)
        got = {y["system"]: y for y in d["systems"]}
        bound = d["per_system_s"]  # five at once: one round
        self.assertLessEqual(took, bound + 10, f"took {took:.1f} s; the bound was {bound} s")
        for name in ("m1", "m4", "m5"):
            self.assertEqual(got[name]["state"], "done", got[name])
            self.assertEqual(self.installed(name), "1.0-1")
            # the maintainer script ran in that machine's root
            with open(m[name].file(MARK)) as f:
                self.assertEqual(f.read().strip(), "1.0-1")
        self.assertEqual(got["m2"]["state"], "deferred")
        self.assertRegex(got["m2"]["reason"], r"lock-frontend is held by pid \d+ \(python3\)")
        self.assertIsNone(self.installed("m2"))
        self.assertEqual(got["m3"]["state"], "deferred")
        self.assertRegex(got["m3"]["reason"], "no answer from its agent|not connected")
        self.assertIsNone(self.installed("m3"))
        # this machine's own root has none of it
        self.assertIsNone(installed_in("/var/lib/dpkg/status"))
        self.assertFalse(os.path.exists(MARK))

        # the lock let go, and m3 started again: both catch up
        machines.end(holder)
        m["m3"].start()
        now = {}

        def caught_up():
            now.update({y["system"]: (y["state"], y["reason"]) for y in
                        site.cli_json("deploy", "status", str(d["id"]))["systems"]})
            return all(state == "done" for state, _ in now.values())
        try:
            wait_for(caught_up, 90, "m2 and m3 to catch up")
        except AssertionError as e:
            raise AssertionError(f"{e}: {now}") from None
        self.assertEqual([self.installed(n) for n in NAMES], ["1.0-1"] * 5)
        # m3 had fetched it before it stopped, and says so
        self.assertRegex(now["m3"][1], r"installed .* 1\.0-1 \((fetched by an earlier try|"
                         r"from the site server)\)")
        # the inventory follows, as a delta from each machine
        wait_for(lambda: self.systems_with() == {n: "1.0-1" for n in NAMES}, 30,
                 "the inventory of all five to show the package")
        for name in NAMES:
            self.assertRegex(m[name].proc.log(), r"inventory: a delta sent \(\d+ bytes\)")
        site.cli("deploy", "cancel", str(d["id"]))

        # removal, the same way
        r = site.cli("--json", "deploy", "remove", PKG, "--to", "fleet", "--parallel", "5",
                     check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([self.installed(n) for n in NAMES], [None] * 5)
        wait_for(lambda: not self.systems_with(), 30, "the inventory to show the package gone")
        site.cli("deploy", "cancel", str(json.loads(r.stdout)["id"]))

    def test_tampered_package_refused_on_the_machine(self):
        site = self.site
        site.cli("collection", "add", "one", "--systems", "m1")
        site.cli("collection", "add", "nobody", "--systems", "ghost")
        # stored by an upload, then damaged in the store
        r = site.cli("--json", "deploy", build_deb(site.tmp, "9.0-1"), "--to", "nobody",
                     "--no-wait")
        sha = json.loads(r.stdout)["sha256"]
        path = os.path.join(site.dir, "packages", sha + ".deb")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        st, made = site.api("POST", "/v1/deployments", {
            "sha256": sha, "collection": "one", "parallel": 1, "max_failures": 0})
        self.assertEqual(st, 200, made)
        wait_for(lambda: site.cli_json("deploy", "status", str(made["id"]))["state"] == "halted",
                 60, "the failure budget to halt the deployment")
        y = site.cli_json("deploy", "status", str(made["id"]))["systems"][0]
        self.assertEqual(y["state"], "failed", y)
        self.assertIn("not the signed", y["reason"])
        self.assertNotEqual(self.installed("m1"), "9.0-1")
        # nothing of it kept on the machine either
        content = os.path.join(self.m["m1"].dir, "content")
        self.assertFalse([f for f in os.listdir(content) if f.startswith(sha)]
                         if os.path.isdir(content) else [])


if __name__ == "__main__":
    unittest.main()
