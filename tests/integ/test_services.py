"""Roles and remote service control, with real processes and real signals: every
answer within its deadline, with the precise reason."""
import json
import os
import re
import signal
import subprocess
import threading
import time
import unittest

from harness import Site, group_alive, pid_alive, script, wait_for, wait_heartbeats

prog = script


class Services(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def agent(self, name, **services):
        a = self.site.enroll(name, start=False)
        for svc, (command, settings) in services.items():
            a.add_service(svc, command, **settings)
        a.start()
        return a

    def cli(self, *args, **kw):
        return self.site.cli(*args, check=False, **kw)

    def add_role(self, a, role="test"):
        self.site.cli("role", "add", a.name, role)

    def running(self, a, svc):
        s = a.service(svc)
        return s if s and s["state"] == "running" else None

    def test_role_add_runs_and_remove_stops(self):
        a = self.agent("r1", web=(prog("cooperative.py"), {}))
        t0 = time.monotonic()
        self.add_role(a)
        s = wait_for(lambda: self.running(a, "web"), 3, "web to run")
        self.assertLess(time.monotonic() - t0, 3)
        pid = s["pid"]
        self.assertTrue(pid_alive(pid))
        # the systems list shows it as of the agent's next report, sent on the change
        wait_for(lambda: a.services().get("web", {}).get("state") == "running", 2,
                 "the systems list to show web running")
        self.assertIn("web:running", self.site.cli("systems").stdout)
        self.site.cli("role", "remove", a.name, "test")
        wait_for(lambda: not pid_alive(pid), 5, "web to stop")
        wait_for(lambda: "web" not in a.services(), 5, "web to be gone")
        self.assertFalse(group_alive(pid))
        r = self.cli("service", "status", a.name, "web")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no service named", r.stderr)

    def test_role_for_offline_agent_applies_when_it_returns(self):
        a = self.agent("r2", web=(prog("cooperative.py"), {}))
        a.stop()
        r = self.site.cli("role", "add", a.name, "test")
        self.assertIn("will apply it when it next reports", r.stdout)
        a.start()
        wait_for(lambda: self.running(a, "web"), 5, "web to run after the agent returned")

    def test_sigterm_ignored_is_killed_after_grace(self):
        a = self.agent("k1", stubborn=(prog("stubborn.py"), {"stop_timeout": "2"}))
        self.add_role(a)
        pid = wait_for(lambda: self.running(a, "stubborn"), 3, "stubborn to run")["pid"]
        t0 = time.monotonic()
        r = self.cli("service", "stop", a.name, "stubborn", "--json")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["state"], "stopped")
        self.assertEqual(out["reason"], "killed after 2 s grace")
        self.assertGreater(took, 1.9)
        self.assertLess(took, 5)
        self.assertFalse(group_alive(pid), "a child of the service survived")

    def test_frozen_service_is_stopped(self):
        a = self.agent("f1", coop=(prog("cooperative.py"), {"stop_timeout": "2"}),
                       stub=(prog("stubborn.py"), {"stop_timeout": "2"}))
        self.add_role(a)
        for svc, reason in (("coop", "stopped"), ("stub", "killed after 2 s grace")):
            pid = wait_for(lambda: self.running(a, svc), 3, f"{svc} to run")["pid"]
            os.kill(pid, signal.SIGSTOP)
            r = self.cli("service", "stop", a.name, svc, "--json")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout)["reason"], reason)
            self.assertFalse(group_alive(pid))

    def test_cooperative_stop_and_start(self):
        a = self.agent("c1", coop=(prog("cooperative.py"), {}))
        self.add_role(a)
        wait_for(lambda: self.running(a, "coop"), 3, "coop to run")
        r = self.cli("service", "stop", a.name, "coop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("c1 coop: stopped", r.stdout)
        r = self.cli("service", "start", a.name, "coop")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("running", r.stdout)
        r = self.cli("service", "restart", a.name, "coop", "--json")
        self.assertEqual(json.loads(r.stdout)["state"], "running")
        logs = self.cli("service", "logs", a.name, "coop", "--lines", "2")
        self.assertEqual(logs.returncode, 0, logs.stderr)
        self.assertIn("cooperative: up", logs.stdout)
        self.assertLessEqual(len(logs.stdout.splitlines()), 2)

    def test_environment_directory_and_restart_policy(self):
        a = self.agent("e1", env=('/bin/sh -c "echo FOO=$FOO; pwd; exit 0"',
                                  {"environment": '"FOO=two words" BAR=1',
                                   "directory": "/tmp", "restart": "on-failure"}))
        self.add_role(a)
        # exit 0 under restart = on-failure: stopped, not restarted
        s = wait_for(lambda: (lambda v: v if v and v["state"] == "stopped" else None)(
            a.service("env")), 5, "env to finish")
        self.assertIn("exited with status 0", s["reason"])
        logs = self.cli("service", "logs", a.name, "env").stdout
        self.assertIn("FOO=two words", logs)
        self.assertIn("/tmp", logs)

    def test_crash_loop_ends_failed_with_status_and_log(self):
        crashy = "/bin/sh " + os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                           "programs", "crashy.sh") + " 7"
        a = self.agent("x1", crashy=(crashy, {"restart_delay_ms": "50"}))
        self.add_role(a)
        s = wait_for(lambda: (lambda v: v if v and v["state"] == "failed" else None)(
            a.service("crashy")), 10, "crashy to fail")
        self.assertEqual(s["last_exit_status"], 7)
        self.assertIn("crashed 5 times", s["reason"])
        self.assertIn("crashy: giving up with status 7", s["log_tail"])
        r = self.cli("service", "start", a.name, "crashy")
        self.assertNotEqual(r.returncode, 0, "a start that ends failed must not succeed")

    def test_restart_and_removal_while_waiting_to_restart(self):
        a = self.agent("w1", crashy=(prog("crashy.py", "3"), {"restart_delay_ms": "30000"}))
        self.add_role(a)
        wait_for(lambda: "restarting in" in (a.service("crashy") or {}).get("reason", ""),
                 5, "crashy to wait for its restart")
        r = self.cli("service", "restart", a.name, "crashy", "--json", "--timeout", "1.5")
        # restarted at once rather than left stopped; it crashes again, and waits again
        self.assertIn(json.loads(r.stdout)["state"], ("starting", "running"))
        self.assertIn("restarting in", a.service("crashy")["reason"])
        self.site.cli("role", "remove", a.name, "test")
        wait_for(lambda: "crashy" not in a.services(), 5, "crashy to be forgotten")
        self.add_role(a)
        wait_for(lambda: (a.service("crashy") or {}).get("state") == "starting", 5,
                 "crashy to be started again when its role comes back")

    def test_agent_killed_mid_stop_finishes_the_stop(self):
        a = self.agent("m1", stub=(prog("stubborn.py", "m1"), {"stop_timeout": "4"}))
        self.add_role(a)
        pid = wait_for(lambda: self.running(a, "stub"), 3, "stub to run")["pid"]
        self.cli("service", "stop", a.name, "stub", "--timeout", "1")
        self.assertEqual(a.service("stub")["state"], "stopping")
        a.proc.kill9()
        a.start()
        # the new agent keeps to "stopped": it stops the service it found, with its grace
        s = a.service("stub")
        self.assertIn(s["state"], ("stopping", "stopped"))
        self.assertFalse(s["wants_running"])
        r = self.cli("service", "stop", a.name, "stub", "--timeout", "10", "--json")
        self.assertEqual(json.loads(r.stdout)["state"], "stopped")
        self.assertFalse(group_alive(pid))

    def test_concurrent_start_and_stop_end_consistent(self):
        tag = "z1-" + os.path.basename(self.site.tmp)  # unique to this run
        a = self.agent("z1", coop=(prog("cooperative.py", tag), {"stop_timeout": "2"}))
        self.add_role(a)
        wait_for(lambda: self.running(a, "coop"), 3, "coop to run")
        results = []

        def call(action):
            results.append(self.cli("service", action, a.name, "coop", "--json",
                                    "--timeout", "10"))

        threads = [threading.Thread(target=call, args=(act,))
                   for act in ("stop", "start", "stop", "start", "stop", "restart", "stop")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), len(threads))
        for r in results:
            self.assertIn(r.returncode, (0, 1))
            self.assertIn(json.loads(r.stdout)["state"], ("running", "stopped"))
        wait_for(lambda: (a.service("coop") or {}).get("state") in ("running", "stopped"), 10,
                 "coop to settle as running or stopped")
        # and it stays so while the agent goes on through heartbeats
        wait_heartbeats(self.site, a.name, 2)
        s = a.service("coop")
        self.assertIn(s["state"], ("running", "stopped"))
        if s["state"] == "running":
            self.assertTrue(pid_alive(s["pid"]))
        procs = subprocess.run(["pgrep", "-f", "cooperative.py " + tag], capture_output=True,
                               text=True).stdout.split()
        self.assertEqual(len(procs), 1 if s["state"] == "running" else 0, procs)

    def test_agent_kill9_keeps_track_of_services(self):
        a = self.agent("p1", coop=(prog("cooperative.py", "p1"), {}),
                       other=(prog("cooperative.py", "p1-other"), {}))
        self.add_role(a)
        pid = wait_for(lambda: self.running(a, "coop"), 3, "coop to run")["pid"]
        wait_for(lambda: self.running(a, "other"), 3, "other to run")
        a.proc.kill9()
        self.assertTrue(pid_alive(pid), "the service died with its agent")
        a.start()
        s = wait_for(lambda: self.running(a, "coop"), 5, "coop to be found again")
        self.assertEqual(s["pid"], pid, "the agent started a second copy")
        self.assertIn("found again", s["reason"])
        # still supervised: a stop reaches it, and a crash is noticed
        self.assertEqual(self.cli("service", "stop", a.name, "coop").returncode, 0)
        self.assertFalse(pid_alive(pid))
        other = a.service("other")["pid"]
        os.kill(other, signal.SIGKILL)
        wait_for(lambda: (lambda v: v and v["state"] == "running" and v["pid"] != other)(
            a.service("other")), 5, "the adopted service to be restarted after a crash")
        # a role removed while the agent is dead: its services stop when it returns
        kept = a.service("other")["pid"]
        a.proc.kill9()
        self.site.cli("role", "remove", a.name, "test")
        a.start()
        wait_for(lambda: not pid_alive(kept), 5, "the unwanted service to stop")

    def test_stuck_service_reported(self):
        freezer = "/sys/fs/cgroup/freezer"
        if not os.access(freezer, os.W_OK):
            self.skipTest("no writable cgroup v1 freezer to make an unkillable process")
        a = self.agent("s1", stuck=(prog("cooperative.py"), {"stop_timeout": "1"}))
        self.add_role(a)
        pid = wait_for(lambda: self.running(a, "stuck"), 3, "stuck to run")["pid"]
        cg = os.path.join(freezer, f"siteward-test-{os.getpid()}")
        os.mkdir(cg)
        try:
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(pid))
            with open(os.path.join(cg, "freezer.state"), "w") as f:
                f.write("FROZEN")
            t0 = time.monotonic()
            r = self.cli("service", "stop", a.name, "stuck", "--json", "--timeout", "10")
            took = time.monotonic() - t0
            self.assertNotEqual(r.returncode, 0)
            out = json.loads(r.stdout)
            self.assertEqual(out["state"], "stuck")
            self.assertIn("stuck: survived SIGKILL", out["reason"])
            self.assertLess(took, 7)  # 1 s grace + the bounded wait after SIGKILL
        finally:
            with open(os.path.join(cg, "freezer.state"), "w") as f:
                f.write("THAWED")
            wait_for(lambda: not pid_alive(pid), 5, "the thawed process to die")
            os.rmdir(cg)
        wait_for(lambda: a.service("stuck")["state"] == "stopped", 5, "stuck to be stopped")


class StaleRequests(unittest.TestCase):
    def test_frozen_agent_does_not_act_on_a_stop_its_caller_gave_up_on(self):
        site = Site(heartbeat=1)
        try:
            site.start()
            a = site.enroll("st1", start=False)
            a.add_service("coop", prog("cooperative.py", "st1"))
            a.start()
            site.cli("role", "add", "st1", "test")
            wait_for(lambda: (a.service("coop") or {}).get("state") == "running", 5,
                     "coop to run")
            a.proc.signal(signal.SIGSTOP)
            t0 = time.monotonic()
            r = site.cli("service", "stop", "st1", "coop", "--timeout", "2", check=False)
            # frozen holding its poll, the command went down it; frozen between two
            # polls, it was never delivered
            m = re.search(r"st1: (no answer after [23]\.\d s|not connected: the command was "
                          r"not delivered within 2\.0 s)", r.stderr)
            self.assertTrue(m, r.stderr)
            delivered = m.group(1).startswith("no answer")
            # frozen for at least 4 s from the request: past its deadline (2 s less a
            # margin) with 2 s to spare for the server's estimate of the agent's clock; a
            # frozen agent shows nothing that could be waited for instead
            time.sleep(max(0, t0 + 4 - time.monotonic()))
            a.proc.signal(signal.SIGCONT)
            if delivered:
                wait_for(lambda: "expired" in a.proc.log(), 5, "the stale stop to be refused")
            else:  # it polls again, and is given nothing: the caller is gone
                wait_heartbeats(site, "st1", 2, after_ms=int(time.time() * 1000))
            self.assertEqual(a.service("coop")["state"], "running")
        finally:
            site.close()


class Unreachable(unittest.TestCase):
    """An agent that cannot be reached costs its deadline, not a hang, and delays nobody."""

    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        cls.healthy = cls.site.enroll("good", start=False)
        cls.healthy.add_service("stub", prog("stubborn.py"), stop_timeout="1")
        cls.healthy.start()
        cls.site.cli("role", "add", "good", "test")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def timed_stop(self, name, timeout="3"):
        t0 = time.monotonic()
        r = self.site.cli("service", "stop", name, "svc", "--timeout", timeout, check=False)
        return r, time.monotonic() - t0

    def test_killed_agent(self):
        a = self.site.enroll("dead1")
        a.proc.kill9()
        r, took = self.timed_stop("dead1")
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, r"dead1: (not connected|no answer after 3\.\d s)")
        self.assertLess(took, 3 + 1)

    def test_frozen_and_silent_agents_cost_their_deadline_only(self):
        """A frozen agent holds its connection and answers nothing; a silent one takes
        the command, says on every poll that it runs it, and never answers. Each costs
        its caller the deadline; a healthy system's stop meanwhile is not delayed."""
        frozen = self.site.enroll("frozen1")
        silent = self.site.enroll("silent1")
        silent.stop()
        ctx = self.site.tls(*silent.cert())
        taken, stop = [], threading.Event()

        def silent_agent():
            while not stop.is_set():
                status, body = self.site.api(
                    "POST", "/v1/agent/poll",
                    {"answers": [], "running": list(taken), "hold_ms": 500}, ctx=ctx)
                if status == 200:
                    taken.extend(c["id"] for c in body["commands"])

        poller = threading.Thread(target=silent_agent, daemon=True)
        poller.start()
        frozen.proc.signal(signal.SIGSTOP)
        try:
            wait_for(lambda: self.site.api("GET", "/v1/systems/good/services/stub")[1]
                     .get("state") == "running", 5, "the healthy service")
            out = {}

            def run(key, *args):
                t0 = time.monotonic()
                r = self.site.cli(*args, check=False)
                out[key] = (r, time.monotonic() - t0)

            threads = [
                threading.Thread(target=run, args=("frozen", "service", "stop", "frozen1",
                                                   "svc", "--timeout", "5")),
                threading.Thread(target=run, args=("silent", "service", "stop", "silent1",
                                                   "svc", "--timeout", "5")),
            ]
            for t in threads:
                t.start()
            # both calls under way: the silent agent has taken its command
            wait_for(lambda: taken, 10, "the silent agent to take the command")
            run("good", "service", "stop", "good", "stub", "--timeout", "5")
            for t in threads:
                t.join(20)
            for key in ("frozen", "silent"):
                r, took = out[key]
                self.assertNotEqual(r.returncode, 0, key)
                # the silent agent took the command; the frozen one took it if it was
                # holding its poll when it froze, and was never reached if it froze
                # between two polls: either way the caller waits its deadline, no more
                self.assertRegex(r.stderr, r": no answer after [56]\.\d s" if key == "silent"
                                 else r"frozen1: (no answer after [56]\.\d s|not connected: "
                                      r"the command was not delivered within 5\.0 s)", key)
                self.assertLess(took, 5 + 1, key)
                self.assertGreater(took, 4.5, key)
            r, took = out["good"]
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("killed after 1 s grace", r.stdout)
            self.assertLess(took, 2.5, "a stop on a healthy system was delayed")
            # the server itself stayed responsive throughout
            self.assertEqual(self.site.api("GET", "/v1/systems")[0], 200)
        finally:
            stop.set()
            frozen.proc.signal(signal.SIGCONT)
            poller.join(10)


if __name__ == "__main__":
    unittest.main()
