"""Usage records are evidence only of the machine they came from: what any local user
drops into an agent's usage cache cannot stop the agent, reach files the user cannot
read, speak for another user or host, take another host's record ids, or store numbers
no clock can mean."""
import json
import os
import pwd
import time
import unittest
import uuid

from harness import Site, wait_for, wait_heartbeats

DAY_MS = 86400000


def record(**kw):
    now = int(time.time() * 1000)
    r = {"id": uuid.uuid4().hex, "exe": "evtool", "user": "alice", "host": "h1",
         "start": now - 60000, "end": now, "kind": "run", "wait_ms": 0, "source": "offline"}
    r.update(kw)
    return r


class UsageEvidence(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site(heartbeat=1)
        cls.site.start()
        cls.agent = cls.site.enroll("ev1")
        cls.other = cls.site.enroll("ev2", start=False)
        cls.cache = os.path.join(cls.agent.dir, "usage-cache")
        cls.nobody = pwd.getpwnam("nobody")

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def rows(self):
        """Stored usage as {id: (user, host, start, end, wait_ms)}, keyed per host."""
        return {(r[4], r[0]): (r[3], r[4], int(r[5]), int(r[6]), int(r[8]))
                for r in self.site.db_fields("usage")}

    def stored(self, rid):
        return [v for (host, i), v in self.rows().items() if i == rid or i.endswith(":" + rid)]

    def drop(self, rec, name=None, uid=None):
        """Writes a record into the cache as a local user would (owned by `uid`)."""
        path = os.path.join(self.cache, (name or rec["id"]) + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(rec, f)
        if uid is not None:
            os.chown(tmp, uid, -1)
        os.rename(tmp, path)
        return path

    def uploaded(self, rec):
        """Waits until `rec` is stored: everything dropped before it has been looked at."""
        return wait_for(lambda: self.stored(rec["id"]), 20,
                        f"record {rec['id']} to be uploaded")

    def agent_api(self, agent, body):
        return self.site.api("POST", "/v1/usage", body, ctx=self.site.tls(*agent.cert()))

    def test_fifo_does_not_stop_heartbeats(self):
        fifo = os.path.join(self.cache, "x.json")
        os.mkfifo(fifo, 0o666)
        # one with its way aside blocked goes altogether
        blocked = os.path.join(self.cache, "y.json")
        os.mkdir(blocked + ".bad")
        os.mkfifo(blocked, 0o666)
        # an agent blocked opening it would never send these
        wait_heartbeats(self.site, self.agent.name, 3)
        self.assertTrue(self.agent.proc.alive())
        after = record()
        self.drop(after)
        self.uploaded(after)
        self.assertFalse(os.path.exists(fifo))
        self.assertTrue(os.path.exists(fifo + ".bad"))
        wait_heartbeats(self.site, self.agent.name, 2)
        # warned of once: it is out of the way
        self.assertEqual(self.agent.proc.log().count("x.json is not a regular file"), 1)
        self.assertFalse(os.path.exists(blocked))
        self.assertEqual(self.agent.proc.log().count("y.json is not a regular file; removed"), 1)

    def test_links_to_root_only_files_are_not_uploaded(self):
        secret = os.path.join(self.site.tmp, "secret.json")
        soft, hard = record(exe="secret-soft"), record(exe="secret-hard")
        with open(secret, "w") as f:
            json.dump(soft, f)
        os.chmod(secret, 0o600)
        hard_src = os.path.join(self.site.tmp, "secret2.json")
        with open(hard_src, "w") as f:
            json.dump(hard, f)
        os.chmod(hard_src, 0o600)
        os.symlink(secret, os.path.join(self.cache, "link.json"))
        os.link(hard_src, os.path.join(self.cache, "hard.json"))
        after = record()
        self.drop(after)
        self.uploaded(after)
        wait_for(lambda: os.path.lexists(os.path.join(self.cache, "link.json.bad")) and
                 os.path.exists(os.path.join(self.cache, "hard.json.bad")), 10,
                 "the links to be moved aside")
        exes = {r[2] for r in self.site.db_fields("usage")}
        self.assertNotIn("secret-soft", exes)
        self.assertNotIn("secret-hard", exes)
        self.assertTrue(os.path.exists(secret))  # untouched, not followed

    def test_user_is_the_file_owner(self):
        forged = record(user="root", host="elsewhere")
        self.drop(forged, uid=self.nobody.pw_uid)
        got = self.uploaded(forged)
        self.assertEqual(len(got), 1)
        user, host = got[0][0], got[0][1]
        self.assertEqual(user, "nobody")
        self.assertEqual(host, self.agent.name)
        # a uid no user has is named by its number
        stray = record(user="alice")
        self.drop(stray, uid=54321)
        self.assertEqual(self.uploaded(stray)[0][0], "54321")

    def test_host_is_the_uploader(self):
        rec = record(host="victim", source="offline")
        status, body = self.agent_api(self.other, {"now": int(time.time() * 1000),
                                                   "records": [rec]})
        self.assertEqual((status, body.get("accepted")), (200, 1), body)
        got = self.stored(rec["id"])
        self.assertEqual([g[1] for g in got], [self.other.name])
        # a license server's own records name the host of each client, but only a system
        # with the metering role vouches for them
        rec = record(host="victim", source="meter")
        status, body = self.agent_api(self.other, {"now": int(time.time() * 1000),
                                                   "records": [rec]})
        self.assertEqual(status, 200, body)
        self.assertEqual([g[1] for g in self.stored(rec["id"])], [self.other.name])

    def test_same_id_on_two_hosts_both_stored(self):
        rec = record()
        now = int(time.time() * 1000)
        for agent in (self.agent, self.other):
            status, body = self.agent_api(agent, {"now": now, "records": [rec]})
            self.assertEqual((status, body.get("accepted")), (200, 1), body)
        # still idempotent on each host
        status, body = self.agent_api(self.other, {"now": now, "records": [rec]})
        self.assertEqual((status, body.get("duplicates")), (200, 1), body)
        hosts = sorted(g[1] for g in self.stored(rec["id"]))
        self.assertEqual(hosts, sorted([self.agent.name, self.other.name]))

    def test_numbers_out_of_range_refused(self):
        now = int(time.time() * 1000)
        big = 2 ** 62
        cases = [
            (record(start=1, end=big), "field 'end' must be between"),
            (record(start=1000, end=2000), "before 2000"),
            (record(start=now - 400 * DAY_MS, end=now), "366 days"),
            (record(start=now, end=now + 2 * DAY_MS), "a day ahead"),
            (record(wait_ms=big), "wait_ms"),
            (record(start=now, end=now - 1), "ends before it starts"),
            (record(start=big, end=big), "start"),
            (record(user="a\u001b[2Jb"), "control characters"),
        ]
        before = self.site.db_rows("usage")
        for rec, why in cases:
            status, body = self.agent_api(self.other, {"now": now, "records": [record(), rec]})
            self.assertEqual(status, 400, (rec, body))
            self.assertIn(why, body["error"], rec)
        # a clock so far off that the times would overflow once moved
        status, body = self.agent_api(self.other, {"now": big, "records": [record()]})
        self.assertEqual(status, 400, body)
        status, body = self.agent_api(self.other, {"now": -big, "records": [record()]})
        self.assertEqual(status, 400, body)
        self.assertEqual(before, self.site.db_rows("usage"))
        # the report still adds up what is stored
        r = self.site.cli_json("usage")
        for day in r["usage"]:
            self.assertGreaterEqual(day["run_time_ms"], 0)

    def test_cached_record_out_of_range_is_kept_aside(self):
        bad = record(start=1, end=2 ** 62)
        path = self.drop(bad, uid=self.nobody.pw_uid)
        good = record()
        self.drop(good, uid=self.nobody.pw_uid)
        self.uploaded(good)
        wait_for(lambda: os.path.exists(path + ".rejected"), 20,
                 "the refused record to be kept aside")
        self.assertEqual(self.stored(bad["id"]), [])


if __name__ == "__main__":
    unittest.main()
