"""A site server restarted under a fleet: thousands of simulated agents (bench/fleet, in
several load processes, each agent with an identity and a connection of its own, polling
and backing off as the agent does) hold their channels; the server restarts; every agent
is back within the bound, and the server's log says it shed load in a few lines, not a
line per agent."""
import json
import os
import subprocess
import threading
import time
import unittest

from harness import Site, prog, wait_for

# Once, in the plain build on SQLite: under ASan and UBSan (every handshake several
# times the cost) and on PostgreSQL the channel's code is the same, and the other
# channel tests run it there; the suite keeps to its time.
AGAIN = "asan" in os.environ.get("SITEWARD_BUILD", "") or os.environ.get("SITEWARD_TEST_DB")
# 3,000 in the suite, where it runs beside four other modules on two cores; 5,000 alone
# were back in 27 s (README's Capacity)
AGENTS = 3000
PROCESSES = 3
MAKERS = 6  # identity makers at once: the server takes enrollments faster than one asks
HEARTBEAT_S = 5
# Back within: the restart, one handshake for every agent on one core (well under 10 s
# here), and the longest an agent that was turned away waits before it asks again (four
# heartbeat intervals, 20 s), with room for a loaded machine.
BOUND_S = 60


class Fleet:
    """One `fleet run` process; `connected` follows its once-a-second lines."""

    def __init__(self, site, dirs, count):
        self.connected, self.lines = 0, []
        self.p = subprocess.Popen(
            [prog("bench/fleet"), "run", "--url", site.url, "--count", str(count)] +
            [arg for d in dirs for arg in ("--ids", d)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip())
            for field in line.split():
                if field.startswith("connected="):
                    self.connected = int(field.split("=")[1])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.t.join(5)


@unittest.skipIf(AGAIN, "run once, in the plain build on SQLite")
class FleetRestart(unittest.TestCase):
    def setUp(self):
        self.site = Site(heartbeat=HEARTBEAT_S)
        self.addCleanup(self.site.close)
        self.site.start()
        per = AGENTS // MAKERS
        dirs = [os.path.join(self.site.tmp, f"fleet{i}") for i in range(MAKERS)]
        # identities made through the server's API, several makers at once
        t0 = time.monotonic()
        makers = [subprocess.Popen(
            [prog("bench/fleet"), "enroll", "--site", self.site.dir, "--url", self.site.url,
             "--out", d, "--count", str(per), "--prefix", f"f{i}-"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i, d in enumerate(dirs)]
        for m in makers:
            out, _ = m.communicate(timeout=300)
            self.assertEqual(m.returncode, 0, out)
        print(f"\n{per * MAKERS} identities made in {time.monotonic() - t0:.1f} s")
        # each load process runs the identities of two makers
        self.fleets = [Fleet(self.site, dirs[i::PROCESSES], per * MAKERS // PROCESSES)
                       for i in range(PROCESSES)]
        for f in self.fleets:
            self.addCleanup(f.stop)
        self.total = per * MAKERS

    def connected(self):
        for f in self.fleets:
            if f.p.poll() is not None:
                raise AssertionError("a fleet process exited:\n" + "\n".join(f.lines[-20:]))
        return sum(f.connected for f in self.fleets)

    def test_every_agent_back_within_the_bound_after_a_restart(self):
        # the fleet's first connections are the set-up, not what is measured: on a
        # loaded machine they may take longer than a restart's return is allowed
        wait_for(lambda: self.connected() == self.total, 3 * BOUND_S,
                 f"all {self.total} agents to connect")
        log_before = len(self.site.server.log().splitlines())
        self.site.stop()
        t0, since_ms = time.monotonic(), time.time() * 1000
        self.site.start()

        # the restart ended every channel; an agent is back when the server has its
        # heartbeat, which the first poll after a failure carries
        def back():
            self.connected()  # the load processes still run
            # the CLI queues behind thousands of handshakes and may give up (after its
            # connect bound) while they are done: that reading is a "not yet"
            r = self.site.cli("systems", "--json", check=False)
            if r.returncode != 0:
                self.assertIn("no connection after", r.stderr)
                return False
            systems = json.loads(r.stdout)["systems"]
            self.back_now = sum(s["last_seen"] > since_ms for s in systems)
            return self.back_now == self.total

        self.back_now = 0
        try:
            wait_for(back, BOUND_S, f"all {self.total} agents back after the restart",
                     step=1)
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.back_now} were, connected as the load "
                                 f"processes count: {self.connected()}") from None
        took = time.monotonic() - t0
        print(f"\n{self.total} agents back {took:.1f} s after the restart began")
        self.assertEqual(len(self.site.systems()), self.total)
        wait_for(lambda: self.connected() == self.total, 10, "every load process to agree")
        # no error storm: what the server said of it fits in a few lines
        lines = self.site.server.log().splitlines()[log_before:]
        noisy = [line for line in lines if " warn:" in line or " error:" in line]
        self.assertLess(len(noisy), 2 * BOUND_S, "\n".join(noisy[:20]))
        self.assertFalse([line for line in noisy if " error:" in line], "\n".join(noisy[:20]))


if __name__ == "__main__":
    unittest.main()
