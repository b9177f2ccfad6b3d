"""Collections through the real programs: three agents whose dpkg databases differ (an
old libssl3, the current one, none), collections by package version, by facts and role,
and by name, their members following an install as the inventory reports it, and a
malformed expression refused with where and why."""
import json
import os
import re
import shutil
import subprocess
import time
import unittest

from harness import Site, prog, wait_for


def with_libssl3(text, version):
    """dpkg's status text with libssl3 at `version`, or without it (None)."""
    out = []
    for s in text.split("\n\n"):
        if re.search(r"^Package: libssl3$", s, re.M):
            if version is None:
                continue
            s = re.sub(r"^Version: .*$", f"Version: {version}", s, flags=re.M)
        out.append(s)
    return "\n\n".join(out)


class Collections(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        with open("/var/lib/dpkg/status") as f:
            cls.text = f.read()
        assert re.search(r"^Package: libssl3$", cls.text, re.M), "libssl3 is not installed"
        cls.status = {}
        for name, version in (("old", "3.0.9-1"), ("new", "3.0.99-1"), ("none", None)):
            path = os.path.join(cls.site.tmp, f"status-{name}")
            with open(path, "w") as f:
                f.write(with_libssl3(cls.text, version))
            cls.status[name] = path
            a = cls.site.enroll(name, start=False)
            with open(os.path.join(a.dir, "agent.conf"), "a") as f:
                f.write(f"\n[inventory]\ndpkg_status = {path}\n")
            a.start()
        cls.site.cli("role", "add", "new", "test")
        for name in ("old", "new", "none"):
            wait_for(lambda: cls.site.cli("inventory", name, check=False).returncode == 0,
                     20, f"{name}'s inventory")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def members(self, name):
        return sorted(self.site.cli_json("collection", "members", name)["members"])

    def test_members_by_version_facts_role_and_name(self):
        site = self.site
        with open("/etc/os-release") as f:
            codename = re.search(r"VERSION_CODENAME=(\w+)", f.read()).group(1)
        site.cli("collection", "add", "old-ssl", "--where", "package:libssl3 < 3.0.15-1~deb12u1")
        site.cli("collection", "add", "has-ssl", "--where", "package:libssl3")
        site.cli("collection", "add", "tests", "--where",
                 f"os.codename = {codename} and role = test and memory >= 64M")
        site.cli("collection", "add", "named", "--systems", "none,ghost")
        self.assertEqual(self.members("old-ssl"), ["old"])
        self.assertEqual(self.members("has-ssl"), ["new", "old"])
        self.assertEqual(self.members("tests"), ["new"])
        named = site.cli_json("collection", "members", "named")
        self.assertEqual((named["members"], named["not_enrolled"]), (["none"], ["ghost"]))
        listed = {c["name"]: c for c in site.cli_json("collection", "list")["collections"]}
        self.assertEqual(listed["old-ssl"]["where"], "package:libssl3 < 3.0.15-1~deb12u1")
        self.assertEqual(listed["named"]["systems"], ["none", "ghost"])

        # an old libssl3 installed on "none": it joins as its inventory reports it
        path = self.status["none"]
        with open(path + "-new", "w") as f:
            f.write(with_libssl3(self.text, "3.0.2-1"))
        os.rename(path + "-new", path)
        wait_for(lambda: self.members("old-ssl") == ["none", "old"], 20,
                 "'none' to join old-ssl")
        # a definition changed, then removed
        site.cli("collection", "add", "old-ssl", "--where", "package:libssl3 < 3.0.5")
        self.assertEqual(self.members("old-ssl"), ["none"])
        site.cli("collection", "remove", "old-ssl")
        r = site.cli("collection", "members", "old-ssl", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no collection old-ssl", r.stderr)

    def test_malformed_expression_refused(self):
        site = self.site
        r = site.cli("collection", "add", "bad", "--where", "memory >= lots", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("at 11: a number", r.stderr)
        r = site.cli("collection", "add", "bad", "--where", "colour = red", check=False)
        self.assertIn("no such field", r.stderr)
        names = [c["name"] for c in site.cli_json("collection", "list")["collections"]]
        self.assertNotIn("bad", names)

    def test_installed_used_and_licensed(self):
        """The report no peer gives in one place: a product's licenses, its peak, the
        systems it is installed on and those that ran it, and so what can go."""
        site = self.site
        tool = os.path.join(site.tmp, "cadtool")
        shutil.copy("/bin/true", tool)
        site.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "5", "--enforce",
                 "--package", "libssl3")
        # no license server: the run goes its offline way, recorded for the agent to send
        r = subprocess.run([prog("siteward-run"), "--agent", site.agents["old"].dir, "--",
                            tool], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: any("cadtool" in u for u in site.db_rows("usage")), 20,
                 "the run's record at the site")
        installed = sorted(s["system"] for s in site.cli_json(
            "software", "--package", "libssl3")["systems"])
        self.assertIn("old", installed)
        got = {p["product"]: p for p in site.cli_json("license", "report")["products"]}
        cad = got["cad"]
        self.assertEqual((cad["licenses"], cad["peak"], cad["spare_licenses"]), (5, 1, 4))
        self.assertEqual((cad["installed"], cad["used_systems"], cad["installed_unused"]),
                         (len(installed), 1, len(installed) - 1))
        self.assertEqual(cad["users"], 1)
        text = site.cli("license", "report", "--days", "30").stdout
        self.assertRegex(text, r"cad\s+5\s+1\s+4\s+%d\s+1\s+%d\s+1" %
                         (len(installed), len(installed) - 1))
        r = site.cli("license", "report", "--days", "0", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("days must be 1 to", r.stderr)

    def test_exec_on_a_collection(self):
        """A command on every member, bounded: exit statuses and output ends, a command
        past its timeout killed with its children, a system away named, one that cannot
        start said; administrators only, audited."""
        site = self.site
        site.cli("collection", "add", "trio", "--systems", "old,new,none")
        r = site.cli("--json", "exec", "trio", "--timeout", "20", "--", "/bin/sh", "-c",
                     "echo out; echo err >&2; exit 3", check=False)
        self.assertEqual(r.returncode, 1, r.stderr)  # some exited other than 0
        got = {x["system"]: x for x in json.loads(r.stdout)["systems"]}
        self.assertEqual(sorted(got), ["new", "none", "old"])
        for x in got.values():
            self.assertEqual((x["state"], x["exit"], x["ok"]), ("exited", 3, False))
            self.assertEqual(x["head"], "out\nerr\n")
        # a lot of output: its first and last KiB, and how much
        r = site.cli("--json", "exec", "trio", "--", "/bin/sh", "-c",
                     "i=0; while [ $i -lt 5000 ]; do echo line$i; i=$((i+1)); done")
        x = json.loads(r.stdout)["systems"][0]
        self.assertEqual(x["bytes"], sum(len(f"line{i}\n") for i in range(5000)))
        self.assertTrue(x["head"].startswith("line0\nline1\n"))
        self.assertTrue(x["tail"].endswith("line4998\nline4999\n"))
        self.assertLessEqual(len(x["tail"]), 1024)
        # bytes a terminal or JSON would not take are shown escaped, a NUL among them
        r = site.cli("--json", "exec", "trio", "--", "/usr/bin/printf", "a\\0b\\001c\\tz\\n")
        self.assertEqual(json.loads(r.stdout)["systems"][0]["head"], "a\\x00b\\x01c\tz\n")
        # past its timeout: the command and what it started are killed, within the bound
        mark = os.path.join(site.tmp, "survived")
        t0 = time.monotonic()
        r = site.cli("--json", "exec", "trio", "--timeout", "2", "--", "/bin/sh", "-c",
                     f"(sleep 4; touch {mark}) & sleep 30", check=False)
        elapsed = time.monotonic() - t0
        states = {x["system"]: x["state"] for x in json.loads(r.stdout)["systems"]}
        self.assertEqual(set(states.values()), {"timed out"})
        self.assertLess(elapsed, 2 + 5 + 5)  # the timeout, the margin, and slack

        def child_gone():
            # the background child's shell, which would touch the file: killed with its
            # group (a zombie has no command line left to match)
            return subprocess.run(["pgrep", "-f", mark], capture_output=True).returncode == 1
        wait_for(child_gone, 5, "the command's background child to be gone")
        self.assertFalse(os.path.exists(mark), "a child of the command outlived it")
        # a command that cannot start
        r = site.cli("--json", "exec", "trio", "--", "/nonexistent/tool", check=False)
        x = json.loads(r.stdout)["systems"][0]
        self.assertEqual(x["state"], "failed")
        self.assertIn("no such file", x["error"].lower())
        # a member away: named, and the rest answered
        site.agents["none"].stop()
        try:
            t0 = time.monotonic()
            r = site.cli("--json", "exec", "trio", "--timeout", "3", "--", "/bin/true",
                         check=False)
            got = {x["system"]: x for x in json.loads(r.stdout)["systems"]}
            self.assertEqual(got["none"]["state"], "unreachable")
            self.assertEqual((got["old"]["state"], got["old"]["ok"]), ("exited", True))
            self.assertLess(time.monotonic() - t0, 3 + 5 + 5)
        finally:
            site.agents["none"].start()
        # administrators only; every run is in the audit log
        d = os.path.join(site.tmp, "op")
        site.cli("admin", "add", "op1", "--role", "operator", "--out", d)
        r = site.cli("--site", d, "exec", "trio", "--", "/bin/true", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("this needs the admin role; op1 is an operator", r.stderr)
        recs = site.cli_json("audit")["records"]
        self.assertEqual({(r["who"], r["status"]) for r in recs if r["path"] == "/v1/exec"
                          } >= {("op1", 403)}, True)
        self.assertTrue(any(r["path"] == "/v1/exec" and r["status"] == 200 for r in recs))


if __name__ == "__main__":
    unittest.main()
