"""A removed system is refused by the license servers at once, not at their next poll:
the site server pushes the revoked serials, and each request is checked against them,
on connections the system already holds too."""
import http.client
import json
import os
import time
import unittest
import uuid

from harness import Site, wait_for

# far longer than the bound on a revocation: what the meter learns from its poll comes
# too late for the test
POLL_MS = 30000
BOUND_S = 1.0


class Revocation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = s = Site(heartbeat=1, extra_conf={"metering.meter_poll_ms": str(POLL_MS)})
        s.start()
        s.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "1000")
        cls.tickets = {}
        cls.m = s.enroll("m1")
        s.cli("role", "add", "m1", "software-metering")

        def has_cad():
            try:
                status, h = s.api("GET", "/v1/health", port=cls.m.meter_port, timeout=2)
            except OSError:
                return False
            return status == 200 and "cad" in h.get("products", {})
        wait_for(has_cad, 20, "the license server to hold the product")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def ctx(self, agent, which="client"):
        return self.site.tls(os.path.join(agent.dir, f"{which}.crt"),
                             os.path.join(agent.dir, f"{which}.key"))

    def conn(self, ctx):
        return http.client.HTTPSConnection("127.0.0.1", self.m.meter_port, context=ctx,
                                           timeout=5)

    def enroll(self, name):
        """An enrolled system whose agent ran long enough to give this user a ticket."""
        a = self.site.enroll(name)
        self.tickets[name] = a.ticket()
        a.stop()
        return a

    def checkout(self, conn, same=None, ticket=None):
        """A checkout on `conn`; with `same`, the socket it must still be on."""
        if same is not None:
            self.assertIs(conn.sock, same, "the connection was not kept open")
        body = {"exe": "cadtool", "user": "u", "pid": 1, "client": uuid.uuid4().hex}
        conn.request("POST", "/v1/checkout", body=json.dumps(body),
                     headers={"Siteward-Ticket": ticket} if ticket else {})
        r = conn.getresponse()
        text = r.read().decode()
        return r.status, json.loads(text)

    def test_removed_system_is_refused_at_once(self):
        s = self.site
        victim, other = self.enroll("c1"), self.enroll("c2")
        # connections open before the removal, with each of the victim's certificates
        kept = {which: self.conn(self.ctx(victim, which)) for which in ("client", "agent")}
        socks = {}
        for which, c in kept.items():
            status, body = self.checkout(c, ticket=self.tickets["c1"])
            self.assertEqual((status, body.get("granted")), (200, True), body)
            socks[which] = c.sock
        s.cli("systems", "remove", "c1")
        removed = time.monotonic()
        for which, c in kept.items():
            status, body = wait_for(
                lambda: (lambda r: r if r[0] == 403 else None)(
                    self.checkout(c, socks[which], ticket=self.tickets["c1"])),
                BOUND_S, f"the {which} certificate to be refused on its open connection")
            self.assertIn("revoked", body["error"])
        self.assertLess(time.monotonic() - removed, BOUND_S + 0.5)
        # a new connection too
        fresh = self.conn(self.ctx(victim))
        status, body = self.checkout(fresh, ticket=self.tickets["c1"])
        self.assertEqual(status, 403, body)
        fresh.close()
        # and only the removed system
        c = self.conn(self.ctx(other))
        status, body = self.checkout(c, ticket=self.tickets["c2"])
        self.assertEqual((status, body.get("granted")), (200, True), body)
        c.close()
        for c in kept.values():
            c.close()
        # its agent's, its metering client's and its metering server's, in one push
        self.assertIn("revoked 3 certificates", open(
            os.path.join(self.m.dir, "logs", "meter.log")).read())

    def test_only_the_site_server_pushes_and_what_it_pushes_is_checked(self):
        s = self.site
        a = self.enroll("c3")
        server = s.tls(os.path.join(s.dir, "server.crt"), os.path.join(s.dir, "server.key"))
        port = self.m.meter_port
        status, _ = s.api("POST", "/v1/config/refresh", {"revoked": ["ab"]}, port=port,
                          ctx=self.ctx(a, "agent"))
        self.assertEqual(status, 403)
        for bad in ({"revoked": "ab"}, {"revoked": ["AB"]}, {"revoked": [1]},
                    {"revoked": ["a" * 41]}, {"revoked": ["ab"] * 65}):
            status, body = s.api("POST", "/v1/config/refresh", bad, port=port, ctx=server)
            self.assertEqual(status, 400, (bad, body))
        # the push of older site servers: no list, a refresh only
        status, _ = s.api("POST", "/v1/config/refresh", {}, port=port, ctx=server)
        self.assertEqual(status, 202)
        c = self.conn(self.ctx(a))
        status, _ = self.checkout(c, ticket=self.tickets["c3"])
        self.assertEqual(status, 200)
        c.close()


if __name__ == "__main__":
    unittest.main()
