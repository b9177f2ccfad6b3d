"""A product's rules through the real programs: licenses reserved for a group of hosts,
and a cap, enforced by one license server and by two sharing the count, never granting
more than the count; each denial names its rule."""
import json
import os
import unittest

from harness import wait_for
from test_metering import leases, meter_site, run

RESERVE = "cad/reserve:group:lab"


def client(site, name, n_meters):
    c = site.enroll(name)

    def listed():
        try:
            with open(os.path.join(c.dir, "meters.json")) as f:
                return len(json.load(f)["meters"]) == n_meters
        except (OSError, ValueError, KeyError):
            return False
    wait_for(listed, 15, f"{name} to learn the metering servers")
    return c


def applied(site):
    """What the license servers last reported applying of each pool: {pool: sum}."""
    out = {}
    for row in site.db_fields("allotments"):
        out[row[1]] = out.get(row[1], 0) + int(row[2] or 0)
    return out


def held(site, meters):
    return sum(len(leases(site, m) or []) for m in meters)


class Rules(unittest.TestCase):
    def check(self, procs):
        """Every run that ended: its status and what it said."""
        return [(p.returncode, p.stderr.read()) for p in procs if p.poll() is not None]

    def test_one_server_names_the_rule_that_denied(self):
        site, (m,), c1, tool = meter_site(n_meters=1, licenses=2)
        procs = []
        try:
            c2 = client(site, "c2", 1)
            site.cli("group", "add", "lab", "--hosts", "c1")
            site.cli("product", "set", "cad", "--reserve", "1", "--for", "lab")
            wait_for(lambda: applied(site).get(RESERVE) == 1, 15,
                     "the license server to apply the reservation")
            procs.append(run(c2, tool, "60"))
            wait_for(lambda: len(leases(site, m) or []) == 1, 15, "c2's first run licensed")
            # the one license left is lab's: c2 is denied, naming the rule
            p = run(c2, tool, "0")
            _, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, 75, err)
            self.assertIn("reserved for others (rule 'reserve 1 for group lab')", err)
            # c1 is in lab and gets it
            procs.append(run(c1, tool, "60"))
            wait_for(lambda: len(leases(site, m) or []) == 2, 15, "c1's run licensed")
            self.assertEqual(sorted(l["host"] for l in leases(site, m)), ["c1", "c2"])
            # a cap on c1: its second run is refused by the rule
            site.cli("product", "set", "cad", "--max", "1", "--for", "host:c1")
            wait_for(lambda: applied(site).get("cad/max:host:c1") == 1, 15,
                     "the license server to apply the cap")
            p = run(c1, tool, "0")
            _, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, 75, err)
            self.assertIn("the rule 'max 1 for host c1' allows no more", err)
            r = site.cli("product", "list").stdout
            self.assertIn("cad: reserve 1 for group lab", r)
            self.assertIn("cad: max 1 for host c1", r)
            # a group a rule names cannot be removed from under it
            r = site.cli("group", "remove", "lab", check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("product cad has a rule for group lab", r.stderr)
            # nor can a rule name a group that does not exist
            r = site.cli("product", "set", "cad", "--reserve", "1", "--for", "nosuch",
                         check=False)
            self.assertIn("no group nosuch", r.stderr)
        finally:
            for p in procs:
                p.kill()
            site.close()

    def test_two_servers_keep_a_reservation_and_the_count(self):
        site, meters, c1, tool = meter_site(n_meters=2, licenses=3,
                                            conf={"metering.meter_poll_ms": "500"})
        procs = []
        try:
            c2 = client(site, "c2", 2)
            site.cli("group", "add", "lab", "--hosts", "c1")
            site.cli("product", "set", "cad", "--reserve", "2", "--for", "lab")
            # every pool's shares, as the servers apply them, add up to its count
            wait_for(lambda: applied(site).get(RESERVE) == 2 and applied(site).get("cad") == 1,
                     20, "both license servers to apply the reservation's shares")
            # c2 is no member: of 3 licenses it may hold one, wherever it asks
            procs += [run(c2, tool, "60") for _ in range(3)]
            wait_for(lambda: sum(1 for p in procs if p.poll() is not None) == 2, 30,
                     "two of c2's runs denied")
            self.assertEqual(sorted(s for s, _ in self.check(procs)), [75, 75])
            self.assertEqual(held(site, meters), 1)
            # c1 is in lab: its two reserved licenses, wherever each is held
            ones = [run(c1, tool, "60", verbose=True) for _ in range(3)]
            procs += ones
            try:
                wait_for(lambda: sum(1 for p in ones if p.poll() is not None) == 1 and
                         held(site, meters) == 3, 60,
                         "c1's two runs licensed, the third denied")
            except AssertionError as e:
                # what each run and license server came to, for the one who reads it
                ended = [p.poll() for p in ones]
                for p in ones:
                    p.kill()
                logs = []
                for m in meters:
                    with open(os.path.join(m.dir, "logs", "meter.log"), errors="replace") as f:
                        logs.append(f"{m.name}'s log ends:\n" + "".join(f.readlines()[-40:]))
                raise AssertionError(
                    f"{e}: runs ended with {ended}, {held(site, meters)} held; runs said:\n" +
                    "\n".join(p.stderr.read() for p in ones) + "\n".join(logs)) from None
            ended = self.check(ones)
            self.assertEqual([s for s, _ in ended], [75], ended)
            hosts = sorted(l["host"] for m in meters for l in leases(site, m))
            self.assertEqual(hosts, ["c1", "c1", "c2"])
            # never more than the count, at every look while they run
            for _ in range(5):
                self.assertLessEqual(held(site, meters), 3)
        finally:
            for p in procs:
                p.kill()
            site.close()


if __name__ == "__main__":
    unittest.main()
