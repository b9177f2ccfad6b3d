"""Hardening: TLS 1.2 only with AEAD suites; a caller refused before its body is read;
numbers and names checked as they are parsed; strings from machines shown with their
control characters visible; `upgrade check` never opens a path on the server's disk."""
import errno
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import unittest

from harness import Site, prog, wait_for


class Hardening(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.site.start()
        cls.agent = cls.site.enroll("hd1")
        cls.agent.stop()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def agent_tls(self):
        return self.site.tls(*self.agent.cert())

    # -- TLS --------------------------------------------------------------------------
    def tls12(self, ciphers):
        ctx = self.site.admin_tls()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
        return ctx

    def test_tls12_offers_only_aead_suites(self):
        for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                    "ECDHE-RSA-AES256-SHA", "AES128-SHA", "AES256-SHA",
                    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256"):
            with self.assertRaises((ssl.SSLError, ConnectionError), msg=cbc):
                self.site.api("GET", "/v1/site", ctx=self.tls12(cbc))
        for aead in ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
                     "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"):
            self.assertEqual(self.site.api("GET", "/v1/site", ctx=self.tls12(aead))[0], 200,
                             aead)
        # without a key exchange of its own (static RSA), an AEAD suite is refused too
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.site.api("GET", "/v1/site", ctx=self.tls12("AES128-GCM-SHA256"))
        # TLS 1.3 as before
        ctx = self.site.admin_tls()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.assertEqual(self.site.api("GET", "/v1/site", ctx=ctx)[0], 200)

    def test_the_cli_refuses_a_tls12_cbc_peer(self):
        """A peer holding the site server's certificate that speaks TLS 1.2 with a CBC
        suite is not sent the request."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.site.dir, "server.crt"),
                            os.path.join(self.site.dir, "server.key"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        heard = []

        def serve():
            while True:
                try:
                    conn, _ = lsock.accept()
                except OSError:
                    return
                try:
                    s = ctx.wrap_socket(conn, server_side=True)
                    s.settimeout(5)
                    data = s.recv(4096)
                    heard.append(data)
                    body = b'{"systems": []}'
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                              + body)
                    s.close()
                except (OSError, ssl.SSLError):
                    conn.close()

        site = os.path.join(self.site.tmp, "cbc-site")
        shutil.copytree(self.site.dir, site, ignore=shutil.ignore_patterns("*.db*"))
        with open(os.path.join(site, "siteward.conf")) as f:
            conf = f.read().replace(f"127.0.0.1:{self.site.port}", f"127.0.0.1:{port}")
        with open(os.path.join(site, "siteward.conf"), "w") as f:
            f.write(conf)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            r = subprocess.run([prog("siteward"), "--site", site, "systems"],
                               capture_output=True, text=True, timeout=30)
        finally:
            lsock.close()
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("AEAD", r.stderr)
        self.assertFalse(any(heard), heard)

    # -- who may call, before the body -------------------------------------------------
    def refused_before_body(self, ctx, path, length):
        """Sends a request's head and a first piece of its body, then waits for the
        answer with the rest of the body unsent: returns (status, the answer's text)."""
        raw = socket.create_connection(("127.0.0.1", self.site.port), timeout=5)
        s = ctx.wrap_socket(raw)
        try:
            s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
                       ).encode() + b"{" + b" " * 1023)
            s.settimeout(5)
            data = b""
            t0 = time.monotonic()
            while b"\r\n\r\n" not in data:
                try:
                    piece = s.recv(4096)
                except socket.timeout:
                    self.fail(f"{path}: no answer within {time.monotonic() - t0:.1f} s "
                              f"with {length - 1024} body bytes unsent")
                if not piece:
                    break
                data += piece
            head = data.split(b"\r\n", 1)[0].decode()
            self.assertTrue(head.startswith("HTTP/1.1 "), repr(data))
            # the rest of the answer, then the connection closes: no more is read
            while True:
                try:
                    piece = s.recv(4096)
                except (socket.timeout, ConnectionError, ssl.SSLError):
                    break
                if not piece:
                    break
                data += piece
            return int(head.split()[1]), data.decode(errors="replace")
        finally:
            s.close()

    def test_refused_before_the_body_is_read(self):
        no_cert = self.site.tls()
        # no certificate, on the agents' poll (which takes bodies up to 4 MiB)
        status, text = self.refused_before_body(no_cert, "/v1/agent/poll", 4000000)
        self.assertEqual(status, 401, text)
        self.assertIn("certificate required", text)
        # an agent's certificate where an admin's is needed
        status, text = self.refused_before_body(self.agent_tls(), "/v1/tokens", 60000)
        self.assertEqual(status, 403, text)
        self.assertIn("admin certificate", text)
        # an admin's where an agent's is needed
        status, text = self.refused_before_body(self.site.admin_tls(), "/v1/usage", 1000000)
        self.assertEqual(status, 403, text)
        self.assertIn("agent certificate", text)
        # and the server serves on
        self.assertEqual(self.site.api("GET", "/v1/site")[0], 200)

    # -- numbers and names, checked as they are parsed ----------------------------------
    def stored(self):
        return ({n: sorted(v["roles"]) for n, v in self.site.systems().items()},
                self.site.db_rows("revoked"), self.site.db_rows("tokens"))

    def bad_request(self, method, path, body=None, field=None):
        status, reply = self.site.api(method, path, body, timeout=10)
        self.assertEqual(status, 400, f"{method} {path}: {reply}")
        if field:
            self.assertIn(field, reply["error"], f"{method} {path}")
        return reply["error"]

    def test_numbers_out_of_range_or_not_finite_are_refused(self):
        before = self.stored()
        svc = "/v1/systems/hd1/services/web"
        for bad in ("nan", "NaN", "-nan", "inf", "-inf", "infinity", "-1", "0", "1e999",
                    "99999999999", "3601", "5abc", "0x10", "%20%205", "5%00", ""):
            self.bad_request("GET", f"{svc}?timeout={bad}", field="timeout")
        for bad in ("nan", "-1", "0", "10001", "18446744073709551617",
                    "-18446744073709551615", "1.5", "5x"):
            self.bad_request("GET", f"{svc}/logs?lines={bad}&timeout=1", field="lines")
        for bad in (-1, 0, 1e300, 3601, "5", None, [], {}):
            self.bad_request("POST", f"{svc}/start", {"timeout": bad}, field="timeout")
        for bad in ("99999999999999999999", "-1", "1e3", "nan", "%205"):
            status, reply = self.site.api("GET", f"/v1/usage?since={bad}")
            self.assertEqual(status, 400, (bad, reply))
            self.assertIn("since", reply["error"])
        # JSON has no NaN nor infinity: bodies that try are not JSON
        for raw in (b'{"timeout": NaN}', b'{"timeout": Infinity}', b'{"timeout": 1e999}',
                    b'{"timeout": -Infinity}'):
            status, reply = self.site.api("POST", f"{svc}/start", raw=raw)
            self.assertEqual(status, 400, raw)
        self.assertEqual(self.stored(), before)

    def test_control_characters_in_names_are_refused(self):
        before = self.stored()
        for method, path, body in (
                ("GET", "/v1/systems/hd1%00evil", None),
                ("GET", "/v1/systems/hd1%0a", None),
                ("DELETE", "/v1/systems/hd1%00x", None),
                ("POST", "/v1/systems/hd1/roles/test%00x", {"timeout": 1}),
                ("POST", "/v1/systems/hd1%00/roles/test", {"timeout": 1}),
                ("GET", "/v1/systems/hd1/services/web%00x?timeout=1", None),
                ("POST", "/v1/systems/hd1/services/web%1b/start", {"timeout": 1}),
                ("GET", "/v1/usage?product=x%00y", None),
                ("GET", "/v1/usage?product%00=x", None),
                ("GET", "/v1/usage?product=x%7f", None),
                ("GET", "/v1/usage?%00=x", None)):
            self.bad_request(method, path, body, field="control character")
        self.assertIn("query parameter 'product'",
                      self.bad_request("GET", "/v1/usage?since=0&product=x%00y"))
        self.assertIn(r"query parameter '\x00'", self.bad_request("GET", "/v1/usage?%00=x"))
        self.assertEqual(self.stored(), before)
        self.assertIn("hd1", self.site.systems())

    # -- what machines say, shown to a person -------------------------------------------
    def test_control_characters_from_agents_are_shown_escaped(self):
        esc = "\x1b[2J\x1b]0;owned\x07"
        hb = {"version": "0.1" + esc, "now": int(time.time() * 1000),
              "facts": {"hostname": "h" + esc, "os": "os\u009b31m"},
              "services": [{"name": "web", "role": "test", "state": "failed",
                            "reason": "boom\r\nFAKE LINE" + esc, "pid": 0,
                            "wants_running": True}]}
        status, body = self.site.api("POST", "/v1/heartbeat", hb, ctx=self.agent_tls())
        self.assertEqual(status, 200, body)
        # --json keeps what the agent said, exactly
        sys = self.site.systems()["hd1"]
        self.assertEqual(sys["version"], "0.1" + esc)
        self.assertEqual(sys["facts"]["hostname"], "h" + esc)
        self.assertEqual(sys["services"][0]["reason"], "boom\r\nFAKE LINE" + esc)
        # a person's terminal gets no control character from it
        out = self.site.cli("systems").stdout
        self.assertNotIn("\x1b", out)
        self.assertNotIn("\x07", out)
        self.assertIn(r"0.1\x1b[2J\x1b]0;owned\x07", out)
        for line in out.splitlines():
            self.assertNotIn("\r", line)

    def ask_as_agent(self, cli_args, status, answer):
        """Runs the CLI with `cli_args` while answering, as agent hd1 over its channel,
        the command it leads to with `status` and `answer`; returns the CLI's result."""
        ctx = self.agent_tls()
        poll = {"answers": [], "running": [], "hold_ms": 0}
        self.site.api("POST", "/v1/agent/poll", poll, ctx=ctx)
        out = {}
        t = threading.Thread(target=lambda: out.update(r=self.site.cli(*cli_args, check=False)),
                             daemon=True)
        t.start()
        cmds = []
        deadline = time.monotonic() + 15
        while not cmds and time.monotonic() < deadline:
            st, body = self.site.api("POST", "/v1/agent/poll", dict(poll, hold_ms=2000),
                                     ctx=ctx, timeout=10)
            self.assertEqual(st, 200, body)
            cmds = body["commands"]
        [cmd] = cmds
        self.site.api("POST", "/v1/agent/poll",
                      dict(poll, answers=[{"id": cmd["id"], "status": status,
                                           "body": json.dumps(answer)}]), ctx=ctx)
        t.join(20)
        return out["r"]

    def test_agents_answers_are_shown_escaped(self):
        esc = "\x1b[2J\x1b]0;owned\x07"
        svc = {"name": "web", "role": "test", "state": "failed", "reason": "boom" + esc,
               "pid": 0, "wants_running": True, "log_tail": "one" + esc + "\ntwo\n"}
        r = self.ask_as_agent(("service", "status", "hd1", "web", "--timeout", "10"), 200, svc)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("\x1b", r.stdout)
        self.assertIn(r"boom\x1b[2J\x1b]0;owned\x07", r.stdout)
        # a log keeps its lines
        self.assertIn("one\\x1b[2J\\x1b]0;owned\\x07\ntwo\n", r.stdout)
        r = self.ask_as_agent(("service", "status", "hd1", "web", "--timeout", "10", "--json"),
                              200, svc)
        self.assertEqual(json.loads(r.stdout)["reason"], "boom" + esc)
        # an agent's refusal, in the server's error
        r = self.ask_as_agent(("service", "status", "hd1", "web", "--timeout", "10"), 404,
                              {"error": "no service named 'web'" + esc})
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("\x1b", r.stderr)
        self.assertIn(r"no service named 'web'\x1b[2J", r.stderr)

    # -- upgrade check opens no path on the server ---------------------------------------
    def test_upgrade_check_reads_no_server_path(self):
        fifo = os.path.join(self.site.tmp, "probe.fifo")
        os.mkfifo(fifo)
        for path in ("/etc/shadow", "/etc/passwd", fifo, "relative.pkg",
                     os.path.join(self.site.dir, "site.db"), "/" + "0" * 63):
            for route in ("/v1/upgrades/check", "/v1/upgrades"):
                status, reply = self.site.api("POST", route, {"package": path}, timeout=5)
                self.assertEqual(status, 400, f"{route} {path}: {reply}")
                self.assertIn("paths on the server are not read", reply["error"])
        # nobody opened the FIFO to read it: opening it to write finds no reader
        with self.assertRaises(OSError) as cm:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        self.assertEqual(cm.exception.errno, errno.ENXIO)
        # a hash names only what is in the store
        status, reply = self.site.api("POST", "/v1/upgrades/check", {"package": "a" * 64})
        self.assertEqual(status, 404, reply)
        self.assertIn("no package", reply["error"])
        # an upload is verified before it is stored, and leaves nothing behind
        status, reply = self.site.api("POST", "/v1/packages", raw=b"\0not a package" * 1000,
                                      headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 422, reply)
        self.assertIn("package refused", reply["error"])
        # (removed once the answer has gone)
        wait_for(lambda: os.listdir(os.path.join(self.site.dir, "uploads")) == [], 5,
                 "the upload to be removed")
        packages = os.path.join(self.site.dir, "packages")
        self.assertEqual(os.listdir(packages) if os.path.isdir(packages) else [], [])
        # only an administrator uploads, refused before the upload is read
        status, text = self.refused_before_body(self.agent_tls(), "/v1/packages", 100000000)
        self.assertEqual(status, 403, text)


if __name__ == "__main__":
    unittest.main()
