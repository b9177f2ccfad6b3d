// Software metering: the products and their licenses, the licenses in use now against
// each count, who holds each one now (every license server asked, as `siteward license
// status` does; an operator may take one back), and the peak of concurrent runs per day
// over a period, as a chart.
import { ago, api, can, clear, errorBox, h, notice, table } from "./lib.js";

const DAY_MS = 86400000;

// The licenses in use now, from the server's /metrics (what its license servers last
// reported): product -> count.
export function inUse(text) {
  const m = new Map();
  const re = /^siteward_licenses_in_use\{product="((?:[^"\\]|\\.)*)"\} (\d+(?:\.\d+)?)$/gm;
  for (const [, p, v] of text.matchAll(re)) m.set(p.replace(/\\(.)/g, "$1"), Number(v));
  return m;
}

async function metricsText() {
  const r = await fetch("/metrics", { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(`/metrics: ${r.status}`);
  return r.text();
}

// The chart library is loaded the first time a chart is drawn, not with the page.
let uplot = null;
function loadUplot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (uplot) return uplot;
  const base = new URL(".", import.meta.url).pathname;
  uplot = new Promise((resolve, reject) => {
    const css = h("link", { rel: "stylesheet", href: base + "vendor/uplot.css" });
    const js = h("script", { src: base + "vendor/uplot.js" });
    js.onload = () => resolve(window.uPlot);
    js.onerror = () => {
      uplot = null;
      reject(new Error("the chart library is not installed on the server"));
    };
    document.head.append(css, js);
  });
  return uplot;
}

// The chart's width follows the window's while the page is shown.
let onResize = null;

// Per product, the peak of concurrent runs each day, beside its count of licenses.
function chart(box, usage, products) {
  const names = [...new Set(usage.map((u) => u.product))].sort();
  const days = [...new Set(usage.map((u) => u.day))].sort((a, b) => a - b);
  if (!days.length) {
    clear(box, h("p", { class: "quiet" }, "No usage recorded in this period."));
    return;
  }
  const at = new Map(usage.map((u) => [`${u.product} ${u.day}`, u.peak_concurrent]));
  const data = [days.map((d) => d / 1000)];
  const series = [{}];
  const palette = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2"];
  names.forEach((n, i) => {
    const colour = palette[i % palette.length];
    data.push(days.map((d) => at.get(`${n} ${d}`) ?? 0));
    series.push({ label: `${n} peak`, stroke: colour, width: 2, points: { show: true } });
    const p = products.find((x) => x.name === n);
    if (p) {
      data.push(days.map(() => p.licenses));
      series.push({ label: `${n} licenses`, stroke: colour, dash: [6, 4], width: 1 });
    }
  });
  loadUplot().then((uPlot) => {
    clear(box);
    const width = Math.max(280, box.clientWidth || 600);
    // runs are whole: the scale starts at 0 and its ticks are whole numbers
    const plot = new uPlot({ width, height: 260, series, scales: { x: { time: true },
      y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{}, { label: "runs at once", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }] },
    data, box);
    onResize = () => plot.setSize({ width: Math.max(280, box.clientWidth), height: 260 });
    window.addEventListener("resize", onResize);
  }).catch((e) => clear(box, errorBox(e)));
}

// The "Held now" card again, as the license servers answer now.
async function reloadHeld() {
  const old = document.getElementById("held");
  try {
    const lic = await api("GET", "/v1/licenses");
    if (old && old.isConnected) old.replaceWith(held(lic, reloadHeld));
  } catch (e) {
    notice(e.message || String(e), "bad");
  }
}

// Who holds which license now, and who waits; license servers that did not answer named.
function held(lic, reload) {
  const leases = lic.leases || [], queue = lic.queue || [];
  const away = (lic.servers || []).filter((s) => s.state !== "answered");
  const cols = [
    { key: "product", label: "Product" },
    { key: "user", label: "User" },
    { key: "host", label: "Host" },
    // a loan (siteward-run borrow) is held by the machine until its end, not by a program
    { key: "exe", label: "Program", render: (r) => r.borrowed_until
      ? `borrowed until ${new Date(r.borrowed_until).toLocaleString()}` : `${r.exe} (${r.pid})` },
    { key: "granted_at", label: "Since", render: (r) => ago(r.granted_at) },
    { key: "server", label: "License server" },
  ];
  if (can("operator")) {
    cols.push({ key: "lease", label: "", render: (r) => h("button", { type: "button",
      class: "act", dataset: { lease: r.lease }, "aria-label": `Reclaim ${r.product} from ${
        r.user}@${r.host}`, onclick: async (ev) => {
        ev.target.disabled = true;
        try {
          const a = await api("POST", "/v1/licenses/reclaim", { lease: r.lease });
          notice(a.outcome || "reclaimed");
          reload();
        } catch (e) {
          ev.target.disabled = false;
          notice(e.message || String(e), "bad");
        }
      } }, r.borrowed_until ? "Write off" : "Reclaim") });
  }
  return h("section", { class: "card", id: "held" }, h("h2", null, "Held now"),
    away.map((s) => h("p", { class: "msg warn", role: "status" },
      `License server ${s.system} did not answer (${s.error}): its licenses are not listed.`)),
    leases.length ? table(cols, leases, { class: "leases" })
      : h("p", { class: "quiet" }, "No license is in use."),
    queue.length ? [h("h3", null, "Waiting"), table([
      { key: "product", label: "Product" },
      { key: "user", label: "User" },
      { key: "host", label: "Host" },
      { key: "since", label: "Waiting since", render: (r) => ago(r.since) },
      { key: "position", label: "Place", class: "num" },
      { key: "server", label: "License server" },
    ], queue, { class: "queue" })] : []);
}

export function render(main, rest, params) {
  const days = Number(params.get("days")) || 30;
  const picker = h("select", { id: "days", "aria-label": "Period" },
    [7, 30, 90, 365].map((d) => h("option", { value: d, selected: d === days },
      `last ${d} days`)));
  picker.addEventListener("change", () => (location.hash = "#/metering?days=" + picker.value));
  const body = h("div", null, h("p", { class: "quiet" }, "Loading…"));
  clear(main, h("h1", null, "Software metering"), body);
  let stopped = false;
  (async () => {
    const since = Math.floor(Date.now() / DAY_MS - days + 1) * DAY_MS;
    try {
      const [prod, usage, metrics, lic] = await Promise.all([api("GET", "/v1/products"),
        api("GET", "/v1/usage?since=" + since), metricsText().catch(() => ""),
        api("GET", "/v1/licenses").catch((e) => ({ error: e }))]);
      if (stopped) return;
      const used = inUse(metrics);
      const products = prod.products || [];
      const peaks = new Map();
      for (const u of usage.usage || []) {
        peaks.set(u.product, Math.max(peaks.get(u.product) || 0, u.peak_concurrent));
      }
      const rows = products.map((p) => Object.assign({}, p, {
        in_use: used.get(p.name) ?? 0, peak: peaks.get(p.name) ?? 0 }));
      const box = h("div", { class: "chart", id: "peak-chart" });
      clear(body,
        h("section", { class: "card" }, h("h2", null, "Products"), rows.length
          ? table([
            { key: "name", label: "Product" },
            { key: "exe", label: "Program" },
            { key: "licenses", label: "Licenses", class: "num" },
            { key: "in_use", label: "In use now", class: "num",
              render: (r) => h("span", null, h("meter", { min: 0, max: r.licenses || 1,
                high: (r.licenses || 1) * 0.9, value: r.in_use }), ` ${r.in_use}`) },
            { key: "peak", label: `Peak, ${days} days`, class: "num",
              render: (r) => h("span", { class: r.licenses && r.peak >= r.licenses
                ? "full" : "" }, `${r.peak}/${r.licenses}`) },
            { key: "enforce", label: "Enforced", render: (r) => (r.enforce ? "yes" : "no") },
          ], rows, { class: "products" })
          : h("p", { class: "quiet" }, "No products: add one with siteward product add.")),
        lic.error ? h("section", { class: "card" }, h("h2", null, "Held now"), errorBox(lic.error))
          : held(lic, reloadHeld),
        h("section", { class: "card" }, h("div", { class: "toolbar" },
          h("h2", null, "Peak concurrent runs per day"), picker), box));
      chart(box, usage.usage || [], products);
    } catch (e) {
      if (!stopped) clear(body, errorBox(e));
    }
  })();
  return () => {
    stopped = true;
    if (onResize) window.removeEventListener("resize", onResize);
    onResize = null;
  };
}
