"""Who may call what: both APIs refuse a missing certificate, another site's, a removed
system's, and the wrong kind of certificate."""
import os
import ssl
import unittest

from harness import Site


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

    def test_agent_api_accepts_only_the_server(self):
        server_tls = self.site.tls(os.path.join(self.site.dir, "server.crt"),
                                   os.path.join(self.site.dir, "server.key"))
        port = self.agent.port
        status, body = self.site.api("GET", "/v1/status", ctx=server_tls, port=port)
        self.assertEqual(status, 200)
        self.assertEqual(body["name"], "a1")
        self.refused("GET", "/v1/status", ctx=self.site.tls(), port=port)
        self.refused("GET", "/v1/status", port=port)  # admin certificate
        self.refused("GET", "/v1/status", ctx=self.agent_tls(), port=port)
        self.refused("GET", "/v1/status", ctx=self.other_admin(), port=port)

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
        self.refused("GET", "/v1/status", ctx=client, port=self.agent.port)

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
