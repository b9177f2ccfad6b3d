// bench/console's browser: times the Systems page of the console at CONSOLE_URL, logged
// in with ADMIN_DIR's PKCS#12 file, RUNS times; prints one line of JSON with the times
// (ms) of each run. SYSTEMS is how many the list must show. Every wait is bounded.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(new URL("../console/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = process.env;
const URL_ = env.CONSOLE_URL;
const N = Number(env.SYSTEMS);
const T = 60000;

const browser = await chromium.launch({ executablePath: env.CHROMIUM || "/usr/bin/chromium" });
const out = { list: [], search: [], sort: [], end: [], bytes: 0 };
try {
  for (let r = 0; r < Number(env.RUNS || 5); r++) {
    const ctx = await browser.newContext({
      clientCertificates: [{ origin: URL_, pfxPath: join(env.ADMIN_DIR, "admin.p12"),
        passphrase: readFileSync(join(env.ADMIN_DIR, "admin.p12.password"), "utf8").trim() }],
      ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    page.on("response", async (res) => {
      if (res.url().endsWith("/v1/systems")) out.bytes = (await res.body()).length;
    });
    await page.goto(URL_ + "/", { timeout: T });
    await page.locator("#role").waitFor({ timeout: T });
    // the list, from the moment it is asked for until every system is counted and drawn
    let t0 = await page.evaluate(() => performance.now());
    await page.evaluate(() => (location.hash = "#/systems"));
    await page.waitForFunction((n) => {
      const c = document.getElementById("count");
      return c && c.textContent.startsWith(`${n} of ${n}`) &&
        document.querySelectorAll("#systems tbody tr").length > 1;
    }, N, { timeout: T });
    out.list.push(await page.evaluate(() => performance.now()) - t0);
    // a search for one system's name: typed at once, the count follows
    t0 = await page.evaluate(() => performance.now());
    await page.fill("#search", "-00007");
    await page.waitForFunction((n) => !document.getElementById("count").textContent
      .startsWith(`${n} of`), N, { timeout: T });
    out.search.push(await page.evaluate(() => performance.now()) - t0);
    await page.fill("#search", "");
    await page.waitForFunction((n) => document.getElementById("count").textContent
      .startsWith(`${n} of ${n}`), N, { timeout: T });
    // sort by the last column, then back
    t0 = await page.evaluate(() => performance.now());
    await page.locator("#systems thead button").last().click();
    await page.waitForFunction(() => [...document.querySelectorAll("#systems thead th")]
      .pop().getAttribute("aria-sort") === "ascending", null, { timeout: T });
    out.sort.push(await page.evaluate(() => performance.now()) - t0);
    // to the end of the list: the last row drawn
    t0 = await page.evaluate(() => performance.now());
    await page.evaluate(() => {
      const s = document.getElementById("systems-scroll");
      s.scrollTop = s.scrollHeight;
    });
    await page.waitForFunction((n) => !!document.querySelector(
      `#systems tbody tr[data-i="${n - 1}"]`), N, { timeout: T });
    out.end.push(await page.evaluate(() => performance.now()) - t0);
    await ctx.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
