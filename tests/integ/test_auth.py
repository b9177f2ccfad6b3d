"""Who may call what: the server's API refuses a missing certificate, another site's, a
removed system's, and the wrong kind of certificate; an agent sends nothing to a peer
that is not its site server."""
import os
import socket
import ssl
import threading
import unittest

from harness import Proc, Site, free_port, prog, wait_for


class Authorization(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()
        cls.site.start()
        cls.agent = cls.site.enroll("a1")
        cls.other = Site(site_code="OTH")  # another CA; never started

    @classmethod
    def tearDownClass(cls):
        cls.site.close()
        cls.other.close()

    def other_admin(self):
        return self.site.tls(os.path.join(self.other.dir, "admin.crt"),
                             os.path.join(self.other.dir, "admin.key"))

    def agent_tls(self):
        return self.site.tls(*self.agent.cert())

    def refused(self, *args, **kw):
        """The request must be refused: a 401/403, or a TLS handshake the server ends."""
        try:
            status, body = self.site.api(*args, **kw)
        except (ssl.SSLError, ConnectionError) as e:
            return str(e)
        self.assertIn(status, (401, 403), body)
        self.assertIn("error", body)
        return body["error"]

    def test_server_admin_api(self):
        self.assertEqual(self.site.api("GET", "/v1/systems")[0], 200)
        no_cert = self.site.tls()
        self.assertIn("certificate required", self.refused("GET", "/v1/systems", ctx=no_cert))
        self.refused("GET", "/v1/systems", ctx=self.other_admin())
        msg = self.refused("GET", "/v1/systems", ctx=self.agent_tls())
        self.assertIn("admin certificate", msg)
        msg = self.refused("POST", "/v1/tokens", body={}, ctx=self.agent_tls())
        self.assertIn("admin certificate", msg)

    def test_server_agent_api(self):
        body = {"version": "0", "address": "127.0.0.1:1", "facts": {}}
        self.assertEqual(self.site.api("POST", "/v1/heartbeat", body, ctx=self.agent_tls())[0],
                         200)
        self.refused("POST", "/v1/heartbeat", body=body, ctx=self.site.tls())
        self.refused("POST", "/v1/heartbeat", body=body, ctx=self.other_admin())
        # an admin certificate is not an agent's
        self.refused("POST", "/v1/heartbeat", body=body)

    def test_only_an_enrolled_agent_may_poll(self):
        poll = {"answers": [], "running": [], "hold_ms": 0}
        status, body = self.site.api("POST", "/v1/agent/poll", poll, ctx=self.agent_tls())
        self.assertEqual(status, 200, body)
        self.refused("POST", "/v1/agent/poll", body=poll, ctx=self.site.tls())
        self.refused("POST", "/v1/agent/poll", body=poll)  # admin certificate
        self.refused("POST", "/v1/agent/poll", body=poll, ctx=self.other_admin())

    def test_an_agent_talks_only_to_the_site_server(self):
        """Traffic sent to a machine that holds a certificate from the site's CA, but an
        agent's (another enrolled system's, say): the agent sends it no request, no
        heartbeat, no answer, and says why."""
        impostor = self.site.enroll("imp", start=False)
        victim = self.site.enroll("target", start=False)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*impostor.cert())
        port = free_port()
        heard = {"handshakes": 0, "bytes": 0}
        lsock = socket.create_server(("127.0.0.1", port))
        lsock.settimeout(0.2)
        done = threading.Event()

        def serve():
            while not done.is_set():
                try:
                    conn, _ = lsock.accept()
                except socket.timeout:
                    continue
                conn.settimeout(5)
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        heard["handshakes"] += 1
                        heard["bytes"] += len(tls.recv(65536))
                except (OSError, ssl.SSLError):
                    pass

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        self.addCleanup(lambda: (done.set(), th.join(5), lsock.close()))
        conf = os.path.join(victim.dir, "agent.conf")
        with open(conf) as f:
            text = f.read().replace(self.site.url, f"https://127.0.0.1:{port}")
        with open(conf, "w") as f:
            f.write(text)
        victim.proc = Proc([prog("siteward-agent"), "--dir", victim.dir],
                           os.path.join(self.site.tmp, "agent-target.log"))
        self.addCleanup(victim.stop)
        wait_for(lambda: "rejected: the peer is agent imp, not a server" in victim.proc.log(),
                 15, "the agent to refuse the impostor")
        wait_for(lambda: heard["handshakes"] >= 1, 5, "the handshake to be counted")
        self.assertEqual(heard["bytes"], 0, "the agent sent the impostor a request")

    def test_metering_client_certificate_is_good_for_nothing_else(self):
        d = self.agent.dir
        crt, key = os.path.join(d, "client.crt"), os.path.join(d, "client.key")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o644)  # any local user may read it
        self.assertEqual(os.stat(os.path.join(d, "agent.key")).st_mode & 0o777, 0o600)
        client = self.site.tls(crt, key)
        for method, path, body in (("GET", "/v1/systems", None), ("POST", "/v1/tokens", {}),
                                   ("POST", "/v1/heartbeat",
                                    {"version": "0", "address": "127.0.0.1:1", "facts": {}}),
                                   ("GET", "/v1/meter/config", None),
                                   ("POST", "/v1/usage", {"now": 1, "records": []})):
            self.refused(method, path, body=body, ctx=client)
        self.refused("POST", "/v1/agent/poll", body={"hold_ms": 0}, ctx=client)

    def test_removed_system_refused_at_once_even_on_open_connection(self):
        victim = self.site.enroll("victim")
        victim.stop()
        import http.client, json
        ctx = self.site.tls(*victim.cert())
        conn = http.client.HTTPSConnection("127.0.0.1", self.site.port, context=ctx, timeout=10)
        body = json.dumps({"version": "0", "address": "127.0.0.1:1", "facts": {}})
        conn.request("POST", "/v1/heartbeat", body=body)
        r = conn.getresponse()
        r.read()
        self.assertEqual(r.status, 200)
        self.site.cli("systems", "remove", "victim")
        conn.request("POST", "/v1/heartbeat", body=body)  # same keep-alive connection
        r = conn.getresponse()
        text = r.read().decode()
        self.assertEqual(r.status, 403)
        self.assertIn("revoked", text)
        conn.close()
        self.assertIn("revoked", self.refused("POST", "/v1/heartbeat", body={}, ctx=ctx))


if __name__ == "__main__":
    unittest.main()
