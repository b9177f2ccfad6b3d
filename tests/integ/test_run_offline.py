"""siteward-run with no metering server to answer: the program runs as if run directly,
its status comes back, and the run is recorded for the agent to upload; or, by policy,
it is refused. Dead and silent servers cost at most their deadlines."""
import json
import os
import pty
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from harness import SANITIZER_MARKERS, Site, free_port, prog


class RunOffline(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.site.start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def setUp(self):
        # A fresh enrolled agent's folder per test; the agent itself is not running, so
        # nothing writes meters.json or takes records from usage-cache. It ran long
        # enough to leave this user a ticket, which siteward-run shows metering servers.
        RunOffline.n += 1
        self.agent = self.site.enroll(f"run{RunOffline.n}")
        self.agent.ticket()
        self.agent.stop()
        self.dir = self.agent.dir
        self.cache = os.path.join(self.dir, "usage-cache")
        shutil.rmtree(self.cache)  # as siteward-run finds it where no agent made it

    def run_prog(self, *argv, timeout=30, env=None, opts=()):
        r = subprocess.run([prog("siteward-run"), "--agent", self.dir, *opts, "--", *argv],
                           capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, **(env or {})), stdin=subprocess.DEVNULL)
        self.assert_clean(r.stderr)
        return r

    def assert_clean(self, stderr):
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, stderr)

    def records(self):
        if not os.path.isdir(self.cache):
            return []
        out = []
        for name in sorted(os.listdir(self.cache)):
            self.assertTrue(name.endswith(".json"), f"stray file {name} in usage-cache")
            with open(os.path.join(self.cache, name)) as f:
                rec = json.load(f)
            self.assertEqual(name, rec["id"] + ".json")
            out.append(rec)
        return out

    def set_conf(self, text):
        with open(os.path.join(self.dir, "agent.conf"), "a") as f:
            f.write(text)

    def test_run_offline_exit_status_and_record(self):
        t0 = time.time() * 1000
        r = self.run_prog("/bin/sh", "-c", "echo out; echo err >&2; exit 3")
        t1 = time.time() * 1000
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(r.stdout, "out\n")
        self.assertEqual(r.stderr, "err\n")  # the program's own; siteward-run is quiet
        recs = self.records()
        self.assertEqual(len(recs), 1)
        rec = recs[0]
        self.assertRegex(rec["id"], r"^[0-9a-f]{32}$")
        self.assertEqual(rec["kind"], "run")
        self.assertEqual(rec["source"], "offline")
        self.assertIsNone(rec["product"])
        self.assertEqual(rec["exe"], "sh")
        self.assertEqual(rec["host"], self.agent.name)
        self.assertEqual(rec["user"], __import__("pwd").getpwuid(os.getuid()).pw_name)
        self.assertEqual(rec["wait_ms"], 0)
        self.assertLessEqual(t0 - 5, rec["start"])
        self.assertLessEqual(rec["start"], rec["end"])
        self.assertLessEqual(rec["end"], t1 + 5)
        self.assertEqual(os.stat(self.cache).st_mode & 0o777, 0o700)
        # /bin/sh is dash's: the record carries the package's version, for products
        # told apart by version
        dash = subprocess.run(["dpkg-query", "--show", "--showformat=${Version}", "dash"],
                              capture_output=True, text=True, check=True).stdout
        self.assertEqual(rec["version"], dash)
        # one file per run
        self.assertEqual(self.run_prog("true").returncode, 0)
        recs = self.records()
        self.assertEqual(len(recs), 2)
        self.assertEqual(len({x["id"] for x in recs}), 2)
        # a program no package installed has no version in its record
        copy = os.path.join(self.dir, "mytool")
        shutil.copy("/usr/bin/true", copy)
        self.assertEqual(self.run_prog(copy).returncode, 0)
        mine = [x for x in self.records() if x["exe"] == "mytool"]
        self.assertEqual(len(mine), 1)
        self.assertNotIn("version", mine[0])

    def test_run_offline_empty_meters_file_and_path_search(self):
        with open(os.path.join(self.dir, "meters.json"), "w") as f:
            f.write("")
        r = self.run_prog("sh", "-c", "exit 0")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(self.dir, "meters.json"), "w") as f:
            json.dump({"meters": []}, f)
        self.assertEqual(self.run_prog("true").returncode, 0)
        self.assertEqual([x["exe"] for x in self.records()].count("sh"), 1)
        self.assertEqual(len(self.records()), 2)

    def test_run_offline_killed_by_signal(self):
        r = self.run_prog("/bin/sh", "-c", "kill -TERM $$")
        self.assertEqual(r.returncode, 128 + signal.SIGTERM, r.stderr)
        recs = self.records()
        self.assertEqual(len(recs), 1)
        self.assertEqual(recs[0]["source"], "offline")

    def test_run_offline_forwards_signals(self):
        p = subprocess.Popen([prog("siteward-run"), "--agent", self.dir, "--", "/bin/sh", "-c",
                              "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertEqual(p.stdout.readline(), "ready\n")
            p.send_signal(signal.SIGTERM)  # to siteward-run only: it passes it on
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assert_clean(p.stderr.read())
        p.stdout.close()
        p.stderr.close()
        self.assertEqual(p.returncode, 7)
        self.assertEqual(len(self.records()), 1)

    def test_run_offline_terminal_interrupt_reaches_program_once(self):
        # Control-C on a terminal signals the whole foreground group: siteward-run must
        # not pass it on as well.
        counter = ("import signal, sys, time\n"
                   "n = []\n"
                   "signal.signal(signal.SIGINT, lambda *a: n.append(1))\n"
                   "print('ready', flush=True)\n"
                   "time.sleep(1)\n"
                   "sys.exit(10 + len(n))\n")
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execv(prog("siteward-run"), ["siteward-run", "--agent", self.dir, "--",
                                                 sys.executable, "-c", counter])
            finally:
                os._exit(99)
        out = b""
        try:
            deadline = time.monotonic() + 20
            while b"ready" not in out and time.monotonic() < deadline:
                out += os.read(fd, 1024)
            os.write(fd, b"\x03")
            while True:
                try:
                    chunk = os.read(fd, 1024)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            _, st = os.waitpid(pid, 0)
            os.close(fd)
        self.assert_clean(out.decode(errors="replace"))
        self.assertEqual(os.waitstatus_to_exitcode(st), 11, out)

    def test_run_offline_signal_while_asking_ends_run(self):
        # Before the program starts, a signal has its usual effect on siteward-run.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        marker = os.path.join(self.site.tmp, f"ran-{self.agent.name}")
        asking = None
        try:
            with open(os.path.join(self.dir, "meters.json"), "w") as f:
                json.dump({"meters": [f"https://127.0.0.1:{silent.getsockname()[1]}"]}, f)
            # the usual effect: a suite started in the background by a shell inherits
            # SIGINT ignored, and siteward-run rightly keeps what it inherits
            p = subprocess.Popen([prog("siteward-run"), "--agent", self.dir, "--",
                                  "touch", marker], stderr=subprocess.PIPE, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                  signal.SIG_DFL))
            # asking: connected to the server that never answers
            silent.settimeout(10)
            try:
                asking, _ = silent.accept()
            except socket.timeout:
                p.kill()
                p.wait()
                self.fail("siteward-run never connected to the metering server")
            p.send_signal(signal.SIGINT)
            self.assertEqual(p.wait(10), -signal.SIGINT)
            self.assert_clean(p.stderr.read())
            p.stderr.close()
        finally:
            if asking:
                asking.close()
            silent.close()
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(self.records(), [])

    def test_run_offline_not_found_and_not_executable(self):
        r = self.run_prog("no-such-program-here")
        self.assertEqual(r.returncode, 127)
        self.assertIn("no-such-program-here: command not found", r.stderr)
        r = self.run_prog("/nonexistent/program")
        self.assertEqual(r.returncode, 127)
        r = self.run_prog(os.path.join(self.dir, "agent.conf"))  # not executable
        self.assertEqual(r.returncode, 126)
        self.assertIn("Permission denied", r.stderr)
        # found, but what would run it is not: execve itself fails, after the search
        script = os.path.join(self.site.tmp, f"badinterp-{self.agent.name}")
        with open(script, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(script, 0o755)
        r = self.run_prog(script)
        self.assertEqual(r.returncode, 127)
        self.assertIn("interpreter", r.stderr)
        self.assertEqual(self.records(), [])  # nothing ran, nothing to record

    def test_run_offline_policy_deny(self):
        self.set_conf("\n[run]\noffline = deny\n")
        marker = os.path.join(self.site.tmp, f"ran-{self.agent.name}")
        r = self.run_prog("/bin/sh", "-c", f"touch {marker}")
        self.assertEqual(r.returncode, 75)
        self.assertEqual(r.stderr, "siteward-run: denied: no metering server answered\n")
        self.assertFalse(os.path.exists(marker), "the program ran although denied")
        self.assertEqual(self.records(), [])

    def test_run_offline_bad_policy_and_folder(self):
        self.set_conf("\n[run]\noffline = maybe\n")
        r = self.run_prog("true")
        self.assertEqual(r.returncode, 78)
        self.assertIn("[run] offline must be 'run' or 'deny'", r.stderr)
        r = subprocess.run([prog("siteward-run"), "--agent", "/nonexistent", "--", "true"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 78)
        # neither --agent nor SITEWARD_AGENT: the default folder, which this machine lacks
        if not os.path.exists("/var/lib/siteward/agent"):
            env = {k: v for k, v in os.environ.items() if k != "SITEWARD_AGENT"}
            r = subprocess.run([prog("siteward-run"), "true"], capture_output=True, text=True,
                               timeout=10, env=env)
            self.assertEqual(r.returncode, 78)
            self.assertIn("/var/lib/siteward/agent", r.stderr)

    def test_run_offline_agent_from_environment(self):
        r = subprocess.run([prog("siteward-run"), "--", "/bin/sh", "-c", "exit 5"],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, SITEWARD_AGENT=self.dir))
        self.assertEqual(r.returncode, 5, r.stderr)
        self.assertEqual(len(self.records()), 1)

    def test_run_offline_silent_and_closed_servers(self):
        # One server accepts connections and never answers (the kernel completes the
        # handshake into the backlog; nobody calls accept); another port is closed.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            closed = free_port()
            meters = [f"https://127.0.0.1:{silent.getsockname()[1]}",
                      f"https://127.0.0.1:{closed}"]
            with open(os.path.join(self.dir, "meters.json"), "w") as f:
                json.dump({"meters": meters}, f)
            t0 = time.monotonic()
            r = self.run_prog("/bin/sh", "-c", "exit 4", timeout=60)
            took = time.monotonic() - t0
        finally:
            silent.close()
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertLess(took, 2 * 5 + 3, "siteward-run waited past its deadlines")
        self.assertEqual(r.stderr, "")
        recs = self.records()
        self.assertEqual(len(recs), 1)
        self.assertEqual((recs[0]["kind"], recs[0]["source"]), ("run", "offline"))

        # The same with the policy to refuse: denied, within the same bound.
        self.set_conf("\n[run]\noffline = deny\n")
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        try:
            with open(os.path.join(self.dir, "meters.json"), "w") as f:
                json.dump({"meters": [f"https://127.0.0.1:{silent.getsockname()[1]}"]}, f)
            t0 = time.monotonic()
            r = self.run_prog("true", timeout=60)
            took = time.monotonic() - t0
        finally:
            silent.close()
        self.assertEqual(r.returncode, 75)
        self.assertLess(took, 5 + 3)
        self.assertEqual(len(self.records()), 1)

    def test_run_offline_unrecordable_run_keeps_status(self):
        with open(self.cache, "w") as f:  # a file where the folder should be
            f.write("")
        r = self.run_prog("/bin/sh", "-c", "exit 6")
        self.assertEqual(r.returncode, 6)
        self.assertIn("siteward-run: this run is not recorded: cannot create", r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1)

    def test_run_offline_server_that_stalls_after_handshake(self):
        # A server with a site certificate that completes TLS, reads the request and
        # never answers: the request's total deadline (5 s) ends the wait.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.agent.cert())
        ctx.load_verify_locations(os.path.join(self.dir, "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.settimeout(0.2)
        held, stop = [], threading.Event()

        def serve():
            while not stop.is_set():
                try:
                    conn, _ = lsock.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                try:
                    conn.settimeout(10)
                    tls = ctx.wrap_socket(conn, server_side=True)
                    tls.recv(65536)
                    held.append(tls)
                except OSError:
                    conn.close()
                    return

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            with open(os.path.join(self.dir, "meters.json"), "w") as f:
                json.dump({"meters": [f"https://127.0.0.1:{lsock.getsockname()[1]}"]}, f)
            t0 = time.monotonic()
            r = self.run_prog("/bin/sh", "-c", "exit 9", opts=("--verbose",), timeout=60)
            took = time.monotonic() - t0
        finally:
            stop.set()
            t.join(5)
            lsock.close()
            for c in held:
                c.close()
        self.assertEqual(r.returncode, 9, r.stderr)
        self.assertEqual(len(held), 1, "the request never reached the server")
        self.assertGreater(took, 4.5)
        self.assertLess(took, 5 + 3)
        self.assertRegex(r.stderr, r"no answer after [56]\.\d s")
        self.assertEqual(len(self.records()), 1)

    def test_run_offline_malformed_meters_file(self):
        with open(os.path.join(self.dir, "meters.json"), "w") as f:
            f.write("{not json")
        r = self.run_prog("true")
        self.assertEqual(r.returncode, 0)
        self.assertIn("meters.json", r.stderr)
        self.assertEqual(len(self.records()), 1)


if __name__ == "__main__":
    unittest.main()
