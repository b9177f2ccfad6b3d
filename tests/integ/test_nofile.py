"""Running out of file descriptors is a passing state: the site server, the license
server and an agent under a low open-file limit keep serving what they have, make new
connections wait, say so once naming the limit, and carry on once descriptors free."""
import http.client
import os
import re
import socket
import subprocess
import time
import unittest

from harness import Agent, Proc, Site, prog, wait_for, wait_heartbeats, last_seen

LIMIT = 128


def limited(argv, limit=LIMIT):
    """argv run under an open-file limit of `limit`, soft and hard."""
    return ["prlimit", f"--nofile={limit}:{limit}", *argv]


def cpu_s(pid):
    """CPU time the process has used, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def room(log):
    """The connections a program's capacity line says it takes."""
    m = re.search(r"open-file limit (\d+)[^:]*: room for (\d+) connections", log)
    return (int(m.group(1)), int(m.group(2))) if m else None


def hoard(port, ctx, path, most):
    """Opens kept-alive TLS connections, each having made a request, until a new one is
    no longer served within a second (or `most` are open). Returns them, and whether the
    last one was left waiting."""
    conns = []
    while len(conns) < most:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=1)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
        except OSError:
            c.close()
            return conns, True
        conns.append(c)
    return conns, False


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


class SiteServer(unittest.TestCase):
    def setUp(self):
        self.site = Site(heartbeat=1)

    def tearDown(self):
        self.site.close()

    def test_server_at_its_limit_serves_what_it_has(self):
        s = self.site
        s.server = Proc(limited([prog("siteward-server"), "--dir", s.dir]),
                        os.path.join(s.tmp, "server.log"))
        wait_for(s._ready, 20, "the site server to answer")
        nofile, most = wait_for(lambda: room(s.server.log()), 5, "the capacity line")
        self.assertEqual(nofile, LIMIT)
        self.assertLess(most, LIMIT - 16, "room is kept for the server's own descriptors")
        s.enroll("a1")
        wait_heartbeats(s, "a1", 2)
        # an administrator's connection, open before the server fills up
        admin = http.client.HTTPSConnection("127.0.0.1", s.port, context=s.admin_tls(),
                                            timeout=5)
        self.assertEqual(get(admin, "/v1/site"), 200)
        conns, waiting = hoard(s.port, s.admin_tls(), "/v1/site", most + 10)
        try:
            self.assertTrue(waiting, f"{len(conns)} connections and the server still takes "
                            "more")
            self.assertLessEqual(len(conns), most)
            wait_for(lambda: f"at the limit of {most} connections (open-file limit {LIMIT})"
                     in s.server.log(), 5, "the warning naming the limit")
            cpu = cpu_s(s.server.pid)
            # what was open is served: the admin's connection, the agent's heartbeats
            seen = last_seen_on(admin, "a1")
            wait_for(lambda: last_seen_on(admin, "a1") > seen, 10,
                     "a heartbeat of a1 at the limit")
            seen = last_seen_on(admin, "a1")
            wait_for(lambda: last_seen_on(admin, "a1") > seen, 10,
                     "another heartbeat of a1 at the limit")
            # a new connection waits
            with self.assertRaises(OSError):
                s.api("GET", "/v1/site", timeout=1)
            self.assertLess(cpu_s(s.server.pid) - cpu, 1.0, "the server spins at its limit")
            self.assertEqual(s.server.log().count("at the limit of"), 1,
                             "the warning is logged once an episode")
        finally:
            for c in conns:
                c.close()
        start = time.monotonic()
        wait_for(lambda: s.cli("systems", check=False, timeout=10).returncode == 0, 5,
                 "an admin call once the connections are closed")
        self.assertLess(time.monotonic() - start, 5)
        wait_for(lambda: "accepting connections again" in s.server.log(), 5,
                 "the server to say it accepts again")
        admin.close()


    def test_server_without_a_descriptor_left_does_not_spin(self):
        s = self.site
        s.start()
        pid = s.server.pid
        with open(f"/proc/{pid}/limits") as f:
            hard = [line.split()[4] for line in f if line.startswith("Max open files")][0]
        # not one descriptor to spare, and no connection open: accept() meets EMFILE,
        # and libmicrohttpd would be run again at once, forever
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=3:"], check=True)
        cpu = cpu_s(pid)
        for _ in range(2):
            with self.assertRaises(OSError):
                s.api("GET", "/v1/site", timeout=1)
        wait_for(lambda: "the open-file limit (3) is reached" in s.server.log(), 5,
                 "the warning naming the limit")
        self.assertLess(cpu_s(pid) - cpu, 1.0, "the server spins without descriptors")
        subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={hard}:"], check=True)
        wait_for(lambda: s.cli("systems", check=False, timeout=10).returncode == 0, 5,
                 "an admin call once descriptors are free")
        self.assertTrue(s.server.alive())

    def test_server_out_of_descriptors_says_so_for_a_package(self):
        s = self.site
        s.start()
        a = s.enroll("a1", start=False)
        pid = s.server.pid
        with open(f"/proc/{pid}/limits") as f:
            hard = [line.split()[4] for line in f if line.startswith("Max open files")][0]
        conn = http.client.HTTPSConnection("127.0.0.1", s.port, context=s.tls(*a.cert()),
                                           timeout=5)
        path = "/v1/packages/" + "ab" * 32
        self.assertEqual(get(conn, path), 404)
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=3:"], check=True)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode()
            # a passing state, to be asked again, not a missing package
            self.assertEqual(r.status, 503, body)
            self.assertEqual(r.getheader("Retry-After"), "1")
            self.assertIn("file descriptors", body)
        finally:
            subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={hard}:"], check=True)
        self.assertEqual(get(conn, path), 404)
        conn.close()

def last_seen_on(conn, name):
    conn.request("GET", f"/v1/systems/{name}")
    r = conn.getresponse()
    body = r.read()
    import json
    return json.loads(body).get("last_seen", 0) if r.status == 200 else 0


class MeterAndAgent(unittest.TestCase):
    def setUp(self):
        self.site = Site(heartbeat=1)
        self.site.start()

    def tearDown(self):
        self.site.close()

    def start_limited(self, name, limit=LIMIT):
        """An enrolled agent started under a low open-file limit, which the services it
        runs (the license server) inherit."""
        s = self.site
        a = Agent(s, name)
        r = a.init(s.token())
        self.assertEqual(r.returncode, 0, r.stderr)
        a.proc = Proc(limited([prog("siteward-agent"), "--dir", a.dir], limit),
                      os.path.join(s.tmp, f"agent-{name}.log"))
        s.agents[name] = a
        wait_for(a._heard_of, 20, f"agent {name} to report")
        return a

    def test_meter_at_its_limit_serves_what_it_has(self):
        s = self.site
        s.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "1000")
        m = self.start_limited("m1")
        s.cli("role", "add", "m1", "software-metering")
        client = s.enroll("c1")
        ticket = client.ticket()  # the user's, which a checkout with a client certificate shows
        client.stop()
        ctx = s.tls(os.path.join(client.dir, "client.crt"), os.path.join(client.dir,
                                                                          "client.key"))
        log_path = os.path.join(m.dir, "logs", "meter.log")

        def meter_log():
            try:
                with open(log_path) as f:
                    return f.read()
            except OSError:
                return ""

        nofile, most = wait_for(lambda: room(meter_log()), 20, "the meter's capacity line")
        self.assertEqual(nofile, LIMIT)

        def health(c):
            try:
                return get(c, "/v1/health") == 200
            except OSError:
                return False
        first = http.client.HTTPSConnection("127.0.0.1", m.meter_port, context=ctx, timeout=5)
        wait_for(lambda: health(first), 20, "the license server to answer")
        conns, waiting = hoard(m.meter_port, ctx, "/v1/health", most + 10)
        try:
            self.assertTrue(waiting, f"{len(conns)} connections and the meter still takes "
                            "more")
            wait_for(lambda: f"at the limit of {most} connections (open-file limit {LIMIT})"
                     in meter_log(), 5, "the meter's warning naming the limit")
            # the connection it had is served: a checkout goes through on it
            first.request("POST", "/v1/checkout", body=(
                '{"exe":"cadtool","user":"u","pid":1,"client":"%s"}' % ("ab" * 16)),
                headers={"Siteward-Ticket": ticket})
            r = first.getresponse()
            self.assertEqual(r.status, 200, r.read())
            r.read()
            new = http.client.HTTPSConnection("127.0.0.1", m.meter_port, context=ctx,
                                              timeout=1)
            with self.assertRaises(OSError):
                get(new, "/v1/health")
            new.close()
        finally:
            for c in conns:
                c.close()
        start = time.monotonic()

        def fresh_health():
            c = http.client.HTTPSConnection("127.0.0.1", m.meter_port, context=ctx, timeout=2)
            try:
                return health(c)
            finally:
                c.close()
        wait_for(fresh_health, 5, "a new connection to the meter once the others closed")
        self.assertLess(time.monotonic() - start, 5)
        wait_for(lambda: "accepting connections again" in meter_log(), 5,
                 "the meter to say it accepts again")
        first.close()

    def test_agent_out_of_descriptors_heartbeats_once_they_free(self):
        s = self.site
        a = self.start_limited("a1", 1024)
        s.enroll("a2")
        wait_for(lambda: "open-file limit 1024" in a.proc.log(), 5, "the agent's limit line")
        wait_heartbeats(s, "a1", 2)
        # no descriptor to spare: a new one must be numbered below the soft limit, and
        # every number from 3 on is taken or may be freed by the server's going
        pid = a.proc.pid
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=3:"], check=True)
        # its connection goes with the server; a new one needs a descriptor
        s.stop()
        s.start()
        restarted = int(time.time() * 1000)
        # longer than a1's backoff (four heartbeats at most): a2 is heard, a1 is not
        wait_heartbeats(s, "a2", 6)
        self.assertLess(last_seen(s, "a1"), restarted, a.proc.log())
        self.assertIn("Couldn't connect", a.proc.log())
        self.assertTrue(a.proc.alive(), a.proc.log())
        subprocess.run(["prlimit", "--pid", str(pid), "--nofile=1024:"], check=True)
        wait_for(lambda: last_seen(s, "a1") >= restarted, 10,
                 "a heartbeat of a1 once descriptors are free")
        wait_heartbeats(s, "a1", 2)


if __name__ == "__main__":
    unittest.main()
