"""The daemons under a service manager: the sd_notify protocol (READY=1 only once the
daemon serves, WATCHDOG=1 from the loop at half of WATCHDOG_USEC, STOPPING=1 at
shutdown), spoken to a datagram socket of the test's own as systemd's would be."""
import os
import signal
import socket
import tempfile
import time
import unittest

from harness import Agent, Proc, Site, prog, wait_for


def stopped(pid):
    """Whether the process is stopped (by SIGSTOP), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


class NotifySocket:
    """An AF_UNIX datagram socket in the role of systemd's notification socket."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="siteward-notify-")
        self.path = os.path.join(self.tmp, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def env(self, watchdog_usec=None):
        env = dict(os.environ, NOTIFY_SOCKET=self.path)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def next(self, timeout):
        """The next message's lines, or None by the deadline."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode().split("\n")
        except socket.timeout:
            return None

    def until(self, line, timeout, seen=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg is None:
                break
            if seen is not None:
                seen.append(msg)
            if line in msg:
                return msg
        raise AssertionError(f"no {line} within {timeout} s; seen {seen}")

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.tmp)


class Notify(unittest.TestCase):
    def setUp(self):
        self.ns = NotifySocket()
        self.addCleanup(self.ns.close)

    def test_server_ready_once_it_answers_then_watchdog_then_stopping(self):
        site = Site()
        self.addCleanup(site.close)
        site.server = Proc([prog("siteward-server"), "--dir", site.dir],
                           os.path.join(site.tmp, "server.log"),
                           self.ns.env(watchdog_usec=200000))
        msg = self.ns.until("READY=1", 20)
        # READY means serving: the API answers at once
        self.assertTrue(site._ready(), "READY=1 before the server answers")
        self.assertTrue(any(l.startswith("STATUS=") for l in msg), msg)
        # fed every 100 ms (half of WATCHDOG_USEC) from the loop
        t0 = time.monotonic()
        for _ in range(5):
            self.ns.until("WATCHDOG=1", 1)
        self.assertLess(time.monotonic() - t0, 1.5)
        # a stalled loop feeds nothing
        site.server.signal(signal.SIGSTOP)
        try:
            # stopped for sure, so that what it sent before is all in the socket
            wait_for(lambda: stopped(site.server.pid), 5, "the server to be stopped")
            while self.ns.next(0.01):
                pass
            self.assertIsNone(self.ns.next(0.5), "fed while stopped")
        finally:
            site.server.signal(signal.SIGCONT)
        self.ns.until("WATCHDOG=1", 1)
        site.server.signal(signal.SIGTERM)
        self.ns.until("STOPPING=1", 5)
        wait_for(lambda: not site.server.alive(), 10, "the server to exit")
        self.assertEqual(site.server.p.returncode, 0, site.server.log())

    def test_agent_ready_and_stopping_without_watchdog(self):
        site = Site()
        self.addCleanup(site.close)
        site.start()
        a = Agent(site, "n1")
        site.agents["n1"] = a
        self.assertEqual(a.init(site.token()).returncode, 0)
        a.env = self.ns.env()
        a.start()
        self.ns.until("READY=1", 20)
        # no WATCHDOG_USEC, no feeding: nothing of it from READY to STOPPING, over a
        # life long enough for the agent's loop to have run its heartbeats
        wait_for(lambda: site.systems().get("n1", {}).get("health") == "ok", 20,
                 "the agent's first heartbeat")
        a.proc.signal(signal.SIGTERM)
        seen = []
        self.ns.until("STOPPING=1", 5, seen)
        self.assertFalse(any("WATCHDOG=1" in m for m in seen), seen)


if __name__ == "__main__":
    unittest.main()
