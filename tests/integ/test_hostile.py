"""Malformed, truncated, oversized and stalling clients: a 4xx with a reason, nothing
stored changes, nothing crashes, and everyone else is still served."""
import json
import os
import socket
import ssl
import time
import unittest

from harness import Site, last_seen, wait_for


def accepted(port, peers):
    """How many connections from the client ports `peers` the listener on 127.0.0.1:port
    has accepted (a socket still in its backlog belongs to no process: inode 0)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if (fields[1] == f"0100007F:{port:04X}" and
                    int(fields[2].split(":")[1], 16) in peers and fields[9] != "0"):
                n += 1
    return n


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(extra_conf={"server.handshake_timeout": "2"})
        cls.site.start()
        cls.agent = cls.site.enroll("h1")
        cls.agent.stop()
        # heartbeat state reaches the database within a flush interval: let it settle
        # before tests compare what is stored
        wait_for(lambda: any("|0.1" in r or "'0.1" in r for r in cls.site.db_rows("systems")),
                 5, "the heartbeat to be stored")
        # and the last one the server handled: nothing is left to flush after that
        wait_for(lambda: [r[4] for r in cls.site.db_fields("systems") if r[0] == "h1"] ==
                 [str(last_seen(cls.site, "h1"))], 10, "h1's last heartbeat to be stored")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def snapshot(self):
        return {t: self.site.db_rows(t) for t in ("systems", "tokens", "revoked")}

    def test_bad_bodies_get_4xx_and_change_nothing(self):
        agent_ctx = self.site.tls(*self.agent.cert())
        open_ctx = self.site.tls()
        cases = [
            (b"", "empty"), (b"{", "truncated"), (b"[1,2]", "not an object"),
            (b"\xff\xfe{}", "not UTF-8"), (b'{"a":1,"a":2}', "duplicate keys"),
            (b"null", "null"), (b'{"token": 5}', "wrong type"),
            (b'{"' + b"x" * 1000 + b'": "' + b"y" * 1000 + b'"}', "junk fields"),
            (b"[" * 5000, "deep nesting"),
        ]
        before = self.snapshot()
        for raw, what in cases:
            for method, path, ctx in (("POST", "/v1/enroll", open_ctx),
                                      ("POST", "/v1/heartbeat", agent_ctx),
                                      ("POST", "/v1/tokens", None)):
                if path == "/v1/tokens" and raw in (b"", b'{"token": 5}') or \
                        (path == "/v1/tokens" and raw.startswith(b'{"' + b"x")):
                    continue  # a token request with no or unknown fields is valid
                status, body = self.site.api(method, path, raw=raw, ctx=ctx)
                self.assertTrue(400 <= status < 500, f"{path} {what}: {status} {body}")
                self.assertIn("error", body, f"{path} {what}")
        bad_fields = [
            {"token": "x", "name": "../../etc", "csr": "x", "address": "127.0.0.1:1"},
            {"token": "x", "name": "ok", "csr": "x", "address": "nowhere"},
            {"token": "0" * 32 + "." + "0" * 32, "name": "ok", "csr": "garbage",
             "address": "127.0.0.1:1"},
        ]
        for body in bad_fields:
            status, reply = self.site.api("POST", "/v1/enroll", body, ctx=open_ctx)
            self.assertTrue(400 <= status < 500, reply)
        for facts in ({"cpus": "many"}, {"hostname": "x" * 5000}, {"cpus": -1}):
            status, reply = self.site.api("POST", "/v1/heartbeat",
                                          {"version": "1", "address": "127.0.0.1:1",
                                           "facts": facts}, ctx=agent_ctx)
            self.assertEqual(status, 400, reply)
        self.assertEqual(self.site.api("POST", "/v1/tokens", {"ttl": -5})[0], 400)
        self.assertEqual(self.site.api("DELETE", "/v1/systems/..%2F..")[0], 400)
        self.assertEqual(self.site.api("GET", "/v1/nothing")[0], 404)
        self.assertEqual(self.site.api("PUT", "/v1/systems")[0], 405)
        self.assertEqual(before, self.snapshot())
        self.assertTrue(self.site.server.alive())

    def test_oversized_body_refused(self):
        before = self.snapshot()
        # A declared oversized body is refused before the server reads any of it.
        with socket.create_connection(("127.0.0.1", self.site.port), timeout=10) as raw:
            with self.site.tls().wrap_socket(raw) as s:
                s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Length: 204800\r\n\r\n" + b"x" * 1000)
                reply = b""
                while b"}" not in reply:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                reply = reply.decode(errors="replace")
        self.assertIn(" 413 ", reply.splitlines()[0])
        self.assertIn("larger than", reply)
        # A chunked body with no declared length is cut off once past the limit.
        ctx = self.site.tls()
        with socket.create_connection(("127.0.0.1", self.site.port), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
                closed = False
                try:
                    for _ in range(200):
                        s.sendall(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    closed = True
                if not closed:
                    s.settimeout(5)
                    try:
                        data = s.recv(100)
                    except (ConnectionResetError, ssl.SSLError):
                        data = b""
                    self.assertTrue(data == b"" or b"413" in data, data)
        self.assertEqual(before, self.snapshot())
        self.assertEqual(self.site.api("GET", "/v1/systems")[0], 200)

    def test_stalled_handshakes_cost_little_and_are_dropped(self):
        pid = self.site.server.pid
        # A real ClientHello, then silence: the handshake waits for the client forever.
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        obj = tls.wrap_bio(incoming, outgoing)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        stalled = []
        for i in range(40):
            s = socket.create_connection(("127.0.0.1", self.site.port), timeout=10)
            if i % 2 == 0:
                s.sendall(hello)
            else:
                s.sendall(hello[:20])  # a truncated ClientHello
            stalled.append(s)
        # the server holds them all before its use of the processor is measured
        peers = {s.getsockname()[1] for s in stalled}
        wait_for(lambda: accepted(self.site.port, peers) == len(stalled), 5,
                 "the server to accept the stalled connections")
        c0, t0 = cpu_seconds(pid), time.monotonic()
        # Everyone else is still served meanwhile, promptly.
        for _ in range(5):
            t = time.monotonic()
            self.assertEqual(self.site.api("GET", "/v1/systems")[0], 200)
            self.assertLess(time.monotonic() - t, 1.0)
        # a lower bound on the window measured: a server that does not spin does nothing
        # that could be waited for instead
        time.sleep(max(0, 1.5 - (time.monotonic() - t0)))
        used = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        # A spinning loop would burn a whole core here.
        self.assertLess(used, 0.25, f"server used {used:.0%} of a core on stalled clients")
        # After the handshake bound (2 s here) the server hangs up on them.
        deadline = time.monotonic() + 6
        for s in stalled:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("a stalled handshake was never dropped")
            s.close()
        self.assertTrue(self.site.server.alive())


if __name__ == "__main__":
    unittest.main()
