"""Unattended enrollment: the token from a file or the environment, tokens for several
machines (exactly as many as they allow, even when they race for the last use), and
the token list, which never shows a secret."""
import json
import os
import stat
import subprocess
import time
import unittest

from harness import Site, Agent, prog, wait_for

INIT_TIMEOUT = 60


class Tokens(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.site.start()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    # -- helpers -------------------------------------------------------------------
    def init(self, name, *args, env=None, server=None):
        """siteward-agent init for `name` with the token sources in `args` and `env`
        (SITEWARD_TOKEN is never inherited from the environment of the test run)."""
        a = Agent(self.site, name)
        e = {k: v for k, v in os.environ.items() if k != "SITEWARD_TOKEN"}
        e.update(env or {})
        r = subprocess.run(
            [prog("siteward-agent"), "init", "--dir", a.dir, "--server", server or self.site.url,
             "--name", name, *args],
            capture_output=True, text=True, timeout=INIT_TIMEOUT, env=e)
        return a, r

    def assert_refused(self, name, r, a, expect, status=None):
        self.assertNotEqual(r.returncode, 0, r.stdout)
        if status is not None:
            self.assertEqual(r.returncode, status, r.stderr)
        self.assertIn(expect, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertFalse(os.path.exists(a.dir), "a refused enrollment wrote the agent folder")
        self.assertNotIn(name, self.site.systems())

    def token_file(self, name, text, mode=0o600):
        path = os.path.join(self.site.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def create(self, *args):
        return self.site.cli_json("token", "create", *args)

    def listed(self, token_id):
        for t in self.site.cli_json("token", "list")["tokens"]:
            if t["id"] == token_id:
                return t
        raise AssertionError(f"token {token_id} is not listed")

    def enrolled(self, name, a, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(a.dir, "agent.crt")))
        self.assertIn(name, self.site.systems())

    # -- where the token comes from ------------------------------------------------
    def test_token_from_file(self):
        token = self.site.token()
        # the line 'siteward token create' printed, as a shell redirection writes it
        path = self.token_file("file1.token", token + "\n")
        a, r = self.init("file1", "--token-file", path)
        self.enrolled("file1", a, r)
        # the agent needs the file no more, but removing it is the administrator's call
        self.assertTrue(os.path.exists(path), "the token file was removed unasked")
        for f in os.listdir(a.dir):
            if os.path.isfile(os.path.join(a.dir, f)):
                with open(os.path.join(a.dir, f), errors="replace") as fh:
                    self.assertNotIn(token.split(".")[0], fh.read(), f"{f} keeps the token")
        # read-only for its owner, a line ending in CR LF and blanks: the same token
        token = self.site.token()
        path = self.token_file("file2.token", token + " \r\nsecond line\n", mode=0o400)
        a, r = self.init("file2", "--token-file", path)
        self.enrolled("file2", a, r)

    def test_remove_token_file_on_success_only(self):
        token = self.site.token()
        path = self.token_file("rm1.token", token + "\n")
        self.site.enroll("rm0", token=token, start=False)
        # refused (the token is used): the file stays for the administrator to look at
        a, r = self.init("rm1", "--token-file", path, "--remove-token-file")
        self.assert_refused("rm1", r, a, "token already used")
        self.assertTrue(os.path.exists(path))
        path = self.token_file("rm2.token", self.site.token() + "\n")
        a, r = self.init("rm2", "--token-file", path, "--remove-token-file")
        self.enrolled("rm2", a, r)
        self.assertFalse(os.path.exists(path), "--remove-token-file left the file")
        # it means nothing without a file
        a, r = self.init("rm3", "--token", self.site.token(), "--remove-token-file")
        self.assert_refused("rm3", r, a, "--remove-token-file goes with --token-file", 2)

    def test_token_file_others_may_read_or_write_is_refused(self):
        token = self.site.token()
        for i, mode in enumerate((0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610)):
            path = self.token_file(f"perm{i}.token", token + "\n", mode)
            a, r = self.init(f"perm{i}", "--token-file", path)
            self.assert_refused(f"perm{i}", r, a, f"chmod 600 {path}")
            self.assertIn(f"mode {mode:04o}", r.stderr)
        # refused before anything was sent: the token is still unused
        path = self.token_file("perm-ok.token", token + "\n")
        a, r = self.init("permok", "--token-file", path)
        self.enrolled("permok", a, r)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give a file to another user")
    def test_token_file_of_another_user_is_refused(self):
        token = self.site.token()
        path = self.token_file("owner.token", token + "\n")
        os.chown(path, 65534, 65534)
        a, r = self.init("owner1", "--token-file", path)
        self.assert_refused("owner1", r, a, f"chown root {path}")
        os.chown(path, 0, 0)
        a, r = self.init("owner1", "--token-file", path)
        self.enrolled("owner1", a, r)

    def test_token_file_missing_empty_or_not_a_file(self):
        a, r = self.init("nofile1", "--token-file", os.path.join(self.site.tmp, "absent"))
        self.assert_refused("nofile1", r, a, "cannot read the token file")
        path = self.token_file("empty.token", "\n")
        a, r = self.init("nofile2", "--token-file", path)
        self.assert_refused("nofile2", r, a, "is empty")
        path = self.token_file("junk.token", "not-a-token\n")
        a, r = self.init("nofile3", "--token-file", path)
        self.assert_refused("nofile3", r, a, f"malformed token in {path}")
        path = self.token_file("long.token", "a" * 100000)
        a, r = self.init("nofile4", "--token-file", path)
        self.assert_refused("nofile4", r, a, "malformed token")
        d = os.path.join(self.site.tmp, "tokendir")
        os.mkdir(d, 0o700)
        a, r = self.init("nofile5", "--token-file", d)
        self.assert_refused("nofile5", r, a, "not a regular file")
        # a FIFO with no writer must not hold enrollment (subprocess.run's bound catches it)
        fifo = os.path.join(self.site.tmp, "token.fifo")
        os.mkfifo(fifo, 0o600)
        t0 = time.monotonic()
        a, r = self.init("nofile6", "--token-file", fifo)
        self.assert_refused("nofile6", r, a, "not a regular file")
        self.assertLess(time.monotonic() - t0, 10)

    def test_token_from_environment(self):
        token = self.site.token()
        a, r = self.init("env1", env={"SITEWARD_TOKEN": token})
        self.enrolled("env1", a, r)
        a, r = self.init("env2", env={"SITEWARD_TOKEN": "garbage"})
        self.assert_refused("env2", r, a, "malformed token in SITEWARD_TOKEN")
        a, r = self.init("env3", env={"SITEWARD_TOKEN": token})
        self.assert_refused("env3", r, a, "token already used")

    def test_exactly_one_source(self):
        token = self.site.token()
        path = self.token_file("two.token", token + "\n")
        cases = [
            (("--token", token, "--token-file", path), {}),
            (("--token", token), {"SITEWARD_TOKEN": token}),
            (("--token-file", path), {"SITEWARD_TOKEN": token}),
            (("--token", token, "--token-file", path), {"SITEWARD_TOKEN": token}),
        ]
        for i, (args, env) in enumerate(cases):
            a, r = self.init(f"two{i}", *args, env=env)
            self.assert_refused(f"two{i}", r, a, "give exactly one", 2)
        a, r = self.init("none1")
        self.assert_refused("none1", r, a, "no token", 2)
        # an empty SITEWARD_TOKEN is one not set
        a, r = self.init("none2", env={"SITEWARD_TOKEN": ""})
        self.assert_refused("none2", r, a, "no token", 2)
        a, r = self.init("two9", "--token-file", path, env={"SITEWARD_TOKEN": ""})
        self.enrolled("two9", a, r)

    # -- tokens for several machines ----------------------------------------------
    def test_uses_three_enrolls_exactly_three(self):
        created = self.create("--uses", "3")
        self.assertEqual(created["uses"], 3)
        token = created["token"]
        path = self.token_file("three.token", token + "\n")
        for name in ("three1", "three2", "three3"):
            a, r = self.init(name, "--token-file", path)
            self.enrolled(name, a, r)
            self.assertTrue(os.path.exists(path))
        a, r = self.init("three4", "--token-file", path)
        self.assert_refused("three4", r, a, "token used up: all 3 of its uses are taken")
        t = self.listed(created["id"])
        self.assertEqual((t["uses"], t["used"], t["left"], t["state"]), (3, 3, 0, "used up"))
        self.assertEqual(sorted(u["system"] for u in t["used_by"]),
                         ["three1", "three2", "three3"])
        # the refused one took nothing: the same three
        self.assertNotIn("three4", [u["system"] for u in t["used_by"]])

    def test_concurrent_enrollments_on_the_last_use(self):
        created = self.create("--uses", "2")
        token = created["token"]
        a, r = self.init("race0", "--token", token)
        self.enrolled("race0", a, r)
        names = [f"race{i}" for i in range(1, 9)]
        e = {k: v for k, v in os.environ.items() if k != "SITEWARD_TOKEN"}
        e["SITEWARD_TOKEN"] = token
        procs = []
        for n in names:
            ag = Agent(self.site, n)
            procs.append((n, ag, subprocess.Popen(
                [prog("siteward-agent"), "init", "--dir", ag.dir, "--server", self.site.url,
                 "--name", n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=e)))
        won, lost = [], []
        for n, ag, p in procs:
            out, err = p.communicate(timeout=INIT_TIMEOUT)
            (won if p.returncode == 0 else lost).append((n, ag, err))
        self.assertEqual(len(won), 1, f"{len(won)} enrollments took the last use: {won}")
        for n, ag, err in lost:
            self.assertIn("token used up: all 2 of its uses are taken", err)
            self.assertFalse(os.path.exists(ag.dir))
        systems = self.site.systems()
        self.assertEqual([n for n in names if n in systems], [won[0][0]])
        t = self.listed(created["id"])
        self.assertEqual((t["used"], t["left"]), (2, 0))
        self.assertEqual(sorted(u["system"] for u in t["used_by"]), sorted(["race0", won[0][0]]))

    def test_multi_use_token_still_expires(self):
        created = self.create("--uses", "5", "--ttl", "1")
        wait_for(lambda: time.time() * 1000 > created["expires_at"], 10,
                 f"the token's expiry time ({created['expires_at']} ms) to pass")
        a, r = self.init("late2", env={"SITEWARD_TOKEN": created["token"]})
        self.assert_refused("late2", r, a, "token expired")
        t = self.listed(created["id"])
        self.assertEqual((t["used"], t["left"], t["state"]), (0, 0, "expired"))

    def test_revoked_token_refused(self):
        created = self.create("--uses", "5")
        a, r = self.init("rev1", env={"SITEWARD_TOKEN": created["token"]})
        self.enrolled("rev1", a, r)
        out = self.site.cli("token", "revoke", created["id"]).stdout
        self.assertIn(f"revoked token {created['id']}", out)
        a, r = self.init("rev2", env={"SITEWARD_TOKEN": created["token"]})
        self.assert_refused("rev2", r, a, f"token {created['id']} was revoked")
        t = self.listed(created["id"])
        self.assertEqual((t["used"], t["left"], t["state"]), (1, 0, "revoked"))
        self.assertIsNotNone(t["revoked_at"])
        # again: nothing changes, no error
        self.site.cli("token", "revoke", created["id"])
        self.assertEqual(self.listed(created["id"])["revoked_at"], t["revoked_at"])
        r = self.site.cli("token", "revoke", "0123456789ab", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no token with id 0123456789ab", r.stderr)
        for bad in ("xyz", "0123456789AB", "0123456789abc", "../systems/x"):
            r = self.site.cli("token", "revoke", bad, check=False)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("is not a token id", r.stderr)
        status, _ = self.site.api("DELETE", "/v1/tokens/0123456789AB")
        self.assertEqual(status, 400)

    def test_token_list_never_prints_a_secret(self):
        secrets = []
        for args in ((), ("--uses", "4"), ("--uses", "2", "--ttl", "2h")):
            c = self.create(*args)
            secrets.append(c["token"].split(".")[0])
        self.site.enroll("listed1", token=self.create()["token"], start=False)
        text = self.site.cli("token", "list").stdout
        raw = self.site.cli("token", "list", "--json").stdout
        self.assertIn("USES LEFT", text)
        self.assertIn("listed1", text)
        for s in secrets:
            self.assertNotIn(s, text)
            self.assertNotIn(s, raw)
        for t in json.loads(raw)["tokens"]:
            self.assertNotIn("token", t)
            self.assertNotIn("hash", t)
            self.assertEqual(len(t["id"]), 12)
        # nor does the database keep one
        for s in secrets:
            self.assertFalse(any(s in row for row in self.site.db_rows("tokens")))

    def test_create_options(self):
        t0 = time.time() * 1000
        c = self.create("--uses", "100000", "--ttl", "2h")
        self.assertEqual(c["uses"], 100000)
        self.assertAlmostEqual(c["expires_at"] - t0, 7200 * 1000, delta=60 * 1000)
        c = self.create("--ttl", "30d")
        self.assertAlmostEqual(c["expires_at"] - t0, 30 * 86400 * 1000, delta=60 * 1000)
        self.assertEqual(self.listed(c["id"])["uses"], 1)
        for args, why in ((("--uses", "0"), "--uses takes"), (("--uses", "100001"), "--uses takes"),
                          (("--uses", "3x"), "--uses takes"), (("--uses", "-1"), "--uses takes"),
                          (("--ttl", "0"), "--ttl takes"), (("--ttl", "31d"), "--ttl takes"),
                          (("--ttl", "5x"), "--ttl takes"), (("--ttl", "h"), "--ttl takes"),
                          (("--ttl", "2592001"), "--ttl takes"), (("--uses",), "usage:")):
            r = self.site.cli("token", "create", *args, check=False)
            self.assertEqual(r.returncode, 2, args)
            self.assertIn(why, r.stderr)
        for body in ({"uses": 0}, {"uses": 100001}, {"uses": "3"}, {"uses": 1.5}):
            status, _ = self.site.api("POST", "/v1/tokens", body)
            self.assertEqual(status, 400, body)



def db_exec(site, *statements):
    """Statements run straight on the site's database, its server stopped."""
    url = site._db_url()
    if url.startswith("postgres"):
        for st in statements:
            subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", st], check=True,
                           capture_output=True, timeout=30)
        return
    import sqlite3
    con = sqlite3.connect(url, timeout=10)
    try:
        for st in statements:
            con.execute(st)
        con.commit()
    finally:
        con.close()


class Migration(unittest.TestCase):
    def test_tokens_used_before_the_migration_stay_used(self):
        """sql/011_token_uses.sql on a database of the version before it: a token used
        then is used up, with who used it, and one not used has its one use left."""
        site = Site()
        try:
            site.start()
            used = site.token()
            site.enroll("old1", token=used, start=False)
            unused = site.token()
            site.stop()
            # the database as the version before sql/011 left it: the migrations after
            # it undone too, so that the server applies them all again
            db_exec(site, "DROP TABLE deployment_systems", "DROP TABLE deployments",
                    "DELETE FROM schema_migrations WHERE number = 22",
                    "ALTER TABLE products DROP COLUMN package",
                    "DELETE FROM schema_migrations WHERE number = 21",
                    "DROP TABLE collections",
                    "DELETE FROM schema_migrations WHERE number = 20",
                    "DROP TABLE package_history", "DROP TABLE packages",
                    "DROP TABLE inventory",
                    "DELETE FROM schema_migrations WHERE number = 19",
                    "DROP TABLE written_off",
                    "DELETE FROM schema_migrations WHERE number = 18",
                    "ALTER TABLE products DROP COLUMN rules",
                    "DELETE FROM schema_migrations WHERE number = 17",
                    "DROP TABLE group_members", "DROP TABLE groups",
                    "DELETE FROM schema_migrations WHERE number = 16",
                    "ALTER TABLE products DROP COLUMN on_reclaim",
                    "ALTER TABLE products DROP COLUMN reclaim_signal",
                    "ALTER TABLE products DROP COLUMN idle_s",
                    "DELETE FROM schema_migrations WHERE number = 15",
                    "DROP TABLE admins", "DROP TABLE admin_certs", "DROP TABLE audit",
                    "DELETE FROM schema_migrations WHERE number = 14",
                    "ALTER TABLE systems DROP COLUMN cert_ca",
                    "ALTER TABLE systems DROP COLUMN trust",
                    "DELETE FROM schema_migrations WHERE number = 13",
                    "DROP TABLE system_certs", "ALTER TABLE systems DROP COLUMN prev_serial",
                    "ALTER TABLE systems DROP COLUMN cert_not_after",
                    "DELETE FROM schema_migrations WHERE number = 12",
                    "DROP TABLE token_uses", "ALTER TABLE tokens DROP COLUMN uses",
                    "ALTER TABLE tokens DROP COLUMN used",
                    "ALTER TABLE tokens DROP COLUMN revoked_at",
                    "DELETE FROM schema_migrations WHERE number = 11")
            site.start()
            by_state = {}
            for t in site.cli_json("token", "list")["tokens"]:
                by_state[t["state"]] = t
            self.assertEqual((by_state["used up"]["used"], by_state["used up"]["left"]), (1, 0))
            self.assertEqual([u["system"] for u in by_state["used up"]["used_by"]], ["old1"])
            self.assertEqual((by_state["usable"]["uses"], by_state["usable"]["left"]), (1, 1))
            a = Agent(site, "old2")
            r = a.init(used)
            self.assertIn("token already used", r.stderr)
            self.assertEqual(a.init(unused).returncode, 0)
        finally:
            site.close()


if __name__ == "__main__":
    unittest.main()
