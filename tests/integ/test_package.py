"""Service-pack packages through the CLI: built and signed with the site key, verified,
and refused when unsigned, tampered with or signed by another site."""
import json
import os
import shutil
import subprocess
import unittest

from harness import Site, prog


class Packages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.site = Site()  # package commands need the site folder, not a running server
        cls.other = Site(site_code="OTH")
        cls.tree = os.path.join(cls.site.tmp, "prefix")
        os.makedirs(os.path.join(cls.tree, "bin"))
        for p in ("siteward-agent", "siteward-meter", "siteward-run"):
            shutil.copy(prog(p), os.path.join(cls.tree, "bin", p))

    @classmethod
    def tearDownClass(cls):
        cls.site.close()
        cls.other.close()

    def build(self, site, out, *extra):
        return site.cli("package", "build", "--version", "0.2.0", "--from", self.tree,
                        "-o", out, "--json", *extra, check=False)

    def test_build_and_verify(self):
        out = os.path.join(self.site.tmp, "sp.tar.gz")
        r = self.build(self.site, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        self.assertEqual((info["version"], info["files"]), ("0.2.0", 3))
        r = self.site.cli("package", "verify", out, "--json", check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["version"], "0.2.0")

    def test_refusals(self):
        out = os.path.join(self.site.tmp, "sp2.tar.gz")
        self.assertEqual(self.build(self.site, out).returncode, 0)
        # signed by another site
        r = self.other.cli("package", "verify", out, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("refused", r.stderr)
        # a flipped byte in the middle of the package
        bad = os.path.join(self.site.tmp, "bad.tar.gz")
        data = bytearray(open(out, "rb").read())
        data[len(data) // 2] ^= 0xFF
        open(bad, "wb").write(bytes(data))
        r = self.site.cli("package", "verify", bad, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("refused", r.stderr)
        # a link in the tree is refused when building, and nothing is written
        os.symlink("/etc/passwd", os.path.join(self.tree, "bin", "evil"))
        try:
            out3 = os.path.join(self.site.tmp, "sp3.tar.gz")
            r = self.build(self.site, out3)
            self.assertNotEqual(r.returncode, 0)
            self.assertFalse(os.path.exists(out3))
        finally:
            os.unlink(os.path.join(self.tree, "bin", "evil"))


if __name__ == "__main__":
    unittest.main()
