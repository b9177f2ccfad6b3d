"""Software metering on the site server: products, license shares, usage ingestion
(idempotent, clock-skew proof) and the report, through the real programs."""
import json
import shutil
import subprocess
import os
import time
import unittest
import uuid

from harness import Site, wait_for, wait_heartbeats


def cache_sent(agent):
    """Whether the agent has uploaded every usage record it has cached."""
    try:
        return not [f for f in os.listdir(os.path.join(agent.dir, "usage-cache"))
                    if f.endswith(".json")]
    except FileNotFoundError:
        return True


def record(**kw):
    r = {"id": uuid.uuid4().hex, "product": "cad", "exe": "cad", "user": "alice",
         "host": "h1", "start": 0, "end": 0, "kind": "run", "wait_ms": 0, "source": "meter"}
    r.update(kw)
    return r


class MeteringServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        cls.meters = [cls.site.enroll(n) for n in ("m1", "m2", "m3")]
        cls.plain = cls.site.enroll("plain")
        for m in cls.meters:
            cls.site.cli("role", "add", m.name, "software-metering")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def agent_api(self, agent, method, path, body=None):
        return self.site.api(method, path, body, ctx=self.site.tls(*agent.cert()))

    def test_products(self):
        s = self.site
        s.cli("product", "add", "p1", "--exe", "p1bin", "--licenses", "4", "--enforce")
        r = s.cli("product", "add", "p1", "--exe", "x", "--licenses", "1", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("exists", r.stderr)
        s.cli("product", "set", "p1", "--licenses", "6", "--no-enforce")
        p = {x["name"]: x for x in s.cli_json("product", "list")["products"]}["p1"]
        self.assertEqual((p["exe"], p["licenses"], p["enforce"]), ("p1bin", 6, False))
        for bad in (["--exe", "/usr/bin/x", "--licenses", "1"], ["--exe", "x"],
                    ["--exe", "x", "--licenses", "-1"]):
            r = s.cli("product", "add", "p2", *bad, check=False)
            self.assertNotEqual(r.returncode, 0, bad)
        s.cli("product", "set", "p1", "--hours", "08:00-18:00", "--deny-users", "mallory,eve",
              "--deny-hosts", "kiosk1", "--build-id", "0a1b2c3d")
        p = {x["name"]: x for x in s.cli_json("product", "list")["products"]}["p1"]
        self.assertEqual((p["hours"], p["deny_users"], p["deny_hosts"], p["build_id"]),
                         ("08:00-18:00", ["mallory", "eve"], ["kiosk1"], "0a1b2c3d"))
        r = s.cli("product", "add", "p1twin", "--exe", "p1bin", "--licenses", "1", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("already meters", r.stderr)
        for bad in (["--hours", "8-18"], ["--hours", "25:00-26:00"], ["--build-id", "XYZ"],
                    ["--deny-users", "a b"], ["--hours", "08:00-08:00"]):
            r = s.cli("product", "set", "p1", *bad, check=False)
            self.assertNotEqual(r.returncode, 0, bad)
        s.cli("product", "set", "p1", "--deny-users", "")
        p = {x["name"]: x for x in s.cli_json("product", "list")["products"]}["p1"]
        self.assertEqual(p["deny_users"], [])
        s.cli("product", "exclude", "updatedb")
        self.assertIn("updatedb", s.cli_json("product", "list")["excluded"])
        s.cli("product", "include", "updatedb")
        self.assertNotIn("updatedb", s.cli_json("product", "list")["excluded"])
        s.cli("product", "remove", "p1")
        r = s.cli("product", "remove", "p1", check=False)
        self.assertIn("no product named", r.stderr)

    def test_license_shares_never_exceed_the_count(self):
        self.site.cli("product", "add", "share", "--exe", "share", "--licenses", "7",
                      "--enforce")
        shares = []
        for m in self.meters:
            status, cfg = self.agent_api(m, "GET", "/v1/meter/config")
            self.assertEqual(status, 200, cfg)
            p = {x["name"]: x for x in cfg["products"]}["share"]
            shares.append(p["allotment"])
        self.assertEqual(sum(shares), 7)
        self.assertEqual(sorted(shares), [2, 2, 3])
        status, body = self.agent_api(self.plain, "GET", "/v1/meter/config")
        self.assertEqual(status, 403)
        self.assertIn("software-metering role", body["error"])

    def test_clients_learn_the_metering_servers(self):
        # each agent reports where its meter listens; every agent is told the list
        def listed():
            try:
                with open(os.path.join(self.plain.dir, "meters.json")) as f:
                    return len(json.load(f)["meters"]) == 3
            except (OSError, ValueError, KeyError):
                return False
        wait_for(listed, 10, "meters.json to list the three metering servers")

    def test_usage_is_idempotent_and_reported(self):
        day = int(time.time() * 1000) // 86400000 * 86400000
        recs = [record(product="rep", exe="rep", user=u, host=h, start=day + 1000 * i,
                       end=day + 1000 * i + 60000)
                for i, (u, h) in enumerate([("a", "h1"), ("b", "h1"), ("a", "h2")])]
        recs.append(record(product="rep", exe="rep", kind="denied", start=day + 5000,
                           end=day + 5000))
        body = {"now": int(time.time() * 1000), "records": recs}
        status, r1 = self.agent_api(self.meters[0], "POST", "/v1/usage", body)
        self.assertEqual((status, r1["accepted"], r1["duplicates"]), (200, 4, 0))
        status, r2 = self.agent_api(self.meters[0], "POST", "/v1/usage", body)
        self.assertEqual((status, r2["accepted"], r2["duplicates"]), (200, 0, 4))
        u = self.site.cli_json("usage", "--product", "rep")["usage"]
        self.assertEqual(len(u), 1)
        row = u[0]
        self.assertEqual((row["launches"], row["users"], row["hosts"], row["denials"]),
                         (3, 2, 2, 1))
        self.assertEqual(row["run_time_ms"], 3 * 60000)
        self.assertEqual(row["peak_concurrent"], 3)
        self.assertIn("rep", self.site.cli("usage").stdout)

    def test_offline_runs_attributed_by_version(self):
        s = self.site
        s.cli("product", "add", "vtool-2", "--exe", "vtool", "--licenses", "1",
              "--version", "2.*")
        s.cli("product", "add", "vtool-21", "--exe", "vtool", "--licenses", "1",
              "--version", "2.1*")
        s.cli("product", "add", "vtool-any", "--exe", "vtool", "--licenses", "1")
        r = s.cli("product", "add", "vtool-bad", "--exe", "vtool", "--licenses", "1",
                  "--version", "2 *", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("version", r.stderr)
        now = int(time.time() * 1000)
        recs = [record(product=None, exe="vtool", start=now - 1000, end=now,
                       source="offline", host="plain", **({"version": v} if v else {}))
                for v in ("2.3-1", "2.1-4", "1.0-1", None)]
        status, body = self.agent_api(self.plain, "POST", "/v1/usage",
                                      {"now": now, "records": recs})
        self.assertEqual((status, body.get("accepted")), (200, 4), body)

        def launches(product):
            u = s.cli_json("usage", "--product", product)["usage"]
            return sum(d["launches"] for d in u)
        self.assertEqual([launches(p) for p in ("vtool-2", "vtool-21", "vtool-any")],
                         [1, 1, 2])
        # a version that is not one refuses the batch
        bad = record(product=None, exe="vtool", version="x" * 65, source="offline")
        status, _ = self.agent_api(self.plain, "POST", "/v1/usage", {"now": now,
                                                                     "records": [bad]})
        self.assertEqual(status, 400)

    def test_clock_skew_is_corrected(self):
        now = int(time.time() * 1000)
        ahead = 3 * 3600 * 1000
        rec = record(product="skew", exe="skew", start=now + ahead - 60000, end=now + ahead)
        status, r = self.agent_api(self.meters[1], "POST", "/v1/usage",
                                   {"now": now + ahead, "records": [rec]})
        self.assertEqual(status, 200)
        self.assertLess(abs(r["clock_skew_ms"] + ahead), 5000)
        rows = [x for x in self.site.db_rows("usage") if rec["id"] in x]
        self.assertEqual(len(rows), 1)
        # stored where it happened in server time, not three hours in the future
        self.assertNotIn(str(now + ahead), rows[0])

    def test_bad_usage_refused_whole(self):
        before = self.site.db_rows("usage")
        good = record(product="bad", exe="bad", start=1000, end=2000)
        now = int(time.time() * 1000)
        for bad in (record(kind="stolen"), record(start=5000, end=1000), record(id=5),
                    {"id": "x"}, record(user="u" * 500)):
            status, body = self.agent_api(self.meters[0], "POST", "/v1/usage",
                                          {"now": now, "records": [good, bad]})
            self.assertEqual(status, 400, body)
        status, body = self.agent_api(self.meters[0], "POST", "/v1/usage",
                                      {"now": now, "records": [good] * 1001})
        self.assertEqual(status, 400)
        status, body = self.agent_api(self.meters[0], "POST", "/v1/usage", {"records": []})
        self.assertEqual(status, 400)
        self.assertEqual(before, self.site.db_rows("usage"))
        # an admin certificate is not a metering client
        status, _ = self.site.api("POST", "/v1/usage", {"now": now, "records": [good]})
        self.assertEqual(status, 403)

    def test_offline_cache_uploaded_once(self):
        cache = os.path.join(self.plain.dir, "usage-cache")
        os.makedirs(cache, exist_ok=True)
        now = int(time.time() * 1000)
        ids = []
        for i in range(3):
            r = record(product=None, exe="offline-tool", start=now - 5000, end=now,
                       source="offline", host="plain")
            ids.append(r["id"])
            with open(os.path.join(cache, r["id"] + ".json"), "w") as f:
                json.dump(r, f)
        wait_for(lambda: not os.listdir(cache), 10, "the cache to be uploaded")
        rows = self.site.db_rows("usage")
        for i in ids:
            self.assertEqual(sum(i in x for x in rows), 1)


if __name__ == "__main__":
    unittest.main()


class Passive(unittest.TestCase):
    """Registered programs seen running are metered without siteward-run."""

    def setUp(self):
        self.site = Site(heartbeat=1)
        self.site.start()
        self.a = self.site.enroll("pm", start=False)
        self.a.set_conf({"metering.passive_interval_ms": "200"})
        self.tool = "pmtool-" + uuid.uuid4().hex[:8]
        self.bin = os.path.join(self.site.tmp, self.tool)
        shutil.copy("/bin/sleep", self.bin)
        # a shell named siteward-run stands for a run the metering server counts
        self.wrapper = os.path.join(self.site.tmp, "siteward-run")
        shutil.copy("/bin/sh", self.wrapper)
        self.site.cli("product", "add", "pm", "--exe", self.tool, "--licenses", "5")
        self.a.start()

    def tearDown(self):
        self.site.close()

    def test_renamed_copy_recognised_by_build_id(self):
        build_id = uuid.uuid4().hex
        src = os.path.join(self.site.tmp, "prog.c")
        with open(src, "w") as f:
            f.write("#include <unistd.h>\nint main(void) { sleep(1); return 0; }\n")
        renamed = os.path.join(self.site.tmp, "renamed-" + uuid.uuid4().hex[:6])
        subprocess.run(["cc", "-o", renamed, src, f"-Wl,--build-id=0x{build_id}"], check=True)
        self.site.cli("product", "add", "bid", "--exe", "not-this-name", "--licenses", "1",
                      "--build-id", build_id)
        # a heartbeat tells the agent, which fetches the product table
        wait_for(lambda: "passive metering: 2 products," in self.a.proc.log(), 15,
                 "the agent to fetch the new product table")
        subprocess.run([renamed], check=True)
        wait_for(lambda: self.site.cli_json("usage", "--product", "bid")["usage"], 10,
                 "the renamed copy to be metered as its product")
        rows = [r for r in self.site.db_rows("usage") if os.path.basename(renamed) in r]
        self.assertEqual(len(rows), 1)

    def test_version_pattern_picks_the_product(self):
        """Two products of one packaged program: the package's version decides."""
        version = subprocess.run(["dpkg-query", "--show", "--showformat=${Version}",
                                  "coreutils"], capture_output=True, text=True,
                                 check=True).stdout
        pattern = version.split(":")[-1].split(".")[0] + ".*"
        # the old edition first: the first product of a program is not the one taken
        self.site.cli("product", "add", "hash-old", "--exe", "sha1sum", "--licenses", "1",
                      "--version", "0.*")
        self.site.cli("product", "add", "hash-now", "--exe", "sha1sum", "--licenses", "1",
                      "--version", pattern)
        # a heartbeat tells the agent, which fetches the product table
        wait_for(lambda: "passive metering: 3 products" in self.a.proc.log(), 15,
                 "the agent to fetch the new product table")
        # sha1sum waits on its input: running for as long as the test holds it open
        p = subprocess.Popen(["/usr/bin/sha1sum"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
        # seen: the agent's loop has run a scan since, as its heartbeats show
        wait_heartbeats(self.site, self.a.name, 2)
        p.stdin.close()
        p.wait(10)
        wait_for(lambda: self.site.cli_json("usage", "--product", "hash-now")["usage"], 10,
                 "the packaged program to be metered as the product of its version")
        # nothing more recorded after further scans, and nothing left to upload
        wait_heartbeats(self.site, self.a.name, 2)
        wait_for(lambda: cache_sent(self.a), 10, "the agent's cached usage to be uploaded")
        self.assertEqual(self.site.cli_json("usage", "--product", "hash-old")["usage"], [])

    def test_short_runs_seen_through_process_events(self):
        """With the process connector, a run far shorter than the scan interval counts,
        and ends when its process does."""
        b = self.site.enroll("pm2", start=False)
        b.set_conf({"metering.passive_interval_ms": "600000"})
        b.start()
        wait_for(lambda: "passive metering: 1 product," in b.proc.log(), 15,
                 "the agent to fetch the product table")
        log = b.proc.log()
        if "process events from the kernel" not in log:
            # refused for a reason of the machine's, not of the agent's making
            self.assertTrue("not permitted" in log or "not available here" in log, log)
            self.skipTest("no process connector here; the agent scans /proc")
        t0 = time.time() * 1000
        subprocess.run([self.bin, "0.05"], check=True)
        t1 = time.time() * 1000

        def mine():
            return [r for r in self.site.db_fields("usage") if r[4] == "pm2"]
        wait_for(mine, 15, "the 50 ms run, seen by its exec and exit events")
        # nothing more recorded after further scans, and nothing left to upload
        wait_heartbeats(self.site, b.name, 2)
        wait_for(lambda: cache_sent(b), 10, "the agent's cached usage to be uploaded")
        (row,) = mine()
        self.assertEqual((row[1], row[2], row[9]), ("pm", self.tool, "passive"))
        # it ended when its process did, not at a scan ten minutes later; the start is
        # the kernel's, to within about a second
        start, end = int(row[5]), int(row[6])
        self.assertLessEqual(end, t1 + 1000)
        self.assertGreaterEqual(end, t0)
        self.assertLessEqual(start, end)

    def test_runs_seen_are_recorded_once(self):
        # a heartbeat tells the agent, which fetches the product table
        wait_for(lambda: "passive metering: 1 product," in self.a.proc.log(), 15,
                 "the agent to fetch the product table")
        subprocess.run([self.bin, "1.2"], check=True)
        subprocess.run([self.wrapper, "-c", f"{self.bin} 1.2; true"], check=True)

        def runs():
            u = self.site.cli_json("usage", "--product", "pm")["usage"]
            return u[0]["launches"] if u else 0
        wait_for(lambda: runs() >= 1, 10, "the passive run to be reported")
        # nothing more recorded after further scans, and nothing left to upload
        wait_heartbeats(self.site, self.a.name, 2)
        wait_for(lambda: cache_sent(self.a), 10, "the agent's cached usage to be uploaded")
        self.assertEqual(runs(), 1, "counted twice, or counted a siteward-run child")
        rows = [r for r in self.site.db_rows("usage") if self.tool in r]
        self.assertEqual(len(rows), 1)
        self.assertIn("passive", rows[0])
        # restarting the agent while a run is in progress does not count it twice; the
        # run lasts until both agents have seen it, however slow the restart
        p = subprocess.Popen([self.bin, "30"])
        try:
            # seen: the agent's loop has run a scan since, as its heartbeats show
            wait_heartbeats(self.site, self.a.name, 2)
            fetched = self.a.proc.log().count("passive metering: 1 product,")
            self.a.stop()
            self.a.start()
            wait_for(lambda: self.a.proc.log().count("passive metering: 1 product,") > fetched,
                     15, "the restarted agent to fetch the product table")
            wait_heartbeats(self.site, self.a.name, 2)
        finally:
            p.terminate()
            p.wait(10)
        wait_for(lambda: runs() == 2, 10, "the second run")
        wait_heartbeats(self.site, self.a.name, 2)
        wait_for(lambda: cache_sent(self.a), 10, "the agent's cached usage to be uploaded")
        self.assertEqual(runs(), 2)


class Summaries(unittest.TestCase):
    """Detail older than the configured age is condensed per day, counted once."""

    def test_old_detail_is_summarised_once(self):
        site = Site(heartbeat=1, extra_conf={"metering.detail_days": "1",
                                             "metering.summarize_interval_s": "1"})
        try:
            site.start()
            m = site.enroll("sm")
            site.cli("role", "add", "sm", "software-metering")
            yesterday = (int(time.time() * 1000) // 86400000 - 1) * 86400000 + 12 * 3600000
            recs = [record(product="old", exe="old", user=u, start=yesterday + i * 1000,
                           end=yesterday + i * 1000 + 30000)
                    for i, u in enumerate(("a", "b", "a"))]
            body = {"now": int(time.time() * 1000), "records": recs}
            ctx = site.tls(*m.cert())
            status, r = site.api("POST", "/v1/usage", body, ctx=ctx)
            self.assertEqual((status, r["accepted"]), (200, 3))
            before = site.cli_json("usage", "--product", "old")["usage"]
            self.assertEqual(len(before), 1)
            # keep no detail at all: yesterday is summarised at the next pass
            site.stop()
            site.set_conf({"metering.detail_days": "0"})
            site.start()
            wait_for(lambda: not [r for r in site.db_fields("usage") if r[1] == "old"], 10,
                     "yesterday's detail to be summarised")
            after = site.cli_json("usage", "--product", "old")["usage"]
            self.assertEqual(len(after), 1)
            self.assertTrue(after[0]["summarised"])
            for k in ("launches", "users", "run_time_ms", "peak_concurrent", "denials"):
                self.assertEqual(after[0][k], before[0][k], k)
            # the same records again are refused as too old, never counted twice
            status, r = site.api("POST", "/v1/usage", body, ctx=ctx)
            self.assertEqual((status, r["accepted"], r["too_old"]), (200, 0, 3))
            self.assertEqual(site.cli_json("usage", "--product", "old")["usage"], after)
        finally:
            site.close()
