"""Restarts, outages and deadlines: nothing lost, nobody hangs."""
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest

from harness import Site, prog, wait_for


class Restart(unittest.TestCase):
    def setUp(self):
        self.site = Site(heartbeat=1)
        self.site.start()

    def tearDown(self):
        self.site.close()

    def test_restart_keeps_systems_and_state(self):
        for n in ("r1", "r2", "r3"):
            self.site.enroll(n)
        for a in self.site.agents.values():
            a.stop()
        before = self.site.systems()
        self.site.stop()
        self.site.start()
        after = self.site.systems()
        self.assertEqual(set(before), set(after))
        for n in before:
            for key in ("address", "version", "facts", "last_seen", "enrolled_at"):
                self.assertEqual(before[n][key], after[n][key], f"{n}.{key} changed")

    def test_a_locked_database_delays_no_request(self):
        """Heartbeats are written off the loop: while another process holds the site
        database's write lock for longer than the server's busy timeout (5 s), requests
        are answered at once; the heartbeats are written once the lock goes."""
        url = self.site._db_url()
        if url.startswith("postgres"):
            self.skipTest("holds an SQLite lock")
        a = self.site.enroll("l1")

        def stored():
            con = sqlite3.connect(url, timeout=10)
            try:
                return con.execute("SELECT last_seen FROM systems WHERE name = 'l1'").fetchone()[0]
            finally:
                con.close()
        wait_for(lambda: stored() > 0, 15, "l1's first heartbeat written")
        # and its inventory, the one other write it makes: queued behind the lock it
        # would hold up the heartbeats' own write, which this test watches fail and retry
        wait_for(lambda: self.site.cli("inventory", "l1", check=False).returncode == 0, 15,
                 "l1's inventory written")
        con = sqlite3.connect(url, timeout=10, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            locked_at = int(time.time() * 1000)
            worst, t_end = 0.0, time.monotonic() + 7
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                self.site.api("GET", "/v1/site")
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.05)
            # heartbeats went on being heard meanwhile, and stayed in memory
            self.assertGreater(self.site.systems()["l1"]["last_seen"], locked_at)
            self.assertLessEqual(stored(), locked_at)
        finally:
            con.execute("ROLLBACK")
            con.close()
        self.assertLess(worst, 1.0, f"a request took {worst:.1f} s while the database was locked")
        self.assertIn("cannot record heartbeats (will retry)", self.site.server.log())
        wait_for(lambda: stored() > locked_at, 15, "the heartbeats written after the lock")
        self.assertTrue(a.proc.alive())

    def test_administrative_writes_wait_off_the_loop(self):
        """An administrator's writes (a token, a role, a product, a removal) queue behind a
        held database lock without holding up anything else: meanwhile other requests
        are answered at once; once the lock goes, each is stored and answered."""
        url = self.site._db_url()
        if url.startswith("postgres"):
            self.skipTest("holds an SQLite lock")
        self.site.enroll("w1", start=False)
        self.site.enroll("w2", start=False)
        results = {}

        def call(key, method, path, body=None):
            results[key] = self.site.api(method, path, body, timeout=30)
        writes = [
            ("token", "POST", "/v1/tokens", {"ttl": 600}),
            ("role", "POST", "/v1/systems/w1/roles/test", {"timeout": 1}),
            ("product", "POST", "/v1/products", {"name": "locked", "exe": "locked-prog",
                                                 "licenses": 1}),
            ("remove", "DELETE", "/v1/systems/w2", None),
            ("list", "GET", "/v1/products", None),
        ]
        con = sqlite3.connect(url, timeout=10, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        threads = []
        try:
            for w in writes:
                t = threading.Thread(target=call, args=w, daemon=True)
                t.start()
                threads.append(t)
            worst = 0.0
            for _ in range(10):
                t0 = time.monotonic()
                status, _ = self.site.api("GET", "/v1/site")
                self.assertEqual(status, 200)
                worst = max(worst, time.monotonic() - t0)
                time.sleep(0.05)
            self.assertLess(worst, 1.0, f"a request took {worst:.1f} s behind the writes")
            # no write can be stored while the lock is held, so none is answered yet (a
            # read at the head of the queue may be: SQLite's WAL lets it through)
            self.assertEqual(set(results) - {"list"}, set(), results)
            self.assertIn("w2", self.site.systems())
        finally:
            con.execute("ROLLBACK")
            con.close()
        for t in threads:
            t.join(30)
        self.assertEqual({k: v[0] for k, v in results.items()},
                         {"token": 200, "role": 200, "product": 200, "remove": 200,
                          "list": 200}, results)
        status, products = self.site.api("GET", "/v1/products")
        self.assertIn("locked", [p["name"] for p in products["products"]])
        self.assertNotIn("w2", self.site.systems())
        self.assertEqual(self.site.systems()["w1"]["roles"], ["test"])
        self.site.enroll("w3", token=results["token"][1]["token"], start=False)
        self.assertIn("w3", self.site.systems())

    def test_kill9_keeps_enrolled_systems(self):
        self.site.enroll("k1", start=False)
        self.site.server.kill9()
        self.site.start()
        self.assertIn("k1", self.site.systems())

    def test_agents_survive_server_outage_and_reconnect(self):
        a = self.site.enroll("o1")
        self.site.stop()
        wait_for(lambda: "retrying with backoff" in a.proc.log(), 10,
                 "the agent to see the server gone")
        # and it lives on through its retries: a listener in the server's place sees two
        # more, each cut off at once
        with socket.socket() as ear:
            ear.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ear.bind(("127.0.0.1", self.site.port))
            ear.listen(4)
            ear.settimeout(15)
            for i in (1, 2):
                try:
                    conn, _ = ear.accept()
                except socket.timeout:
                    self.fail(f"the agent's retry {i} never came")
                conn.close()
        self.assertTrue(a.proc.alive(), "the agent died with its server")
        self.assertIn("retrying with backoff", a.proc.log())
        self.site.start()
        t0 = time.time() * 1000
        # Backoff is capped at four heartbeat intervals (4 s here).
        wait_for(lambda: self.site.systems()["o1"]["last_seen"] > t0, 8,
                 "the agent to reconnect")
        self.assertEqual(self.site.systems()["o1"]["health"], "ok")

    def test_health_goes_late_then_offline(self):
        a = self.site.enroll("h1")
        a.proc.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: self.site.systems()["h1"]["health"] == "late", 6, "late")
            wait_for(lambda: self.site.systems()["h1"]["health"] == "offline", 12, "offline")
        finally:
            a.proc.signal(signal.SIGCONT)
        wait_for(lambda: self.site.systems()["h1"]["health"] == "ok", 8, "ok again")

    def test_cli_bounded_when_server_frozen(self):
        self.site.server.signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = self.site.cli("--timeout", "2", "systems", check=False)
            elapsed = time.monotonic() - t0
        finally:
            self.site.server.signal(signal.SIGCONT)
        self.assertNotEqual(r.returncode, 0)
        # the kernel takes the connection, the frozen server never its handshake
        self.assertRegex(r.stderr, r"no connection after [23]\.\d s: TLS handshake unanswered")
        self.assertLess(elapsed, 5, "the CLI waited past its deadline")

    def test_config_errors_are_clear(self):
        self.site.stop()
        self.site.set_conf({"server.heartbeat_intervl": "5"})
        r = subprocess.run([prog("siteward-server"), "--dir", self.site.dir], capture_output=True,
                           text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unknown setting [server] heartbeat_intervl", r.stderr)


if __name__ == "__main__":
    unittest.main()
