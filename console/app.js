// The console's shell: who is using it, the pages and the keys that reach them.
import { clear, errorBox, get, h, me, prefetch } from "./lib.js";
import * as site from "./site.js";
import * as systems from "./systems.js";
import * as metering from "./metering.js";
import * as upgrades from "./upgrades.js";
import * as audit from "./audit.js";

const PAGES = [
  { path: "site", title: "Site", key: "1", mod: site },
  { path: "systems", title: "Systems", key: "2", mod: systems },
  { path: "metering", title: "Metering", key: "3", mod: metering },
  { path: "upgrades", title: "Upgrades", key: "4", mod: upgrades },
  { path: "audit", title: "Audit", key: "5", mod: audit },
];

const main = document.getElementById("main");
let leave = null; // what the page shown must stop (timers, streams) when another opens

function route() {
  const [where, query] = (location.hash.replace(/^#\/?/, "") || "site").split("?");
  const [path, ...rest] = where.split("/").filter((p, i) => i === 0 || p);
  const page = PAGES.find((p) => p.path === path) || PAGES[0];
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page.path) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (leave) leave();
  leave = null;
  document.title = `${page.title} · siteward`;
  clear(main);
  try {
    leave = page.mod.render(main, rest.map(decodeURIComponent),
      new URLSearchParams(query || "")) || null;
  } catch (e) {
    clear(main, errorBox(e));
  }
}

function nav() {
  return PAGES.map((p) => h("a", { href: "#/" + p.path, dataset: { page: p.path },
    title: `${p.title} (key ${p.key})` }, p.title));
}

// Keys for people who keep their hands on the keyboard: 1-5 open the pages, / finds a
// system, ? says so. Not while typing in a field.
function onKey(ev) {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const t = ev.target;
  if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  const page = PAGES.find((p) => p.key === ev.key);
  if (page) {
    location.hash = "#/" + page.path;
    main.focus();
    ev.preventDefault();
  } else if (ev.key === "/") {
    if (!/^#\/systems(\?|$)/.test(location.hash)) {
      location.hash = "#/systems";
    }
    requestAnimationFrame(() => document.getElementById("search")?.focus());
    ev.preventDefault();
  } else if (ev.key === "?") {
    const help = document.getElementById("keys");
    help.hidden = !help.hidden;
  }
}

async function start() {
  clear(document.getElementById("nav"), nav());
  document.addEventListener("keydown", onKey);
  // everything the shell and the first page ask for, at once
  prefetch(["/v1/whoami", "/v1/site"]);
  const first = PAGES.find((p) => location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] ===
    p.path) || PAGES[0];
  if (first.mod.early) prefetch(first.mod.early);
  const site = get("/v1/site");
  try {
    const who = await get("/v1/whoami");
    Object.assign(me, who);
    document.body.dataset.role = me.role;
    clear(document.getElementById("who"), h("span", { id: "me" }, me.name), " · ",
      h("span", { id: "role" }, me.role));
  } catch (e) {
    // No administrator's certificate came with the request: say what to do.
    clear(main, h("h1", null, "An administrator's certificate is needed"),
      errorBox(e),
      h("p", null, "Make one with ", h("code", null,
        "siteward admin add NAME --role viewer --out DIR"),
        ", import DIR/admin.p12 into this browser (its password is in ",
        h("code", null, "DIR/admin.p12.password"), "), and open this page again."));
    return;
  }
  try {
    const s = await site;
    clear(document.getElementById("site"), `site ${s.site_code} · ${s.version}`);
  } catch {
    /* the name of the site is a nicety */
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
