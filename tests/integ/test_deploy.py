"""Software distribution through the real programs: five agents, each with a dpkg root
of its own (dpkg --root, so that an install on one is not an install on all), a real
.deb built with dpkg-deb, installed by the real dpkg. A tampered package is refused and
the failure budget halts the rest; a member that joins the collection gets the package;
a window that is closed starts nothing; distribution points serve their members and
refuse removed systems. The issue's own scenario (a held lock, a machine stopped
mid-run, the inventory's deltas) runs on machines of their own: test_machines.py."""
import json
import os
import signal
import ssl
import subprocess
import time
import unittest

from harness import Site, free_port, wait_for

NAMES = ["m1", "m2", "m3", "m4", "m5"]


def build_deb(tmp, version, size=64 * 1024):
    """A .deb of package sw-hello at `version`, with `size` bytes of payload."""
    top = os.path.join(tmp, f"pkg-{version}")
    os.makedirs(os.path.join(top, "DEBIAN"), exist_ok=True)
    os.makedirs(os.path.join(top, "usr/share/sw-hello"), exist_ok=True)
    with open(os.path.join(top, "DEBIAN/control"), "w") as f:
        f.write(f"Package: sw-hello\nVersion: {version}\nArchitecture: all\n"
                "Maintainer: siteward tests <tests@example.org>\n"
                "Description: a package for the deployment tests\n")
    with open(os.path.join(top, "usr/share/sw-hello/payload"), "wb") as f:
        f.write(os.urandom(size))
    out = os.path.join(tmp, f"sw-hello_{version}_all.deb")
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", top, out], check=True,
                   capture_output=True, timeout=60)
    return out


class Deploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = site = Site(heartbeat=1, extra_conf={
            "deploy.fetch_base_s": "3", "deploy.lock_wait_s": "2",
            "deploy.install_timeout_s": "6"})
        site.start()
        cls.roots = {}
        for name in NAMES:
            root = os.path.join(site.tmp, f"root-{name}")
            for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
                os.makedirs(os.path.join(root, d))
            open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
            cls.roots[name] = root
            a = site.enroll(name, start=False)
            with open(os.path.join(a.dir, "agent.conf"), "a") as f:
                f.write(f"\n[inventory]\ndpkg_status = {root}/var/lib/dpkg/status\n"
                        f"[deploy]\nroot = {root}\n")
            if name == "m5":
                cls.dp_port = free_port()
                with open(os.path.join(a.dir, "agent.conf"), "a") as f:
                    f.write(f"[distribution]\nlisten = 127.0.0.1:{cls.dp_port}\n")
            a.start()
        cls.deb1 = build_deb(site.tmp, "1.0-1")
        cls.deb2 = build_deb(site.tmp, "2.0-1")
        site.cli("collection", "add", "fleet", "--systems", ",".join(NAMES))

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def installed(self, name):
        """sw-hello's version in `name`'s dpkg database, or None."""
        with open(os.path.join(self.roots[name], "var/lib/dpkg/status")) as f:
            for stanza in f.read().split("\n\n"):
                if "Package: sw-hello\n" in stanza + "\n" and "ok installed" in stanza:
                    for line in stanza.splitlines():
                        if line.startswith("Version: "):
                            return line[9:]
        return None

    def deployment(self, ident):
        return self.site.cli_json("deploy", "status", str(ident))

    def by_system(self, d):
        return {y["system"]: y for y in d["systems"]}

    def test_2_tampered_package_refused_and_budget_halts(self):
        site = self.site
        site.cli("collection", "add", "pair", "--systems", "m4,m5")
        site.cli("collection", "add", "nobody", "--systems", "ghost")
        # stored by an upload, then damaged in the store
        r = site.cli("--json", "deploy", self.deb2, "--to", "nobody", "--no-wait")
        sha = json.loads(r.stdout)["sha256"]
        path = os.path.join(site.dir, "packages", sha + ".deb")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        st, made = site.api("POST", "/v1/deployments", {
            "sha256": sha, "collection": "pair", "parallel": 1, "max_failures": 0})
        self.assertEqual(st, 200, made)
        wait_for(lambda: self.deployment(made["id"])["state"] == "halted", 60,
                 "the failure budget to halt the deployment")
        d = self.deployment(made["id"])
        failed = [y for y in d["systems"] if y["state"] == "failed"]
        self.assertEqual(len(failed), 1, d)
        self.assertIn("not the signed", failed[0]["reason"])
        self.assertIn("more than --max-failures 0", d["reason"])
        # the one not started is still pending, not tried; nothing installed 2.0
        self.assertEqual([y["state"] for y in d["systems"]].count("pending"), 1)
        self.assertNotIn(self.installed("m4"), ("2.0-1",))
        self.assertNotIn(self.installed("m5"), ("2.0-1",))

    def test_3_new_member_gets_it_and_window(self):
        site = self.site
        site.cli("collection", "add", "some", "--systems", "m1")
        r = site.cli("--json", "deploy", self.deb2, "--to", "some", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(r.stdout)
        self.assertEqual(self.installed("m1"), "2.0-1")
        # m2 joins the collection: the deployment, still active, reaches it
        site.cli("collection", "add", "some", "--systems", "m1,m2")
        wait_for(lambda: self.by_system(self.deployment(d["id"])).get("m2", {}).get("state")
                 == "done", 30, "the new member to get the package")
        self.assertEqual(self.installed("m2"), "2.0-1")
        site.cli("deploy", "cancel", str(d["id"]))
        # a window that is closed now: nothing starts, and the reason says so
        h = (time.localtime().tm_hour + 3) % 24
        r = site.cli("--json", "deploy", "remove", "sw-hello", "--to", "some", "--window",
                     f"{h:02d}:00-{(h + 1) % 24:02d}:00", "--no-wait")
        w = json.loads(r.stdout)
        wait_for(lambda: all("waiting for the window" in y["reason"]
                             for y in self.deployment(w["id"])["systems"]), 10,
                 "the systems to wait for the window")
        self.assertEqual(self.installed("m1"), "2.0-1")
        c = site.cli_json("deploy", "cancel", str(w["id"]))
        self.assertEqual(c["state"], "cancelled")
        self.assertEqual({y["state"] for y in c["systems"]}, {"skipped"})
        # bad input: a clear error, nothing made
        r = site.cli("deploy", self.deb1, "--to", "fleet", "--window", "25:00-26:00",
                     check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("HH:MM-HH:MM", r.stderr)
        bad = os.path.join(site.tmp, "not-a.deb")
        with open(bad, "wb") as f:
            f.write(b"!<arch>\nnot a package at all\n")
        r = site.cli("deploy", bad, "--to", "fleet", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a Debian package", r.stderr)
        r = site.cli("deploy", self.deb1, "--to", "no-such", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no collection no-such", r.stderr)

    def test_4_distribution_point(self):
        """A system of the distribution-point role serves its subnet (here, loopback):
        members fetch from it, and it from the site server once; a distribution point
        that does not answer costs its download's bound, then the site server serves."""
        site = self.site
        site.cli("role", "add", "m5", "distribution-point")
        wait_for(lambda: site.systems()["m5"].get("distribution_point")
                 == f"127.0.0.1:{self.dp_port}", 20, "the server to know m5's point")
        site.cli("collection", "add", "three", "--systems", "m1,m3,m4")
        deb3 = build_deb(site.tmp, "3.0-1")
        r = site.cli("--json", "deploy", deb3, "--to", "three", "--parallel", "3",
                     check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        d = json.loads(r.stdout)
        for y in d["systems"]:
            self.assertIn("from distribution point m5", y["reason"], y)
            self.assertEqual(self.installed(y["system"]), "3.0-1")
        cached = os.path.join(site.agents["m5"].dir, "dp-cache", d["sha256"] + ".deb")
        self.assertTrue(os.path.exists(cached))
        log = site.agents["m5"].proc.log()
        self.assertEqual(log.count("fetching " + d["sha256"][:12]), 1, log)
        self.assertEqual(log.count(d["sha256"][:12] + " to m"), 3, log)
        site.cli("deploy", "cancel", str(d["id"]))

        # a removed system is refused by the point too, once a heartbeat tells it
        def get_as(name):
            a = site.agents[name]
            ctx = site.tls(os.path.join(a.dir, "agent.crt"), os.path.join(a.dir, "agent.key"))
            # what is checked here is the point's side; the agent checks the point's
            # certificate (an agent's, which Python's client refuses to take as a server's)
            ctx.verify_mode = ssl.CERT_NONE
            status, _ = site.api("GET", f"/v1/content/{d['sha256']}", ctx=ctx,
                                 port=self.dp_port)
            return status
        self.assertEqual(get_as("m4"), 200)
        site.cli("systems", "remove", "m4")
        wait_for(lambda: get_as("m4") == 403, 15, "the point to refuse removed m4")
        self.assertEqual(get_as("m1"), 200)

        # the point frozen: the member waits out its bound, then the site serves
        deb4 = build_deb(site.tmp, "4.0-1")
        site.cli("collection", "add", "one", "--systems", "m1")
        site.agents["m5"].proc.signal(signal.SIGSTOP)
        try:
            r = site.cli("--json", "deploy", deb4, "--to", "one", check=False)
        finally:
            site.agents["m5"].proc.signal(signal.SIGCONT)
        self.assertEqual(r.returncode, 0, r.stderr)
        y = json.loads(r.stdout)["systems"][0]
        self.assertRegex(y["reason"], "from the site server; distribution point m5: "
                         "no (connection|answer) after")
        self.assertEqual(self.installed("m1"), "4.0-1")
        site.cli("deploy", "cancel", str(json.loads(r.stdout)["id"]))
        site.cli("role", "remove", "m5", "distribution-point")
        wait_for(lambda: "distribution_point" not in site.systems()["m5"], 20,
                 "m5 to stop serving")


if __name__ == "__main__":
    unittest.main()
