"""The agent's half of a site upgrade, called as the site server calls it, over the
agent's channel: stopping services with and without SIGKILL, staging signed packages
(resumed downloads, refused packages), switching into a staged version by re-executing
in place, starting the services again, and rolling back, with the services running
through it all."""
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest
import uuid

from harness import (Proc, Site, group_alive, listening_sockets, pid_alive, proc_state,
                     script, wait_for)
from harness import prog as build_prog

prog = script


def processes_running(marker):
    """Pids of live processes whose command line holds `marker`."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or not pid_alive(int(d)):
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def fd_targets(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


class StandIn:
    """The site server as the agents under test see it. Their channel is the test's: it
    sends the commands a site server sends, one call at a time, and hears the answers;
    their heartbeats (which ride on polls) are answered with the roles the test sets.
    Every other call an agent makes (its package key, its products, usage) goes on to
    the real site server, with that agent's own certificate."""

    def __init__(self, site):
        self.site = site
        self.cond = threading.Condition()
        self.queue, self.answers, self.roles, self.beats = {}, {}, {}, {}
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def caller(self):
                subject = dict(x[0] for x in self.connection.getpeercert()["subject"])
                return subject["commonName"]

            def reply(self, status, body):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def relay(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else None
                a = owner.site.agents[self.caller()]
                status, body = owner.site.api(method, self.path,
                                              ctx=owner.site.tls(*a.cert()),
                                              raw=data, timeout=30)
                self.reply(status, body if isinstance(body, str) else json.dumps(body))

            def do_GET(self):
                self.relay("GET")

            def do_POST(self):
                if self.path != "/v1/agent/poll":
                    self.relay("POST")
                    return
                name = self.caller()
                poll = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                out = {"commands": []}
                with owner.cond:
                    for ans in poll.get("answers", []):
                        owner.answers[ans["id"]] = (ans["status"], json.loads(ans["body"]))
                    owner.cond.notify_all()
                    if "heartbeat" in poll:
                        owner.beats.setdefault(name, []).append(
                            (time.time() * 1000, poll["heartbeat"]["version"]))
                        out["heartbeat"] = {"heartbeat_interval": 1,
                                            "roles": owner.roles.get(name, []),
                                            "meters": [], "products_version": 0}
                        owner.cond.notify_all()
                    else:
                        owner.cond.wait_for(lambda: owner.queue.get(name),
                                            poll.get("hold_ms", 0) / 1000)
                    out["commands"] = owner.queue.pop(name, [])
                self.reply(200, out)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # an agent that re-executes drops its connection

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(site.dir, "server.crt"),
                            os.path.join(site.dir, "server.key"))
        ctx.load_verify_locations(os.path.join(site.dir, "ca.crt"))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def call(self, name, method, path, body=None, timeout=30):
        """Sends a command down `name`'s channel: (status, answer), or (0, None) when no
        answer came within `timeout` seconds."""
        cid = uuid.uuid4().hex
        cmd = {"id": cid, "method": method, "path": path,
               "body": json.dumps(body) if body is not None else None,
               "deadline": int(time.time() * 1000 + timeout * 1000)}
        with self.cond:
            self.queue.setdefault(name, []).append(cmd)
            self.cond.notify_all()
            if not self.cond.wait_for(lambda: cid in self.answers, timeout):
                self.queue[name] = [c for c in self.queue.get(name, []) if c["id"] != cid]
                return 0, None
            return self.answers.pop(cid)

    def set_roles(self, name, roles):
        with self.cond:
            self.roles[name] = list(roles)

    def heartbeats(self, name):
        with self.cond:
            return list(self.beats.get(name, []))

    def wait_heartbeats(self, name, count):
        have = len(self.heartbeats(name))
        wait_for(lambda: len(self.heartbeats(name)) >= have + count, 5 + 2 * count,
                 f"{count} more heartbeats from {name}")

    def version(self, name):
        beats = self.heartbeats(name)
        return beats[-1][1] if beats else None

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class PackageServer:
    """Serves package files over HTTPS with the site server's certificate, as the site
    server's /v1/packages route does, honouring Range; `mode` bends the behaviour:
    "half" sends half of the body and drops the connection, "norange" ignores Range,
    "slow" trickles the body."""

    def __init__(self, site):
        self.files, self.mode, self.ranges = {}, "normal", []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                data = owner.files.get(name)
                rng = self.headers.get("Range")
                owner.ranges.append(rng)
                if data is None:
                    body = b'{"error":"no such package on this server"}'
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                start = 0
                if rng and owner.mode != "norange":
                    start = int(rng.split("=")[1].split("-")[0])
                part = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if owner.mode == "half":
                    self.wfile.write(part[:len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if owner.mode == "slow":
                    for i in range(0, len(part), 1024):
                        self.wfile.write(part[i:i + 1024])
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(part)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that goes away mid-body is part of the tests

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(site.dir, "server.crt"),
                            os.path.join(site.dir, "server.key"))
        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, path):
        data = open(path, "rb").read()
        sha = hashlib.sha256(data).hexdigest()
        self.files[sha] = data
        return sha, len(data), f"https://127.0.0.1:{self.port}/v1/packages/{sha}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class AgentUpgrade(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        cls.pkgs = PackageServer(cls.site)
        cls.standin = StandIn(cls.site)
        cls.tree = os.path.join(cls.site.tmp, "tree")
        os.makedirs(os.path.join(cls.tree, "bin"))
        for p in ("siteward-agent", "siteward-meter"):
            shutil.copy(build_prog(p), os.path.join(cls.tree, "bin", p))
        cls.packages = {}
        for v in ("9.9.9", "9.9.7"):
            out = os.path.join(cls.site.tmp, f"sp-{v}.tar.gz")
            cls.site.cli("package", "build", "--version", v, "--from", cls.tree, "-o", out)
            cls.packages[v] = out
        r = subprocess.run([build_prog("siteward-agent"), "--version"], capture_output=True,
                           text=True, check=True)
        cls.build_version = r.stdout.split()[-1]

    @classmethod
    def tearDownClass(cls):
        cls.pkgs.close()
        cls.standin.close()
        cls.site.close()

    # -- helpers --------------------------------------------------------------------
    def call(self, a, method, path, body=None, timeout=30):
        return self.standin.call(a.name, method, path, body, timeout)

    def post(self, a, step, body, timeout=30):
        return self.call(a, "POST", f"/v1/upgrade/{step}", body, timeout)

    def status(self, a):
        s, body = self.call(a, "GET", "/v1/status")
        self.assertEqual(s, 200, body)
        return body

    def svc(self, a, name):
        return {s["name"]: s for s in self.status(a)["services"]}.get(name)

    def running(self, a, name):
        s = self.svc(a, name)
        return s if s and s["state"] == "running" else None

    def deadline(self, s=20):
        return int(time.time() * 1000) + s * 1000

    def start(self, a):
        """Starts the agent with the stand-in as its site server."""
        a.proc = Proc([build_prog("siteward-agent"), "--dir", a.dir],
                      os.path.join(self.site.tmp, f"agent-{a.name}.log"))
        wait_for(lambda: self.standin.heartbeats(a.name) or not a.proc.alive(), 20,
                 f"agent {a.name} to report")
        self.assertTrue(a.proc.alive(), a.proc.log())

    def roles(self, a, *roles):
        self.standin.set_roles(a.name, roles)

    def agent(self, name, **services):
        a = self.site.enroll(name, start=False)
        for svc, (command, settings) in services.items():
            a.add_service(svc, command, **settings)
        conf = os.path.join(a.dir, "agent.conf")
        with open(conf) as f:
            text = f.read().replace(self.site.url, self.standin.url)
        with open(conf, "w") as f:
            f.write(text)
        self.roles(a, "test")
        self.start(a)
        for svc in services:
            wait_for(lambda: self.running(a, svc), 5, f"{svc} to run")
        return a

    def held(self, a):
        try:
            with open(os.path.join(a.dir, "upgrade-stopped.json")) as f:
                return sorted(json.load(f)["services"])
        except FileNotFoundError:
            return None

    def give_key(self, a):
        """The site's package key, where the agent keeps it, unless the site server can
        hand it out itself (then the agent fetches it the first time it stages)."""
        s, _ = self.site.api("GET", "/v1/site/signing-key", ctx=self.site.tls(*a.cert()))
        if s == 200:
            return True
        shutil.copy(os.path.join(self.site.dir, "signing.pub"),
                    os.path.join(a.dir, "signing.pub"))
        return False

    def stage(self, a, version, pkg=None, **over):
        sha, size, url = self.pkgs.add(pkg or self.packages[version])
        body = {"version": version, "sha256": sha, "size": size, "url": url,
                "deadline_ms": self.deadline(60)}
        body.update(over)
        return self.post(a, "stage", body, timeout=90)

    def version_of(self, a):
        try:
            s, body = self.call(a, "GET", "/v1/status", timeout=2)
            return body.get("version") if s == 200 else None
        except OSError:
            return None

    # -- stop and start --------------------------------------------------------------
    def test_stop_without_kill_leaves_stubborn_running(self):
        a = self.agent("st1", coop=(prog("cooperative.py", "st1"), {}),
                       stub=(prog("stubborn.py"), {"stop_timeout": "30"}))
        stub_pid = self.running(a, "stub")["pid"]
        coop_pid = self.running(a, "coop")["pid"]
        t0 = time.monotonic()
        s, r = self.post(a, "stop", {"grace_ms": 1000, "kill": False,
                                     "deadline_ms": self.deadline()})
        took = time.monotonic() - t0
        self.assertEqual(s, 200, r)
        self.assertEqual(r["stopped"], ["coop"])
        self.assertEqual(r["failed"], [{"service": "stub",
                                        "reason": "timed out after 1 s waiting for exit"}])
        self.assertGreater(took, 0.9)
        self.assertLess(took, 5)
        self.assertTrue(pid_alive(stub_pid), "kill:false killed the stubborn service")
        self.assertFalse(group_alive(coop_pid))
        st = self.svc(a, "stub")
        self.assertEqual((st["state"], st["pid"], st["wants_running"]),
                         ("running", stub_pid, True))
        self.assertEqual(self.held(a), ["coop"])

        # Held across heartbeats (roles re-applied) and a restart of the agent.
        self.standin.wait_heartbeats(a.name, 3)
        self.assertEqual(self.svc(a, "coop")["state"], "stopped")
        a.stop()
        self.start(a)
        self.standin.wait_heartbeats(a.name, 3)
        self.assertEqual(self.svc(a, "coop")["state"], "stopped")
        self.assertEqual(self.running(a, "stub")["pid"], stub_pid)

        # With kill, the stubborn one goes too.
        s, r = self.post(a, "stop", {"grace_ms": 1000, "kill": True,
                                     "deadline_ms": self.deadline()})
        self.assertEqual(s, 200, r)
        self.assertEqual((r["stopped"], r["failed"]), (["stub"], []))
        self.assertFalse(group_alive(stub_pid))
        self.assertEqual(self.svc(a, "stub")["reason"], "killed after 1 s grace")
        self.assertEqual(self.held(a), ["coop", "stub"])

        # A request that arrives after its deadline does nothing.
        s, r = self.post(a, "start", {"deadline_ms": int(time.time() * 1000) - 1000})
        self.assertEqual(s, 410, r)
        self.assertEqual(self.svc(a, "coop")["state"], "stopped")

        s, r = self.post(a, "start", {"deadline_ms": self.deadline()})
        self.assertEqual(s, 200, r)
        got = {x["name"]: x["state"] for x in r["services"]}
        self.assertEqual(got, {"coop": "running", "stub": "running"})
        self.assertIsNone(self.held(a))
        # idempotent: no file, the same shape for the current services
        s, r = self.post(a, "start", {"deadline_ms": self.deadline()})
        self.assertEqual(s, 200, r)
        self.assertEqual({x["name"]: x["state"] for x in r["services"]}, got)

    def test_role_back_while_its_service_stops(self):
        # what the upgrade's remove-role policy does: the role goes, and comes back
        # while its service, which ignores SIGTERM, is still being stopped
        a = self.agent("rb1", stub=(prog("stubborn.py"), {"stop_timeout": "2"}))
        pid = self.running(a, "stub")["pid"]
        self.roles(a)
        wait_for(lambda: (self.svc(a, "stub") or {}).get("state") == "stopping", 5,
                 "stub to be stopping")
        self.roles(a, "test")
        wait_for(lambda: (self.running(a, "stub") or {}).get("pid") not in (None, pid), 10,
                 "stub to run again")
        self.assertFalse(group_alive(pid), "the old run was not killed")
        self.assertTrue(pid_alive(self.running(a, "stub")["pid"]))

    # -- staging ------------------------------------------------------------------------
    def test_stage_resume_refusals_and_disk(self):
        a = self.agent("sg1")
        fetched = self.give_key(a)
        versions = os.path.join(a.dir, "versions")

        # a tampered package: announced with its own hash, refused by its signature
        data = bytearray(open(self.packages["9.9.9"], "rb").read())
        data[len(data) // 2] ^= 0xFF
        bad = os.path.join(self.site.tmp, "bad.tar.gz")
        open(bad, "wb").write(bytes(data))
        s, r = self.stage(a, "9.9.8", bad)
        self.assertEqual(s, 422, r)
        self.assertTrue(r["error"].startswith("package refused: "), r)
        self.assertEqual(os.listdir(versions), [])
        if fetched:
            self.assertEqual(open(os.path.join(a.dir, "signing.pub")).read(),
                             open(os.path.join(self.site.dir, "signing.pub")).read())
        # a package under another version's name
        s, r = self.stage(a, "9.9.8", self.packages["9.9.9"])
        self.assertEqual(s, 422, r)
        self.assertIn("holds version 9.9.9", r["error"])
        self.assertEqual(os.listdir(versions), [])
        # a hash that is not the package's
        sha, size, url = self.pkgs.add(self.packages["9.9.9"])
        s, r = self.post(a, "stage", {"version": "9.9.9", "sha256": "0" * 64, "size": size,
                                      "url": url, "deadline_ms": self.deadline()})
        self.assertEqual(s, 422, r)
        self.assertEqual(os.listdir(versions), [])

        # interrupted half-way, then resumed with a range
        self.pkgs.mode = "half"
        self.pkgs.ranges.clear()
        s, r = self.stage(a, "9.9.9")
        self.assertEqual(s, 502, r)
        part = os.path.join(versions, ".9.9.9.part")
        have = os.path.getsize(part)
        self.assertEqual(have, size // 2)
        self.pkgs.mode = "normal"
        s, r = self.stage(a, "9.9.9")
        self.assertEqual(s, 200, r)
        self.assertEqual(r, {"version": "9.9.9", "staged": True, "bytes": size,
                             "resumed_from": have})
        self.assertEqual(self.pkgs.ranges, [None, f"bytes={have}-"])
        self.assertEqual(sorted(os.listdir(versions)), [".9.9.9.sha256", "9.9.9"])
        self.assertTrue(os.access(os.path.join(versions, "9.9.9/bin/siteward-agent"), os.X_OK))
        # staged already: answered at once, nothing fetched
        self.pkgs.ranges.clear()
        s, r = self.stage(a, "9.9.9")
        self.assertEqual((s, r["staged"]), (200, True))
        self.assertEqual(self.pkgs.ranges, [])

        # a server that ignores the range: the file starts over
        self.pkgs.mode = "half"
        self.stage(a, "9.9.7")
        self.pkgs.mode = "norange"
        s, r = self.stage(a, "9.9.7")
        self.assertEqual(s, 200, r)
        self.assertEqual(r["resumed_from"], 0)
        self.pkgs.mode = "normal"

        st = self.status(a)
        self.assertEqual(st["upgrade"], {"staged": ["9.9.7", "9.9.9"], "previous": None})
        self.assertGreater(st["disk_free"], 0)

        # too slow for its deadline
        self.pkgs.mode = "slow"
        try:
            s, r = self.stage(a, "9.9.6", self.packages["9.9.9"],
                              deadline_ms=self.deadline(2))
        finally:
            self.pkgs.mode = "normal"
        self.assertEqual(s, 504, r)
        # what came of the trickle, and the seconds really waited for the rest
        self.assertRegex(r["error"], r"^download failed: answer incomplete after [12]\.\d s: "
                                     r"\d+ of \d+ bytes$")

        # more than the disk holds (packages are at most 4 GiB: only a disk with less
        # than three times that free can be tested this way)
        if st["disk_free"] < 3 * (4 << 30):
            s, r = self.stage(a, "9.9.5", size=st["disk_free"])
            self.assertEqual(s, 507, r)
            self.assertTrue(r["error"].startswith("not enough disk space: need"), r)

    # -- switch, start, rollback ------------------------------------------------------
    def test_switch_start_and_rollback(self):
        a = self.agent("sw1", coop=(prog("cooperative.py", "sw1-coop"), {}),
                       other=(prog("cooperative.py", "sw1-other"), {}))
        self.give_key(a)
        s, r = self.stage(a, "9.9.9")
        self.assertEqual(s, 200, r)
        pids = {n: self.running(a, n)["pid"] for n in ("coop", "other")}
        agent_pid = a.proc.pid
        old_sockets = {t for t in fd_targets(agent_pid) if t.startswith("socket:")}
        self.assertTrue(old_sockets)
        self.assertEqual(listening_sockets(agent_pid), [])

        s, r = self.post(a, "switch", {"version": "9.9.8"})
        self.assertEqual(s, 409, r)
        s, r = self.post(a, "rollback", {"version": "1.2.3"})
        self.assertEqual(s, 404, r)
        s, r = self.post(a, "switch", {"version": self.build_version})
        self.assertEqual((s, r), (200, {"version": self.build_version, "restarting": False}))

        # a staging under way when the agent restarts is answered, not dropped
        self.pkgs.mode = "slow"
        slow = {}
        th = threading.Thread(target=lambda: slow.update(r=self.stage(a, "9.9.7")))
        th.start()
        wait_for(lambda: os.path.exists(os.path.join(a.dir, "versions/.9.9.7.part")), 10,
                 "the slow download to begin")

        # switch with the services running: they run through the re-exec
        t0 = time.time() * 1000
        s, r = self.post(a, "switch", {"version": "9.9.9"})
        self.assertEqual((s, r), (202, {"version": "9.9.9", "restarting": True}))
        th.join(10)
        self.pkgs.mode = "normal"
        self.assertEqual(slow["r"][0], 503, slow)
        wait_for(lambda: self.version_of(a) == "9.9.9", 15, "the agent to come back as 9.9.9")
        self.assertEqual(a.proc.pid, agent_pid, "the agent did not re-execute in place")
        self.assertTrue(a.proc.alive())
        self.assertEqual(os.readlink(f"/proc/{agent_pid}/exe"),
                         os.path.join(os.path.realpath(a.dir),
                                      "versions/9.9.9/bin/siteward-agent"))
        # nothing of the old image's sockets: its connections are gone, no listener
        self.assertFalse(old_sockets & set(fd_targets(agent_pid)))
        self.assertEqual(listening_sockets(agent_pid), [])
        # the server hears of the new version at once
        wait_for(lambda: self.standin.version("sw1") == "9.9.9", 5,
                 "the server to see version 9.9.9")
        self.assertGreater(self.standin.heartbeats("sw1")[-1][0], t0)
        self.assertEqual(self.status(a)["upgrade"],
                         {"staged": ["9.9.9"], "previous": self.build_version})
        # adopted, neither restarted nor duplicated
        for n in ("coop", "other"):
            self.assertEqual(self.running(a, n)["pid"], pids[n])
            self.assertEqual(processes_running(f"sw1-{n}"), [pids[n]])

        # an adopted child that dies is reaped (no zombie) and restarted
        os.kill(pids["coop"], signal.SIGKILL)
        wait_for(lambda: (self.running(a, "coop") or {}).get("pid", pids["coop"])
                 != pids["coop"], 10, "coop to be restarted")
        wait_for(lambda: proc_state(pids["coop"]) is None, 5,
                 "the killed service to be reaped")
        self.assertEqual(len(processes_running("sw1-coop")), 1)

        # a role's own programs come from the running version
        self.roles(a, "test", "software-metering")
        wait_for(lambda: (self.svc(a, "meter") or {}).get("pid"), 10, "the meter to start")
        meter_pid = self.svc(a, "meter")["pid"]
        self.assertEqual(os.readlink(f"/proc/{meter_pid}/exe"),
                         os.path.join(os.path.realpath(a.dir),
                                      "versions/9.9.9/bin/siteward-meter"))
        self.roles(a, "test")
        wait_for(lambda: self.svc(a, "meter") is None, 15, "the meter to go")

        # stop, roll back to the build's own version, start: the upgrade's order
        s, r = self.post(a, "stop", {"grace_ms": 5000, "kill": True,
                                     "deadline_ms": self.deadline()})
        self.assertEqual(s, 200, r)
        self.assertEqual((sorted(r["stopped"]), r["failed"]), (["coop", "other"], []))
        s, r = self.post(a, "rollback", {"version": self.build_version})
        self.assertEqual((s, r), (202, {"version": self.build_version, "restarting": True}))
        wait_for(lambda: self.version_of(a) == self.build_version, 15,
                 "the agent to come back as the build's version")
        self.assertEqual(a.proc.pid, agent_pid)
        self.assertEqual(os.path.realpath(f"/proc/{agent_pid}/exe"),
                         os.path.realpath(build_prog("siteward-agent")))
        self.assertFalse(os.path.lexists(os.path.join(a.dir, "current")))
        wait_for(lambda: self.standin.version("sw1") == self.build_version, 5,
                 "the server to see the build's version")
        # heartbeats re-apply the roles: the services stay stopped
        self.standin.wait_heartbeats(a.name, 3)
        for n in ("coop", "other"):
            self.assertEqual(self.svc(a, n)["state"], "stopped")
            self.assertEqual(processes_running(f"sw1-{n}"), [])
        s, r = self.post(a, "start", {"deadline_ms": self.deadline()})
        self.assertEqual(s, 200, r)
        self.assertEqual(sorted((x["name"], x["state"]) for x in r["services"]),
                         [("coop", "running"), ("other", "running")])
        for n in ("coop", "other"):
            self.assertEqual(processes_running(f"sw1-{n}"), [self.running(a, n)["pid"]])
        s, r = self.post(a, "rollback", {"version": self.build_version})
        self.assertEqual((s, r["restarting"]), (200, False))


    def test_a_version_that_cannot_run_is_switched_back(self):
        a = self.agent("sb1", coop=(prog("cooperative.py", "sb1-coop"), {}))
        self.give_key(a)
        # a package whose agent cannot be executed (its interpreter does not exist)
        tree = os.path.join(self.site.tmp, "broken-tree")
        os.makedirs(os.path.join(tree, "bin"))
        agent_bin = os.path.join(tree, "bin", "siteward-agent")
        with open(agent_bin, "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(agent_bin, 0o755)
        shutil.copy(build_prog("siteward-meter"), os.path.join(tree, "bin"))
        pkg = os.path.join(self.site.tmp, "sp-broken.tar.gz")
        self.site.cli("package", "build", "--version", "9.9.3", "--from", tree, "-o", pkg)
        s, r = self.stage(a, "9.9.3", pkg)
        self.assertEqual(s, 200, r)
        agent_pid, coop_pid = a.proc.pid, self.running(a, "coop")["pid"]

        s, r = self.post(a, "switch", {"version": "9.9.3"})
        self.assertEqual((s, r), (202, {"version": "9.9.3", "restarting": True}))
        # the exec fails; the agent switches back and runs on as the version it was
        wait_for(lambda: f"switched back to version {self.build_version}" in a.proc.log(),
                 15, "the agent to switch back")
        self.assertIn("current/bin/siteward-agent: No such file or directory",
                      a.proc.log())
        wait_for(lambda: self.version_of(a) == self.build_version, 15,
                 "the agent to come back as the version that ran")
        self.assertEqual(a.proc.pid, agent_pid)
        self.assertEqual(os.path.realpath(f"/proc/{agent_pid}/exe"),
                         os.path.realpath(build_prog("siteward-agent")))
        current = os.path.join(a.dir, "current")
        self.assertFalse(os.path.lexists(current) and
                         os.readlink(current).endswith("9.9.3"), "still switched to 9.9.3")
        # its service ran through it all, adopted again (asked once its channel is back:
        # the heartbeat that tells the version can come before the channel's poll)
        wait_for(lambda: self.call(a, "GET", "/v1/status", timeout=5)[0] == 200, 45,
                 "the agent's channel to be back")
        self.assertEqual(self.running(a, "coop")["pid"], coop_pid)
        self.assertEqual(processes_running("sb1-coop"), [coop_pid])

if __name__ == "__main__":
    unittest.main()
