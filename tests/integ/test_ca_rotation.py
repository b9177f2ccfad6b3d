"""The site's CA rotated without an outage. `siteward ca rotate` introduces a new CA;
every system takes the bundle of both; a system that is away holds the rotation where
it is (and says so) until it is back; then the new CA issues, the server serves a
certificate of it (it restarts itself once), every agent renews under it, and the old
CA is retired once no system depends on it. Through it all every system stays `ok`, a
license server and its client keep working, and afterwards a certificate of the old CA
is refused. A site whose CA nears its end (its clock moved: made 3000 days ago) is
warned of it, its expired admin certificate is issued again as the server starts, and
after a rotation its certificates have their whole life again. A
rotation cut short before its new certificate joined the bundle is undone at start."""
import os
import re
import shutil
import ssl
import subprocess
import unittest

from harness import Site, prog, wait_for
from test_metering import meter_site
from test_renewal import unfake
from test_skew import faked


def ca_ids(path):
    """The subject key identifiers of the CA certificates in a bundle, in order."""
    with open(path) as f:
        text = f.read()
    ids = []
    for pem in re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text,
                          re.S):
        r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectKeyIdentifier"],
                           input=pem, capture_output=True, text=True, check=True, timeout=10)
        ids.append(r.stdout.splitlines()[-1].strip().replace(":", "").lower())
    return ids


def issuer_id(path):
    """The authority key identifier of a certificate: the CA that issued it."""
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-ext",
                        "authorityKeyIdentifier"],
                       capture_output=True, text=True, check=True, timeout=10)
    line = r.stdout.splitlines()[-1].strip()
    return line.replace("keyid:", "").replace(":", "").lower()


def status(site):
    return site.cli_json("ca", "status")


class Rotation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.client, cls.tool = meter_site(n_meters=1)

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def run_tool(self):
        return subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "--",
                               self.tool, "0"], capture_output=True, text=True, timeout=30)

    def test_rotation_waits_for_a_system_away_then_completes(self):
        site, m, c = self.site, self.m, self.client
        old = ca_ids(os.path.join(site.dir, "ca.crt"))
        self.assertEqual(len(old), 1)
        st = status(site)
        self.assertEqual((st["phase"], st["cas"][0]["state"]), ("steady", "issuing"))
        self.assertEqual(st["cas"][0]["id"], old[0])
        kept = os.path.join(site.tmp, "old-m1")
        os.makedirs(kept)
        for f in ("agent.crt", "agent.key"):
            shutil.copy(os.path.join(m.dir, f), kept)
        self.assertEqual(self.run_tool().returncode, 0)

        # the client's machine is away when the rotation starts
        c.stop()
        st = site.cli_json("ca", "rotate")
        self.assertEqual(st["phase"], "introducing")
        new = [x["id"] for x in st["cas"] if x["state"] == "next"]
        self.assertEqual(len(new), 1)
        self.assertNotEqual(new[0], old[0])
        again = site.cli("ca", "rotate", check=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("under way", again.stderr)

        def m_trusts_both():
            return ca_ids(os.path.join(m.dir, "ca.crt")) == old + new
        wait_for(m_trusts_both, 20, "the metering server's system to take both CAs")
        wait_for(lambda: status(site)["trusting"] == 1, 20, "the server to hear it")
        # heartbeats on, and the rotation is held by the system that is away
        seen = site.systems()["m1"]["last_seen"]
        wait_for(lambda: site.systems()["m1"]["last_seen"] > seen + 2000, 20,
                 "two more heartbeats from m1")
        st = status(site)
        self.assertEqual(st["phase"], "introducing")
        self.assertEqual([(w["name"], w["trusts"]) for w in st["waiting"]], [("c1", False)])
        table = site.cli("ca", "status").stdout
        self.assertIn("waiting on c1: does not trust the new CA yet", table)
        self.assertEqual(issuer_id(os.path.join(site.dir, "server.crt")), old[0])
        self.assertIn("restarting the metering service to trust the site's CAs",
                      m.proc.log())

        # the system is back: the rotation goes on to its end
        c.start()
        r = site.cli("ca", "status", "--wait", "120", timeout=150)
        self.assertIn("steady", r.stdout)
        self.assertEqual(ca_ids(os.path.join(site.dir, "ca.crt")), new)
        for f in ("server.crt", "admin.crt"):
            self.assertEqual(issuer_id(os.path.join(site.dir, f)), new[0], f)
        log = site.server.log()
        self.assertIn("every system trusts the new CA", log)
        self.assertIn("restarting to serve the renewed server certificate", log)
        self.assertIn("CA rotation: done", log)

        def agents_on_new():
            return all(ca_ids(os.path.join(a.dir, "ca.crt")) == new and
                       all(issuer_id(os.path.join(a.dir, f)) == new[0]
                           for f in ("agent.crt", "client.crt", "meter.crt"))
                       for a in (m, c))
        wait_for(agents_on_new, 30, "every agent to trust the new CA alone, on its certificates")
        self.assertIn("the site's CA changed; the server asks for a renewal", c.proc.log())

        def all_ok():
            s = site.systems()
            return all(s[n]["health"] == "ok" for n in ("m1", "c1"))
        wait_for(all_ok, 30, "every system to be ok")

        # the license server serves on the new certificate, and a user's program runs
        def runs():
            return self.run_tool().returncode == 0
        wait_for(runs, 30, "a metered program to run on the new CA's certificates")

        # the old CA is retired: its certificates are refused
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(os.path.join(kept, "agent.crt"), os.path.join(kept, "agent.key"))
        try:
            code, body = site.api("POST", "/v1/heartbeat",
                                  {"version": "1", "facts": {}, "services": []}, ctx=ctx)
        except (ssl.SSLError, ConnectionError) as e:
            code, body = 0, str(e)
        self.assertIn(code, (0, 401, 403), body)
        self.assertIn("not issued by this site", str(body))


class AgingCA(unittest.TestCase):
    """A site made 3000 days ago: its CA has 650 days left, less than an agent
    certificate's life, so what it issues ends with it."""

    @classmethod
    def setUpClass(cls):
        os.environ.update(faked("-3000d"))
        try:
            cls.site = Site(heartbeat=1)
        finally:
            unfake()
        try:
            # its admin certificate, long expired, is issued again as the server starts
            cls.site.start()
            cls.a = cls.site.enroll("old1")
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def test_warned_then_rotated_certificates_have_their_life_again(self):
        site, a = self.site, self.a
        listing = site.cli_json("systems")
        self.assertRegex(listing["ca_note"], r"the site CA ends in 6[45][0-9] days")
        sys = listing["systems"][0]
        left = (sys["cert_not_after"] - listing["now"]) / 86400000
        self.assertLess(left, 660)
        self.assertIn("warning: the site CA ends in", site.cli("systems").stdout)
        self.assertIn("rotate it with 'siteward ca rotate'", site.cli("ca", "status").stdout)
        self.assertRegex(site.server.log(), r"warn: the site CA ends in 6[45][0-9] days")
        self.assertIn("admin.crt) was past two thirds of its life: issued again under the "
                      "site CA for its key", site.server.log())

        site.cli("ca", "rotate")
        st = site.cli_json("ca", "status", "--wait", "120", timeout=150)
        self.assertEqual(st["phase"], "steady")
        self.assertIsNone(st.get("note"))
        self.assertEqual(len(st["cas"]), 1)
        self.assertGreater((st["cas"][0]["not_after"] - st["now"]) / 86400000, 3600)

        def renewed_long():
            s = site.cli_json("systems")
            left = (s["systems"][0]["cert_not_after"] - s["now"]) / 86400000
            return (left > 800 and s["systems"][0]["health"] == "ok" and
                    s.get("ca_note") is None)
        wait_for(renewed_long, 30, "the system's certificate to have its whole life again")

    def test_z_a_rotation_cut_before_its_bundle_is_undone_at_start(self):
        site = self.site
        site.stop()
        key = os.path.join(site.dir, "ca-next.key")
        r = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-out", key],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        before = ca_ids(os.path.join(site.dir, "ca.crt"))
        site.start()
        self.assertIn("a CA rotation was cut short before it began", site.server.log())
        self.assertFalse(os.path.exists(key))
        self.assertEqual(status(site)["phase"], "steady")
        self.assertEqual(ca_ids(os.path.join(site.dir, "ca.crt")), before)
        wait_for(lambda: site.systems()["old1"]["health"] == "ok", 30, "old1 to be ok")


if __name__ == "__main__":
    unittest.main()
