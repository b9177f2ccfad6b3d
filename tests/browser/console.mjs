// The web console in a real browser: headless Chromium driven by playwright-core,
// logged in with administrators' PKCS#12 files as a person's browser would be.
//
// Run by tests/integ/test_console.py, which makes the site and says what to expect in
// the environment:
//   CONSOLE_URL        https://HOST:PORT of the console
//   API_URL            https://HOST:PORT of the API (another origin, for the forged page)
//   OPERATOR_DIR       an operator's folder from `siteward admin add` (admin.p12 and its
//   VIEWER_DIR         password), and a viewer's
//   SYSTEM, SERVICE    a system whose service runs, to be stopped and started
//   PACKAGE            a service pack to upgrade to (optional: no upgrade without it)
//   FROZEN, FROZEN_PID a system whose agent is frozen (SIGSTOP) as the upgrade starts
//   OUT                where the screenshots go
//   MEASURE            when set, page load times (cold and warm) and download size
// Prints one line per step ("ok: ..."), the measures as "measure: ...", and ends with
// status 1 and a "FAIL: ..." line at the first thing that is not as expected. Every wait
// is bounded.
import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(new URL("../../console/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const env = process.env;
const URL_ = env.CONSOLE_URL;
const OUT = env.OUT || ".";
const CHROMIUM = env.CHROMIUM || "/usr/bin/chromium";
const T = 15000; // the bound of an ordinary wait (ms)
mkdirSync(OUT, { recursive: true });

let shot = 0;
const problems = []; // errors the pages logged (a refused script, a CSP violation)

function ok(what) {
  console.log("ok: " + what);
}

function fail(what) {
  throw new Error(what);
}

async function screenshot(page, name) {
  const file = join(OUT, `${String(++shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log("screenshot: " + file);
}

async function context(browser, dir, opts = {}) {
  const ctx = await browser.newContext({
    clientCertificates: [{ origin: URL_, pfxPath: join(dir, "admin.p12"),
      passphrase: readFileSync(join(dir, "admin.p12.password"), "utf8").trim() }],
    // the site's own CA signs the server's certificate; the browser does not know it
    ignoreHTTPSErrors: true,
    viewport: opts.viewport || { width: 1280, height: 800 },
  });
  return ctx;
}

async function open(ctx, hash = "") {
  const page = await ctx.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${page.url()}: ${e.message}`));
  await page.goto(URL_ + "/" + hash, { timeout: T });
  await page.locator("#role").waitFor({ timeout: T });
  return page;
}

async function go(page, hash) {
  await page.evaluate((h) => (location.hash = h), hash);
}

// The operator: the systems, a service stopped and started, the upgrade, the audit.
async function operator(browser) {
  const ctx = await context(browser, env.OPERATOR_DIR);
  const page = await open(ctx);
  const role = await page.locator("#role").textContent();
  if (role !== "operator") fail(`the page says the role is ${role}, not operator`);
  ok("logged in with the operator's PKCS#12 file");

  await page.locator("#attention, .attention p").first().waitFor({ timeout: T });
  await page.locator(".tiles .big").first().waitFor({ timeout: T });
  await screenshot(page, "site");
  ok("the site page shows the systems by health");

  await go(page, "#/systems");
  const link = page.locator("#systems a", { hasText: env.SYSTEM }).first();
  await link.waitFor({ timeout: T });
  await page.locator("#search").fill(env.SYSTEM);
  await page.locator("#count", { hasText: "1 of" }).waitFor({ timeout: T });
  await screenshot(page, "systems");
  ok(`the systems list finds ${env.SYSTEM}`);

  // keyboard: Enter on the list's selected row opens it
  await page.locator("#search").press("Enter");
  const row = page.locator(`#services tr[data-service="${env.SERVICE}"]`);
  await row.locator(".state", { hasText: "running" }).waitFor({ timeout: T });
  ok(`${env.SYSTEM} shows ${env.SERVICE} running`);

  const t0 = Date.now();
  await page.locator(`button[data-action="stop"][data-service="${env.SERVICE}"]`).click();
  const result = page.locator(`#services .result`).first();
  await result.filter({ hasText: "stopped" }).waitFor({ timeout: 30000 });
  const answer = (await result.textContent()).trim();
  ok(`stop answered in ${Date.now() - t0} ms: "${answer}"`);
  await row.locator(".state", { hasText: "stopped" }).waitFor({ timeout: T });
  await page.locator(`button[data-action="logs"][data-service="${env.SERVICE}"]`).click();
  await page.locator("pre.log:not([hidden])").filter({ hasNotText: "reading the log" }).first()
    .waitFor({ timeout: T });
  await screenshot(page, "system-stopped");
  await page.locator(`button[data-action="start"][data-service="${env.SERVICE}"]`).click();
  await result.filter({ hasText: "running" }).waitFor({ timeout: 30000 });
  await row.locator(".state", { hasText: "running" }).waitFor({ timeout: T });
  ok(`started again: "${(await result.textContent()).trim()}"`);

  await go(page, "#/metering");
  await page.locator("table.products tr", { hasText: "cad" }).waitFor({ timeout: T });
  // the chart library comes from the server alone, and draws under its CSP
  await page.locator("#peak-chart canvas").waitFor({ timeout: T });
  await screenshot(page, "metering");
  ok("the metering page shows the products and the peak of concurrent runs as a chart");
  if (env.HELD) {
    // who holds what now; the operator takes a license back, and its row goes
    const lease = page.locator("table.leases tr", { hasText: env.HELD });
    await lease.waitFor({ timeout: T });
    await screenshot(page, "metering-held");
    await lease.locator("button", { hasText: "Reclaim" }).click();
    await page.locator("#notice", { hasText: "1 license taken back" }).waitFor({ timeout: T });
    await page.locator("table.leases tr", { hasText: env.HELD }).waitFor({ state: "detached",
      timeout: T });
    ok("the operator took the license back from the metering page");
  }

  if (env.PACKAGE) await upgrade(page);
  else console.log("skip: no PACKAGE, no upgrade");

  await go(page, "#/audit");
  const audited = page.locator("table.audit tr", {
    hasText: `/v1/systems/${env.SYSTEM}/services/${env.SERVICE}/stop` });
  await audited.first().waitFor({ timeout: T });
  const line = (await audited.first().textContent()).replace(/\s+/g, " ");
  if (!line.includes("op1")) fail(`the audit record does not name op1: ${line}`);
  await screenshot(page, "audit");
  ok("the audit page shows the stop, by op1");

  await forged(ctx);
  await ctx.close();
}

// An upgrade from the page: the check first, then the run, followed live while a frozen
// system is deferred, without reloading the page.
async function upgrade(page) {
  await go(page, "#/upgrades");
  await page.locator("#start-form").waitFor({ timeout: T });
  await page.locator("#package").setInputFiles(env.PACKAGE);
  await page.locator("#stop-timeout").fill("3");
  await page.locator("#check").click();
  const check = page.locator("#check-result");
  await check.waitFor({ timeout: 60000 });
  ok(`preflight: ${(await check.textContent()).trim()}`);
  if (await page.locator("#start").isDisabled()) fail("the check refused the upgrade");
  // frozen only now: a system silent for long before is late, and the check says so
  if (env.FROZEN_PID) process.kill(Number(env.FROZEN_PID), "SIGSTOP");
  // what the page showed as the run went on, noted by the page itself
  await page.evaluate(() => {
    window.__states = [];
    new MutationObserver(() => {
      const run = document.getElementById("run");
      const s = run && run.dataset.state;
      if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
    }).observe(document.getElementById("main"), { subtree: true, childList: true,
      attributes: true });
  });
  let streams = 0;
  page.on("request", (r) => {
    if (r.resourceType() === "eventsource") streams++;
  });
  await page.locator("#start").click();
  try {
    const frozen = page.locator("table.run-systems tr", { hasText: env.FROZEN });
    await frozen.locator(".badge", { hasText: "deferred" }).waitFor({ timeout: 120000 });
    const run = page.locator("#run");
    await page.waitForFunction(() => {
      const r = document.getElementById("run");
      return r && r.dataset.state !== "running";
    }, null, { timeout: 60000 });
    const states = await page.evaluate(() => window.__states);
    if (!states.includes("running")) fail(`the page never showed the run running: ${states}`);
    if (!streams) fail("the page did not follow the run's event stream");
    ok(`the run went ${states.join(" → ")} on the page (${streams} event streams), ${
      env.FROZEN} deferred: ${
      (await frozen.first().textContent()).replace(/\s+/g, " ").trim()}`);
    await screenshot(page, "upgrade-deferred");
    if (!(await run.getAttribute("data-state"))) fail("no run shown");
  } finally {
    if (env.FROZEN_PID) process.kill(Number(env.FROZEN_PID), "SIGCONT");
  }
  // back, the frozen system catches up by itself, and the page shows it
  await page.locator("table.run-systems tr", { hasText: env.FROZEN })
    .locator(".badge", { hasText: "upgraded" }).waitFor({ timeout: 90000 });
  await screenshot(page, "upgrade-done");
  ok(`${env.FROZEN} caught up once it was back`);
}

// A page of another origin (the API's port) in the same browser, whose requests carry
// the operator's certificate too, tries to stop the service through the console.
async function forged(ctx) {
  const page = await ctx.newPage();
  await page.goto(env.API_URL + "/v1/ca", { timeout: T });
  const stop = `${URL_}/v1/systems/${env.SYSTEM}/services/${env.SERVICE}/stop`;
  const r = await page.evaluate(async (url) => {
    const out = {};
    // a simple request: sent without asking, its answer unreadable to the page
    await fetch(url, { method: "POST", mode: "no-cors", credentials: "include",
      body: "{}" }).then((x) => (out.simple = x.type), (e) => (out.simple = "error " + e));
    // with the console's header: the browser asks first, and is not answered
    await fetch(url, { method: "POST", credentials: "include", body: "{}",
      headers: { "X-Siteward-Console": "1" } }).then((x) => (out.marked = x.status),
      (e) => (out.marked = "error " + e.message));
    return out;
  }, stop);
  if (typeof r.marked === "number") fail(`a foreign page read the console's answer: ${r.marked}`);
  ok(`a foreign page's requests: simple ${r.simple}, with the header ${r.marked}`);
  await page.close();
}

// The viewer sees no button it may not use, and the API refuses it the same stop.
async function viewer(browser) {
  const ctx = await context(browser, env.VIEWER_DIR);
  const page = await open(ctx, "#/systems/" + env.SYSTEM);
  const role = await page.locator("#role").textContent();
  if (role !== "viewer") fail(`the page says the role is ${role}, not viewer`);
  await page.locator(`#services tr[data-service="${env.SERVICE}"]`).waitFor({ timeout: T });
  for (const a of ["start", "stop", "restart"]) {
    const n = await page.locator(`button[data-action="${a}"]`).count();
    if (n) fail(`the viewer is shown ${n} ${a} buttons`);
  }
  if (!(await page.locator('button[data-action="logs"]').count())) fail("no log button");
  await screenshot(page, "viewer-system");
  const r = await page.evaluate(async ([sys, svc]) => {
    const x = await fetch(`/v1/systems/${sys}/services/${svc}/stop`, { method: "POST",
      headers: { "X-Siteward-Console": "1", "Content-Type": "application/json" },
      body: "{}" });
    return { status: x.status, body: await x.text() };
  }, [env.SYSTEM, env.SERVICE]);
  if (r.status !== 403 || !r.body.includes("operator")) {
    fail(`the viewer's stop was answered ${r.status} ${r.body}`);
  }
  ok(`the viewer sees no service buttons, and its stop is refused: ${r.body}`);
  await go(page, "#/upgrades");
  await page.locator("#run").waitFor({ timeout: T });
  if (await page.locator("#start-form, #resume, #rollback").count()) {
    fail("the viewer is shown the upgrade's controls");
  }
  ok("the viewer's upgrades page has no controls");
  // on a phone's width
  await page.setViewportSize({ width: 390, height: 844 });
  await go(page, "#/systems");
  await page.locator("#systems a").first().waitFor({ timeout: T });
  await screenshot(page, "viewer-phone");
  await ctx.close();
}

function median(v) {
  const s = v.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// Page load, cold (a new browser profile each time) and warm (the same one, again),
// from the browser's navigation timing, median of 5; and the bytes it downloaded.
async function measure(browser) {
  const one = async (page) => {
    await page.goto(URL_ + "/", { timeout: T });
    await page.locator(".tiles .big").first().waitFor({ timeout: T });
    return page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const res = performance.getEntriesByType("resource");
      return { load: nav.loadEventEnd - nav.startTime, ready: performance.now(),
        bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
        body: nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0),
        files: 1 + res.length };
    });
  };
  const cold = [], warm = [];
  for (let i = 0; i < 5; i++) {
    const ctx = await context(browser, env.VIEWER_DIR);
    const page = await ctx.newPage();
    cold.push(await one(page));
    warm.push(await one(page));
    for (let j = 0; j < 4 && i === 0; j++) warm.push(await one(page));
    await ctx.close();
  }
  const w = warm.slice(0, 5);
  const f = (v) => v.toFixed(0);
  console.log(`measure: cold load ${f(median(cold.map((x) => x.load)))} ms, site shown ${
    f(median(cold.map((x) => x.ready)))} ms; warm load ${f(median(w.map((x) => x.load)))
  } ms, site shown ${f(median(w.map((x) => x.ready)))} ms (median of 5)`);
  console.log(`measure: cold download ${cold[0].bytes} bytes transferred in ${cold[0].files
  } requests (${cold[0].body} bytes of bodies); warm ${w[0].bytes} bytes`);
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ["--no-sandbox"], timeout: 60000 });
  try {
    await operator(browser);
    await viewer(browser);
    if (env.MEASURE) await measure(browser);
  } finally {
    await browser.close();
  }
  const csp = problems.filter((p) => !/Failed to load resource|net::ERR_FAILED|CORS/.test(p));
  if (csp.length) fail("the pages logged errors:\n" + csp.join("\n"));
  ok("no errors in the pages' consoles");
}

main().then(() => process.exit(0), (e) => {
  console.log("FAIL: " + (e && e.message ? e.message : e));
  process.exit(1);
});
