"""Software metering end to end: siteward-run, the license server (siteward-meter run by
the agent for the software-metering role), the site server's usage report."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import unittest
import uuid

from harness import Site, has_child, prog, wait_for, wait_heartbeats

TTL_MS = 3000


def meter_site(n_meters=1, licenses=2, before_meters=None, conf=None):
    site = Site(heartbeat=1, extra_conf=dict({"metering.lease_ttl_ms": str(TTL_MS)},
                                             **(conf or {})))
    site.start()
    tool = os.path.join(site.tmp, "cadtool")
    shutil.copy("/bin/sleep", tool)
    site.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", str(licenses),
             "--enforce")
    site.cli("product", "add", "draw", "--exe", "drawtool", "--licenses", "5")
    if before_meters:
        before_meters(site)
    meters = []
    for i in range(n_meters):
        m = site.enroll(f"m{i + 1}")
        site.cli("role", "add", m.name, "software-metering")
        meters.append(m)
    client = site.enroll("c1")
    for m in meters:
        wait_for(lambda: meter_api(site, m, "GET", "/v1/health")[0] == 200, 10,
                 f"{m.name}'s license server")

    def listed():
        try:
            with open(os.path.join(client.dir, "meters.json")) as f:
                return len(json.load(f)["meters"]) == n_meters
        except (OSError, ValueError, KeyError):
            return False
    wait_for(listed, 10, "the client to learn the metering servers")

    def shared():
        # every license of "cad" is in some metering server's share
        got = 0
        for m in meters:
            status, h = meter_api(site, m, "GET", "/v1/health")
            got += h.get("products", {}).get("cad", {}).get("allotment", 0)
        return got == licenses
    wait_for(shared, 15, "the metering servers to hold every license between them")
    return site, meters, client, tool


def package_version(pkg="coreutils"):
    """What dpkg says of a package's version, and the pattern for its major version."""
    v = subprocess.run(["dpkg-query", "--show", "--showformat=${Version}", pkg],
                       capture_output=True, text=True, check=True).stdout
    return v, v.split(":")[-1].split(".")[0] + ".*"


def meter_api(site, m, method, path, body=None, ctx=None, raw=None, headers=None):
    return site.api(method, path, body, ctx=ctx or site.admin_tls(), port=m.meter_port,
                    raw=raw, headers=headers)


def leases(site, m):
    """The leases a license server holds, or None while it does not answer."""
    try:
        status, body = meter_api(site, m, "GET", "/v1/leases")
    except OSError:
        return None
    return body["leases"] if status == 200 else None


def run(client, tool, *args, wait=None, verbose=False):
    argv = [prog("siteward-run"), "--agent", client.dir] + (["--verbose"] if verbose else [])
    if wait is not None:
        argv += ["--wait", str(wait)]
    return subprocess.Popen(argv + ["--", tool, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class OneMeter(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.client, cls.tool = meter_site(before_meters=cls.policies)

    @classmethod
    def policies(cls, site):
        """Products with policies, registered before the license server starts."""
        import getpass
        me = getpass.getuser()
        for name in ("kiosktool", "nighttool"):
            shutil.copy("/bin/sleep", os.path.join(site.tmp, name))
        site.cli("product", "add", "kiosk", "--exe", "kiosktool", "--licenses", "5",
                 "--deny-users", f"{me},mallory")
        # a window that is closed now, whatever the time of day
        now = time.localtime()
        start = (now.tm_hour + 2) % 24
        site.cli("product", "add", "night", "--exe", "nighttool", "--licenses", "5",
                 "--hours", f"{start:02d}:00-{(start + 1) % 24:02d}:00")
        # a program known by its build ID, run under another name
        cls.build_id = uuid.uuid4().hex
        src = os.path.join(site.tmp, "p.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        cls.renamed = os.path.join(site.tmp, "totally-renamed")
        subprocess.run(["cc", "-o", cls.renamed, src, f"-Wl,--build-id=0x{cls.build_id}"],
                       check=True)
        site.cli("product", "add", "bid", "--exe", "original-name", "--licenses", "1",
                 "--enforce", "--build-id", cls.build_id)
        # two editions of one packaged program, told apart by the package's version
        cls.version, pattern = package_version()
        site.cli("product", "add", "true-old", "--exe", "true", "--licenses", "1",
                 "--enforce", "--version", "0.*")
        site.cli("product", "add", "true-now", "--exe", "true", "--licenses", "1",
                 "--enforce", "--version", pattern)
        r = site.cli("product", "add", "true-dup", "--exe", "true", "--licenses", "1",
                     "--version", pattern, check=False)
        assert r.returncode != 0 and "already meters" in r.stderr, r.stderr

    def test_policies_deny_with_reasons(self):
        for tool, reason in (("kiosktool", "may not use kiosk"),
                             ("nighttool", "night may be used from")):
            r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "--",
                                os.path.join(self.site.tmp, tool), "0"],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 75, r.stderr)
            self.assertIn(reason, r.stderr)
            self.assertNotIn("queue", r.stderr)  # waiting would not help

    def test_renamed_copy_is_metered_by_build_id(self):
        r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "-v", "--",
                            self.renamed], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("for bid", r.stderr)

    def test_version_pattern_picks_the_product(self):
        r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "-v", "--",
                            "/usr/bin/true"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"is version {self.version}", r.stderr)
        self.assertIn("for true-now", r.stderr)
        # true-now's one license held by hand: the packaged program is denied by its
        # product, while an old version's checkout counts against true-old
        held = []
        for version, product in ((self.version, "true-now"), ("0.5-1", "true-old")):
            client = uuid.uuid4().hex
            status, body = meter_api(self.site, self.m, "POST", "/v1/checkout", {
                "exe": "true", "user": "a", "pid": 1, "client": client,
                "version": version}, ctx=self.client_tls(), headers=self.client.ticket_header())
            self.assertEqual((status, body.get("granted"), body.get("product")),
                             (200, True, product), body)
            held.append((client, body["lease"]))
        # kept alive as siteward-run would, however slow the version lookup is here
        done = threading.Event()

        def renew():
            while not done.wait(0.5):
                for client, lease in held:
                    meter_api(self.site, self.m, "POST", "/v1/heartbeat",
                              {"client": client, "leases": [lease]}, ctx=self.client_tls())
        renewer = threading.Thread(target=renew)
        renewer.start()
        try:
            r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "--",
                                "/usr/bin/true"], capture_output=True, text=True, timeout=20)
        finally:
            done.set()
            renewer.join(10)
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("true-now", r.stderr)
        for client, lease in held:
            status, _ = meter_api(self.site, self.m, "POST", "/v1/checkin",
                                  {"client": client, "lease": lease}, ctx=self.client_tls())
            self.assertEqual(status, 200)
        # a copy no package owns has no version: neither product is it
        copy = os.path.join(self.site.tmp, "true")
        shutil.copy("/usr/bin/true", copy)
        r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "-v", "--",
                            copy], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no package owns it", r.stderr)
        self.assertIn("is not metered", r.stderr)
        # the version given by hand must be a version
        status, body = meter_api(self.site, self.m, "POST", "/v1/checkout", {
            "exe": "true", "user": "a", "pid": 1, "client": uuid.uuid4().hex,
            "version": "9.1\n"}, ctx=self.client_tls(), headers=self.client.ticket_header())
        self.assertEqual(status, 400)
        self.assertIn("version", body["error"])

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def setUp(self):
        wait_for(lambda: leases(self.site, self.m) == [], TTL_MS / 1000 + 5,
                 "no license held from an earlier test")

    def client_tls(self):
        return self.site.tls(os.path.join(self.client.dir, "client.crt"),
                             os.path.join(self.client.dir, "client.key"))

    def test_two_licenses_third_denied_then_waits(self):
        a, b = run(self.client, self.tool, "2"), run(self.client, self.tool, "2")
        wait_for(lambda: len(leases(self.site, self.m)) == 2, 5, "two licenses in use")
        c = run(self.client, self.tool, "0.1")
        out, err = c.communicate(timeout=20)
        self.assertEqual(c.returncode, 75, err)
        self.assertIn("denied", err)
        self.assertIn("licenses of cad are in use", err)
        self.assertIn("it would be number 1 in the queue", err)
        t0 = time.monotonic()
        d = run(self.client, self.tool, "0.1", wait=20)
        d.communicate(timeout=30)
        self.assertEqual(d.returncode, 0)
        for p in (a, b):
            p.communicate(timeout=20)
            self.assertEqual(p.returncode, 0)
        # it started as soon as one of the first two finished (about 2 s in)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertGreater(time.monotonic() - t0, 1)

    def test_killed_client_license_returns_after_lease_expires(self):
        p = run(self.client, self.tool, "30")
        wait_for(lambda: len(leases(self.site, self.m)) == 1, 5, "the license in use")
        p.kill()
        p.wait(5)
        t0 = time.monotonic()
        wait_for(lambda: leases(self.site, self.m) == [], TTL_MS / 1000 + 3,
                 "the lease to expire")
        self.assertGreater(time.monotonic() - t0, TTL_MS / 1000 / 2)
        subprocess.run(["pkill", "-f", self.tool + " 30"])

    def test_exit_status_and_signals_pass_through(self):
        r = subprocess.run([prog("siteward-run"), "--agent", self.client.dir, "--",
                            "/bin/sh", "-c", "exit 7"], timeout=20)
        self.assertEqual(r.returncode, 7)
        p = run(self.client, self.tool, "30")
        wait_for(lambda: len(leases(self.site, self.m)) == 1, 5, "the license in use")
        # granted is not yet started: a signal before the program runs ends siteward-run
        # itself, by design
        wait_for(lambda: has_child(p.pid, self.tool), 10, "the program started")
        os.kill(p.pid, signal.SIGTERM)  # forwarded to the program
        p.communicate(timeout=10)
        self.assertEqual(p.returncode, 128 + signal.SIGTERM)
        wait_for(lambda: leases(self.site, self.m) == [], 3, "the check-in")

    def test_health_shows_shares_to_administrators_only(self):
        status, h = meter_api(self.site, self.m, "GET", "/v1/health")
        self.assertEqual(status, 200, h)
        self.assertEqual(h["products"]["cad"]["allotment"], 2, h)
        # a machine's metering client (its users may read its key) gets the counts only
        ctx = self.site.tls(os.path.join(self.client.dir, "client.crt"),
                            os.path.join(self.client.dir, "client.key"))
        status, h = meter_api(self.site, self.m, "GET", "/v1/health", ctx=ctx)
        self.assertEqual(status, 200, h)
        self.assertEqual(h["status"], "ok")
        self.assertNotIn("products", h)

    def test_hostile_requests_refused(self):
        ctx = self.client_tls()
        client_id = uuid.uuid4().hex
        ticket = self.client.ticket_header()
        status, g = meter_api(self.site, self.m, "POST", "/v1/checkout",
                              {"exe": "cadtool", "user": "u", "pid": 1, "client": client_id,
                               "wait_ms": 0}, ctx=ctx, headers=ticket)
        self.assertTrue(g["granted"], g)
        try:
            status, body = meter_api(self.site, self.m, "POST", "/v1/checkout",
                                     {"exe": "nosuchprogram", "user": "u", "pid": 1,
                                      "client": client_id, "wait_ms": 0}, ctx=ctx,
                                     headers=ticket)
            self.assertEqual((status, body), (200, {"metered": False}))
            forged = uuid.uuid4().hex
            status, body = meter_api(self.site, self.m, "POST", "/v1/heartbeat",
                                     {"client": client_id, "leases": [forged]}, ctx=ctx)
            self.assertEqual(body["lost"], [forged])
            status, body = meter_api(self.site, self.m, "POST", "/v1/checkin",
                                     {"client": client_id, "lease": forged}, ctx=ctx)
            self.assertEqual(status, 404)
            # another client's lease
            status, body = meter_api(self.site, self.m, "POST", "/v1/checkin",
                                     {"client": uuid.uuid4().hex, "lease": g["lease"]},
                                     ctx=ctx)
            self.assertEqual(status, 403, body)
            status, body = meter_api(self.site, self.m, "POST", "/v1/heartbeat",
                                     {"client": uuid.uuid4().hex, "leases": [g["lease"]]},
                                     ctx=ctx)
            self.assertEqual(body["lost"], [g["lease"]])
            for raw in (b"{", b"[]", b'{"exe": 5}', b'{"exe":"x","user":"u","pid":1,'
                        b'"client":"nothex","wait_ms":0}', b"x" * 20000):
                try:
                    status, body = meter_api(self.site, self.m, "POST", "/v1/checkout",
                                             raw=raw, ctx=ctx, headers=ticket)
                except OSError:
                    # refused before the body was read, and the connection closed
                    self.assertGreater(len(raw), 16 * 1024)
                    continue
                self.assertIn(status, (400, 413), raw[:40])
            self.assertEqual(len(leases(self.site, self.m)), 1)
            # the site server does not accept a client certificate
            self.assertEqual(self.site.api("GET", "/v1/systems", ctx=ctx)[0], 403)
        finally:
            meter_api(self.site, self.m, "POST", "/v1/checkin",
                      {"client": client_id, "lease": g["lease"]}, ctx=ctx)

    def test_usage_reported_once(self):
        # drawtool is registered before the license server started, and used only here
        draw = os.path.join(self.site.tmp, "drawtool")
        shutil.copy("/bin/sleep", draw)

        def launches():
            return sum(u["launches"] for u in
                       self.site.cli_json("usage", "--product", "draw")["usage"])
        self.assertEqual(launches(), 0)
        p = run(self.client, draw, "0.2")
        p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0)
        wait_for(lambda: launches() == 1, 15, "the run in the usage report")
        # another upload pass, which a later run of another product shows: nothing
        # counted twice
        def cad():
            return sum(u["launches"] for u in
                       self.site.cli_json("usage", "--product", "cad")["usage"])
        before = cad()
        p = run(self.client, self.tool, "0.1")
        p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0)
        wait_for(lambda: cad() > before, 20, "a later run in the usage report")
        self.assertEqual(launches(), 1)


class MeterCrash(unittest.TestCase):
    def test_kill9_under_load_keeps_acknowledged_leases_and_usage(self):
        site, (m,), client, tool = meter_site(licenses=50)
        try:
            ctx = site.tls(os.path.join(client.dir, "client.crt"),
                           os.path.join(client.dir, "client.key"))
            hdr = client.ticket_header()
            held, granted, returned, stop = [], set(), [], threading.Event()
            failed = []
            cid = uuid.uuid4().hex

            def checkout():
                status, g = meter_api(site, m, "POST", "/v1/checkout",
                                      {"exe": "cadtool", "user": "u", "pid": 1,
                                       "client": cid, "wait_ms": 0}, ctx=ctx, headers=hdr)
                return g["lease"] if status == 200 and g.get("granted") else None

            for _ in range(10):
                held.append(checkout())

            def churn():
                while not stop.is_set():
                    try:
                        lease = checkout()
                        if lease:
                            granted.add(lease)
                            status, _ = meter_api(site, m, "POST", "/v1/checkin",
                                                  {"client": cid, "lease": lease}, ctx=ctx)
                            if status == 200:
                                returned.append(lease)
                    except OSError:
                        failed.append(time.monotonic())
                        time.sleep(0.05)

            workers = [threading.Thread(target=churn) for _ in range(4)]
            for w in workers:
                w.start()
            wait_for(lambda: len(returned) > 10, 20, "more than ten check-ins under way")
            pid = m.service("meter")["pid"]
            n = len(failed)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: len(failed) > n, 10, "a worker's call to fail on the killed meter")
            stop.set()
            for w in workers:
                w.join(20)
            # the agent restarts it; every acknowledged grant is live again
            wait_for(lambda: leases(site, m) is not None, 15, "the license server back")
            live = {x["lease"] for x in leases(site, m)}
            # acknowledged grants are live, acknowledged check-ins stay released; only
            # calls in flight at the crash (one per worker) may have gone either way
            self.assertTrue(set(held) <= live, set(held) - live)
            self.assertFalse(live & set(returned), "a checked-in lease came back")
            self.assertLessEqual(len(live - set(held) - granted), len(workers))
            self.assertLessEqual(len((granted - set(returned)) - live), len(workers))
            # every acknowledged check-in becomes exactly one usage record
            self.assertGreater(len(returned), 10)

            def stored():
                rows = site.db_rows("usage")
                return all(sum(r in row for row in rows) == 1 for r in returned)
            wait_for(stored, 20, "every returned lease's run in the site database")
        finally:
            site.close()


class Failover(unittest.TestCase):
    def test_two_meters_share_and_fail_over_within_the_count(self):
        site, (m1, m2), client, tool = meter_site(n_meters=2, licenses=2,
                                                  conf={"metering.meter_poll_ms": "500"})

        def even():
            # applied and in use, as each reported, and assigned, as the site last
            # worked out
            rows = {r[0]: (r[2], r[3], r[5])
                    for r in site.db_fields("allotments") if r[1] == "cad"}
            return rows.get(m1.name) == rows.get(m2.name) == ("1", "0", "1")
        try:
            # a share changes hands only once its holder has given it up: wait until
            # the start-up shares have settled
            wait_for(even, 10, "even shares")
            procs = [run(client, tool, "5") for _ in range(3)]
            held = [0]

            # the third is denied at once, while the first two hold their licenses
            def two_hold_and_one_denied():
                held[0] = max(held[0],
                              len(leases(site, m1) or []) + len(leases(site, m2) or []))
                return any(p.poll() is not None for p in procs) and held[0] >= 2
            wait_for(two_hold_and_one_denied, 20,
                     "two runs holding licenses and the third denied")
            self.assertEqual(held[0], 2)
            outs = [p.communicate(timeout=20) for p in procs]
            self.assertEqual(sorted(p.returncode for p in procs), [0, 0, 75], outs)
            # idle again, the shares even out; then m1 goes away and its clients fail
            # over to m2, whose share is the one license m1 does not hold
            wait_for(even, 10, "even shares, nothing in use")
            site.cli("service", "stop", "m1", "meter")
            # the licensed run holds m2's license for 5 s: long enough to be seen by a
            # loaded machine, and every look counts, not only the last
            procs = [run(client, tool, "5") for _ in range(2)]
            most = [0]

            def one_holds_and_one_denied():
                most[0] = max(most[0], len(leases(site, m2) or []))
                return any(p.poll() is not None for p in procs) and most[0] > 0
            wait_for(one_holds_and_one_denied, 20,
                     "one run holding m2's license and the other denied")
            self.assertEqual(most[0], 1)
            outs = [p.communicate(timeout=30) for p in procs]
            self.assertEqual(sorted(p.returncode for p in procs), [0, 75], outs)
        finally:
            site.close()


class Rebalance(unittest.TestCase):
    """Shares follow demand, and the site never grants more than the count, even while
    a metering server holding licenses cannot be reached."""

    def test_shares_follow_demand_within_the_count(self):
        site, (m1, m2), client, tool = meter_site(n_meters=2, licenses=2,
                                                  conf={"metering.meter_poll_ms": "500"})
        ctx = site.tls(os.path.join(client.dir, "client.crt"),
                       os.path.join(client.dir, "client.key"))
        hdr = client.ticket_header()
        over, stop = [], threading.Event()

        def checkout(m, wait_ms=0):
            return meter_api(site, m, "POST", "/v1/checkout",
                             {"exe": "cadtool", "user": "u", "pid": 1,
                              "client": uuid.uuid4().hex, "wait_ms": wait_ms}, ctx=ctx,
                             headers=hdr)[1]

        def watch():
            while not stop.is_set():
                a, b = leases(site, m1), leases(site, m2)
                if a is not None and b is not None and len(a) + len(b) > 2:
                    over.append((a, b))
                time.sleep(0.05)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            # m1's one license in use, m2's idle; a client that can reach only m1 waits
            wait_for(lambda: checkout(m1).get("granted"), 10, "a license from m1")
            t0 = time.monotonic()
            waited = checkout(m1, wait_ms=15000)
            # m2 gave up its idle license and m1 got it, well before the wait ran out
            self.assertTrue(waited.get("granted"), waited)
            self.assertLess(time.monotonic() - t0, 6)
            self.assertEqual(len(leases(site, m1)), 2)
            self.assertEqual(checkout(m2).get("granted"), False)
        finally:
            stop.set()
            watcher.join(10)
            site.close()
        self.assertEqual(over, [], "more licenses granted than the count")

    def test_unreachable_server_keeps_its_licenses_reserved(self):
        site, (m1, m2), client, tool = meter_site(n_meters=2, licenses=2,
                                                  conf={"metering.meter_poll_ms": "500"})
        try:
            ctx = site.tls(os.path.join(client.dir, "client.crt"),
                           os.path.join(client.dir, "client.key"))
            hdr = client.ticket_header()
            # the shares settle to one each once both servers have reported
            g = wait_for(lambda: (lambda r: r if r.get("granted") else None)(
                meter_api(site, m2, "POST", "/v1/checkout",
                          {"exe": "cadtool", "user": "u", "pid": 1,
                           "client": uuid.uuid4().hex, "wait_ms": 0}, ctx=ctx, headers=hdr)[1]),
                10, "a license from m2")
            meter_pid = m2.service("meter")["pid"]
            os.kill(meter_pid, signal.SIGSTOP)  # m2 holds a license and cannot be asked
            try:
                procs = [run(client, tool, "0", wait=4) for _ in range(3)]
                outs = [p.communicate(timeout=30) for p in procs]
                # m1 may use only the license m2 does not hold
                self.assertEqual(sorted(p.returncode for p in procs), [0, 0, 0], outs)
                self.assertLessEqual(len(leases(site, m1)), 1)
                status, cfg = site.api("GET", "/v1/meter/config",
                                       ctx=site.tls(*m1.cert()))
                share = {p["name"]: p["allotment"] for p in cfg["products"]}["cad"]
                self.assertLessEqual(share, 1)
            finally:
                os.kill(meter_pid, signal.SIGCONT)
        finally:
            site.close()


    def test_a_server_losing_its_role_keeps_its_licenses_reserved_until_it_stops(self):
        site, (m1, m2), client, tool = meter_site(n_meters=2, licenses=2,
                                                  conf={"metering.meter_poll_ms": "500"})
        try:
            ctx = site.tls(os.path.join(client.dir, "client.crt"),
                           os.path.join(client.dir, "client.key"))
            hdr = client.ticket_header()

            def share(m):
                status, cfg = site.api("GET", "/v1/meter/config", ctx=site.tls(*m.cert()))
                return {p["name"]: p["allotment"] for p in cfg["products"]}["cad"]

            def checkout(m):
                return meter_api(site, m, "POST", "/v1/checkout",
                                 {"exe": "cadtool", "user": "u", "pid": 1,
                                  "client": uuid.uuid4().hex, "wait_ms": 0}, ctx=ctx,
                                 headers=hdr)[1]

            def polled(m):
                rows = [r for r in site.db_fields("allotments") if r[:2] == [m.name, "cad"]]
                return int(rows[0][6]) if rows else 0
            wait_for(lambda: checkout(m1).get("granted"), 10, "a license from m1")
            wait_for(lambda: share(m2) == 1, 10, "the shares to settle to one each")
            # m1 loses the role while its agent is frozen: its license server keeps
            # running, and may grant from its share until the agent stops it
            m1.proc.signal(signal.SIGSTOP)
            try:
                site.cli("role", "remove", "m1", "software-metering", timeout=60)
                for i in range(3):  # several polls of m2's
                    wait_for(lambda last=polled(m2): polled(m2) > last, 10,
                             f"m2's poll {i + 1} of 3 after the role went")
                self.assertEqual(share(m2), 1, "m1's licenses given away while it runs")
                self.assertIsNotNone(leases(site, m1), "m1's license server stopped")
            finally:
                m1.proc.signal(signal.SIGCONT)
            # once m1's agent has stopped its license server and said so, m2 has both
            wait_for(lambda: share(m2) == 2, 20, "m2 to get m1's share")
            self.assertIsNone(leases(site, m1))
        finally:
            site.close()

class Push(unittest.TestCase):
    def test_a_new_product_reaches_the_license_server_at_once(self):
        # the license server's own poll is a minute away: only the push can tell it
        site, (m,), client, tool = meter_site(conf={"metering.meter_poll_ms": "60000"})
        try:
            zero = os.path.join(site.tmp, "zerotool")
            shutil.copy("/bin/true", zero)
            r = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--", zero],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)  # not a product: it just runs
            site.cli("product", "add", "zero", "--exe", "zerotool", "--licenses", "0",
                     "--enforce")
            t0 = time.monotonic()

            def denied():
                r = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--",
                                    zero], capture_output=True, text=True, timeout=30)
                return r.returncode == 75
            wait_for(denied, 5, "the license server to know the new product")
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            site.close()


class MeterDown(unittest.TestCase):
    def test_programs_run_and_usage_arrives_once(self):
        site, (m,), client, tool = meter_site()
        try:
            site.cli("service", "stop", "m1", "meter")
            r = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--", tool,
                                "0.1"], capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            wait_for(lambda: any("cadtool" in x and "offline" in x
                                 for x in site.db_rows("usage")), 15,
                     "the offline run uploaded")
            # attributed to its product by the site server, though it ran offline
            self.assertEqual(
                sum(u["launches"] for u in site.cli_json("usage", "--product", "cad")["usage"]),
                1)
            site.cli("service", "start", "m1", "meter")
            wait_for(lambda: meter_api(site, m, "GET", "/v1/health")[0] == 200, 10,
                     "m1's license server back")
            # the client's agent sends what it has cached after each heartbeat
            wait_heartbeats(site, client.name, 2)
            self.assertEqual(sum("offline" in x for x in site.db_rows("usage")), 1)
        finally:
            site.close()

    def test_a_refused_record_does_not_hold_back_the_others(self):
        site, (m,), client, tool = meter_site()
        try:
            site.cli("service", "stop", "m1", "meter")
            client.stop()
            for _ in range(3):
                r = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--", tool,
                                    "0"], capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
            # a record the server will never take, as any user on the machine could
            # drop into the cache
            cache = os.path.join(client.dir, "usage-cache")
            poison = os.path.join(cache, "0-poison.json")
            with open(poison, "w") as f:
                json.dump({"id": "poison", "exe": "cadtool", "user": "x", "host": "h",
                           "kind": "bogus", "source": "offline", "start": 1, "end": 2}, f)
            self.assertEqual(len(os.listdir(cache)), 4)
            client.start()

            def launches():
                return sum(u["launches"] for u in
                           site.cli_json("usage", "--product", "cad")["usage"])
            wait_for(lambda: launches() == 3, 20, "the three good records")
            wait_for(lambda: os.listdir(cache) == ["0-poison.json.rejected"], 10,
                     "the refused record kept aside, the rest uploaded")
            log = client.proc.log()
            self.assertIn("sending", log)
            self.assertIn("kept aside", log)
        finally:
            site.close()


    def test_a_record_the_site_server_refuses_is_kept_aside_by_the_license_server(self):
        site, (m,), client, tool = meter_site()
        try:
            site.cli("service", "stop", "m1", "meter")
            # pending usage in the license server's journal, one record of it damaged so
            # that the site server refuses it (it ends before it starts)
            now = int(time.time() * 1000)
            good = [uuid.uuid4().hex for _ in range(3)]
            bad = uuid.uuid4().hex
            with open(os.path.join(m.dir, "meter", "journal"), "a") as f:
                for seq, (rid, end) in enumerate([(good[0], now), (bad, now - 60000),
                                                  (good[1], now), (good[2], now)]):
                    f.write(json.dumps({"seq": 1000000 + seq, "t": "usage", "usage": {
                        "id": rid, "product": "cad", "exe": "cadtool", "user": "u",
                        "host": "c1", "start": now - 1000, "end": end, "kind": "run",
                        "wait_ms": 0, "source": "meter"}}) + "\n")
            site.cli("service", "start", "m1", "meter")

            def launches():
                return sum(u["launches"] for u in
                           site.cli_json("usage", "--product", "cad")["usage"])
            wait_for(lambda: launches() == 3, 30, "the three good records")
            rejected = os.path.join(m.dir, "meter", "usage-rejected.jsonl")
            wait_for(lambda: os.path.exists(rejected), 10, "the refused record kept aside")
            with open(rejected) as f:
                kept = [json.loads(line) for line in f]
            self.assertEqual([r["id"] for r in kept], [bad])
            with open(os.path.join(m.dir, "logs", "meter.log")) as f:
                self.assertIn("kept aside", f.read())
            # nothing is pending any more, and nothing was counted twice
            wait_for(lambda: meter_api(site, m, "GET", "/v1/health")[1].get(
                "pending_usage") == 0, 10, "no usage pending")
            # another upload pass, which a later run of another product shows
            draw = os.path.join(site.tmp, "drawtool")
            shutil.copy("/bin/sleep", draw)
            r = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--", draw, "0"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            wait_for(lambda: site.cli_json("usage", "--product", "draw")["usage"], 20,
                     "a later run in the usage report")
            self.assertEqual(launches(), 3)
            self.assertNotIn(bad, "".join(map(str, site.db_rows("usage"))))
        finally:
            site.close()

if __name__ == "__main__":
    unittest.main()
