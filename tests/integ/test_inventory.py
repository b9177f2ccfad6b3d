"""Inventory through the real programs: an agent's hardware and packages reach the site
whole once, then as deltas when dpkg's status file changes (a package installed, one
upgraded, one removed), each change kept as history; `siteward software --package`
finds who has what; a delta the site cannot apply brings the whole inventory again; a
malformed upload is refused and changes nothing."""
import json
import os
import re
import shutil
import subprocess
import unittest

from harness import Site, wait_for
from test_tokens import db_exec

STANZA = """Package: {name}
Status: install ok installed
Priority: optional
Architecture: amd64
Version: {version}
Description: a package made for the test
 with a second line

"""


def installed():
    """What dpkg-query says this machine has: {(name, arch): version}."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Package} "
                          "${Architecture} ${Version}\n"], capture_output=True, text=True,
                         check=True).stdout
    return {(n, a): v for s, n, a, v in (l.split(" ", 3) for l in out.splitlines())
            if s == "installed"}


def stanzas(text):
    return [s for s in text.split("\n\n") if s.strip()]


class Inventory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        cls.status = os.path.join(cls.site.tmp, "dpkg", "status")
        os.makedirs(os.path.dirname(cls.status))
        shutil.copy("/var/lib/dpkg/status", cls.status)
        cls.a = cls.site.enroll("inv1", start=False)
        with open(os.path.join(cls.a.dir, "agent.conf"), "a") as f:
            f.write(f"\n[inventory]\ndpkg_status = {cls.status}\n")
        cls.a.start()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def inventory(self):
        r = self.site.cli("inventory", "inv1", "--json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def rewrite(self, change):
        """Changes the status file the way dpkg does: a new file renamed over it."""
        with open(self.status) as f:
            text = f.read()
        new = change(text)
        with open(self.status + "-new", "w") as f:
            f.write(new)
        os.rename(self.status + "-new", self.status)

    def sent(self):
        """The sizes of the uploads the agent logged: [(kind, bytes)]."""
        with open(os.path.join(self.site.tmp, "agent-inv1.log")) as f:
            return re.findall(r"inventory: (the whole inventory|a delta) sent \((\d+) bytes\)",
                              f.read())

    def test_whole_then_deltas_with_history(self):
        site = self.site
        want = installed()
        got = wait_for(self.inventory, 20, "inv1's inventory")
        self.assertEqual({(p["name"], p["arch"]): p["version"] for p in got["packages"]}, want)
        hw = got["hardware"]
        with open("/proc/meminfo") as f:
            total = int(re.search(r"MemTotal:\s+(\d+) kB", f.read()).group(1)) * 1024
        self.assertEqual(hw["memory"]["total"], total)
        self.assertEqual(hw["cpu"]["count"], os.cpu_count())
        with open("/etc/os-release") as f:
            codename = re.search(r"VERSION_CODENAME=(\w+)", f.read())
        if codename:
            self.assertEqual(hw["os"]["codename"], codename.group(1))
        self.assertEqual(got["history"][0]["event"], "appeared")

        # one installed, one upgraded, one removed, in one dpkg run
        names = sorted(n for n, _ in want)
        upgraded, removed = names[0], names[1]

        def change(text):
            out = []
            for s in stanzas(text):
                name = re.search(r"^Package: (\S+)", s, re.M).group(1)
                if name == removed:
                    continue
                if name == upgraded:
                    s = re.sub(r"^Version: .*$", "Version: 99.0-test", s, flags=re.M)
                out.append(s)
            return "\n\n".join(out) + "\n\n" + STANZA.format(name="sitewardtestpkg",
                                                             version="1.2-3")
        self.rewrite(change)

        def changed():
            inv = self.inventory()
            events = {(h["event"], h["name"]) for h in inv["history"]} if inv else set()
            return inv if {("appeared", "sitewardtestpkg"), ("changed", upgraded),
                           ("left", removed)} <= events else None
        inv = wait_for(changed, 20, "the three changes in inv1's history")
        up = [h for h in inv["history"] if h["name"] == upgraded and h["event"] == "changed"][0]
        self.assertEqual((up["old_version"], up["version"]),
                         (want[(upgraded, up["arch"])], "99.0-test"))
        self.assertEqual(len(inv["packages"]), len(want))  # one in, one out
        who = site.cli_json("software", "--package", "sitewardtestpkg")
        self.assertEqual([(s["system"], s["version"]) for s in who["systems"]],
                         [("inv1", "1.2-3")])
        self.assertIn("inv1", site.cli("software", "--package", upgraded).stdout)
        self.assertIn("99.0-test", site.cli("software", "--package", upgraded).stdout)
        everything = site.cli_json("software")["packages"]
        self.assertEqual(everything["sitewardtestpkg"]["versions"], {"1.2-3": 1})
        # the whole once, then a delta: a fraction of it
        sizes = self.sent()
        self.assertEqual(sizes[0][0], "the whole inventory")
        self.assertEqual(sizes[-1][0], "a delta")
        self.assertLess(int(sizes[-1][1]) * 20, int(sizes[0][1]))
        print(f"measure: inventory upload {sizes[0][1]} bytes whole ({len(want)} packages), "
              f"{sizes[-1][1]} bytes for a delta of 3 packages")

        # the site without the version the agent has: the next delta is refused, and the
        # whole inventory comes instead
        db_exec(site, "DELETE FROM inventory WHERE system = 'inv1'",
                "DELETE FROM packages WHERE system = 'inv1'")
        self.rewrite(lambda t: t.replace("Version: 1.2-3", "Version: 1.2-4"))

        def whole_again():
            inv = self.inventory()
            return inv if inv and len(inv["packages"]) == len(want) and any(
                p["name"] == "sitewardtestpkg" and p["version"] == "1.2-4"
                for p in inv["packages"]) else None
        wait_for(whole_again, 20, "the whole inventory sent again")
        self.assertEqual(self.sent()[-1][0], "the whole inventory")

    def test_malformed_upload_refused_and_nothing_changed(self):
        site = self.site
        wait_for(self.inventory, 20, "inv1's inventory")
        before = self.inventory()["packages"]
        ctx = site.tls(os.path.join(self.a.dir, "agent.crt"),
                       os.path.join(self.a.dir, "agent.key"))
        for body, why in (({"seq": 99, "hardware": {}, "packages": [{"n": "Bad Name", "a": "all",
                                                                     "v": "1"}]}, "packages[0]"),
                          ({"seq": 99, "from": 1, "added": [{"n": "ok-name", "a": "all"}]},
                           "added[0]"),
                          ({"seq": 99, "hardware": [], "packages": []}, "hardware"),
                          ({"hardware": {}, "packages": []}, "seq")):
            status, reply = site.api("POST", "/v1/inventory", body, ctx=ctx)
            self.assertEqual(status, 400, reply)
            self.assertIn(why, reply["error"])
        self.assertEqual(self.inventory()["packages"], before)
        # an administrator cannot pose as a system
        status, _ = site.api("POST", "/v1/inventory", {"seq": 1, "hardware": {},
                                                       "packages": []})
        self.assertEqual(status, 403)


if __name__ == "__main__":
    unittest.main()
