"""Named groups of users and hosts on the site server: made, added to, taken from and
deleted with `siteward group`; every refusal one sentence that says what to do, with the
stored groups unchanged (checked whole, and a change past a limit rolled back whole); a
viewer lists them and is refused a change; changes are audited; and the license servers
receive the groups with their configuration, told to fetch it at once after a change."""
import json
import os
import subprocess
import unittest

from harness import Site, prog, wait_for

USER_RULE = "must be 1-64 characters without spaces, commas, slashes or control characters"


class Groups(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # the license server polls only hourly: what it learns sooner, it was told
        cls.site = Site(heartbeat=1, extra_conf={"metering.meter_poll_ms": "3600000"})
        try:
            cls.site.start()
            cls.meter = cls.site.enroll("m1")
            cls.site.cli("role", "add", "m1", "software-metering")
        except BaseException:
            cls.site.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.site.close()

    def groups(self):
        return {g["name"]: g for g in self.site.cli_json("group", "list")["groups"]}

    def refused(self, args, sentence, status=1):
        r = self.site.cli("group", *args, check=False)
        self.assertEqual(r.returncode, status, (args, r.stdout, r.stderr))
        self.assertIn(sentence, r.stderr, args)
        return r

    def test_add_list_remove_delete(self):
        s = self.site
        r = s.cli("group", "add", "eng", "--users", "alice,bob", "--hosts", "ws1")
        self.assertEqual(r.stdout.strip(), "group eng: 2 users, 1 host")
        g = self.groups()["eng"]
        self.assertEqual((g["users"], g["hosts"], g["created_by"]),
                         (["alice", "bob"], ["ws1"], "admin"))
        self.assertIsInstance(g["created_at"], int)
        # more members; one already there is no error; the lists come sorted
        r = s.cli("group", "add", "eng", "--users", "carol,alice,Zed", "--hosts", "build-02")
        self.assertEqual(r.stdout.strip(), "group eng: 4 users, 2 hosts")
        g2 = self.groups()["eng"]
        self.assertEqual(g2["users"], ["Zed", "alice", "bob", "carol"])
        self.assertEqual(g2["hosts"], ["build-02", "ws1"])
        self.assertEqual(g2["created_at"], g["created_at"])
        # no members makes an empty group
        r = s.cli("group", "add", "empty-one")
        self.assertEqual(r.stdout.strip(), "group empty-one: 0 users, 0 hosts")
        out = s.cli_json("group", "add", "empty-one")
        self.assertEqual((out["name"], out["users"], out["hosts"]), ("empty-one", [], []))
        names = [g["name"] for g in s.cli_json("group", "list")["groups"]]
        self.assertEqual(names, sorted(names))
        r = s.cli("group", "remove", "eng", "--users", "bob,Zed,nobody", "--hosts", "ws1")
        self.assertEqual(r.stdout.strip(), "group eng: 2 users, 1 host")
        self.assertEqual(self.groups()["eng"]["users"], ["alice", "carol"])
        table = s.cli("group", "list").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "USERS", "HOSTS"])
        row = [line for line in table if line.startswith("eng ")][0]
        self.assertEqual(row.split(), ["eng", "alice,carol", "build-02"])
        self.assertEqual([line for line in table if line.startswith("empty-one")][0].split(),
                         ["empty-one", "-", "-"])
        r = s.cli("group", "remove", "eng")
        self.assertEqual(r.stdout.strip(), "group eng deleted")
        self.assertNotIn("eng", self.groups())
        self.refused(["remove", "eng"], "no group eng")
        status, body = s.api("DELETE", "/v1/groups/eng")
        self.assertEqual(status, 404)
        self.assertTrue(body["error"].startswith("no group eng;"), body)
        s.cli("group", "remove", "empty-one")

    def test_a_long_list_is_cut_in_the_table(self):
        users = [f"user{i:03d}" for i in range(40)]
        self.site.cli("group", "add", "wide", "--users", ",".join(users))
        try:
            row = [line for line in self.site.cli("group", "list").stdout.splitlines()
                   if line.startswith("wide ")][0]
            self.assertIn("…", row)
            self.assertLessEqual(len(row), 80)
            self.assertEqual(len(self.groups()["wide"]["users"]), 40)
        finally:
            self.site.cli("group", "remove", "wide")

    def test_refusals_say_what_to_do_and_change_nothing(self):
        s = self.site
        s.cli("group", "add", "ops", "--users", "alice", "--hosts", "ws1")
        before = s.cli_json("group", "list")
        self.refused(["add", "ops", "--users", "a b"], f"user name 'a b' {USER_RULE}")
        # a good name beside a bad one is not added either
        self.refused(["add", "ops", "--users", "dave,e/f"], f"user name 'e/f' {USER_RULE}")
        self.refused(["add", "ops", "--users", "x" * 65], f"user name '{'x' * 65}' {USER_RULE}")
        self.refused(["add", "ops", "--hosts", "ws2,-bad"],
                     "host name '-bad' must be a system's name")
        self.refused(["add", "bad name"], "group name 'bad name' must be 1-63 letters", status=2)
        self.refused(["remove", "nosuch", "--users", "alice"], "no group nosuch")
        self.refused(["add"], "usage: siteward group add NAME", status=2)
        self.refused(["add", "ops", "--owners", "x"], "usage: siteward group add", status=2)
        for path, body, status, sentence in (
                ("/v1/groups/ops", {"users": ["ok"], "owner": "x"}, 400,
                 "unknown field 'owner': give a group's members as \"users\" and \"hosts\""),
                ("/v1/groups/ops", {"users": "alice"}, 400, "'users' must be a list"),
                ("/v1/groups/ops", {"users": ["a\u001bb"]}, 400, "user name 'a\\x1bb'"),
                ("/v1/groups/.ops", {}, 400, "group name '.ops' must be 1-63 letters"),
                ("/v1/groups/ops/remove", {}, 400, "name the users or hosts to take out"),
                ("/v1/groups/ops/rename", {}, 404, "no such endpoint"),
                ("/v1/groups/ops", {"users": [f"u{i}" for i in range(10001)]}, 400,
                 "a group holds at most 10000 members")):
            code, answer = s.api("POST", path, body)
            self.assertEqual(code, status, (path, answer))
            self.assertIn(sentence, answer["error"], path)
        code, answer = s.api("POST", "/v1/groups/ops", raw="{not json")
        self.assertEqual(code, 400, answer)
        self.assertEqual(s.cli_json("group", "list"), before)
        s.cli("group", "remove", "ops")

    def test_a_change_past_a_limit_is_undone_whole(self):
        s = self.site
        code, g = s.api("POST", "/v1/groups/big", {"users": [f"u{i}" for i in range(9999)]})
        self.assertEqual(code, 200, g)
        self.assertEqual(len(g["users"]), 9999)
        before = s.cli_json("group", "list")
        # two new members, the first of which fits: neither is kept
        code, answer = s.api("POST", "/v1/groups/big", {"users": ["new1"], "hosts": ["ws9"]})
        self.assertEqual(code, 409, answer)
        self.assertIn("group big would hold 10001 members, and a group holds at most 10000",
                      answer["error"])
        self.assertEqual(s.cli_json("group", "list"), before)
        s.cli("group", "remove", "big")

    def test_the_site_keeps_at_most_1000_groups(self):
        site = Site()
        try:
            site.start()
            for i in range(1000):
                code, answer = site.api("POST", f"/v1/groups/g{i:04d}")
                self.assertEqual(code, 200, answer)
            code, answer = site.api("POST", "/v1/groups/one-more", {"users": ["alice"]})
            self.assertEqual(code, 409, answer)
            self.assertIn("the site keeps at most 1000 groups; delete one before making "
                          "one-more", answer["error"])
            groups = site.cli_json("group", "list")["groups"]
            self.assertEqual(len(groups), 1000)
            self.assertNotIn("one-more", [g["name"] for g in groups])
            # and one more fits once one is gone
            site.cli("group", "remove", "g0000")
            site.cli("group", "add", "one-more", "--users", "alice")
        finally:
            site.close()

    def test_a_viewer_lists_and_is_refused_a_change(self):
        s = self.site
        s.cli("group", "add", "seen", "--users", "alice")
        d = os.path.join(s.tmp, "ws-v1")
        s.cli("admin", "add", "v1", "--role", "viewer", "--out", d)
        env = dict(os.environ, SITEWARD_SITE=d)

        def as_viewer(*args):
            return subprocess.run([prog("siteward"), "group", *args], capture_output=True,
                                  text=True, timeout=60, env=env)
        r = as_viewer("list", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("seen", [g["name"] for g in json.loads(r.stdout)["groups"]])
        before = s.cli_json("group", "list")
        for args in (("add", "seen", "--users", "mallory"), ("remove", "seen"),
                     ("remove", "seen", "--users", "alice")):
            r = as_viewer(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("this needs the admin role; v1 is a viewer", r.stderr)
        self.assertEqual(s.cli_json("group", "list"), before)
        s.cli("group", "remove", "seen")

    def test_changes_are_audited(self):
        s = self.site
        s.cli("group", "add", "audited", "--users", "alice")
        s.cli("group", "remove", "audited")
        recs = s.cli_json("audit", "--who", "admin")["records"]
        done = [(r["method"], r["path"], r["status"]) for r in recs]
        self.assertIn(("POST", "/v1/groups/audited", 200), done)
        self.assertIn(("DELETE", "/v1/groups/audited", 200), done)
        self.refused(["remove", "audited"], "no group audited")
        recs = s.cli_json("audit", "--who", "admin")["records"]
        self.assertTrue(any(r["path"] == "/v1/groups/audited" and r["status"] == 404 and
                            "no group audited" in r["outcome"] for r in recs), recs[:5])

    def test_license_servers_receive_the_groups_at_once(self):
        s, m = self.site, self.meter
        cached = os.path.join(m.dir, "meter", "config.json")

        def meter_knows(pred):
            try:
                with open(cached) as f:
                    return pred({g["name"]: g for g in json.load(f).get("groups", [])})
            except (OSError, ValueError):
                return False

        def listed():
            # the server knows where the license server listens: a push can reach it
            try:
                with open(os.path.join(m.dir, "meters.json")) as f:
                    return len(json.load(f)["meters"]) == 1
            except (OSError, ValueError, KeyError):
                return False
        wait_for(listed, 20, "the site to learn where m1's license server listens")
        wait_for(lambda: os.path.exists(cached), 20, "m1's first configuration")
        s.cli("product", "add", "cad", "--exe", "cad", "--licenses", "3")
        s.cli("group", "add", "cad-users", "--users", "bob,alice", "--hosts", "ws1")
        status, cfg = s.api("GET", "/v1/meter/config", ctx=s.tls(*m.cert()))
        self.assertEqual(status, 200, cfg)
        g = {x["name"]: x for x in cfg["groups"]}["cad-users"]
        self.assertEqual(g, {"name": "cad-users", "users": ["alice", "bob"], "hosts": ["ws1"]})
        # beside the products and this server's share of them, read in one go
        self.assertEqual({p["name"]: p["allotment"] for p in cfg["products"]}, {"cad": 3})
        # the license server polls hourly, so only the push brings each change this soon
        wait_for(lambda: meter_knows(lambda gs: gs.get("cad-users", {}).get("users") ==
                                     ["alice", "bob"]), 15, "m1 to hold the new group")
        s.cli("group", "remove", "cad-users", "--users", "bob")
        wait_for(lambda: meter_knows(lambda gs: gs.get("cad-users", {}).get("users") ==
                                     ["alice"]), 15, "m1 to hold the group without bob")
        s.cli("group", "remove", "cad-users")
        wait_for(lambda: meter_knows(lambda gs: "cad-users" not in gs), 15,
                 "m1 to hold no group cad-users")
        s.cli("product", "remove", "cad")


if __name__ == "__main__":
    unittest.main()
