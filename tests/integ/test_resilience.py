"""Restarts, outages and deadlines: nothing lost, nobody hangs."""
import signal
import socket
import subprocess
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
