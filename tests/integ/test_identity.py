"""Who a peer is, not only whose CA signed it: siteward-run asks only the metering
system the site named, and a metering server takes a checkout's user from the user
ticket the machine's agent issued, never from the request."""
import base64
import json
import os
import pwd
import socket
import ssl
import subprocess
import threading
import unittest
import uuid

from harness import Site, free_port, prog, wait_for
from test_metering import leases, meter_api, meter_site


def ticket_as(user, sock_path):
    """The ticket the agent gives `user`: asked from a child process that has become that
    user (forked, not executed, so that nothing but the socket needs to be reachable; the
    folders above the agent's, the test's own, may be closed to other users, so the child
    goes into the agent's folder before it changes user, and names the socket from
    there)."""
    pw = pwd.getpwnam(user)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        step = "start"
        try:
            os.close(r)
            os.chdir(os.path.dirname(sock_path))
            step = "becoming " + user
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                step = "connecting"
                s.connect(os.path.basename(sock_path))
                step = "reading"
                while True:
                    data = s.recv(8192)
                    if not data:
                        break
                    os.write(w, data)
            status = 0
        except BaseException as e:  # said to the parent, which fails the test
            os.write(w, f"error while {step}: {e!r}".encode())
        finally:
            os._exit(status)
    os.close(w)
    out = b""
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace").strip()


class Impostor:
    """A TLS server holding another enrolled system's certificate; counts what it hears."""

    def __init__(self, cert):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.port = free_port()
        self.heard = {"handshakes": 0, "bytes": 0}
        self.lsock = socket.create_server(("127.0.0.1", self.port))
        self.lsock.settimeout(0.2)
        self.done = threading.Event()
        self.th = threading.Thread(target=self.serve, daemon=True)
        self.th.start()

    def serve(self):
        while not self.done.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.heard["handshakes"] += 1
                    self.heard["bytes"] += len(tls.recv(65536))
            except (OSError, ssl.SSLError):
                pass

    def close(self):
        self.done.set()
        self.th.join(5)
        self.lsock.close()


class MeterIdentity(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.client, cls.tool = meter_site()
        # a system that holds a certificate of the site, but no metering role
        cls.evil = cls.site.enroll("evil", start=False)

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def client_tls(self):
        return self.site.tls(os.path.join(self.client.dir, "client.crt"),
                             os.path.join(self.client.dir, "client.key"))

    def checkout(self, user="u", headers=None):
        return meter_api(self.site, self.m, "POST", "/v1/checkout",
                         {"exe": "cadtool", "user": user, "pid": 1,
                          "client": uuid.uuid4().hex, "wait_ms": 0},
                         ctx=self.client_tls(), headers=headers)

    def release(self, body, holder=None):
        """Checks a granted lease in, as the machine holding it (c1 unless said)."""
        if body.get("granted"):
            for lease in leases(self.site, self.m):
                if lease["lease"] == body["lease"]:
                    break
            else:
                return
            status, reply = meter_api(self.site, self.m, "POST", "/v1/checkin",
                                      {"client": lease["client"], "lease": body["lease"]},
                                      ctx=holder or self.client_tls())
            self.assertEqual(status, 200, reply)

    def test_each_certificate_carries_only_the_uses_it_needs(self):
        def uses(name):
            r = subprocess.run(["openssl", "x509", "-noout", "-ext", "extendedKeyUsage",
                                "-subject", "-in", os.path.join(self.client.dir, name)],
                               capture_output=True, text=True, check=True)
            return ("client" if "Client Authentication" in r.stdout else "") + \
                   ("server" if "Server Authentication" in r.stdout else "")
        # the agent only calls; the metering server only serves; users' client only calls
        self.assertEqual(uses("agent.crt"), "client")
        self.assertEqual(uses("meter.crt"), "server")
        self.assertEqual(uses("client.crt"), "client")
        self.assertEqual(os.stat(os.path.join(self.client.dir, "meter.key")).st_mode & 0o777,
                         0o600)
        # the meter certificate calls nothing: the site server refuses it
        ctx = self.site.tls(os.path.join(self.m.dir, "meter.crt"),
                            os.path.join(self.m.dir, "meter.key"))
        try:
            status = self.site.api("GET", "/v1/meter/config", ctx=ctx)[0]
        except (OSError, ssl.SSLError):
            status = None
        self.assertIn(status, (None, 403))

    def test_run_asks_only_the_system_named_for_each_metering_server(self):
        with open(os.path.join(self.client.dir, "meters.json")) as f:
            listed = json.load(f)
        self.assertEqual(listed.get("names"), ["m1"], listed)
        # the impostor's own metering certificate: it may serve, but is not m1
        imp = Impostor((os.path.join(self.evil.dir, "meter.crt"),
                        os.path.join(self.evil.dir, "meter.key")))
        self.addCleanup(imp.close)
        self.client.ticket()  # the agent keeps a copy for this user
        self.client.stop()    # so nothing rewrites meters.json under the test
        self.addCleanup(self.client.start)
        meters = os.path.join(self.client.dir, "meters.json")
        with open(meters, "w") as f:
            json.dump({"meters": [f"https://127.0.0.1:{imp.port}"], "names": ["m1"]}, f)
        self.addCleanup(lambda: open(meters, "w").write(json.dumps(listed)))
        r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "-v", "--",
                            self.tool, "0"], capture_output=True, text=True, timeout=30)
        # no metering server answered: the offline policy runs it
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rejected: the peer is meter evil, not meter or agent m1", r.stderr)
        wait_for(lambda: imp.heard["handshakes"] >= 1, 5, "the handshake to be counted")
        self.assertEqual(imp.heard["bytes"], 0, "siteward-run sent the impostor a request")

    def test_the_user_is_the_one_the_agent_vouches_for(self):
        # a user's ticket names the user the kernel says connected, whatever it asks;
        # the agent's folder opened to users as siteward-run(1) says (init makes it 0755
        # less the umask)
        os.chmod(self.client.dir, 0o755)
        code, nobody = ticket_as("nobody", os.path.join(self.client.dir, "agent.sock"))
        self.assertEqual(code, 0, nobody)
        payload = json.loads(base64.b64decode(nobody.split(".")[1]))
        self.assertEqual((payload["user"], payload["host"]), ("nobody", "c1"))
        # with it, a checkout in root's name is nobody's
        status, body = self.checkout(user="root", headers={"Siteward-Ticket": nobody})
        self.addCleanup(self.release, body)
        self.assertEqual((status, body.get("granted")), (200, True), body)
        held = [x for x in leases(self.site, self.m) if x["lease"] == body["lease"]]
        self.assertEqual([x["user"] for x in held], ["nobody"])

    def test_checkouts_without_a_good_ticket_are_refused(self):
        own = self.client.ticket()
        head, payload, sig, cert = own.split(".")
        forged = dict(json.loads(base64.b64decode(payload)), user="root", uid=0)
        forged = base64.b64encode(json.dumps(forged).encode()).decode()
        other = self.m.ticket()  # the metering system's own agent: another host
        cases = [
            (None, "no user ticket"),
            ("v1.x", "four parts"),
            (".".join((head, forged, sig, cert)), "signature does not match"),
            (other, "for m1, not for c1"),
        ]
        for ticket, why in cases:
            status, body = self.checkout(
                headers={"Siteward-Ticket": ticket} if ticket else None)
            self.release(body)
            self.assertEqual(status, 403, (ticket, body))
            self.assertIn(why, body["error"])
        self.assertEqual(leases(self.site, self.m), [])

    def test_a_ticket_is_good_on_its_own_machine_only_also_once_accepted(self):
        m_ticket = {"Siteward-Ticket": self.m.ticket()}
        m_client = self.site.tls(os.path.join(self.m.dir, "client.crt"),
                                 os.path.join(self.m.dir, "client.key"))
        status, body = meter_api(self.site, self.m, "POST", "/v1/checkout",
                                 {"exe": "cadtool", "user": "u", "pid": 1,
                                  "client": uuid.uuid4().hex, "wait_ms": 0},
                                 ctx=m_client, headers=m_ticket)
        self.release(body, m_client)
        self.assertEqual((status, body.get("granted")), (200, True), body)
        # the metering server now knows the ticket; c1's client may still not use it
        status, body = self.checkout(headers=m_ticket)
        self.release(body)
        self.assertEqual(status, 403, body)
        self.assertIn("for m1, not for c1", body["error"])

    def test_a_local_user_cannot_stall_the_agents_socket(self):
        # connections that never read, and more of them than it answers at once
        path = os.path.join(self.client.dir, "agent.sock")
        held = []
        try:
            for _ in range(200):
                s = socket.socket(socket.AF_UNIX)
                held.append(s)
                # blocking: a full backlog waits for the agent to accept
                s.settimeout(None)
                s.connect(path)
            self.assertTrue(self.client.ticket(timeout=5).startswith("v1."))
            last = self.site.systems()["c1"]["last_seen"]
            wait_for(lambda: self.site.systems()["c1"]["last_seen"] > last, 10,
                     "c1 to heartbeat while the connections are held")
        finally:
            for s in held:
                s.close()


class Addresses(unittest.TestCase):
    """A system is reached where its connection comes from, whatever it says."""

    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def test_a_claimed_address_keeps_only_its_port(self):
        a = self.site.enroll("liar", start=False)
        ctx = self.site.tls(*a.cert())
        # a heartbeat as an agent of an older version sends it, naming another machine
        # as where it listens and where its metering server is
        body = {"version": "0", "address": "192.0.2.7:8443", "meter_address": "192.0.2.8:8471",
                "facts": {}}
        status, reply = self.site.api("POST", "/v1/heartbeat", body, ctx=ctx)
        self.assertEqual(status, 200, reply)
        self.assertEqual(self.site.systems()["liar"]["address"], "127.0.0.1:8443")
        self.site.cli("role", "add", "liar", "software-metering")
        status, reply = self.site.api("POST", "/v1/heartbeat", body, ctx=ctx)
        self.assertEqual(reply["meters"], ["https://127.0.0.1:8471"], reply)
        self.assertEqual(reply["meter_names"], ["liar"], reply)

    def test_an_enrollment_names_the_address_it_came_from(self):
        token = self.site.token()
        key = subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey",
                              "-noout"], capture_output=True, check=True).stdout
        csr = subprocess.run(["openssl", "req", "-new", "-key", "/dev/stdin", "-subj",
                              "/CN=far"], input=key, capture_output=True, check=True).stdout
        status, reply = self.site.api("POST", "/v1/enroll", {
            "token": token, "name": "far", "csr": csr.decode(),
            "address": "198.51.100.9:8443"}, ctx=self.site.tls())
        self.assertEqual(status, 200, reply)
        sans = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"],
                              input=reply["certificate"].encode(), capture_output=True,
                              check=True).stdout.decode()
        self.assertIn("127.0.0.1", sans)
        self.assertNotIn("198.51.100.9", sans)


if __name__ == "__main__":
    unittest.main()
