"""Prometheus metrics: /metrics on the site server and the license server, read with a
scrape certificate from `siteward cert scrape`, and the agent's file for node_exporter's
textfile collector. Each passes `promtool check metrics`, and a few values move as the
site does."""
import os
import shutil
import subprocess
import time
import unittest

from harness import wait_for, wait_heartbeats
from test_metering import meter_api, meter_site, run

PROMTOOL = shutil.which("promtool")


def values(text):
    """{'name{labels}': float} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, v = line.rsplit(" ", 1)
            out[key] = float(v)
    return out


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site, (cls.m,), cls.client, cls.tool = meter_site()
        cls.scrape = os.path.join(cls.site.tmp, "scrape")
        cls.site.cli("cert", "scrape", "--out", cls.scrape)

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def scrape_tls(self):
        return self.site.tls(os.path.join(self.scrape, "scrape.crt"),
                             os.path.join(self.scrape, "scrape.key"),
                             os.path.join(self.scrape, "ca.crt"))

    def server_metrics(self, ctx=None):
        status, text = self.site.api("GET", "/metrics", ctx=ctx or self.scrape_tls())
        self.assertEqual(status, 200, text)
        return text

    def meter_metrics(self, ctx=None):
        status, text = meter_api(self.site, self.m, "GET", "/metrics",
                                 ctx=ctx or self.scrape_tls())
        self.assertEqual(status, 200, text)
        return text

    def promtool(self, text):
        if not PROMTOOL:
            self.skipTest("promtool is missing (Debian's prometheus package; "
                          "scripts/install-deps installs it)")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_scrape_certificate_files(self):
        for name, mode in (("scrape.key", 0o600), ("scrape.crt", 0o644), ("ca.crt", 0o644)):
            st = os.stat(os.path.join(self.scrape, name))
            self.assertEqual(st.st_mode & 0o777, mode, name)
        r = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in",
                            os.path.join(self.scrape, "scrape.crt")],
                           capture_output=True, text=True, check=True)
        self.assertIn("OU = scrape", r.stdout)

    def test_server_passes_promtool_and_counts_heartbeats(self):
        text = self.server_metrics()
        self.promtool(text)
        before = values(text)["siteward_heartbeats_received_total"]
        wait_heartbeats(self.site, self.client.name, 2)
        after = values(self.server_metrics())
        self.assertGreater(after["siteward_heartbeats_received_total"], before)
        self.assertEqual(after['siteward_systems{health="ok"}'], 2)
        self.assertEqual(after['siteward_licenses{product="cad"}'], 2)
        self.assertGreater(after["siteward_db_job_duration_seconds_count"], 0)
        # the site CA's end, to alert on, and no rotation under way: both systems trust it
        self.assertGreater(after["siteward_ca_expiry_timestamp_seconds"],
                           time.time() + 3600 * 86400)
        self.assertEqual(after["siteward_ca_rotation_phase"], 0)
        self.assertEqual(after["siteward_ca_rotation_systems_trusting"], 2)
        # routes are labelled by their pattern, never by the path asked for
        self.assertGreater(after['siteward_http_requests_total{route="/v1/agent/poll",'
                                 'method="POST",code="2xx"}'], 0)
        self.site.api("GET", "/v1/systems/no-such-" + str(time.time()))
        text = self.server_metrics()
        self.assertNotIn("no-such-", text)
        self.assertIn('route="/v1/systems/*"', text)

    def test_admin_may_scrape(self):
        self.server_metrics(ctx=self.site.admin_tls())
        self.meter_metrics(ctx=self.site.admin_tls())

    def test_agent_and_client_certificates_refused(self):
        agent = self.site.tls(*self.client.cert())
        client = self.site.tls(os.path.join(self.client.dir, "client.crt"),
                               os.path.join(self.client.dir, "client.key"))
        for ctx in (agent, client):
            status, _ = self.site.api("GET", "/metrics", ctx=ctx)
            self.assertEqual(status, 403)
            status, _ = meter_api(self.site, self.m, "GET", "/metrics", ctx=ctx)
            self.assertEqual(status, 403)
        # a scrape certificate reads metrics and nothing else
        status, _ = self.site.api("GET", "/v1/systems", ctx=self.scrape_tls())
        self.assertEqual(status, 403)
        status, _ = meter_api(self.site, self.m, "GET", "/v1/leases", ctx=self.scrape_tls())
        self.assertEqual(status, 403)

    def test_meter_passes_promtool_and_shows_leases_and_denials(self):
        self.promtool(self.meter_metrics())
        held = [run(self.client, self.tool, "30") for _ in range(2)]
        try:
            wait_for(lambda: values(self.meter_metrics()).get(
                'siteward_meter_leases_in_use{product="cad"}') == 2, 15,
                "both licenses of cad in use")
            before = values(self.meter_metrics())
            denied = run(self.client, self.tool, "1")
            self.assertEqual(denied.wait(20), 75)
            after = values(self.meter_metrics())
            key = 'siteward_meter_denials_total{reason="no_license"}'
            self.assertEqual(after[key], before[key] + 1)
            self.assertGreater(after["siteward_meter_journal_fsyncs_total"], 0)
            self.assertGreater(after["siteward_meter_journal_records_per_fsync_count"], 0)
            self.promtool(self.meter_metrics())
        finally:
            for p in held:
                p.kill()
                p.wait()

    def test_agent_file(self):
        path = os.path.join(self.client.dir, "metrics", "siteward_agent.prom")
        wait_for(lambda: os.path.exists(path), 20, "the agent's metrics file")

        def sent():
            with open(path) as f:
                return values(f.read()).get("siteward_agent_heartbeats_sent_total", 0)
        wait_for(lambda: sent() > 0, 40, "a heartbeat counted in the agent's file")
        with open(path) as f:
            text = f.read()
        self.promtool(text)
        v = values(text)
        self.assertEqual(v["siteward_agent_channel_open"], 1)
        self.assertIn('siteward_agent_services{state="running"}', v)
        self.assertIn("siteward_agent_usage_pending", v)
        # no temporary file is left beside it for the collector to read
        self.assertEqual(os.listdir(os.path.dirname(path)), ["siteward_agent.prom"])

        def metering_role():
            with open(os.path.join(self.m.dir, "metrics", "siteward_agent.prom")) as f:
                return values(f.read()).get('siteward_agent_role{role="software-metering"}')
        wait_for(lambda: metering_role() == 1, 40, "the metering role in m1's file")

if __name__ == "__main__":
    unittest.main()
