"""Certificates renewed before they expire. With the site's clock (server and agents)
moved past two thirds of the certificates' life under libfaketime, every agent renews
over its own connection, every system stays `ok`, and `siteward systems` shows the new
days left. A removal revokes every certificate a system was ever issued, the renewed
one and the one before it. An agent whose certificate has expired says it must be
enrolled again and ends with a status of its own. A renewal cut short between putting
its key and its certificate in place is finished when the agent starts again. A
metering server's system renews and its license server serves on the new certificate,
granting checkouts. A renewal the server cannot answer is asked again, said once, and
done once the server is back. An agent whose clock is far ahead renews once and says so,
rather than without end."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import unittest
import uuid

from harness import Proc, Site, pid_alive, prog, wait_for
from test_metering import meter_api
from test_skew import faked

DAY_MS = 86400 * 1000
EXIT_REENROLL = 78
# past two thirds of 825 days (and the week issued certificates start back)
RENEWAL_AGE = "+600d"


def serial_of(path):
    r = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                       capture_output=True, text=True, check=True, timeout=10)
    return r.stdout.strip().split("=", 1)[1].lower()


def served_serial(port):
    """The serial of the certificate a TLS server on loopback shows, read without
    judging it (this process's clock is not the site's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    r = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"],
                       input=der, capture_output=True, check=True, timeout=10)
    return r.stdout.decode().strip().split("=", 1)[1].lower()


def service_pid(agent, name):
    """The main process of one of the agent's services, as its services.state says."""
    try:
        with open(os.path.join(agent.dir, "services.state")) as f:
            return json.load(f).get(name, {}).get("pid", 0)
    except (OSError, ValueError):
        return 0


def unfake():
    for k in ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC", "NO_FAKE_STAT"):
        os.environ.pop(k, None)


def start_server(site, env):
    """The server on a moved clock; from then on the CLI runs on it too (the server's
    renewed certificate starts a week before the moved clock's now)."""
    site.server = Proc([prog("siteward-server"), "--dir", site.dir],
                       os.path.join(site.tmp, "server.log"), dict(os.environ, **env))
    os.environ.update(env)

    def ready():
        assert site.server.alive(), site.server.log()
        return site.cli("systems", check=False).returncode == 0
    wait_for(ready, 20, "the site server to answer")


class Renewal(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            cls.site.start()
            for name in ("r1", "r2"):
                cls.site.enroll(name, start=False)
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        unfake()
        cls.site.close()

    def keep_old(self, a):
        """A copy of the agent's certificate and key as they are now."""
        old = os.path.join(self.site.tmp, f"old-{a.name}")
        os.makedirs(old, exist_ok=True)
        for f in ("agent.crt", "agent.key"):
            shutil.copy(os.path.join(a.dir, f), old)
        return os.path.join(old, "agent.crt"), os.path.join(old, "agent.key")

    def heartbeat_with(self, cert, key):
        body = {"version": "1", "facts": {}, "services": []}
        try:
            # what is tested is the server's word on the client's certificate
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(cert, key)
            status, reply = self.site.api("POST", "/v1/heartbeat", body, ctx=ctx)
        except (ssl.SSLError, ConnectionError) as e:
            return 0, str(e)
        return status, reply

    def test_1_site_past_renewal_age_renews_and_stays_ok(self):
        site = self.site
        before = site.systems()
        old = {}
        for name in ("r1", "r2"):
            old[name] = (serial_of(os.path.join(site.agents[name].dir, "agent.crt")),
                         self.keep_old(site.agents[name]))
        server_serial = serial_of(os.path.join(site.dir, "server.crt"))
        admin_serial = serial_of(os.path.join(site.dir, "admin.crt"))
        site.stop()
        start_server(site, faked(RENEWAL_AGE))
        # the server's own certificate, past two thirds of its life, was issued again,
        # and so was the site folder's admin certificate, for its key
        self.assertNotEqual(serial_of(os.path.join(site.dir, "server.crt")), server_serial)
        self.assertIn("issued again under the site CA", site.server.log())
        self.assertNotEqual(serial_of(os.path.join(site.dir, "admin.crt")), admin_serial)
        self.assertIn("admin.crt) was past two thirds of its life: issued again",
                      site.server.log())
        for name in ("r1", "r2"):
            a = site.agents[name]
            a.env = dict(os.environ, **faked(RENEWAL_AGE))
            a.start()

        def renewed():
            return all(serial_of(os.path.join(site.agents[n].dir, "agent.crt")) != old[n][0]
                       for n in ("r1", "r2"))
        wait_for(renewed, 30, "every agent to renew its certificate")
        for name in ("r1", "r2"):
            a = site.agents[name]
            self.assertIn("certificate renewed", a.proc.log())
            # the client's and the meter's certificates were renewed with it
            for f in ("client.crt", "meter.crt"):
                self.assertNotEqual(serial_of(os.path.join(a.dir, f)), "")

        def all_ok():
            s = site.systems()
            return all(s[n]["health"] == "ok" and s[n]["last_seen"] > before[n]["last_seen"]
                       for n in ("r1", "r2"))
        wait_for(all_ok, 30, "every system to report on its new certificate")
        listing = site.cli_json("systems")
        for sys in listing["systems"]:
            left = (sys["cert_not_after"] - listing["now"]) / DAY_MS
            self.assertGreater(left, 800, sys)
            self.assertIsNone(sys.get("cert_note"))
        table = site.cli("systems").stdout
        self.assertIn("CERT", table)
        self.assertRegex(table, r"r1 .* 8[0-9][0-9]d ")
        # the new serial is the one the server keeps, with the old one still its agent's
        # until it renews again; each is in system_certs
        certs = {row[0] for row in site.db_fields("system_certs")}
        for name in ("r1", "r2"):
            self.assertIn(old[name][0], certs)
            self.assertIn(serial_of(os.path.join(site.agents[name].dir, "agent.crt")), certs)
        type(self).old = old

    def test_2_removal_revokes_the_old_and_the_new_certificate(self):
        site = self.site
        old_serial, (old_cert, old_key) = self.old["r2"]
        a = site.agents["r2"]
        new = self.keep_old(a)
        self.assertNotEqual(serial_of(new[0]), old_serial)
        # before: the new one is the system's
        status, _ = self.heartbeat_with(*new)
        self.assertEqual(status, 200)
        a.stop()
        site.cli("systems", "remove", "r2")
        status, reply = self.heartbeat_with(*new)
        self.assertEqual(status, 403, reply)
        status, reply = self.heartbeat_with(old_cert, old_key)
        self.assertEqual(status, 403, reply)
        revoked = {row[0] for row in site.db_fields("revoked")}
        self.assertIn(old_serial, revoked)
        self.assertIn(serial_of(new[0]), revoked)
        self.assertIn(serial_of(os.path.join(a.dir, "client.crt")), revoked)
        self.assertIn(serial_of(os.path.join(a.dir, "meter.crt")), revoked)
        del site.agents["r2"]

    def test_2b_a_renewal_cut_between_its_renames_is_finished_at_start(self):
        """The key is put in place before the certificate: an agent stopped between the
        two renames finds its new certificate beside the old one and finishes the job,
        rather than starting with a key that does not fit its certificate."""
        site = self.site
        a = site.agents["r1"]
        _, (old_cert, _old_key) = self.old["r1"]
        new_serial = serial_of(os.path.join(a.dir, "agent.crt"))
        last = site.systems()["r1"]["last_seen"]
        a.stop()
        crt = os.path.join(a.dir, "agent.crt")
        os.rename(crt, crt + ".new")
        shutil.copy(old_cert, crt)  # the new key beside the old certificate
        a.start()

        def back():
            s = site.systems()["r1"]
            return s["health"] == "ok" and s["last_seen"] > last
        wait_for(back, 30, "the agent to report on its renewed certificate")
        self.assertFalse(os.path.exists(crt + ".new"))
        self.assertEqual(serial_of(crt), new_serial)
        self.assertIn("finished putting the renewed agent certificate in place", a.proc.log())

    def test_3_expired_agent_says_to_enroll_again_and_exits(self):
        site = self.site
        a = site.agents["r1"]
        a.stop()
        # far past the end of the certificate it renewed (825 days on from +600)
        env = dict(os.environ, **faked("+1500d"))
        r = subprocess.run([prog("siteward-agent"), "--dir", a.dir], capture_output=True,
                           text=True, timeout=30, env=env)
        self.assertEqual(r.returncode, EXIT_REENROLL, r.stderr)
        self.assertIn("cannot be renewed; enroll it again with a new token", r.stderr)
        self.assertIn("siteward-agent init", r.stderr)
        self.assertEqual(len([l for l in r.stderr.splitlines() if "enroll it again" in l]), 1)

    def test_4_the_service_manager_leaves_an_agent_to_enroll_again_stopped(self):
        """Started again, an expired agent would only end the same way every RestartSec."""
        unit = os.path.join(os.path.dirname(__file__), "..", "..", "systemd",
                            "siteward-agent.service")
        with open(unit) as f:
            settings = [line.strip().split("=", 1) for line in f if "=" in line
                        and not line.lstrip().startswith("#")]
        prevent = [v.split() for k, v in settings if k == "RestartPreventExitStatus"]
        self.assertIn(str(EXIT_REENROLL), sum(prevent, []), unit)


class MeteringRenewal(unittest.TestCase):
    """A system with the software-metering role renews: its agent restarts the license
    server, which serves the new meter certificate and grants checkouts made with the
    renewed client certificate."""

    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            site = cls.site
            site.start()
            cls.tool = os.path.join(site.tmp, "cadtool")
            shutil.copy("/bin/true", cls.tool)
            site.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "2",
                     "--enforce")
            cls.m = site.enroll("m1")
            site.cli("role", "add", "m1", "software-metering")
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        unfake()
        cls.site.close()

    def allotment(self, ctx):
        try:
            status, h = meter_api(self.site, self.m, "GET", "/v1/health", ctx=ctx)
        except OSError:
            return 0
        return status == 200 and h.get("products", {}).get("cad", {}).get("allotment", 0)

    def test_meter_serves_the_renewed_certificate_and_grants(self):
        site, m = self.site, self.m
        wait_for(lambda: self.allotment(site.admin_tls()) == 2, 20,
                 "the license server to hold the product's licenses")
        meter_crt = os.path.join(m.dir, "meter.crt")
        old_meter, old_agent = serial_of(meter_crt), serial_of(m.cert()[0])
        self.assertEqual(served_serial(m.meter_port), old_meter)
        old_pid = service_pid(m, "meter")
        self.assertGreater(old_pid, 0)
        # the license server outlives its agent and keeps serving the old certificate
        # until the renewed agent restarts it
        m.stop()
        site.stop()
        start_server(site, faked(RENEWAL_AGE))
        m.env = dict(os.environ, **faked(RENEWAL_AGE))
        m.start()

        def renewed():
            return (serial_of(meter_crt) != old_meter and
                    serial_of(m.cert()[0]) != old_agent)
        wait_for(renewed, 30, "the agent to renew its certificates")
        new_meter = serial_of(meter_crt)

        def serving_new():
            pid = service_pid(m, "meter")
            if pid in (0, old_pid):
                return False
            try:
                return served_serial(m.meter_port) == new_meter
            except (OSError, ssl.SSLError):
                return False
        wait_for(serving_new, 30, "a new license server on the renewed certificate")
        self.assertIn("restarting the metering service for its new certificate",
                      m.proc.log())
        wait_for(lambda: not pid_alive(old_pid), 10,
                 "the license server on the old certificate to end")

        # the moved clock is not this process's: the meter's certificate is checked by
        # its serial above, not by a verify that would find it not yet valid
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(os.path.join(m.dir, "client.crt"), os.path.join(m.dir, "client.key"))
        admin = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        admin.check_hostname = False
        admin.verify_mode = ssl.CERT_NONE
        admin.load_cert_chain(os.path.join(site.dir, "admin.crt"),
                              os.path.join(site.dir, "admin.key"))
        wait_for(lambda: self.allotment(admin) == 2, 20,
                 "the new license server to hold the product's licenses")
        client = uuid.uuid4().hex
        status, body = meter_api(site, m, "POST", "/v1/checkout",
                                 {"exe": "cadtool", "user": "u", "pid": 1, "client": client,
                                  "wait_ms": 0}, ctx=ctx, headers=m.ticket_header())
        self.assertEqual((status, body.get("granted")), (200, True), body)
        status, reply = meter_api(site, m, "POST", "/v1/checkin",
                                  {"client": client, "lease": body["lease"]}, ctx=ctx)
        self.assertEqual(status, 200, reply)
        # and as a user runs a metered program, on the site's clock
        r = subprocess.run([prog("siteward-run"), "--agent", m.dir, "--", self.tool],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, **faked(RENEWAL_AGE)))
        self.assertEqual(r.returncode, 0, r.stderr)


class ClockAhead(unittest.TestCase):
    """An agent whose clock is 600 days ahead of the site server's finds its certificate
    due and renews it; the server issues by its own clock, so the new one is due as well
    by the agent's. The agent says its clock is ahead and asks again only an hour later,
    instead of renewing without end."""

    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            cls.site.start()
            cls.a = cls.site.enroll("ahead", start=False)
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def test_renews_once_and_says_the_clock_is_ahead(self):
        a = self.a
        a.env = dict(os.environ, **faked(RENEWAL_AGE))
        a.start()
        wait_for(lambda: "already due by this machine's clock" in a.proc.log(), 30,
                 "the agent to say its clock is ahead")
        log = a.proc.log()
        self.assertEqual(log.count("certificate renewed:"), 1, log)
        self.assertRegex(log, r"about 60[01] days ahead of the site server's; set the time")
        self.assertEqual(self.site.server.log().count("renewed its certificates"), 1)


class RenewalRetry(unittest.TestCase):
    """The server is away when the renewal falls due: the agent asks again with
    doubling waits (from renew_retry_ms, short here), says so once however many times
    it fails the same way, keeps its loop going, and renews once the server is back."""

    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        try:
            cls.site.start()
            cls.a = cls.site.enroll("q1", start=False)
            conf = os.path.join(cls.a.dir, "agent.conf")
            with open(conf) as f:
                text = f.read()
            with open(conf, "w") as f:
                f.write(text.replace("[agent]\n", "[agent]\nrenew_retry_ms = 400\n", 1)
                        .replace("level = info\n", "level = debug\n", 1))
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        unfake()
        cls.site.close()

    def test_failed_renewal_is_retried_said_once_and_done_when_the_server_is_back(self):
        site, a = self.site, self.a
        old = serial_of(a.cert()[0])
        site.stop()
        env = faked(RENEWAL_AGE)
        a.env = dict(os.environ, **env)
        a.proc = Proc([prog("siteward-agent"), "--dir", a.dir],
                      os.path.join(site.tmp, "agent-q1.log"), a.env)

        def lines(text):
            return [l for l in a.proc.log().splitlines() if text in l]

        def attempts():
            assert a.proc.alive(), a.proc.log()
            return len(lines("certificate renewal: asking the server (attempt"))
        wait_for(lambda: attempts() >= 4, 30, "the agent to ask for its renewal four times")
        self.assertEqual(len(lines("certificate renewal backing off")), 1, a.proc.log())
        # the loop is not held by the failing renewal: a user still gets a ticket
        self.assertTrue(a.ticket().strip())
        self.assertEqual(serial_of(a.cert()[0]), old)

        start_server(site, env)
        wait_for(lambda: serial_of(a.cert()[0]) != old, 30,
                 "the agent to renew once the server is back")
        renewed_at = site.systems()["q1"]["last_seen"]

        def reporting():
            s = site.systems()["q1"]
            return s["health"] == "ok" and s["last_seen"] > renewed_at
        wait_for(reporting, 20, "the agent to report on its renewed certificate")
        self.assertEqual(len(lines("certificate renewal backing off")), 1, a.proc.log())
        self.assertEqual(len(lines("certificate renewed: serial")), 1, a.proc.log())
        self.assertTrue(a.proc.alive())


class ServerRunning(unittest.TestCase):
    def test_server_past_renewal_age_while_running_serves_a_new_certificate(self):
        """A server that runs on past two thirds of its certificate's life issues it
        again and executes itself afresh, in its own process, to serve it."""
        site = Site(heartbeat=1, extra_conf={"server.cert_check_interval_s": "1"})
        clock = os.path.join(site.tmp, "clock")
        try:
            with open(clock, "w") as f:
                f.write("+0d\n")
            # the server's clock, read from a file on every call: moved while it runs
            env = dict(faked("+0d"), FAKETIME_TIMESTAMP_FILE=clock, FAKETIME_NO_CACHE="1")
            del env["FAKETIME"]
            site.server = Proc([prog("siteward-server"), "--dir", site.dir],
                               os.path.join(site.tmp, "server.log"), dict(os.environ, **env))
            wait_for(lambda: site.cli("systems", check=False).returncode == 0, 20,
                     "the site server to answer")
            pid = site.server.pid
            before = serial_of(os.path.join(site.dir, "server.crt"))
            with open(clock, "w") as f:
                f.write(RENEWAL_AGE + "\n")
            wait_for(lambda: serial_of(os.path.join(site.dir, "server.crt")) != before, 20,
                     "the server to issue its certificate again")
            wait_for(lambda: "restarting to serve the renewed server certificate"
                     in site.server.log(), 20, "the server to restart itself")
            after = serial_of(os.path.join(site.dir, "server.crt"))
            # the same process serves the new certificate: on the moved clock, which
            # the new certificate starts a week before, the CLI is answered with it
            moved = dict(os.environ, **faked(RENEWAL_AGE))

            def served():
                if not site.server.alive():
                    raise AssertionError(site.server.log())
                r = subprocess.run(["openssl", "s_client", "-connect",
                                    f"127.0.0.1:{site.port}", "-showcerts"],
                                   input="", capture_output=True, text=True, timeout=10)
                if "BEGIN CERTIFICATE" not in r.stdout:
                    return False
                pem = r.stdout[r.stdout.index("-----BEGIN CERTIFICATE"):]
                pem = pem[:pem.index("-----END CERTIFICATE-----") + 25]
                x = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=pem,
                                   capture_output=True, text=True, timeout=10)
                return x.stdout.strip().split("=", 1)[-1].lower() == after
            wait_for(served, 20, "the server to serve its new certificate")
            self.assertEqual(site.server.pid, pid)
            r = subprocess.run([prog("siteward"), "--site", site.dir, "systems"], env=moved,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            site.close()


if __name__ == "__main__":
    unittest.main()
