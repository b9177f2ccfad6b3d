"""Borrowed licenses through the real programs: `siteward-run borrow` on a machine, its
runs with every license server stopped and `offline = deny`, the caps a product sets,
an early return, an administrator's write-off honoured when the machine next reaches
the site, a clock set back, and forged, altered, expired and other machines' loans
refused offline. Then two license servers, one unreachable: the site never lends and
grants more than its count."""
import base64
import glob
import json
import os
import shutil
import subprocess
import time
import unittest

from harness import prog, wait_for
from test_metering import leases, meter_api, meter_site, run

FAKETIME_LIB = (glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") or [""])[0]


def faked(offset):
    assert FAKETIME_LIB, "libfaketime is not installed: run scripts/install-deps"
    return {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME": offset,
            "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1",
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}


class Holder:
    """A user's state folder on one enrolled machine: where its loans are kept."""

    def __init__(self, site, agent):
        self.agent = agent
        self.state = os.path.join(site.tmp, "state-" + agent.name)
        self.env = dict(os.environ, XDG_STATE_HOME=self.state)

    def path(self, product, host=None):
        return os.path.join(self.state, "siteward", "borrowed", host or self.agent.name,
                            product + ".lic")

    def cmd(self, *args, env=None, timeout=30):
        argv = [prog("siteward-run"), "--agent", self.agent.dir, "--verbose", *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=dict(self.env, **(env or {})))
        except subprocess.TimeoutExpired as e:
            # every wait of siteward-run is bounded: what it said, and where it was
            raise AssertionError(f"{' '.join(args)} still running after {timeout} s; it "
                                 f"said:\n{e.stderr}\nthe agent's log ends:\n"
                                 f"{self.agent.proc.log()[-3000:] if self.agent.proc else ''}")

    def run(self, tool, *args, env=None):
        return self.cmd("--", tool, *args, env=env)


def set_offline_deny(agent):
    with open(os.path.join(agent.dir, "agent.conf"), "a") as f:
        f.write("\n[run]\noffline = deny\n")


def payload(text):
    head = text.split(".")
    return head, json.loads(base64.b64decode(head[1]))


def with_payload(text, change):
    parts, p = payload(text)
    change(p)
    parts[1] = base64.b64encode(json.dumps(p, separators=(",", ":")).encode()).decode()
    return ".".join(parts)


def signed_by(text, change, key, cert):
    """The loan with its payload changed and signed again with another key, as a local
    user could with the machine's client key, which every user there may read."""
    parts, p = payload(text)
    change(p)
    head = "b1." + base64.b64encode(json.dumps(p).encode()).decode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=head.encode(),
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return ".".join([head, base64.b64encode(sig).decode(), base64.b64encode(der).decode()])


class OneServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.c1, cls.tool = meter_site(licenses=2)
        cls.c2 = cls.site.enroll("c2")
        wait_for(lambda: os.path.exists(os.path.join(cls.c2.dir, "meters.json")), 10,
                 "c2 to learn the license server")
        cls.h1, cls.h2 = Holder(cls.site, cls.c1), Holder(cls.site, cls.c2)
        cls.site.cli("product", "set", "cad", "--borrow", "1", "--borrow-for", "1h")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def borrow(self, holder, span="30m"):
        """Borrows cad once the license server has the borrow rule."""
        def lent():
            r = holder.cmd("borrow", "cad", "--for", span)
            return r if r.returncode == 0 or "may not be borrowed" not in r.stderr else None
        return wait_for(lent, 15, "the license server to learn the borrow rule")

    def test_a_loan_runs_offline_and_is_refused_when_forged_altered_expired_or_elsewhere(self):
        site, h1, h2, tool = self.site, self.h1, self.h2, self.tool
        # a product's longest loan holds
        r = self.borrow(h1, "2h")
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("cad may be borrowed for at most 1h", r.stderr)
        r = h1.cmd("borrow", "cad", "--for", "30m")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("borrowed cad until", r.stdout)
        # counted at the license server as one lease, held by the machine
        held = leases(site, self.m)
        self.assertEqual(len(held), 1)
        self.assertIn("borrowed_until", held[0])
        status = site.cli("license", "status").stdout
        self.assertIn("(borrowed)", status)
        # the product's cap on loans holds for another machine, and names the rule
        r = h2.cmd("borrow", "cad", "--for", "10m")
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("rule 'borrow 1 for up to 1h'", r.stderr)
        # a run under the loan takes no second license
        r = h1.run(tool, "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(leases(site, self.m)), 1)
        listed = json.loads(h1.cmd("borrowed", "--json").stdout)
        self.assertEqual([(b["product"], b["valid"]) for b in listed], [("cad", True)])

        # every license server stopped, and no run without a license
        set_offline_deny(self.c1)
        set_offline_deny(self.c2)
        self.m.stop()
        self.m.kill_services()
        wait_for(lambda: leases(site, self.m) is None, 10, "the license server to stop")
        r = h1.run(tool, "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        drawtool = os.path.join(site.tmp, "drawtool")
        shutil.copy("/bin/true", drawtool)
        r = h1.run(drawtool)
        self.assertEqual(r.returncode, 75, "a product not borrowed is denied offline")

        with open(h1.path("cad")) as f:
            good = f.read().strip()

        def refused(text, why, holder=h1, env=None):
            with open(holder.path("cad"), "w") as f:
                f.write(text + "\n")
            r = holder.run(tool, "0", env=env)
            self.assertEqual(r.returncode, 75, r.stderr)
            self.assertIn("borrowed license of cad is refused", r.stderr)
            self.assertIn(why, r.stderr)
            return r.stderr

        # altered: a later end in the payload, the signature as it was
        later = with_payload(good, lambda p: p.update(expires_ms=p["expires_ms"] + 86400000))
        refused(later, "signature is refused")
        # forged: signed again with this machine's client key, which every user may read
        forged = signed_by(good, lambda p: p.update(expires_ms=p["expires_ms"] + 86400000),
                           os.path.join(self.c1.dir, "client.key"),
                           os.path.join(self.c1.dir, "client.crt"))
        refused(forged, "client c1 signed it")
        # another machine's: c1's loan copied to c2
        os.makedirs(os.path.dirname(h2.path("cad")), exist_ok=True)
        refused(good, "lent to c1, another machine", holder=h2)
        os.unlink(h2.path("cad"))
        # a clock set back: the agent saw the time two hours on, the clock says now
        c1 = self.c1
        c1.stop()
        c1.env = dict(os.environ, **faked("+2h"))
        c1.start()

        def marked():
            try:
                with open(os.path.join(c1.dir, "clock.json")) as f:
                    return json.load(f)["wall_ms"] > time.time() * 1000 + 3600000
            except (OSError, ValueError, KeyError):
                return False
        wait_for(marked, 10, "the agent to write its clock mark two hours on")
        c1.stop()
        c1.env = None
        self.assertIn("clock is 2h", refused(good, "expired"))
        # the mark back where the clock is, and the same loan runs
        os.unlink(os.path.join(c1.dir, "clock.json"))
        with open(h1.path("cad"), "w") as f:
            f.write(good + "\n")
        r = h1.run(tool, "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        # expired: the clock past its end
        refused(good, "expired", env=faked("+1h"))
        self.assertFalse(os.path.exists(h1.path("cad")), "an expired loan is forgotten")
        with open(h1.path("cad"), "w") as f:
            f.write(good + "\n")
        c1.start()

        # back on the network: an early return frees it at once for another machine
        self.m.start()
        wait_for(lambda: leases(site, self.m) is not None, 20, "the license server back")
        r = h1.cmd("return", "cad")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("free at once", r.stdout)
        self.assertFalse(os.path.exists(h1.path("cad")))
        self.assertEqual(leases(site, self.m), [])
        r = h2.cmd("borrow", "cad", "--for", "10m")
        self.assertEqual(r.returncode, 0, r.stderr)

        # written off by an administrator: honoured when c2 next reaches the site
        lease = leases(site, self.m)[0]["lease"]
        site.cli("license", "reclaim", lease)
        r = h2.run(tool, "0")
        self.assertIn("was written off by the site", r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)  # then an ordinary license
        self.assertFalse(os.path.exists(h2.path("cad")))

        # written off while the license server is away: the site server tells the
        # machine's agent at its next heartbeat, and the loan is refused offline too
        r = h2.cmd("borrow", "cad", "--for", "10m")
        self.assertEqual(r.returncode, 0, r.stderr)
        lease = [l for l in leases(site, self.m) if "borrowed_until" in l][0]["lease"]
        site.cli("license", "reclaim", lease)

        def told():
            try:
                with open(os.path.join(self.c2.dir, "written-off.json")) as f:
                    return lease in json.load(f)
            except (OSError, ValueError):
                return False
        wait_for(told, 10, "c2's agent to hear the loan was written off")
        self.m.stop()
        self.m.kill_services()
        wait_for(lambda: leases(site, self.m) is None, 10, "the license server to stop")
        r = h2.run(tool, "0")
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("it was written off by the site", r.stderr)
        self.assertFalse(os.path.exists(h2.path("cad")))


def allotment(site, m):
    try:
        status, h = meter_api(site, m, "GET", "/v1/health")
    except OSError:
        return None
    return h.get("products", {}).get("cad", {}).get("allotment") if status == 200 else None


class TwoServers(unittest.TestCase):
    def test_a_loan_counts_against_the_total_with_its_server_unreachable(self):
        site, (m1, m2), c1, tool = meter_site(n_meters=2, licenses=2,
                                              conf={"metering.meter_poll_ms": "500"})
        procs = []
        try:
            c2 = site.enroll("c2")

            def listed():
                try:
                    with open(os.path.join(c2.dir, "meters.json")) as f:
                        return len(json.load(f)["meters"]) == 2
                except (OSError, ValueError, KeyError):
                    return False
            wait_for(listed, 10, "c2 to learn both license servers")
            site.cli("product", "set", "cad", "--borrow", "2")
            h1 = Holder(site, c1)
            # with no demand the two share the count evenly
            wait_for(lambda: allotment(site, m1) == 1 and allotment(site, m2) == 1, 20,
                     "one license at each license server")

            def lent():
                r = h1.cmd("borrow", "cad", "--for", "1h")
                return r if r.returncode == 0 else None
            wait_for(lent, 20, "a loan of cad")
            lender, other = (m1, m2) if leases(site, m1) else (m2, m1)
            self.assertEqual(len(leases(site, lender)), 1)
            # the lender cut off: what it lent stays counted where it was
            lender.stop()
            lender.kill_services()
            wait_for(lambda: leases(site, lender) is None, 10, "the lender to stop")
            wait_for(lambda: allotment(site, other) == 1, 20,
                     "the other license server to hold the one license the loan leaves")
            procs = [run(c2, tool, "30", wait=6) for _ in range(2)]
            deadline = time.monotonic() + 20
            while procs[1].poll() is None and procs[0].poll() is None and \
                    time.monotonic() < deadline:
                held = leases(site, other) or []
                self.assertLessEqual(len(held), 1, "more granted than the loan leaves")
                time.sleep(0.1)
            wait_for(lambda: any(p.poll() is not None for p in procs), 20,
                     "one run to be denied after its wait")
            done = [p for p in procs if p.poll() is not None]
            self.assertEqual(len(done), 1)
            self.assertEqual(done[0].returncode, 75)
            self.assertEqual(len(leases(site, other)), 1, "the other run holds the one left")
            self.assertIn(lender.name, site.cli("license", "status").stderr)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.communicate()
            site.close()


if __name__ == "__main__":
    unittest.main()
