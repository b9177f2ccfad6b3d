"""Site upgrades end to end (KB Q258547): the site server upgrades itself, then every
system, with real agents, real services, real signals and real packages; a system that
cannot be stopped is handled by policy and the run never hangs."""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import unittest
import uuid

from harness import Proc, Site, prog, script, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NEW = "9.0.0"
PROGRAMS = ("siteward", "siteward-server", "siteward-agent", "siteward-meter", "siteward-run")
# An extra migration a package can carry, so rollback has a database to restore.
PROBE_SQL = "CREATE TABLE upgrade_probe (id BIGINT PRIMARY KEY);\n"


def build_tree(dest, migration=True):
    """An install tree as `make install` lays it out, from this build."""
    os.makedirs(os.path.join(dest, "bin"))
    for p in PROGRAMS:
        shutil.copy2(prog(p), os.path.join(dest, "bin", p))
    sql = os.path.join(dest, "share", "siteward", "sql")
    os.makedirs(sql)
    for name in sorted(os.listdir(os.path.join(ROOT, "sql"))):
        shutil.copy(os.path.join(ROOT, "sql", name), sql)
    if migration:
        n = len(os.listdir(sql)) + 1
        with open(os.path.join(sql, f"{n:03d}_upgrade_probe.sql"), "w") as f:
            f.write(PROBE_SQL)
    return dest


def build_package(site, version=NEW, migration=False):
    tree = build_tree(tempfile.mkdtemp(prefix="tree-", dir=site.tmp), migration)
    out = os.path.join(site.tmp, f"siteward-{version}.pkg")
    site.cli("package", "build", "--version", version, "--from", tree, "-o", out)
    return out


def old_version():
    r = subprocess.run([prog("siteward-agent"), "--version"], capture_output=True, text=True)
    return r.stdout.split()[-1]


def exe_of(pid):
    return os.readlink(f"/proc/{pid}/exe")


class UpgradeSite(unittest.TestCase):
    """Helpers shared by the scenarios: a site with agents, some with roles."""

    def make_site(self, plain=2, meters=(), stubborn=(), conf=None):
        site = Site(heartbeat=1, extra_conf=conf)
        self.addCleanup(self.cleanup, site)
        site.start()
        for i in range(plain):
            a = site.enroll(f"a{i + 1}", start=False)
            a.add_service("work", script("cooperative.py", a.name), stop_timeout="2")
            a.start()
            site.cli("role", "add", a.name, "test")
        for name in meters:
            m = site.enroll(name, start=False)
            with open(os.path.join(m.dir, "agent.conf"), "a") as f:
                if name in stubborn:
                    # the Software Metering service of KB Q258547: it cannot be stopped
                    f.write(f"\n[service.meter]\ncommand = {script('stubborn.py')}\n"
                            "stop_timeout = 60\n")
            m.start()
            site.cli("role", "add", name, "software-metering")
        for a in site.agents.values():
            wait_for(lambda a=a: self.running(site, a.name), 15, f"{a.name}'s services")
        return site

    def cleanup(self, site):
        for a in site.agents.values():
            if a.proc and a.proc.alive():
                a.proc.signal(signal.SIGCONT)
        site.close()

    def running(self, site, name):
        svcs = site.systems()[name]["services"]
        return bool(svcs) and all(s["state"] == "running" for s in svcs)

    def upgrade(self, site, *args, timeout=180):
        r = site.cli("upgrade", *args, "--json", check=False, timeout=timeout)
        try:
            run = json.loads(r.stdout)
        except ValueError:
            return r.returncode, None, r.stderr
        self.assert_within_bound(run)
        return r.returncode, run, r.stderr

    def assert_within_bound(self, run):
        """Every run ends within the bound it gave before it began."""
        if run.get("bound_ms") and run.get("finished_at"):
            self.assertLessEqual(run["finished_at"], run["deadline_at"], json.dumps(run))
            self.assertLessEqual(run["finished_at"] - run["leg_started_at"], run["bound_ms"])

    def status(self, site):
        return site.cli_json("upgrade", "status")

    def by_name(self, run):
        return {y["name"]: y for y in run["systems"]}

    def assert_on(self, site, name, version):
        """The agent reports `version`, runs from its tree, and its services run."""
        s = site.systems()[name]
        self.assertEqual(s["version"], version, s)
        a = site.agents[name]
        if version == NEW:
            self.assertEqual(os.path.realpath(exe_of(a.proc.pid)),
                             os.path.realpath(os.path.join(a.dir, "versions", NEW, "bin",
                                                           "siteward-agent")))
        # the run's verify step saw them running; the site's copy is as of the agent's
        # last heartbeat, and one sent as they started may be taken in after the verify
        if not self.running(site, name):
            wait_for(lambda: self.running(site, name), 10, f"{name}'s services to run")


def report(err, run):
    return err + "\n" + json.dumps(run, indent=1)


class Refused(UpgradeSite):
    def test_tampered_and_foreign_packages_touch_nothing(self):
        old = old_version()
        site = self.make_site(plain=2)
        pkg = build_package(site)
        with open(pkg, "rb") as f:
            data = bytearray(f.read())
        tampered = os.path.join(site.tmp, "tampered.pkg")
        data[len(data) // 2] ^= 0x55
        with open(tampered, "wb") as f:
            f.write(data)
        other = Site(heartbeat=1)
        try:
            foreign = os.path.join(site.tmp, "foreign.pkg")
            shutil.copy(build_package(other), foreign)
        finally:
            other.close()
        for bad in (tampered, foreign):
            for cmd in ("check", "run"):
                r = site.cli("upgrade", cmd, bad, check=False)
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertIn("package refused", r.stderr)
        r = site.cli("upgrade", "status", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no upgrade", r.stderr)
        self.assertEqual(site.db_rows("upgrades"), [])
        for a in site.agents.values():
            self.assertEqual(site.systems()[a.name]["version"], old)
            self.assertFalse(os.path.exists(os.path.join(a.dir, "versions")))
        self.assertFalse(os.path.exists(os.path.join(site.dir, "versions")))

    def test_hostile_requests_are_refused(self):
        site = self.make_site(plain=1)
        pkg = build_package(site)
        for body, why in (({}, "package"), ({"package": "rel.pkg"}, "site's store"),
                          ({"package": pkg, "parallel": 0}, "parallel"),
                          ({"package": pkg, "on_stuck": "ignore"}, "on_stuck"),
                          ({"package": "/etc/passwd"}, "paths on the server are not read"),
                          ({"package": "0" * 64}, "no package")):
            status, reply = site.api("POST", "/v1/upgrades", body)
            self.assertIn(status, (400, 404), reply)
            self.assertIn(why, reply["error"])
        status, reply = site.api("POST", "/v1/upgrades", raw="{" * 10 + "x")
        self.assertEqual(status, 400)
        self.assertEqual(site.db_rows("upgrades"), [])
        # packages are for agents only, by their hash, and a range resumes
        agent = site.tls(*site.agents["a1"].cert())
        status, _ = site.api("GET", "/v1/packages/x", ctx=site.admin_tls())
        self.assertEqual(status, 403)
        self.assertEqual(site.api("GET", "/v1/packages/..%2fsite.db", ctx=agent)[0], 400)
        self.assertEqual(site.api("GET", "/v1/packages/" + "0" * 64, ctx=agent)[0], 404)
        site.cli("upgrade", "check", pkg)  # uploads it into the site's store
        with open(pkg, "rb") as f:
            data = f.read()
        name = "/v1/packages/" + hashlib.sha256(data).hexdigest()
        conn = http.client.HTTPSConnection("127.0.0.1", site.port, context=agent, timeout=10)
        conn.request("GET", name, headers={"Range": "bytes=100-"})
        r = conn.getresponse()
        self.assertEqual(r.status, 206)
        self.assertEqual(r.getheader("Content-Range"), f"bytes 100-{len(data) - 1}/{len(data)}")
        self.assertEqual(r.read(), data[100:])
        conn.close()
        status, _ = site.api("GET", name, ctx=agent,
                             headers={"Range": f"bytes={len(data) + 1}-"})
        self.assertEqual(status, 416)

    def test_check_reports_each_system(self):
        site = self.make_site(plain=2)
        pkg = build_package(site)
        site.agents["a2"].proc.signal(signal.SIGSTOP)
        r = site.cli("upgrade", "check", pkg, "--json", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        rep = json.loads(r.stdout)
        self.assertEqual(rep["version"], NEW)
        ys = {y["name"]: y for y in rep["systems"]}
        self.assertTrue(ys["a1"]["reachable"])
        self.assertGreater(ys["a1"]["disk_free"], 0)
        self.assertEqual(ys["a1"]["issues"], [])
        self.assertFalse(ys["a2"]["reachable"])
        # (it may also be reported late by then: a warning too)
        # a new connection waits for the handshake, one kept from earlier for the answer,
        # and an agent frozen while its channel to the server was not up for the command
        self.assertTrue(any(re.fullmatch(r"agent not answering: (no connection after 3\.\d s: "
                                         r"TLS handshake unanswered|no answer after 3\.\d s|"
                                         r"not connected: the command was not delivered "
                                         r"within 3\.\d s)",
                                         i["message"].split(";")[0])
                            for i in ys["a2"]["issues"]), ys["a2"]["issues"])
        self.assertEqual({i["level"] for i in ys["a2"]["issues"]}, {"warning"})
        self.assertEqual(rep["errors"], 0)
        self.assertEqual(rep["warnings"], len(ys["a2"]["issues"]))
        self.assertTrue(rep["ok"])
        # a warning stops only a strict run
        r = site.cli("upgrade", "check", pkg, "--strict", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("0 errors", r.stdout)
        self.assertIn("not answering", r.stdout)
        site.agents["a2"].proc.signal(signal.SIGCONT)


class Crash(UpgradeSite):
    def test_kill9_server_mid_run_then_resume(self):
        site = self.make_site(plain=4)
        pkg = build_package(site)
        cli = subprocess.Popen([prog("siteward"), "upgrade", "run", pkg, "--parallel", "1",
                                "--json"], env=dict(os.environ, SITEWARD_SITE=site.dir),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def some_done():
            try:
                run = self.status(site)
            except (AssertionError, ValueError):
                return False
            return run["counts"]["upgraded"] >= 1 and run["counts"]["active"] == 1
        wait_for(some_done, 60, "one system upgraded and one under way")
        # the server and the CLI following it die together
        site.server.kill9()
        cli.kill()
        cli.communicate(timeout=10)
        # the server comes back as a service manager would start it: from `current`
        server = os.path.join(site.dir, "current", "bin", "siteward-server")
        site.server = Proc([server, "--dir", site.dir], os.path.join(site.tmp, "server2.log"))
        wait_for(site._ready, 20, "the server to answer again")
        self.assertEqual(self.status(site)["state"], "interrupted")
        rc, run, err = self.upgrade(site, "resume")
        self.assertEqual(rc, 0, report(err, run))
        self.assertEqual(run["state"], "done")
        for name, y in self.by_name(run).items():
            self.assertEqual(y["state"], "upgraded", y)
            # an agent that restarted just before the kill reports once its backoff
            # ends, up to four heartbeat intervals
            wait_for(lambda n=name: site.systems()[n]["version"] == NEW, 20,
                     f"{name} to report {NEW}")
            self.assert_on(site, name, NEW)
        # the journal in the database agrees with the systems (its rows are written
        # in order off the loop, the run's last)
        def journal():
            rows = site.db_fields("upgrade_systems")
            run_rows = site.db_fields("upgrades")
            return run_rows and run_rows[-1][5] == "done" and rows
        rows = wait_for(journal, 10, "the finished run in the journal")
        self.assertEqual(len(rows), 4)
        self.assertEqual({r[1]: r[4] for r in rows},
                         {n: "upgraded" for n in ("a1", "a2", "a3", "a4")})


class Rollback(UpgradeSite):
    def test_rollback_returns_every_system_and_the_database(self):
        old = old_version()
        site = self.make_site(plain=2, meters=("m1",))
        pkg = build_package(site, migration=True)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
        self.assertEqual(rc, 0, report(err, run))
        for name in site.agents:
            self.assert_on(site, name, NEW)
        self.assertEqual(site.db_rows("upgrade_probe"), [])  # the table exists
        # a backup made before the migration ran: VACUUM INTO, or pg_dump
        self.assertTrue(os.path.getsize(run["server"]["backup"]) > 0)
        rc, run, err = self.upgrade(site, "rollback")
        self.assertEqual(rc, 0, report(err, run))
        self.assertEqual(run["state"], "rolled-back")
        self.assertEqual(run["counts"]["rolled_back"], 3)
        for name in site.agents:
            wait_for(lambda n=name: self.running(site, n), 15, f"{name}'s services")
            self.assert_on(site, name, old)
            self.assertFalse(os.path.exists(os.path.join(site.agents[name].dir, "current")))
        self.assertEqual(os.path.realpath(exe_of(site.server.pid)),
                         os.path.realpath(prog("siteward-server")))
        with self.assertRaises(Exception):
            site.db_rows("upgrade_probe")

    def test_a_failing_migration_stops_the_run_on_the_old_server(self):
        """The package's migrations run off the loop; one that fails stops the run with
        its reason, and the server stays on its version and its schema."""
        site = self.make_site(plain=1)
        tree = build_tree(tempfile.mkdtemp(prefix="tree-", dir=site.tmp), migration=False)
        sql = os.path.join(tree, "share", "siteward", "sql")
        n = len(os.listdir(sql)) + 1
        with open(os.path.join(sql, f"{n:03d}_broken.sql"), "w") as f:
            f.write("CREATE TABLE upgrade_probe (id BIGINT PRIMARY KEY);\n"
                    "INSERT INTO no_such_table VALUES (1);\n")
        pkg = os.path.join(site.tmp, f"siteward-{NEW}.pkg")
        site.cli("package", "build", "--version", NEW, "--from", tree, "-o", pkg)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
        self.assertNotEqual(rc, 0, report(err, run))
        self.assertEqual(run["state"], "failed", report(err, run))
        self.assertIn("the migrations", run["reason"])
        self.assertIn("no_such_table", run["reason"])
        self.assertEqual(os.path.realpath(exe_of(site.server.pid)),
                         os.path.realpath(prog("siteward-server")))
        with self.assertRaises(Exception):
            site.db_rows("upgrade_probe")
        # and the site goes on: a request is answered, the system still reports
        self.assertIn("a1", site.systems())

    def test_a_lost_backup_stops_the_return_and_the_server_stays(self):
        """At the end of a rollback the database is copied back from its backup on the
        thread pool; when the copy fails, the server does not return to a version that
        cannot read its schema: the run fails with the reason and the server goes on."""
        site = self.make_site(plain=1)
        if site._db_url().startswith("postgres"):
            self.skipTest("the SQLite file's copy")
        pkg = build_package(site, migration=True)
        rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
        self.assertEqual(rc, 0, report(err, run))
        os.unlink(run["server"]["backup"])
        rc, run, err = self.upgrade(site, "rollback")
        self.assertNotEqual(rc, 0, report(err, run))
        self.assertEqual(run["state"], "failed", report(err, run))
        self.assertIn("the database restore", run["reason"])
        self.assertIn("cannot return", run["reason"])
        # still the new program, on the migrated schema, and answering
        self.assertEqual(site.db_rows("upgrade_probe"), [])
        self.assertIn(NEW, os.path.realpath(exe_of(site.server.pid)))
        self.assertIn("a1", site.systems())


class Metering(UpgradeSite):
    def test_licenses_keep_coming_during_the_upgrade(self):
        site = self.make_site(plain=0, meters=("m1", "m2"),
                              conf={"metering.meter_poll_ms": "500"})
        tool = os.path.join(site.tmp, "cadtool")
        shutil.copy("/bin/sleep", tool)
        site.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "10",
                 "--enforce")
        client = site.enroll("c1")
        with open(os.path.join(client.dir, "agent.conf"), "a") as f:
            f.write("\n[run]\noffline = deny\n")

        def listed():
            try:
                with open(os.path.join(client.dir, "meters.json")) as f:
                    return len(json.load(f)["meters"]) == 2
            except (OSError, ValueError, KeyError):
                return False
        wait_for(listed, 15, "the client to learn both metering servers")
        pkg = build_package(site)

        def applied(name, product):
            rows = [r for r in site.db_fields("allotments") if r[:2] == [name, product]]
            return int(rows[0][2]) if rows else 0
        # both metering servers have polled the product table: each reports a share of cad
        wait_for(lambda: applied("m1", "cad") and applied("m2", "cad"), 15,
                 "both metering servers to apply a share of cad")
        results, stop = [], threading.Event()

        def runs():
            while not stop.is_set():
                p = subprocess.run([prog("siteward-run"), "--agent", client.dir, "--", tool,
                                    "0.1"], capture_output=True, text=True, timeout=60)
                results.append((p.returncode, p.stderr))
        t = threading.Thread(target=runs)
        t.start()
        try:
            wait_for(lambda: results, 30, "a run before the upgrade")
            rc, run, err = self.upgrade(site, "run", pkg, "--stop-timeout", "3")
            after = len(results)
            # the run under way may have started before the upgrade ended; the next did not
            wait_for(lambda: len(results) >= after + 2, 30, "a run after the upgrade")
        finally:
            stop.set()
            t.join(90)
        self.assertEqual(rc, 0, report(err, run))
        self.assertGreater(len(results), 5)
        # every run got a license (offline = deny: a run without one exits 75)
        self.assertEqual([r for r in results if r[0] != 0], [])

        def launches():
            return sum(u["launches"] for u in
                       site.cli_json("usage", "--product", "cad")["usage"])
        wait_for(lambda: launches() == len(results), 30, "every run in the usage report")
        # a further upload pass of each metering server, which a run of a product of its
        # own through each shows: nothing counted twice
        site.cli("product", "add", "probe", "--exe", "probetool", "--licenses", "2")
        ctx = site.tls(os.path.join(client.dir, "client.crt"),
                       os.path.join(client.dir, "client.key"))
        hdr = client.ticket_header()
        for name in ("m1", "m2"):
            port, cid = site.agents[name].meter_port, uuid.uuid4().hex

            def checkout():
                try:
                    status, g = site.api("POST", "/v1/checkout",
                                         {"exe": "probetool", "user": "u", "pid": 1,
                                          "client": cid, "wait_ms": 0}, ctx=ctx, port=port,
                                         headers=hdr)
                except OSError:
                    return None
                return g if status == 200 and g.get("granted") else None
            g = wait_for(checkout, 15, f"{name} to grant the probe product")
            status, _ = site.api("POST", "/v1/checkin", {"client": cid, "lease": g["lease"]},
                                 ctx=ctx, port=port)
            self.assertEqual(status, 200)
        wait_for(lambda: sum(u["launches"] for u in site.cli_json(
            "usage", "--product", "probe")["usage"]) == 2, 30,
            "both metering servers' next upload passes")
        self.assertEqual(launches(), len(results))


if __name__ == "__main__":
    unittest.main()
