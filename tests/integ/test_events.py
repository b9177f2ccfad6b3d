"""An upgrade followed as an event stream (GET /v1/upgrades/current with "Accept:
text/event-stream"): what a watcher is sent while a run moves, a system deferred among
it, the end; keep-alives while the run is idle; the stream ended by the server's own
restart and opened again; a reader that never reads dropped while the server goes on
answering; the plain GET as before; and only admin certificates. `siteward upgrade run`
follows the same stream. The run's own machine is tested in test_upgrade*."""
import http.client
import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time

from harness import SANITIZER_MARKERS, prog, wait_for
from test_upgrade import UpgradeSite, build_package, report

KEEPALIVE_S = 5


class Watcher(threading.Thread):
    """Follows the run's stream as a client would, in a thread: every event, comment,
    opening and closing, with when it came. A stream that breaks before `end` is opened
    again, as the command line does, until `end` or `timeout` seconds."""

    def __init__(self, site, timeout=150):
        super().__init__(daemon=True)
        self.site, self.items, self.ended = site, [], False
        self.deadline = time.monotonic() + timeout
        self.lock = threading.Lock()

    def note(self, kind, name=None, data=None):
        with self.lock:
            self.items.append((time.monotonic(), kind, name, data))

    def snapshot(self):
        with self.lock:
            return list(self.items)

    def run(self):
        while not self.ended and time.monotonic() < self.deadline:
            try:
                self.follow()
            except (OSError, http.client.HTTPException) as e:
                self.note("broken", data=str(e))
            if not self.ended:
                time.sleep(0.2)

    def follow(self):
        conn = http.client.HTTPSConnection("127.0.0.1", self.site.port,
                                           context=self.site.admin_tls(),
                                           timeout=3 * KEEPALIVE_S)
        try:
            conn.request("GET", "/v1/upgrades/current",
                         headers={"Accept": "text/event-stream"})
            r = conn.getresponse()
            if r.status != 200:
                self.note("refused", r.status, r.read().decode(errors="replace"))
                return
            self.note("open", data=r.getheader("Content-Type"))
            name, data = None, []
            while True:
                line = r.readline()
                if not line:
                    self.note("closed")
                    return
                line = line.decode().rstrip("\r\n")
                if line.startswith(":"):
                    self.note("comment", data=line)
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
                elif line == "" and data:
                    self.note("event", name or "message", json.loads("\n".join(data)))
                    if name == "end":
                        self.ended = True
                        # the server closes the stream after `end`
                        self.note("closed" if not r.readline() else "more")
                        return
                    name, data = None, []
        finally:
            conn.close()

    def events(self, name=None):
        return [i for i in self.snapshot() if i[1] == "event" and (not name or i[2] == name)]

    def connections(self):
        """The items of each connection, in order: from its opening to its end (closed or
        broken); attempts between two connections that found the server away (refused
        while it restarts) belong to neither."""
        out, current = [], None
        for item in self.snapshot():
            if item[1] == "open":
                current = []
                out.append(current)
            if current is not None:
                current.append(item)
                if item[1] in ("closed", "broken"):
                    current = None
        return out

    def rebuilt(self):
        """The run as the command line rebuilds it from the events."""
        run = None
        for _, kind, name, data in self.snapshot():
            if kind != "event":
                continue
            if name == "run":
                run = data
            elif name == "system" and run:
                run["systems"] = [data if y["name"] == data["name"] else y
                                  for y in run["systems"]]
            elif name == "summary" and run:
                run.update(data)
        return run


def metric(site, name):
    status, text = site.api("GET", "/metrics", timeout=5)
    assert status == 200, text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def streams_open(site):
    try:
        return metric(site, "siteward_http_event_streams")
    except (OSError, AssertionError):
        return 0.0


class Events(UpgradeSite):
    def start_cli(self, site, pkg, *args):
        cmd = [prog("siteward"), "--site", site.dir, "upgrade", "run", pkg, *args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def start_cli_on_terminal(self, site, pkg, *args):
        """The command line with its stderr on a terminal, where it keeps a live line;
        what it writes there is read as it comes (a full terminal would stop it)."""
        master, slave = pty.openpty()
        cmd = [prog("siteward"), "--site", site.dir, "upgrade", "run", pkg, *args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        screen = []

        def read():
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO once the command line has exited
                    break
                if not chunk:
                    break
                screen.append(chunk)
            os.close(master)
        t = threading.Thread(target=read, daemon=True)
        t.start()
        return p, t, screen

    def run_exists(self, site):
        try:
            return site.api("GET", "/v1/upgrades/current", timeout=5)[0] == 200
        except OSError:
            return False

    def test_a_watcher_follows_the_run_to_its_end(self):
        site = self.make_site(plain=2)
        pkg = build_package(site)
        # a2's agent is frozen: a2 is deferred once its stop has waited the stop timeout,
        # and nothing moves meanwhile
        site.agents["a2"].proc.signal(signal.SIGSTOP)
        cli, reader, screen = self.start_cli_on_terminal(site, pkg, "--stop-timeout", "7")
        wait_for(lambda: self.run_exists(site), 30, "the run to begin")
        w = Watcher(site)
        w.start()
        # and from another terminal, `upgrade status --follow` follows it to the same end
        follower = subprocess.Popen([prog("siteward"), "upgrade", "status", "--follow"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=dict(os.environ, SITEWARD_SITE=site.dir))
        # the command line follows the same stream: it and the watcher both hold one
        wait_for(lambda: streams_open(site) >= 2, 90, "two event streams open")
        out, _ = cli.communicate(timeout=150)
        reader.join(10)
        w.join(30)
        self.assertFalse(w.is_alive(), w.snapshot())
        term = b"".join(screen).decode(errors="replace")
        self.assertEqual(cli.returncode, 3, term + out)
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, term)
        self.assertRegex(out, r"upgrade \d+, .*: deferred in [0-9.]+ s \(1 upgraded, 1 deferred, "
                         r"0 failed\)")
        fout, ferr = follower.communicate(timeout=60)
        self.assertEqual(follower.returncode, 3, ferr + fout)
        self.assertRegex(fout, r"upgrade \d+, .*: deferred in [0-9.]+ s \(1 upgraded, 1 "
                         r"deferred, 0 failed\)")
        # the live line, drawn again and again over itself, its time going on between
        # events as it did when each poll brought it, and cleared at the end
        lines = [seg for seg in term.split("\r\x1b[K") if seg.startswith("wave ")]
        times = [float(m.group(1)) for m in
                 (re.search(r", ([0-9.]+) s \(server: ", seg) for seg in lines) if m]
        self.assertEqual(len(times), len(lines), lines[:5])
        self.assertGreater(len(set(times)), 10, lines)
        self.assertTrue(term.rstrip("\n").endswith("\r\x1b[K"), repr(term[-200:]))
        self.assertIn("1 deferred", lines[-1])
        cli_run = self.status(site)
        self.assertEqual(cli_run["state"], "deferred")

        conns = w.connections()
        for items in conns:
            # every stream begins with the run whole, as the plain GET has it
            self.assertEqual(items[0][1:3], ("open", None))
            self.assertTrue(items[0][3].startswith("text/event-stream"), items[0])
            first = items[1]
            self.assertEqual(first[1:3], ("event", "run"), items[:3])
            self.assertIn("systems", first[3])
            self.assertIn("counts", first[3])
        # a stream opened before the server's own restart ended with it, and the next
        # began with the run again
        for items, after in zip(conns, conns[1:]):
            self.assertEqual(items[-1][1], "closed", items[-3:])
            self.assertNotIn("end", [i[2] for i in items])
            self.assertEqual(after[1][2], "run")
        # what moved came as it moved: a2 deferred among it, then the run whole and `end`
        deferred = [e for e in w.events("system") if e[3]["name"] == "a2" and
                    e[3]["state"] == "deferred"]
        self.assertEqual(len(deferred), 1, w.events("system"))
        self.assertIn("agent not answering", deferred[0][3]["reason"])
        self.assertTrue([e for e in w.events("system") if e[3]["name"] == "a1" and
                         e[3]["state"] == "active"])
        self.assertTrue(w.events("summary"))
        last = conns[-1]
        self.assertEqual([i[1:3] for i in last[-3:]],
                         [("event", "run"), ("event", "end"), ("closed", None)])
        final = last[-3][3]
        self.assertEqual(final["state"], "deferred")
        self.assertEqual({y["name"]: y["state"] for y in final["systems"]},
                         {"a1": "upgraded", "a2": "deferred"})
        self.assertEqual(final["counts"]["deferred"], 1)
        # at most one batch every 200 ms: each ends with a summary, made 200 ms after
        # the one before at the soonest (by the server's clock, which the watcher's
        # reading, late under load, would blur)
        for items in conns:
            made = [data["elapsed_ms"] for _, kind, name, data in items
                    if kind == "event" and name == "summary"]
            gaps = [b - a for a, b in zip(made, made[1:])]
            self.assertTrue(all(g >= 190 for g in gaps), gaps)
        # the deltas rebuild the run as it ended, as the command line printed it
        rebuilt = w.rebuilt()
        self.assertEqual([(y["name"], y["state"], y["step"]) for y in rebuilt["systems"]],
                         [(y["name"], y["state"], y["step"]) for y in final["systems"]])
        self.assertEqual([(y["name"], y["state"]) for y in cli_run["systems"]],
                         [(y["name"], y["state"]) for y in final["systems"]])
        # while a2's stop waited, the stream was idle: keep-alives, each only after
        # KEEPALIVE_S of silence (less a margin for a watcher reading late under load),
        # and no stream silent much longer than that
        comments = [i for i in w.snapshot() if i[1] == "comment"]
        self.assertTrue(comments, w.snapshot())
        for items in conns:
            for prev, cur in zip(items, items[1:]):
                gap = cur[0] - prev[0]
                if cur[1] == "comment":
                    self.assertEqual(cur[3], ": keep-alive")
                    self.assertGreaterEqual(gap, KEEPALIVE_S - 2, (prev, cur))
                if cur[1] in ("event", "comment"):
                    self.assertLess(gap, KEEPALIVE_S + 3, (prev, cur))

        # afterwards: the plain GET answers JSON as before, the same run
        conn = http.client.HTTPSConnection("127.0.0.1", site.port, context=site.admin_tls(),
                                           timeout=10)
        conn.request("GET", "/v1/upgrades/current")
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        plain = json.loads(r.read())
        conn.close()
        self.assertEqual(sorted(plain), sorted(final))
        self.assertEqual(plain["id"], final["id"])
        # and a watcher of a finished run gets it whole and `end` at once
        late = Watcher(site, timeout=20)
        late.run()
        self.assertEqual([i[1:3] for i in late.snapshot()],
                         [("open", None), ("event", "run"), ("event", "end"),
                          ("closed", None)])
        self.assertEqual(late.events("run")[0][3]["state"], "deferred")
        wait_for(lambda: streams_open(site) == 0, 10, "every stream closed")
        site.agents["a2"].proc.signal(signal.SIGCONT)

    def test_a_reader_that_never_reads_is_dropped(self):
        buffer = 4096
        site = self.make_site(plain=6, conf={"server.event_stream_buffer": str(buffer)})
        pkg = build_package(site)
        cli = self.start_cli(site, pkg, "--parallel", "1", "--stop-timeout", "3")
        wait_for(lambda: self.run_exists(site), 30, "the run to begin")
        # once the server is back from its own switch, a reader that takes the answer's
        # first bytes and then nothing more, its receive buffer small
        wait_for(lambda: self.server_step(site) == "done", 90, "the server's own upgrade")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", site.port))
        tls = site.admin_tls().wrap_socket(raw)
        tls.sendall(b"GET /v1/upgrades/current HTTP/1.1\r\nHost: x\r\n"
                    b"Accept: text/event-stream\r\n\r\n")
        self.addCleanup(tls.close)
        # the command line and the deaf reader
        wait_for(lambda: streams_open(site) >= 2, 30, "both streams open")
        slowest = 0.0

        def dropped():
            nonlocal slowest
            t0 = time.monotonic()
            status, _ = site.api("GET", "/v1/site", timeout=10)
            slowest = max(slowest, time.monotonic() - t0)
            self.assertEqual(status, 200)
            return metric(site, "siteward_http_event_streams_dropped_total") >= 1
        wait_for(dropped, 90, "the reader that never reads to be dropped", step=0.2)
        # answered promptly all along
        self.assertLess(slowest, 2.0)
        # its connection is gone: what it reads now ends
        got = 0
        try:
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
        except (ConnectionResetError, ssl_errors()):
            pass
        # it had been sent no more than its bound, the socket's and the kernel's buffers
        self.assertLess(got, 256 * 1024)
        out, err = cli.communicate(timeout=150)
        self.assertEqual(cli.returncode, 0, err)
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, err)
        # the command line printed what it always has, a line per step and the report
        self.assertIn("upgrade: site server: done", err)
        for name in ("a1", "a2", "a3", "a4", "a5", "a6"):
            self.assertIn(f"upgrade: {name}: upgraded", err)
        self.assertRegex(out, r"upgrade \d+, .*: done in ")
        self.assertIn("SYSTEM", out)
        # said once in the log (the drops of a second are told together, after it)
        def said():
            return [line for line in site.server.log().splitlines()
                    if "event stream dropped" in line]
        lines = wait_for(said, 10, "the drop in the log")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"more than {buffer} bytes behind", lines[0])
        self.assertEqual(metric(site, "siteward_http_event_streams_dropped_total"), 1)

    def server_step(self, site):
        try:
            status, run = site.api("GET", "/v1/upgrades/current", timeout=5)
        except OSError:
            return None
        return run["server"]["step"] if status == 200 else None

    def test_only_admins_watch_and_no_run_is_no_stream(self):
        site = self.make_site(plain=1)
        stream = {"Accept": "text/event-stream"}
        # no run yet: the plain answer's 404, not a stream
        status, body = site.api("GET", "/v1/upgrades/current", headers=stream)
        self.assertEqual(status, 404)
        self.assertIn("no upgrade", body["error"])
        agent = site.tls(*site.agents["a1"].cert())
        status, body = site.api("GET", "/v1/upgrades/current", headers=stream, ctx=agent)
        self.assertEqual(status, 403)
        self.assertIn("admin certificate", body["error"])
        status, body = site.api("GET", "/v1/upgrades/current", headers=stream,
                                ctx=site.tls())
        self.assertEqual(status, 401)
        self.assertEqual(streams_open(site), 0)


def ssl_errors():
    import ssl
    return (ssl.SSLError, socket.timeout)


if __name__ == "__main__":
    import unittest
    unittest.main()
