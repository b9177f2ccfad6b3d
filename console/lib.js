// What every page of the console uses: the API, the administrator's role, building
// the page from data, and telling times and sizes for a person.
//
// Text from the site (names, facts, logs, reasons) reaches the page only as text
// nodes, never as markup: a machine cannot put a script or a link into the console.

// The header the server asks of every change made on the console's port: a page of
// another site cannot set it without asking first, and that question goes unanswered.
const CONSOLE_HEADER = { "X-Siteward-Console": "1" };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One call to the site server's API; the answer's JSON, or an ApiError with the
// server's own sentence.
export async function api(method, path, body, opts = {}) {
  const init = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") Object.assign(init.headers, CONSOLE_HEADER);
  if (body instanceof Blob) {
    init.body = body;
    init.headers["Content-Type"] = "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (opts.signal) init.signal = opts.signal;
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "the site server cannot be reached: " + e.message);
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (!r.ok) {
    const msg = data && data.error ? data.error : `${r.status} ${r.statusText}`;
    throw new ApiError(r.status, msg);
  }
  return data;
}

// GETs asked ahead, while the page starts: the first page's data comes in the same
// round trip as the administrator's name instead of after it. Each is taken once, and
// only while fresh.
const early = new Map();
export function prefetch(paths) {
  for (const p of paths) {
    const pr = api("GET", p);
    pr.catch(() => {});
    early.set(p, { pr, at: Date.now() });
  }
}
export function get(path) {
  const e = early.get(path);
  early.delete(path);
  return e && Date.now() - e.at < 2000 ? e.pr : api("GET", path);
}

// The administrator using the page, learned once: {name, role}.
export const me = { name: "", role: "viewer" };
const LEVELS = { viewer: 1, operator: 2, admin: 3 };
export function can(level) {
  return (LEVELS[me.role] || 0) >= LEVELS[level];
}

// An element: h("a", {href: "#/x", class: "c"}, "text", child, ...). Attributes that
// start with "on" are listeners; strings are text, never markup.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A state shown as a coloured word; the class names what it means, not its colour.
const GOOD = new Set(["ok", "running", "upgraded", "done"]);
const WARN = new Set(["late", "enrolled", "deferred", "starting", "stopping", "pending",
  "active", "interrupted", "rolling-back", "unchanged"]);
const BAD = new Set(["offline", "failed", "stuck", "rolled-back", "removed"]);
export function badge(state) {
  const kind = GOOD.has(state) ? "good" : WARN.has(state) ? "warn" : BAD.has(state) ? "bad"
    : "plain";
  return h("span", { class: "badge " + kind }, state || "?");
}

export function ago(ms, now = Date.now()) {
  if (!ms) return "never";
  const s = Math.round((now - ms) / 1000);
  if (s < 0) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function duration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
  return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

// A message for the person, in the page's live region so a screen reader says it too.
export function notice(text, kind = "info") {
  const el = document.getElementById("notice");
  clear(el, h("p", { class: "msg " + kind }, text));
  if (kind === "info") setTimeout(() => el.firstChild && el.firstChild.textContent === text
    && clear(el), 6000);
}

export function errorBox(e) {
  return h("p", { class: "msg bad", role: "alert" }, e.message || String(e));
}

// Follows the site's latest upgrade run: `onRun(run)` on every change (null when none
// has run; undefined and an error when the server cannot be asked), `onEnd(run)` when a
// run followed ends. Returns a function that stops following; its `now()` looks at
// once (after a run was started from the page).
//
// A run under way comes as the server's event stream (GET /v1/upgrades/current as
// text/event-stream): the run whole, then each system that changed and the run's
// summary, then the end. Between runs, or while the server restarts in its own upgrade
// (which ends the stream), the plain GET is asked now and then.
export function followRun(onRun, onEnd) {
  let stopped = false, timer = null, source = null, run = null;
  const later = (fn, ms) => {
    clearTimeout(timer);
    if (!stopped) timer = setTimeout(fn, ms);
  };
  const look = async () => {
    clearTimeout(timer);
    if (source) return;
    try {
      const r = await api("GET", "/v1/upgrades/current");
      if (stopped) return;
      run = r;
      onRun(r);
      if (ACTIVE_RUN.has(r.state)) {
        if (window.EventSource) return stream();
        return later(look, 1000);
      }
    } catch (e) {
      if (stopped) return;
      if (e.status === 404) onRun(null);
      else onRun(undefined, e);
    }
    later(look, document.hidden ? 10000 : 2000);
  };
  const changed = (next) => {
    run = next;
    onRun(run);
  };
  const stream = () => {
    source = new EventSource("/v1/upgrades/current");
    source.addEventListener("run", (ev) => changed(JSON.parse(ev.data)));
    source.addEventListener("system", (ev) => {
      if (!run) return;
      const y = JSON.parse(ev.data);
      const systems = run.systems.slice();
      const i = systems.findIndex((x) => x.name === y.name);
      if (i >= 0) systems[i] = y;
      else systems.push(y);
      changed(Object.assign({}, run, { systems }));
    });
    source.addEventListener("summary", (ev) => {
      if (run) changed(Object.assign({}, run, JSON.parse(ev.data), { systems: run.systems }));
    });
    source.addEventListener("end", () => {
      source.close();
      source = null;
      onEnd(run);
      later(look, 2000);
    });
    source.onerror = () => {
      if (!source) return;
      // the server went away (its own upgrade restarts it): ask again shortly
      source.close();
      source = null;
      later(look, 1000);
    };
  };
  look();
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
    if (source) source.close();
  };
  stop.now = () => look();
  return stop;
}
const ACTIVE_RUN = new Set(["running", "rolling-back"]);

// A table whose columns sort on a click or Enter, for a few hundred rows at most
// (the systems list has its own, for thousands).
export function table(cols, rows, opts = {}) {
  let key = opts.sort || cols[0].key, dir = 1;
  const tbody = h("tbody");
  const ths = cols.map((c) => h("th", { scope: "col" },
    h("button", { type: "button", class: "sort", onclick: () => sortBy(c.key) }, c.label)));
  const draw = () => {
    const col = cols.find((c) => c.key === key);
    const val = col.sortValue || ((r) => r[key]);
    const sorted = rows.slice().sort((a, b) => {
      const x = val(a), y = val(b);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    ths.forEach((th, i) => th.setAttribute("aria-sort", cols[i].key === key
      ? (dir > 0 ? "ascending" : "descending") : "none"));
    clear(tbody, sorted.map((r) => h("tr", null,
      cols.map((c) => h("td", { class: c.class }, c.render ? c.render(r) : r[c.key])))));
  };
  const sortBy = (k) => {
    dir = k === key ? -dir : 1;
    key = k;
    draw();
  };
  draw();
  return h("table", { class: opts.class || "" }, h("thead", null, h("tr", null, ths)), tbody);
}
