"""The web console: its own port beside the API's, the API's administrators' routes and
its files there, with security headers and strong ETags; only administrators'
certificates; a change refused without the console's header or from another origin
(the rule against forged requests); and the console in a real browser, headless
Chromium driven by tests/browser/console.mjs, logged in with PKCS#12 files: the
systems, a service stopped with its answer, an upgrade followed live as a frozen
system is deferred, the audit page, and a viewer shown no buttons and refused the
same stop. Screenshots go to $SITEWARD_KEEP/console, or the site's folder (printed)."""
import http.client
import json
import os
import socket
import re
import shutil
import signal
import ssl
import subprocess
import time
import unittest
import uuid

from harness import Site, free_port, prog, script, wait_for
from test_metering import meter_api
from test_upgrade import build_package

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHROMIUM = os.environ.get("SITEWARD_CHROMIUM", "/usr/bin/chromium")
PLAYWRIGHT = os.path.join(ROOT, "console", "node_modules", "playwright-core")


class ConsoleSite(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cport = free_port()
        cls.site = Site(heartbeat=1, extra_conf={"console.listen": f"127.0.0.1:{cls.cport}"})
        try:
            cls.site.start()
            cls.dirs = {}
            for name, role in (("op1", "operator"), ("v1", "viewer")):
                d = os.path.join(cls.site.tmp, f"ws-{name}")
                cls.site.cli("admin", "add", name, "--role", role, "--out", d)
                cls.dirs[name] = d
            for name in ("w1", "w2"):
                a = cls.site.enroll(name, start=False)
                a.add_service("web", script("cooperative.py", name), stop_timeout="2")
                a.start()
                cls.site.cli("role", "add", name, "test")
            for name in ("w1", "w2"):
                wait_for(lambda n=name: cls.running(n), 15, f"{name}'s web service")
            cls.usage()
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        for a in cls.site.agents.values():
            if a.proc and a.proc.alive():
                a.proc.signal(signal.SIGCONT)
        cls.site.close()

    @classmethod
    def usage(cls):
        """A product and a week of its runs, two at once on some days, for the chart."""
        cls.site.cli("product", "add", "cad", "--exe", "cadtool", "--licenses", "2")
        day, now = 86400000, int(time.time() * 1000)
        recs = []
        for d in range(7):
            start = now - (d + 1) * day
            for u in range(1 + d % 2):
                recs.append({"id": uuid.uuid4().hex, "product": "cad", "exe": "cadtool",
                             "user": f"user{u}", "host": "w1", "start": start,
                             "end": start + 3600000, "kind": "run", "wait_ms": 0,
                             "source": "offline"})
        status, r = cls.site.api("POST", "/v1/usage", {"now": now, "records": recs},
                                 ctx=cls.site.tls(*cls.site.agents["w1"].cert()))
        assert status == 200 and r["accepted"] == len(recs), r

    @classmethod
    def running(cls, name):
        svcs = cls.site.systems()[name]["services"]
        return bool(svcs) and all(s["state"] == "running" for s in svcs)

    def ctx(self, who):
        d = self.dirs[who]
        return self.site.tls(os.path.join(d, "admin.crt"), os.path.join(d, "admin.key"))

    def console(self, method, path, who="op1", headers=None, body=None, ctx=None):
        """One request to the console's port: (status, headers, body text)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.cport,
                                           context=ctx or self.ctx(who), timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
        finally:
            conn.close()


class ConsoleServer(ConsoleSite):
    def test_the_page_and_its_files_carry_security_headers_and_etags(self):
        status, h, page = self.console("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        self.assertIn("default-src 'self'", h["content-security-policy"])
        self.assertEqual(h["x-content-type-options"], "nosniff")
        self.assertEqual(h["referrer-policy"], "no-referrer")
        self.assertEqual(h["x-frame-options"], "DENY")
        self.assertEqual(h["cache-control"], "no-cache")
        # no inline script: every script is a file of the console's own
        self.assertNotRegex(page, r"<script(?![^>]*\bsrc=)[^>]*>")
        etag = h["etag"]
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')
        status, h2, body = self.console("GET", "/", headers={"If-None-Match": etag})
        self.assertEqual((status, body), (304, ""))
        # the assets are named by the version of them all, and kept for good
        m = re.search(r'src="(/s/[0-9a-f]{16}/app\.js)"', page)
        status, h, js = self.console("GET", m.group(1))
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "text/javascript; charset=utf-8")
        self.assertIn("immutable", h["cache-control"])
        self.assertIn("import", js)
        self.assertEqual(self.console("GET", "/s/0123456789abcdef/app.js")[0], 404)
        self.assertEqual(self.console("GET", m.group(1).replace("app.js", "../siteward.conf"))[0],
                         404)
        # the API's answers there carry the headers too
        status, h, _ = self.console("GET", "/v1/systems")
        self.assertEqual(status, 200)
        self.assertEqual(h["x-content-type-options"], "nosniff")

    def test_whoami_and_the_api_routes(self):
        status, _, body = self.console("GET", "/v1/whoami", who="v1")
        self.assertEqual(status, 200)
        self.assertIn('"role":"viewer"', body.replace(" ", ""))
        self.assertEqual(self.site.api("GET", "/v1/whoami")[1]["name"], "admin")

    def test_only_administrators_certificates(self):
        a = self.site.agents["w1"]
        agent = self.site.tls(*a.cert())
        status, _, body = self.console("GET", "/", ctx=agent)
        self.assertEqual(status, 403, body)
        self.assertIn("administrators' certificates only", body)
        # the agents' routes are not on the console's port at all
        status, _, _ = self.console("POST", "/v1/heartbeat", ctx=agent, body="{}")
        self.assertEqual(status, 404)
        # without a certificate, the page (which says what is missing) and nothing else
        anon = self.site.tls()
        self.assertEqual(self.console("GET", "/", ctx=anon)[0], 200)
        self.assertEqual(self.console("GET", "/v1/systems", ctx=anon)[0], 401)

    def test_a_forged_change_is_refused_and_recorded(self):
        stop = "/v1/systems/w2/services/web/stop"
        own = f"https://127.0.0.1:{self.cport}"
        # what a foreign page can send without asking: no custom header
        status, _, body = self.console("POST", stop, body="{}",
                                       headers={"Content-Type": "text/plain",
                                                "Origin": "https://evil.example"})
        self.assertEqual(status, 403, body)
        self.assertIn("X-Siteward-Console: 1", body)
        # the header, but another site's page
        status, _, body = self.console("POST", stop, body="{}",
                                       headers={"X-Siteward-Console": "1",
                                                "Origin": "https://evil.example"})
        self.assertEqual(status, 403, body)
        self.assertIn("another site's page", body)
        # a preflight is never answered as a browser would need
        status, h, _ = self.console("OPTIONS", stop, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-siteward-console"})
        self.assertNotEqual(status // 100, 2)
        self.assertNotIn("access-control-allow-origin", h)
        self.assertTrue(self.running("w2"))
        # both refusals are in the audit log, by op1
        records = self.site.cli_json("audit")["records"]
        refused = [r for r in records if r["path"] == stop and r["status"] == 403]
        self.assertGreaterEqual(len(refused), 2, records)
        self.assertTrue(all(r["who"] == "op1" for r in refused))
        # the console's own page: the header and its own origin
        status, _, body = self.console("POST", "/v1/systems/w2/services/web/restart",
                                       body='{"timeout": 15}',
                                       headers={"X-Siteward-Console": "1", "Origin": own,
                                                "Content-Type": "application/json"})
        self.assertEqual(status, 200, body)
        self.assertIn('"running"', body)
        # the API's port keeps its rules: the command line sends no such header
        status, body = self.site.api("POST", "/v1/systems/w2/services/web/restart",
                                     body={"timeout": 15})
        self.assertEqual(status, 200, body)


class ConsoleNoPort(unittest.TestCase):
    """A console port another program holds: the site server starts and serves its API,
    and says what to change; a console is not worth an outage."""

    def test_the_api_serves_when_the_console_port_is_taken(self):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        site = Site(heartbeat=1, extra_conf={"console.listen": f"127.0.0.1:{port}"})
        try:
            site.start()
            self.assertEqual(site.api("GET", "/v1/site")[0], 200)
            self.assertIn(f"[console] listen = 127.0.0.1:{port}", site.server.log())
            self.assertIn("no console (free the port", site.server.log())
        finally:
            held.close()
            site.close()


@unittest.skipUnless(os.access(CHROMIUM, os.X_OK) and os.path.isdir(PLAYWRIGHT),
                     f"needs {CHROMIUM} and {PLAYWRIGHT} (scripts/install-deps installs "
                     "both)")
@unittest.skipIf(os.environ.get("SITEWARD_BROWSER") == "0",
                 "SITEWARD_BROWSER=0: the browser test runs in the first integration pass "
                 "only (the server paths it takes are the same under ASan and PostgreSQL)")
class ConsoleBrowser(ConsoleSite):
    def hold_a_license(self):
        """w1 runs a license server, and a run of cadtool on w1 holds a license of it."""
        w1 = self.site.agents["w1"]
        self.site.cli("role", "add", "w1", "software-metering")

        def listed():
            try:
                with open(os.path.join(w1.dir, "meters.json")) as f:
                    return len(json.load(f)["meters"]) == 1
            except (OSError, ValueError, KeyError):
                return False
        wait_for(listed, 20, "w1 to learn its license server")
        # named as soon as its service starts: asked before it listens, the run would
        # go its offline way
        def answers():
            try:
                return meter_api(self.site, w1, "GET", "/v1/health")[0] == 200
            except OSError:
                return False
        wait_for(answers, 20, "w1's license server to answer")
        tool = os.path.join(self.site.tmp, "cadtool")
        shutil.copy("/bin/sleep", tool)
        p = subprocess.Popen([prog("siteward-run"), "--verbose", "--agent", w1.dir, "--", tool,
                              "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        try:
            wait_for(lambda: p.poll() is not None or self.site.cli_json(
                "license", "status")["leases"], 20, "the run to hold a license")
        except AssertionError:
            # the program too, which holds the pipes
            os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError("siteward-run: " + p.communicate(timeout=10)[1])
        if p.poll() is not None:
            self.fail("siteward-run ended: " + p.communicate()[1])
        return p

    def test_the_console_in_a_browser(self):
        keep = os.environ.get("SITEWARD_KEEP")
        out = os.path.join(keep, "console") if keep else os.path.join(self.site.tmp,
                                                                       "screenshots")
        pkg = build_package(self.site)
        holder = self.hold_a_license()
        frozen = self.site.agents["w2"]
        env = dict(os.environ, CONSOLE_URL=f"https://127.0.0.1:{self.cport}",
                   API_URL=self.site.url, OPERATOR_DIR=self.dirs["op1"],
                   VIEWER_DIR=self.dirs["v1"], SYSTEM="w1", SERVICE="web", PACKAGE=pkg,
                   FROZEN="w2", FROZEN_PID=str(frozen.proc.pid), OUT=out, CHROMIUM=CHROMIUM,
                   MEASURE="1", HELD="cadtool")
        t0 = time.monotonic()
        try:
            r = subprocess.run(["node", os.path.join(ROOT, "tests", "browser", "console.mjs")],
                               capture_output=True, text=True, timeout=600, env=env)
        finally:
            frozen.proc.signal(signal.SIGCONT)
            if holder.poll() is None:
                holder.kill()
        print(r.stdout + r.stderr)
        # the license the operator took back in the browser: its program was stopped
        _, err = holder.communicate(timeout=30)
        self.assertIn("was taken back (reclaimed by op1)", err)
        print(f"screenshots in {out} ({time.monotonic() - t0:.0f} s in the browser)")
        if not keep and os.environ.get("SITEWARD_CONSOLE_SHOTS"):
            shutil.copytree(out, os.environ["SITEWARD_CONSOLE_SHOTS"], dirs_exist_ok=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("FAIL", r.stdout)
        for what in ("logged in with the operator's PKCS#12 file", "stop answered",
                     "the operator took the license back",
                     "w2 deferred", "the audit page shows the stop",
                     "the viewer sees no service buttons", "no errors"):
            self.assertIn(what, r.stdout)
        # the forged page's requests changed nothing, and its simple one was refused
        records = self.site.cli_json("audit")["records"]
        self.assertTrue(any(r["who"] == "op1" and r["status"] == 403 and
                            "X-Siteward-Console" in r["outcome"] for r in records), records)
        self.assertTrue(any(r["who"] == "v1" and r["status"] == 403 and
                            r["path"].endswith("/web/stop") for r in records), records)
        wait_for(lambda: self.running("w1"), 15, "w1's web service")


if __name__ == "__main__":
    unittest.main()
