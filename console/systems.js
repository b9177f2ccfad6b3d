// The systems: a list to search and sort for thousands of rows, and each system's
// facts, roles and services, with their logs and the service commands.
import { ago, api, badge, bytes, can, clear, duration, errorBox, get, h } from "./lib.js";

const REFRESH_MS = 5000;
export const early = ["/v1/systems"];
const ROW_H = 34; // px: every row of the list is this tall (style.css), so only the
// rows in view are made, whatever the number of systems
const OVERSCAN = 10;

const COLS = [
  { key: "name", label: "Name" },
  { key: "health", label: "Health" },
  { key: "version", label: "Version" },
  { key: "roles", label: "Roles" },
  { key: "services", label: "Services" },
  { key: "last_seen", label: "Last seen" },
  { key: "address", label: "Address" },
];
const HEALTH_ORDER = { offline: 0, late: 1, enrolled: 2, ok: 3 };

function serviceSummary(s) {
  const v = s.services || [];
  const bad = v.filter((x) => x.state !== "running");
  if (!v.length) return "";
  return bad.length ? bad.map((x) => `${x.name}:${x.state}`).join(" ")
    : `${v.length} running`;
}

// What a search matches: every word must be found in one of these.
function haystack(s) {
  return [s.name, s.address, s.version, s.health, ...(s.roles || []),
    ...(s.services || []).flatMap((v) => [v.name, `${v.name}:${v.state}`]),
    s.facts && s.facts.os, s.facts && s.facts.hostname].filter(Boolean).join(" ")
    .toLowerCase();
}

function sortValue(key, s) {
  switch (key) {
    case "health": return HEALTH_ORDER[s.health] ?? 9;
    case "roles": return (s.roles || []).join(",");
    case "services": return serviceSummary(s);
    case "last_seen": return -(s.last_seen || 0);
    default: return s[key] || "";
  }
}

// A row standing for those out of view, as tall as they would be.
function pad(px) {
  const td = h("td", { colspan: COLS.length });
  td.style.height = px + "px";
  return h("tr", { class: "pad", "aria-hidden": "true" }, td);
}

function renderList(main, params) {
  const state = { rows: [], shown: [], key: "name", dir: 1, sel: 0,
    query: params.get("q") || "", health: params.get("health") || "" };
  let timer = null, stopped = false, now = Date.now();

  const search = h("input", { id: "search", type: "search", placeholder: "Search systems (/)",
    "aria-label": "Search systems by name, address, version, role, service or health",
    value: state.query, autocomplete: "off" });
  const healthSel = h("select", { id: "health", "aria-label": "Health" },
    ["", "ok", "late", "offline", "enrolled"].map((v) =>
      h("option", { value: v, selected: v === state.health }, v || "any health")));
  const count = h("span", { class: "quiet", id: "count", "aria-live": "polite" });
  const ths = COLS.map((c) => h("th", { scope: "col", "aria-sort": "none" },
    h("button", { type: "button", class: "sort", onclick: () => sortBy(c.key) }, c.label)));
  const tbody = h("tbody");
  const scroller = h("div", { class: "vscroll", id: "systems-scroll", tabindex: "0",
    "aria-label": "Systems; arrow keys move, Enter opens" },
  h("table", { class: "systems", id: "systems" }, h("thead", null, h("tr", null, ths)), tbody));
  const err = h("div");

  const filter = () => {
    const words = state.query.toLowerCase().split(/\s+/).filter(Boolean);
    state.shown = state.rows.filter((s) => (!state.health || s.health === state.health) &&
      words.every((w) => s._hay.includes(w)));
    const k = state.key, d = state.dir;
    state.shown.sort((a, b) => {
      const x = sortValue(k, a), y = sortValue(k, b);
      return (x < y ? -1 : x > y ? 1 : 0) * d || a.name.localeCompare(b.name);
    });
    state.sel = Math.min(state.sel, Math.max(0, state.shown.length - 1));
    count.textContent = `${state.shown.length} of ${state.rows.length} systems`;
    ths.forEach((th, i) => th.setAttribute("aria-sort", COLS[i].key === k
      ? (d > 0 ? "ascending" : "descending") : "none"));
    draw();
  };

  const row = (s, i) => h("tr", { class: i === state.sel ? "sel" : "", dataset: { i } },
    h("td", null, h("a", { href: "#/systems/" + encodeURIComponent(s.name) }, s.name)),
    h("td", null, badge(s.health)),
    h("td", null, s.version),
    h("td", null, (s.roles || []).join(", ")),
    h("td", null, serviceSummary(s)),
    h("td", { title: new Date(s.last_seen || 0).toISOString() }, ago(s.last_seen, now)),
    h("td", null, s.address));

  // Only the rows in view (and a few around them) are in the page.
  const draw = () => {
    const n = state.shown.length;
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_H) - OVERSCAN);
    const last = Math.min(n, Math.ceil((scroller.scrollTop + scroller.clientHeight) / ROW_H)
      + OVERSCAN);
    const rows = [];
    if (first > 0) rows.push(pad(first * ROW_H));
    for (let i = first; i < last; i++) rows.push(row(state.shown[i], i));
    if (last < n) rows.push(pad((n - last) * ROW_H));
    clear(tbody, rows);
  };
  let pending = false;
  scroller.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  });

  const sortBy = (k) => {
    state.dir = k === state.key ? -state.dir : 1;
    state.key = k;
    filter();
  };
  const select = (i) => {
    state.sel = Math.max(0, Math.min(state.shown.length - 1, i));
    const top = state.sel * ROW_H, bottom = top + ROW_H + ROW_H; // the header's row too
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (bottom > scroller.scrollTop + scroller.clientHeight) {
      scroller.scrollTop = bottom - scroller.clientHeight;
    }
    draw();
  };
  const keys = (ev) => {
    const page = Math.max(1, Math.floor(scroller.clientHeight / ROW_H) - 1);
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    if (ev.key in moves) select(state.sel + moves[ev.key]);
    else if (ev.key === "Home" && ev.target !== search) select(0);
    else if (ev.key === "End" && ev.target !== search) select(state.shown.length - 1);
    else if (ev.key === "Enter" && state.shown[state.sel]) {
      location.hash = "#/systems/" + encodeURIComponent(state.shown[state.sel].name);
    } else return;
    ev.preventDefault();
  };
  search.addEventListener("keydown", keys);
  scroller.addEventListener("keydown", keys);
  search.addEventListener("input", () => {
    state.query = search.value;
    state.sel = 0;
    scroller.scrollTop = 0;
    filter();
  });
  healthSel.addEventListener("change", () => {
    state.health = healthSel.value;
    filter();
  });

  clear(main, h("h1", null, "Systems"),
    h("div", { class: "toolbar" }, search, healthSel, count), err, scroller);

  const load = async () => {
    try {
      const list = await get("/v1/systems");
      if (stopped) return;
      now = list.now || Date.now();
      state.rows = list.systems.map((s) => Object.assign(s, { _hay: haystack(s) }));
      clear(err);
      filter();
    } catch (e) {
      if (!stopped) clear(err, errorBox(e));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Facts in a person's units: sizes in bytes, uptimes in seconds.
function fact(k, v) {
  if (typeof v === "number" && /^(disk|memory)_/.test(k)) return bytes(v);
  if (typeof v === "number" && /uptime$/.test(k)) return duration(v * 1000);
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function factsTable(facts) {
  const entries = Object.entries(facts || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return h("p", { class: "quiet" }, "none reported yet");
  return h("table", { class: "kv" }, h("tbody", null, entries.map(([k, v]) =>
    h("tr", null, h("th", { scope: "row" }, k),
      h("td", null, fact(k, v))))));
}

// A service command, answered by the server within its timeout with the outcome and
// its reason.
async function command(sys, svc, action, out, buttons) {
  buttons.forEach((b) => (b.disabled = true));
  const t0 = performance.now();
  clear(out, h("span", { class: "quiet" }, `${action}: waiting for ${sys}…`));
  try {
    const r = await api("POST", `/v1/systems/${encodeURIComponent(sys)}/services/${
      encodeURIComponent(svc)}/${action}`, { timeout: 15 });
    const took = duration(Math.round(performance.now() - t0));
    const reason = r.reason && r.reason !== r.state ? ` (${r.reason})` : "";
    clear(out, h("span", { class: "result", role: "status" }, `${action}: `, badge(r.state),
      `${reason} after ${took}`));
    return r;
  } catch (e) {
    clear(out, h("span", { class: "msg bad", role: "alert" }, `${action} refused or failed: ${
      e.message}`));
    return null;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

async function showLog(sys, svc, pre) {
  pre.hidden = false;
  pre.textContent = "reading the log…";
  try {
    const r = await api("GET", `/v1/systems/${encodeURIComponent(sys)}/services/${
      encodeURIComponent(svc)}/logs?lines=100&timeout=10`);
    pre.textContent = r.log || "(the log is empty)";
    pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    pre.textContent = "cannot read the log: " + e.message;
  }
}

function servicesTable(s, reload, kept) {
  const svcs = s.services || [];
  if (!svcs.length) return h("p", { class: "quiet" }, "no services");
  return h("table", { class: "services" }, h("thead", null, h("tr", null,
    ["Service", "State", "PID", "Reason", ""].map((t) => h("th", { scope: "col" }, t)))),
  h("tbody", null, svcs.map((v) => {
    // a command's answer and an open log stay when the table is made again
    if (!kept.has(v.name)) {
      kept.set(v.name, { out: h("div", { class: "out", "aria-live": "polite" }),
        pre: h("pre", { class: "log", hidden: true, tabindex: "0" }) });
    }
    const { out, pre } = kept.get(v.name);
    const buttons = can("operator") ? ["start", "stop", "restart"].map((a) =>
      h("button", { type: "button", class: "act", dataset: { action: a, service: v.name },
        onclick: async () => {
          if (await command(s.name, v.name, a, out, buttons)) reload();
        } }, a[0].toUpperCase() + a.slice(1))) : [];
    const logBtn = h("button", { type: "button", class: "act", dataset: { action: "logs",
      service: v.name }, onclick: () => showLog(s.name, v.name, pre) }, "Log");
    return [h("tr", { dataset: { service: v.name } }, h("th", { scope: "row" }, v.name),
      h("td", { class: "state" }, badge(v.state)), h("td", null, v.pid || ""),
      h("td", null, v.reason && v.reason !== v.state ? v.reason : ""),
      h("td", { class: "actions" }, buttons, logBtn)),
    h("tr", { class: "detail" }, h("td", { colspan: 5 }, out, pre))];
  })));
}

function renderOne(main, name) {
  let stopped = false, timer = null;
  const body = h("div");
  clear(main, h("p", null, h("a", { href: "#/systems" }, "← Systems")),
    h("h1", null, name), body);
  let drawnServices = null;
  const kept = new Map();
  const load = async (full) => {
    try {
      const s = await api("GET", "/v1/systems/" + encodeURIComponent(name));
      if (stopped) return;
      const key = JSON.stringify((s.services || []).map((v) => [v.name, v.state, v.pid]));
      // the services' rows keep a command's answer and a log open: made again only
      // when the services change
      if (full || key !== drawnServices) {
        drawnServices = key;
        clear(body,
          h("p", { class: "facts-line" }, badge(s.health), ` version ${s.version} · ${
            s.address} · last heard ${ago(s.last_seen)} · enrolled ${ago(s.enrolled_at)}`),
          s.cert_note ? h("p", { class: "msg warn" }, s.cert_note) : null,
          s.clock_note ? h("p", { class: "msg warn" }, s.clock_note) : null,
          h("section", { class: "card" }, h("h2", null, "Roles"),
            (s.roles || []).length ? (s.roles || []).join(", ") : h("span", { class: "quiet" },
              "none")),
          h("section", { class: "card", id: "services" }, h("h2", null, "Services"),
            servicesTable(s, () => load(false), kept)),
          h("section", { class: "card" }, h("h2", null, "Facts"), factsTable(s.facts)));
      }
    } catch (e) {
      if (!stopped) clear(body, errorBox(e));
      if (e.status === 404) return;
    }
    if (!stopped) {
      clearTimeout(timer);
      timer = setTimeout(() => load(false), REFRESH_MS);
    }
  };
  load(true);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function render(main, rest, params) {
  return rest.length ? renderOne(main, rest[0]) : renderList(main, params);
}
