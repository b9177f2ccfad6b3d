"""Hardening: TLS 1.2 only with AEAD suites; a caller refused before its body is read;
numbers and names checked as they are parsed; strings from machines shown with their
control characters visible; `upgrade check` never opens a path on the server's disk."""
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
                ("GET", "/v1/usage?product=x%7f", None)):
            self.bad_request(method, path, body, field="control character")
        self.assertEqual(self.stored(), before)
        self.assertIn("hd1", self.site.systems())


if __name__ == "__main__":
    unittest.main()
