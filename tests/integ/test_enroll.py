"""Enrollment: one use per token, clear refusals, nothing written for a refused one."""
import os
import unittest

from harness import Site, Agent, listening_sockets, wait_for


class Enrollment(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.site.start()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def test_agents_enroll_and_report_facts(self):
        web1 = self.site.enroll("web1")
        self.site.enroll("web2")
        # the agent opens no port: it connects to the server
        self.assertEqual(listening_sockets(web1.proc.pid), [])
        systems = self.site.systems()
        for name in ("web1", "web2"):
            s = systems[name]
            self.assertEqual(s["health"], "ok")
            self.assertTrue(s["version"])
            # where its connection comes from
            self.assertEqual(s["address"], "127.0.0.1")
            f = s["facts"]
            for key in ("hostname", "os", "kernel", "cpus", "memory_total", "disk_free",
                        "uptime", "agent_uptime"):
                self.assertIn(key, f, f"{name} lacks fact {key}")
            self.assertGreaterEqual(f["cpus"], 1)
            self.assertGreater(f["memory_total"], 0)
        # scripts written when agents listened keep working: --listen is ignored, said so
        old = Agent(self.site, "web3")
        r = old.init(self.site.token(), extra=("--listen", "127.0.0.1:9443"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--listen 127.0.0.1:9443 is ignored", r.stderr)
        with open(os.path.join(old.dir, "agent.conf")) as f:
            self.assertNotIn("9443", f.read())
        table = self.site.cli("systems").stdout
        self.assertIn("web1", table)
        self.assertIn("HEALTH", table)

    def refused(self, name, token, expect):
        before = self.site.systems()
        tokens_before = self.site.db_rows("tokens")
        a = Agent(self.site, name)
        r = a.init(token)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(expect, r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertFalse(os.path.exists(a.dir), "a refused enrollment wrote the agent folder")
        self.assertEqual(self.site.systems().keys(), before.keys())
        self.assertNotIn(name, self.site.systems())
        return tokens_before

    def test_token_works_once(self):
        token = self.site.token()
        self.site.enroll("once1", token=token, start=False)
        rows = self.refused("once2", token, "token already used")
        self.assertEqual(rows, self.site.db_rows("tokens"), "a refused use changed the token")

    def test_expired_token_refused(self):
        created = self.site.cli_json("token", "create", "--ttl", "1")
        import time
        wait_for(lambda: time.time() * 1000 > created["expires_at"], 10,
                 f"the token's expiry time ({created['expires_at']} ms) to pass")
        self.refused("late1", created["token"], "token expired")

    def test_garbage_and_unknown_tokens_refused(self):
        self.refused("junk1", "not-a-token", "malformed token")
        self.refused("junk2", "", "malformed token")
        good = self.site.token()
        secret, pin = good.split(".")
        unknown = ("0" * len(secret)) + "." + pin
        self.refused("junk3", unknown, "unknown token")
        # A token whose CA pin names another site: the agent stops before sending anything.
        wrong_pin = secret + "." + ("f" * len(pin))
        self.refused("junk4", wrong_pin, "does not match the token")
        # The real token was never consumed by any of this.
        self.site.enroll("junk5", token=good, start=False)

    def test_duplicate_name_refused(self):
        self.site.enroll("dup1", start=False)
        self.refused_dup = self.site.token()
        a = Agent(self.site, "dup1")
        a.dir += "-second"
        r = a.init(self.refused_dup)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already enrolled", r.stderr)
        self.assertFalse(os.path.exists(a.dir))

    def test_server_unreachable_is_one_line(self):
        a = Agent(self.site, "nobody1")
        r = a.init(self.site.token(), server="https://127.0.0.1:1")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unreachable", r.stderr)
        self.assertFalse(os.path.exists(a.dir))

    def test_remove_revokes(self):
        a = self.site.enroll("gone1")
        self.site.cli("systems", "remove", "gone1")
        self.assertNotIn("gone1", self.site.systems())
        # The agent's next heartbeat is refused: its certificate is revoked.
        wait_for(lambda: "certificate revoked" in a.proc.log(), 10, "the revoked heartbeat")
        r = self.site.cli("systems", "remove", "gone1", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no system named", r.stderr)


if __name__ == "__main__":
    unittest.main()
