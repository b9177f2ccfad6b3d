// The site at a glance: its systems by health, versions and roles, and what needs a
// person first.
import { ago, badge, clear, errorBox, get, h } from "./lib.js";

const REFRESH_MS = 5000;
// asked for as the console starts, when it starts on this page
export const early = ["/v1/systems", "/v1/upgrades/current"];

// What needs attention, worst first: each item {level, what, text, href}.
export function attention(list, run) {
  const items = [];
  if (list.ca_note) items.push({ level: 0, what: "site CA", text: list.ca_note, href: "" });
  for (const s of list.systems) {
    const href = "#/systems/" + encodeURIComponent(s.name);
    if (s.health === "offline") {
      items.push({ level: 1, what: s.name, text: `offline, last heard ${ago(s.last_seen)}`,
        href });
    } else if (s.health === "late") {
      items.push({ level: 2, what: s.name, text: `late, last heard ${ago(s.last_seen)}`,
        href });
    }
    for (const v of s.services || []) {
      if (v.state === "stuck" || v.state === "failed") {
        items.push({ level: 1, what: `${s.name} ${v.name}`,
          text: `service ${v.state}${v.reason ? ": " + v.reason : ""}`, href });
      }
    }
    if (s.cert_note) items.push({ level: 2, what: s.name, text: s.cert_note, href });
    if (s.clock_note) items.push({ level: 3, what: s.name, text: s.clock_note, href });
  }
  if (run) {
    for (const y of run.systems || []) {
      if (y.state === "deferred" || y.state === "failed") {
        items.push({ level: y.state === "failed" ? 1 : 2, what: y.name,
          text: `upgrade to ${run.version} ${y.state}${y.reason ? ": " + y.reason : ""}`,
          href: "#/upgrades" });
      }
    }
    if (run.state === "interrupted" || run.state === "failed") {
      items.push({ level: 1, what: "upgrade", text: `the upgrade to ${run.version} is ${
        run.state}${run.reason ? ": " + run.reason : ""}`, href: "#/upgrades" });
    }
  }
  return items.sort((a, b) => a.level - b.level || a.what.localeCompare(b.what));
}

function counts(values) {
  const m = new Map();
  for (const v of values) m.set(v, (m.get(v) || 0) + 1);
  return [...m.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(b[0]));
}

function bars(title, entries, total) {
  return h("section", { class: "card" }, h("h2", null, title),
    entries.length ? h("table", { class: "bars" }, h("tbody", null, entries.map(([k, n]) =>
      h("tr", null, h("th", { scope: "row" }, k || "(none)"),
        h("td", null, h("meter", { min: 0, max: total, value: n })),
        h("td", { class: "num" }, n))))) : h("p", { class: "quiet" }, "none"));
}

function draw(main, list, run) {
  const sys = list.systems;
  const health = counts(sys.map((s) => s.health));
  const items = attention(list, run);
  clear(main,
    h("h1", null, "Site"),
    h("section", { class: "tiles", "aria-label": "systems by health" },
      h("a", { class: "tile", href: "#/systems" }, h("span", { class: "big" }, sys.length),
        " systems"),
      ["ok", "late", "offline", "enrolled"].map((st) => {
        const n = (health.find(([k]) => k === st) || [st, 0])[1];
        return h("a", { class: "tile " + st, href: "#/systems?health=" + st },
          h("span", { class: "big" }, n), " ", st);
      })),
    h("section", { class: "card attention" }, h("h2", null, "Needs attention"),
      items.length ? h("ul", { id: "attention" }, items.slice(0, 200).map((i) =>
        h("li", { class: "l" + i.level },
          i.href ? h("a", { href: i.href }, i.what) : h("strong", null, i.what), ": ",
          i.text)))
        : h("p", { class: "quiet" }, "Nothing: every system reports, every service runs.")),
    h("div", { class: "grid" },
      bars("Versions", counts(sys.map((s) => s.version)), sys.length),
      bars("Roles", counts(sys.flatMap((s) => s.roles || [])), sys.length),
      run ? h("section", { class: "card" }, h("h2", null, "Latest upgrade"),
        h("p", null, `to ${run.version}: `, badge(run.state), ` ${run.counts.upgraded} of ${
          run.counts.systems} upgraded`), h("a", { href: "#/upgrades" }, "Open")) : null));
}

export function render(main) {
  let timer = null, stopped = false;
  const load = async () => {
    try {
      const [list, run] = await Promise.all([get("/v1/systems"),
        get("/v1/upgrades/current").catch((e) => {
          if (e.status === 404) return null;
          throw e;
        })]);
      if (!stopped) draw(main, list, run);
    } catch (e) {
      if (!stopped) clear(main, h("h1", null, "Site"), errorBox(e));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
