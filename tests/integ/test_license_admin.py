"""License administration through the real programs: `siteward license status` across
license servers (one of them frozen), `siteward license reclaim` by lease and by user with
each of the products' policies (stop the program, or let it run unlicensed), and a
license taken back from a program that has been idle past its product's limit."""
import json
import os
import shutil
import signal
import subprocess
import time
import unittest

from harness import prog, wait_for
from test_metering import TTL_MS, leases, meter_site, run

TRAPPER = """#!/bin/sh
# a licensed program that says which signals it was sent, into the file $1
trap 'echo TERM >> "$1"; exit 0' TERM
trap 'echo USR1 >> "$1"' USR1
echo started >> "$1"
n=0
while [ $n -lt "$2" ]; do sleep 0.2; n=$((n + 1)); done
echo done >> "$1"
"""


def trapper(site, name):
    path = os.path.join(site.tmp, name)
    with open(path, "w") as f:
        f.write(TRAPPER)
    os.chmod(path, 0o755)
    return path


def lines(path):
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


class Status(unittest.TestCase):
    def test_status_agrees_with_every_server_and_names_one_that_does_not_answer(self):
        site, (m1, m2), client, tool = meter_site(n_meters=2, licenses=4,
                                                  conf={"metering.meter_poll_ms": "500"})
        procs = []
        try:
            # (each may wait: while the two servers' shares follow where the runs ask,
            # one may find none free at first)
            procs = [run(client, tool, "60", wait=30) for _ in range(3)]

            def held():
                a, b = leases(site, m1), leases(site, m2)
                return (a, b) if a is not None and b is not None and \
                    len(a) + len(b) == 3 else None
            a, b = wait_for(held, 40, "three runs holding licenses")
            got = site.cli_json("license", "status")
            self.assertEqual(got["unreachable"], [])
            self.assertEqual({s["system"]: s["state"] for s in got["servers"]},
                             {"m1": "answered", "m2": "answered"})
            # the same leases as each server holds, each named with its server
            self.assertEqual(sorted((l["lease"], l["server"]) for l in got["leases"]),
                             sorted([(l["lease"], "m1") for l in a] +
                                    [(l["lease"], "m2") for l in b]))
            for l in got["leases"]:
                self.assertEqual((l["product"], l["host"], l["exe"]), ("cad", "c1", "cadtool"))
                self.assertGreater(l["expires_at"], l["granted_at"])
            # a product with none in use lists none
            self.assertEqual(site.cli_json("license", "status", "--product", "draw")["leases"],
                             [])
            table = site.cli("license", "status").stdout
            self.assertEqual(sum(1 for line in table.splitlines() if line.startswith("cad ")),
                             3, table)

            # m2's license server stops answering (frozen): it is named, m1's leases
            # are listed, and the answer comes within the deadline asked for
            pid = m2.service("meter")["pid"]
            os.kill(pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                r = site.cli("--timeout", "3", "license", "status", "--json", timeout=30)
                took = time.monotonic() - t0
                got = json.loads(r.stdout)
                self.assertEqual(got["unreachable"], ["m2"])
                self.assertEqual(sorted(l["lease"] for l in got["leases"]),
                                 sorted(l["lease"] for l in a))
                away = [s for s in got["servers"] if s["system"] == "m2"][0]
                self.assertTrue(away["error"])
                self.assertIn("metering server m2 did not answer", r.stderr)
                print(f"status with m2 frozen: {took:.1f} s (m2 given {away['ms']} ms)")
            finally:
                os.kill(pid, signal.SIGCONT)
        finally:
            for p in procs:
                p.kill()
            site.close()


class Reclaim(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.client, cls.tool = meter_site(licenses=2)
        s = cls.site
        cls.stopper = trapper(s, "stopper")
        cls.runner = trapper(s, "runner")
        s.cli("product", "add", "stopper", "--exe", "stopper", "--licenses", "1", "--enforce")
        s.cli("product", "add", "runner", "--exe", "runner", "--licenses", "1", "--enforce",
              "--on-reclaim", "run", "--reclaim-signal", "USR1")
        s.cli("product", "add", "idler", "--exe", "idler", "--licenses", "1", "--enforce",
              "--idle", "10s")
        cls.idler = os.path.join(s.tmp, "idler")
        shutil.copy("/bin/sleep", cls.idler)

        def configured():
            status, h = cls.site.api("GET", "/v1/health", ctx=cls.site.admin_tls(),
                                     port=cls.m.meter_port)
            return status == 200 and {"stopper", "runner", "idler"} <= set(h.get("products", {}))
        wait_for(configured, 15, "the license server to know the new products")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def holding(self, product, n=1):
        return wait_for(lambda: (lambda ls: ls if ls is not None and len(
            [l for l in ls if l["product"] == product]) == n else None)(leases(self.site, self.m)),
            15, f"{n} lease(s) of {product}")

    def test_a_reclaim_survives_the_license_server_crashing(self):
        out = os.path.join(self.site.tmp, "crash.out")
        p = run(self.client, self.stopper, out, "600")
        try:
            lease = [l for l in self.holding("stopper") if l["product"] == "stopper"][0]
            # the run is frozen (no heartbeat), its license is taken back, and the
            # license server is killed before the run hears of it
            os.kill(p.pid, signal.SIGSTOP)
            self.site.cli("license", "reclaim", lease["lease"])
            pid = self.m.service("meter")["pid"]
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: (self.m.service("meter") or {}).get("pid") not in (None, 0, pid) and
                     leases(self.site, self.m) is not None, 30,
                     "the agent to start the license server again")
            # the journal kept the release: the license is free, and the note for the run
            self.assertEqual([l for l in leases(self.site, self.m)
                              if l["product"] == "stopper"], [])
            os.kill(p.pid, signal.SIGCONT)
            _, err = p.communicate(timeout=60)
            self.assertIn("was taken back (reclaimed by admin)", err)
            self.assertIn("TERM", lines(out))
        finally:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()

    def test_reclaim_by_lease_stops_the_program_and_the_next_run_gets_the_license(self):
        out = os.path.join(self.site.tmp, "stopper.out")
        first = run(self.client, self.stopper, out, "600")
        try:
            lease = [l for l in self.holding("stopper") if l["product"] == "stopper"][0]
            # the only license is held: another run is denied, a third waits for it
            denied = run(self.client, self.stopper, out, "0")
            self.assertEqual(denied.wait(timeout=30), 75, denied.stderr.read())
            waiting = run(self.client, self.stopper, out + ".2", "0", wait=60)
            wait_for(lambda: [q for q in self.site.cli_json("license", "status",
                                                            "--product", "stopper")["queue"]],
                     15, "the third run waiting in the queue")

            r = self.site.cli("license", "reclaim", lease["lease"])
            self.assertIn("reclaimed stopper of", r.stdout)
            # told at its next heartbeat (TTL/3): the program gets TERM and ends
            wait_for(lambda: "TERM" in lines(out), 15, "the program told with TERM")
            _, err = first.communicate(timeout=30)
            self.assertIn("was taken back (reclaimed by admin)", err)
            self.assertIn("stopping stopper (signal TERM", err)
            # the waiting run got the license as it was freed
            _, err2 = waiting.communicate(timeout=30)
            self.assertEqual(waiting.returncode, 0, err2)
            self.assertIn("done", lines(out + ".2"))
            # and the reclaim is in the audit log, with what it took
            audit = [a for a in self.site.cli_json("audit")["records"]
                     if a["path"] == "/v1/licenses/reclaim"]
            self.assertTrue(audit)
            self.assertIn("1 license taken back", audit[0]["outcome"])
            self.assertEqual(audit[0]["who"], "admin")
        finally:
            first.kill()

    def test_reclaim_by_user_lets_a_run_policy_program_run_unlicensed(self):
        out = os.path.join(self.site.tmp, "runner.out")
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        p = run(self.client, self.runner, out, "25")
        try:
            self.holding("runner")
            r = self.site.cli("license", "reclaim", "--user", user, "--product", "runner")
            self.assertIn("reclaimed runner of", r.stdout)
            wait_for(lambda: "USR1" in lines(out), 15, "the program told with USR1")
            # it goes on, and its license is free for another run at once
            self.assertIsNone(p.poll())
            self.assertEqual([l for l in leases(self.site, self.m) if l["product"] == "runner"],
                             [])
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, err)
            self.assertEqual(lines(out)[-1], "done")
            self.assertIn("runs on unlicensed, and the rest of this run is recorded", err)
            # the unlicensed rest of the run reaches the site as a run of its own
            wait_for(lambda: [u for u in self.site.db_fields("usage")
                              if u[1] == "runner" and u[9] == "offline"], 30,
                     "the unlicensed part of the run recorded")
        finally:
            p.kill()

    def test_an_idle_program_loses_its_license(self):
        p = run(self.client, self.idler, "600")
        try:
            self.holding("idler")
            # sleep uses no CPU: past 10 s, at a heartbeat, the license is taken back
            _, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 128 + signal.SIGTERM, err)
            self.assertIn("idle for", err)
            self.assertIn("the product's limit is 10 s", err)
            self.assertEqual([l for l in leases(self.site, self.m) if l["product"] == "idler"],
                             [])
        finally:
            p.kill()

    def test_bad_reclaims_are_refused_and_change_nothing(self):
        r = self.site.cli("license", "reclaim", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("name a LEASE", r.stderr)
        r = self.site.cli("license", "reclaim", "NOT-A-LEASE", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("32 lowercase hex digits", r.stderr)
        status, body = self.site.api("POST", "/v1/licenses/reclaim", {"user": "a", "pid": 1})
        self.assertEqual(status, 400)
        self.assertIn("unknown field 'pid'", body["error"])
        # a license server takes a reclaim from the site server alone: not from a
        # machine, nor from an administrator going around the site's audit log
        for ctx in (self.site.tls(os.path.join(self.client.dir, "agent.crt"),
                                  os.path.join(self.client.dir, "agent.key")),
                    self.site.tls(os.path.join(self.client.dir, "client.crt"),
                                  os.path.join(self.client.dir, "client.key")),
                    self.site.admin_tls()):
            status, _ = self.site.api("POST", "/v1/reclaim", {"user": "root"}, ctx=ctx,
                                      port=self.m.meter_port)
            self.assertEqual(status, 403)
        r = self.site.cli("license", "reclaim", "--user", "nobody-here", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no license in use matched", r.stdout)
        # a viewer reads the status and is refused the reclaim, naming the role needed
        d = os.path.join(self.site.tmp, "viewer")
        self.site.cli("admin", "add", "v1", "--role", "viewer", "--out", d)
        env = dict(os.environ, SITEWARD_SITE=d)
        ok = subprocess.run([prog("siteward"), "license", "status"], capture_output=True,
                            text=True, timeout=30, env=env)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        no = subprocess.run([prog("siteward"), "license", "reclaim", "--user", "x"],
                            capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(no.returncode, 1)
        self.assertIn("operator", no.stderr)


if __name__ == "__main__":
    unittest.main()
