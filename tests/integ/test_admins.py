"""Named administrators and the audit log. `siteward admin add` writes a folder that
`siteward --site DIR` works from on any machine, with a PKCS#12 file for a browser. A
viewer reads everything and changes nothing; an operator runs services and roles but
adds no token and removes no system; each refusal names the role needed. Every change
and every refusal is in the audit log, stored before the change's answer went; reads are
not. A removed administrator is refused at once, its name is not given again, and the
site folder's own administrator cannot be removed."""
import os
import subprocess
import unittest

from harness import Site, prog, wait_for


class Admins(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            cls.site.start()
            cls.a = cls.site.enroll("w1")
            cls.dirs = {}
            for name, role in (("op1", "operator"), ("v1", "viewer"), ("boss", "admin")):
                d = os.path.join(cls.site.tmp, f"ws-{name}")
                r = cls.site.cli("admin", "add", name, "--role", role, "--out", d)
                assert name in r.stdout, r.stdout
                cls.dirs[name] = d
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def as_(self, who, *args, check=False):
        """The CLI from an administrator's folder, as on a workstation."""
        return subprocess.run([prog("siteward"), "--site", self.dirs[who], *args],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, SITEWARD_SITE=""))

    def audit(self):
        """The audit table as stored, read from the database."""
        return self.site.db_fields("audit")

    def test_the_folder_holds_what_a_workstation_needs(self):
        d = self.dirs["op1"]
        for f, mode in (("admin.key", 0o600), ("admin.crt", 0o644), ("ca.crt", 0o644),
                        ("siteward.conf", 0o600), ("admin.p12", 0o600),
                        ("admin.p12.password", 0o600)):
            st = os.stat(os.path.join(d, f))
            self.assertEqual(st.st_mode & 0o777, mode, f)
        with open(os.path.join(d, "siteward.conf")) as f:
            self.assertIn(f"server = 127.0.0.1:{self.site.port}", f.read())
        # the browser's file opens with its password, and holds the key and certificate
        r = subprocess.run(["openssl", "pkcs12", "-in", os.path.join(d, "admin.p12"),
                            "-passin", "file:" + os.path.join(d, "admin.p12.password"),
                            "-nodes"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("BEGIN CERTIFICATE", r.stdout)
        self.assertIn("PRIVATE KEY", r.stdout)
        self.assertIn("CN = op1", subprocess.run(
            ["openssl", "x509", "-in", os.path.join(d, "admin.crt"), "-noout", "-subject"],
            capture_output=True, text=True, timeout=10).stdout.replace("CN=", "CN = "))
        listing = {a["name"]: a for a in self.site.cli_json("admin", "list")["admins"]}
        self.assertEqual({n: a["role"] for n, a in listing.items()},
                         {"admin": "admin", "op1": "operator", "v1": "viewer",
                          "boss": "admin"})
        self.assertEqual(listing["op1"]["created_by"], "admin")

    def test_a_viewer_reads_and_changes_nothing(self):
        r = self.as_("v1", "systems")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("w1", r.stdout)
        self.assertEqual(self.as_("v1", "admin", "list").returncode, 0)
        self.assertEqual(self.as_("v1", "audit").returncode, 0)
        r = self.as_("v1", "role", "add", "w1", "test")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("this needs the operator or admin role; v1 is a viewer", r.stderr)
        r = self.as_("v1", "token", "create")
        self.assertIn("this needs the admin role; v1 is a viewer", r.stderr)
        # refusals are in the audit log, with who and from where
        rows = [r for r in self.audit() if r[1] == "v1"]
        self.assertTrue(any(r[4] == "POST" and r[5] == "/v1/systems/w1/roles/test" and
                            r[6] == "403" and "viewer" in r[7] for r in rows), rows)
        self.assertTrue(all(r[3] == "127.0.0.1" for r in rows))
        # reads are not
        self.assertFalse(any(r[4] == "GET" for r in self.audit()))

    def test_an_operator_runs_roles_but_adds_no_token_and_removes_no_system(self):
        r = self.as_("op1", "role", "add", "w1", "test")
        self.assertEqual(r.returncode, 0, r.stderr)
        # the change was stored in the audit log before its answer came back
        rows = self.audit()
        self.assertTrue(any(r[1] == "op1" and r[4] == "POST" and
                            r[5] == "/v1/systems/w1/roles/test" and r[6] == "200" and
                            r[7] == "ok" for r in rows), rows)
        r = self.as_("op1", "role", "remove", "w1", "test")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.as_("op1", "token", "create")
        self.assertIn("this needs the admin role; op1 is an operator", r.stderr)
        r = self.as_("op1", "systems", "remove", "w1")
        self.assertIn("this needs the admin role; op1 is an operator", r.stderr)
        self.assertIn("w1", self.site.systems())
        listing = self.as_("op1", "audit", "--who", "op1", "--json")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        import json
        recs = json.loads(listing.stdout)["records"]
        self.assertTrue(recs and all(r["who"] == "op1" for r in recs))
        self.assertEqual(recs[0]["method"], "DELETE")  # newest first
        self.assertEqual(recs[0]["status"], 403)
        table = self.as_("op1", "audit").stdout
        self.assertIn("POST /v1/systems/w1/roles/test", table)

    def test_z_a_removed_administrator_is_refused_at_once(self):
        r = self.as_("boss", "systems")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = self.site.cli_json("admin", "remove", "boss")
        self.assertEqual(len(out["revoked"]), 1)
        r = self.as_("boss", "systems")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("revoked", r.stderr)
        listing = {a["name"]: a for a in self.site.cli_json("admin", "list")["admins"]}
        self.assertIsNotNone(listing["boss"]["removed_at"])
        d = os.path.join(self.site.tmp, "ws-boss2")
        r = self.site.cli("admin", "add", "boss", "--role", "viewer", "--out", d, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("names are not given twice", r.stderr)
        r = self.site.cli("admin", "remove", "admin", check=False)
        self.assertIn("site folder's own administrator", r.stderr)
        # and after a restart, from the database
        self.site.stop()
        self.site.start()
        r = self.as_("boss", "systems")
        self.assertIn("revoked", r.stderr)
        wait_for(lambda: self.as_("op1", "systems").returncode == 0, 20,
                 "an operator's call after the restart")
        r = self.as_("op1", "token", "create")
        self.assertIn("op1 is an operator", r.stderr)


if __name__ == "__main__":
    unittest.main()
