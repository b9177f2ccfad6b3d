"""The agents' channel on the site server: an agent's poll is held until there is a
command for it; the command carries an id and a deadline; its answer comes back on the
next poll; what is not answered in time fails with a reason that says whether it was
delivered. Driven here by a client that polls with a real agent's certificate."""
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

from harness import Site, listening_sockets, script, wait_for, wait_heartbeats


def connections(pid, port):
    """Local ports of the TCP connections process `pid` has to `port` on loopback."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dport", "=", f":{port}"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return {line.split()[2].rsplit(":", 1)[1] for line in out.splitlines()
            if f"pid={pid}," in line}


class Poller:
    """Polls as the agent `name` would, with its certificate."""

    def __init__(self, site, name):
        self.site = site
        a = site.agents[name]
        self.ctx = site.tls(os.path.join(a.dir, "agent.crt"), os.path.join(a.dir, "agent.key"))

    def poll(self, answers=(), running=(), hold_ms=20000, timeout=30):
        body = {"answers": list(answers), "running": list(running), "hold_ms": hold_ms}
        return self.site.api("POST", "/v1/agent/poll", body, ctx=self.ctx, timeout=timeout)

    def poll_in_background(self, **kw):
        out = {}

        def run():
            out["reply"] = self.poll(**kw)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out


def answer(cmd, status, body):
    return {"id": cmd["id"], "status": status, "body": json.dumps(body)}


class Channel(unittest.TestCase):
    def setUp(self):
        self.site = Site(heartbeat=1)
        self.site.start()
        self.site.enroll("p1", start=False)
        self.poller = Poller(self.site, "p1")

    def tearDown(self):
        self.site.close()

    def status_in_background(self, timeout):
        out = {}

        def run():
            out["reply"] = self.site.api(
                "GET", f"/v1/systems/p1/services/work?timeout={timeout}", timeout=timeout + 10)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, out

    def test_a_late_loop_sheds_polls_with_retry_after(self):
        """The server frozen for 3 s (its loop that late when it wakes): a poll waiting
        on a connection it already holds is answered 503 with a Retry-After, not
        taken; a moment later polls are taken again."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.site.port,
                                           context=self.poller.ctx, timeout=30)
        self.addCleanup(conn.close)
        body = json.dumps({"answers": [], "running": [], "hold_ms": 0})

        def poll():
            conn.request("POST", "/v1/agent/poll", body=body)
            r = conn.getresponse()
            return r.status, r.getheader("Retry-After"), json.loads(r.read())

        self.assertEqual(poll()[0], 200)  # the connection is up, its handshake done
        self.site.server.signal(signal.SIGSTOP)
        try:
            out = {}
            t = threading.Thread(target=lambda: out.update(r=poll()), daemon=True)
            t.start()
            time.sleep(3)  # the freeze itself is what is tested: nothing to wait for
        finally:
            self.site.server.signal(signal.SIGCONT)
        t.join(15)
        status, after, reply = out["r"]
        self.assertEqual(status, 503, reply)
        self.assertIn("busy", reply["error"])
        self.assertTrue(2 <= int(after) <= 10, after)
        wait_for(lambda: self.poller.poll(hold_ms=0)[0] == 200, 10, "polls to be taken again")
        wait_for(lambda: re.search(r"shedding load: \d+ polls answered 503 \(the loop ran up "
                                   r"to [23]\d\d\d ms late\)", self.site.server.log()), 5,
                 "the shedding to be logged")

    def test_a_command_goes_down_the_held_poll_and_its_answer_comes_back(self):
        t0 = time.monotonic()
        self.assertEqual(self.poller.poll(hold_ms=0), (200, {"commands": []}))
        self.assertLess(time.monotonic() - t0, 5)
        poll, got = self.poller.poll_in_background()
        asked, reply = self.status_in_background(10)
        poll.join(15)
        status, body = got["reply"]
        self.assertEqual(status, 200, body)
        [cmd] = body["commands"]
        self.assertEqual((cmd["method"], cmd["path"]), ("GET", "/v1/services/work"))
        # the deadline is on the agent's clock, a little before the caller's
        self.assertLess(cmd["deadline"], time.time() * 1000 + 10000)
        self.assertGreater(cmd["deadline"], time.time() * 1000 + 5000)
        self.assertTrue(cmd["id"])
        status, body = self.poller.poll(
            answers=[answer(cmd, 200, {"name": "work", "state": "running"})], hold_ms=0)
        self.assertEqual(status, 200)
        asked.join(15)
        status, body = reply["reply"]
        self.assertEqual(status, 200, body)
        self.assertEqual((body["system"], body["name"], body["state"]), ("p1", "work", "running"))

    def test_an_agent_refusal_reaches_the_caller(self):
        self.poller.poll(hold_ms=0)
        poll, got = self.poller.poll_in_background()
        asked, reply = self.status_in_background(10)
        poll.join(15)
        [cmd] = got["reply"][1]["commands"]
        self.poller.poll(answers=[answer(cmd, 404, {"error": "no service named 'work' on p1"})],
                         hold_ms=0)
        asked.join(15)
        status, body = reply["reply"]
        self.assertEqual(status, 404, body)
        self.assertIn("no service named 'work'", body["error"])

    def test_no_answer_by_the_deadline(self):
        """Delivered, never answered: the caller hears at its deadline that nothing came."""
        self.poller.poll(hold_ms=0)
        poll, got = self.poller.poll_in_background()
        t0 = time.monotonic()
        asked, reply = self.status_in_background(1)
        poll.join(15)
        self.assertEqual(len(got["reply"][1]["commands"]), 1)
        asked.join(15)
        took = time.monotonic() - t0
        status, body = reply["reply"]
        self.assertEqual(status, 504, body)
        self.assertIn("no answer after 1.0 s", body["error"])
        self.assertLess(took, 5)

    def test_not_delivered_by_the_deadline(self):
        """An agent that polled lately but does not now (frozen, or its link cut): the
        command waits for it until the deadline, and the reason says it never went."""
        self.poller.poll(hold_ms=0)
        status, body = self.site.api("GET", "/v1/systems/p1/services/work?timeout=1",
                                     timeout=15)
        self.assertEqual(status, 504, body)
        self.assertIn("not delivered within 1.0 s", body["error"])
        # a command past its deadline is not sent later
        self.assertEqual(self.poller.poll(hold_ms=0), (200, {"commands": []}))

    def test_a_lost_reply_is_sent_again_with_the_same_id(self):
        """The poll that carried a command was lost: the next poll shows the agent neither
        answered nor runs it, so it goes again, with its id, for the agent to run once.
        One the agent runs is not sent again."""
        self.poller.poll(hold_ms=0)
        poll, got = self.poller.poll_in_background()
        asked, reply = self.status_in_background(10)
        poll.join(15)
        [cmd] = got["reply"][1]["commands"]
        status, body = self.poller.poll(hold_ms=0)
        self.assertEqual([c["id"] for c in body["commands"]], [cmd["id"]])
        status, body = self.poller.poll(running=[cmd["id"]], hold_ms=0)
        self.assertEqual(body["commands"], [])
        self.poller.poll(answers=[answer(cmd, 200, {"name": "work", "state": "stopped"})],
                         hold_ms=0)
        asked.join(15)
        self.assertEqual(reply["reply"][1]["state"], "stopped")

    def test_a_second_poll_replaces_the_first(self):
        """An agent back on a new connection while its old poll is still held (a link
        cut without a word): the old one is answered 409, the new one holds."""
        self.poller.poll(hold_ms=0)
        first, got1 = self.poller.poll_in_background(hold_ms=3000)
        second, got2 = self.poller.poll_in_background(hold_ms=3000)
        first.join(15)
        second.join(15)
        self.assertEqual(sorted([got1["reply"][0], got2["reply"][0]]), [200, 409],
                         (got1, got2))

    def test_removal_ends_the_poll_and_fails_the_commands(self):
        self.poller.poll(hold_ms=0)
        poll, got = self.poller.poll_in_background()
        asked, reply = self.status_in_background(20)
        poll.join(15)
        self.assertEqual(len(got["reply"][1]["commands"]), 1)
        # delivered, not answered: the system is removed meanwhile
        t0 = time.monotonic()
        status, body = self.site.api("DELETE", "/v1/systems/p1")
        self.assertEqual(status, 200, body)
        asked.join(15)
        self.assertLess(time.monotonic() - t0, 10)
        status, body = reply["reply"]
        self.assertEqual(status, 502, body)
        self.assertIn("the system was removed", body["error"])
        status, body = self.poller.poll(hold_ms=0)
        self.assertEqual(status, 403, body)

    def test_hostile_polls_are_refused(self):
        admin = self.site.admin_tls()
        status, _ = self.site.api("POST", "/v1/agent/poll", {"hold_ms": 0}, ctx=admin)
        self.assertEqual(status, 403)
        for bad in ({"answers": "x"}, {"running": {}}, {"hold_ms": -1},
                    {"answers": [{"id": 7, "status": 200}]},
                    {"answers": [{"id": "a", "status": 99}]},
                    {"answers": [{"id": "x" * 40, "status": 200}]},
                    {"running": [1]}, {"running": ["a"] * 1001}):
            status, body = self.site.api("POST", "/v1/agent/poll", bad, ctx=self.poller.ctx)
            self.assertEqual(status, 400, body)
            self.assertIn("bad poll", body["error"])
        # an answer to a command nobody sent changes nothing
        status, body = self.poller.poll(
            answers=[{"id": "no-such", "status": 200, "body": "{}"}], hold_ms=0)
        self.assertEqual(status, 200, body)


class AgentChannel(unittest.TestCase):
    """A real agent: the server's commands reach it over the connection it keeps; it
    listens on nothing."""

    def setUp(self):
        self.site = Site(heartbeat=1)
        self.addCleanup(self.site.close)
        self.site.start()
        a = self.a = self.site.enroll("c1", start=False)
        a.add_service("work", script("cooperative.py", "c1"), stop_timeout="2")
        self.addCleanup(lambda: a.proc and a.proc.alive() and a.proc.signal(signal.SIGCONT))
        a.start()
        self.site.cli("role", "add", "c1", "test")
        wait_for(lambda: self.site.systems()["c1"]["channel"], 15, "c1's channel")
        wait_for(lambda: self.state() == "running", 15, "work to run")

    def state(self):
        s = self.a.service("work")
        return s and s["state"]

    def test_service_commands_go_over_the_channel(self):
        for action, state in (("stop", "stopped"), ("start", "running"),
                              ("restart", "running")):
            r = self.site.cli("service", action, "c1", "work", "--json", check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["state"], state)
            self.assertEqual(self.state(), state)
        r = self.site.cli("service", "logs", "c1", "work", "--lines", "5", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        # none of it dialled the agent: it listens on nothing
        self.assertEqual(listening_sockets(self.a.proc.pid), [])

    def test_one_connection_carries_everything(self):
        """Heartbeats go on polls, commands and their answers on the same connection:
        the agent keeps one to the server, the same one throughout, and the address
        shown for it is where that connection comes from."""
        seen = set()

        def sample():
            seen.update(connections(self.a.proc.pid, self.site.port))
            return False

        after = self.site.systems()["c1"]["last_seen"]
        for action in ("stop", "start"):
            sample()
            r = self.site.cli("service", action, "c1", "work", "--json", check=False)
            self.assertEqual(r.returncode, 0, r.stderr)
            sample()
        # heartbeats come on polls, one interval apart, and change what the server shows
        wait_heartbeats(self.site, "c1", count=3, after_ms=after)
        sample()
        self.assertEqual(len(seen), 1, f"connections from the agent: {seen}")
        self.assertEqual(self.site.systems()["c1"]["address"], "127.0.0.1")

    def test_a_command_past_its_deadline_is_never_run(self):
        """The agent frozen while its poll is held: the command goes down that poll,
        the caller hears at its deadline that no answer came, and the agent, woken,
        finds the command expired and does not run it."""
        for _ in range(5):
            self.a.proc.signal(signal.SIGSTOP)
            r = self.site.cli("service", "stop", "c1", "work", "--timeout", "2", check=False)
            self.a.proc.signal(signal.SIGCONT)
            self.assertNotEqual(r.returncode, 0)
            if "not delivered" not in r.stderr:
                break
            # frozen between two polls (one answered, the next not yet sent): the
            # command had no poll to go down; try again once the agent polls
            wait_for(lambda: self.site.systems()["c1"]["channel"], 15, "c1's channel")
        self.assertIn("no answer after 2.0 s", r.stderr)
        wait_for(lambda: "not running POST /v1/services/work/stop" in self.a.proc.log(), 15,
                 "the agent to refuse the expired command")
        r = self.site.cli("service", "status", "c1", "work", "--json", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["state"], "running")


if __name__ == "__main__":
    unittest.main()
