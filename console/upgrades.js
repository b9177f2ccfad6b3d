// Site upgrades: a package checked before anything is touched, the run started, each
// system's progress as it happens, the report, resume and rollback.
import { api, badge, can, clear, duration, errorBox, followRun, h, table, when } from
  "./lib.js";

const ACTIVE = new Set(["running", "rolling-back"]);

function runView(run) {
  const c = run.counts;
  const finished = c.upgraded + c.deferred + c.failed + c.rolled_back + c.removed;
  return h("div", { id: "run", dataset: { state: run.state } },
    h("p", { class: "run-line" }, `${run.mode === "rollback" ? "Rollback" : "Upgrade"} #${
      run.id} from ${run.from} to ${run.version}: `, h("span", { id: "run-state" },
      badge(run.state)), ` · server ${run.server.step} · ${duration(run.elapsed_ms)}`,
    run.bound_ms ? ` of at most ${duration(run.bound_ms)}` : ""),
    run.reason ? h("p", { class: "msg warn" }, run.reason) : null,
    h("p", null, h("meter", { min: 0, max: c.systems || 1, value: finished,
      "aria-label": "systems finished" }), ` ${finished} of ${c.systems} systems finished: ${
      c.upgraded} upgraded, ${c.active} active, ${c.pending} pending, ${c.deferred
    } deferred, ${c.failed} failed${c.rolled_back ? `, ${c.rolled_back} rolled back` : ""}`),
    table([
      { key: "name", label: "System" },
      { key: "state", label: "State", render: (y) => badge(y.state),
        sortValue: (y) => y.state },
      { key: "step", label: "Step" },
      { key: "from", label: "From" },
      { key: "version", label: "Now runs" },
      { key: "elapsed_ms", label: "Time", class: "num", render: (y) => duration(y.elapsed_ms) },
      { key: "reason", label: "Reason" },
    ], run.systems, { class: "run-systems" }),
    h("p", { class: "quiet" }, `started ${when(run.started_at)}`,
      run.finished_at ? `, finished ${when(run.finished_at)}` : ""));
}

function actions(run, out, follow) {
  if (!can("operator") || !run || ACTIVE.has(run.state)) return null;
  const act = (name) => h("button", { type: "button", id: name, onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      await api("POST", "/v1/upgrades/current/" + name, {});
      clear(out, h("p", { class: "msg info" }, `${name} started`));
      follow.now();
    } catch (e) {
      clear(out, errorBox(e));
    } finally {
      ev.target.disabled = false;
    }
  } }, name === "resume" ? "Resume" : "Roll back");
  return h("p", { class: "actions" }, run.state !== "done" && run.state !== "rolled-back"
    ? act("resume") : null, run.mode !== "rollback" ? act("rollback") : null);
}

// The package goes up once per file chosen; check and start name it by its hash.
function startForm(out, follow) {
  const file = h("input", { type: "file", id: "package", accept: ".pkg",
    "aria-label": "Service pack" });
  const num = (id, label, value, min, max, step) => h("label", null, label,
    h("input", { type: "number", id, value, min, max, step: step || 1 }));
  const parallel = num("parallel", "At once", 5, 1, 1000);
  const stop = num("stop-timeout", "Stop timeout (s)", 30, 0.1, 3600, 0.1);
  const maxf = num("max-failures", "Max failures (-1: no limit)", -1, -1, 1000000);
  const onStuck = h("label", null, "A service that will not stop",
    h("select", { id: "on-stuck" }, ["defer", "kill", "remove-role", "fail"].map((v) =>
      h("option", { value: v }, v))));
  const strict = h("label", { class: "check" }, h("input", { type: "checkbox", id: "strict" }),
    " warnings stop it too");
  const checkBtn = h("button", { type: "button", id: "check" }, "Check");
  const startBtn = h("button", { type: "button", id: "start", disabled: true }, "Start upgrade");
  const report = h("div", { id: "preflight", "aria-live": "polite" });
  let uploaded = null; // {file, sha256}

  const body = async () => {
    const f = file.files[0];
    if (!f) throw new Error("choose a service pack first");
    if (!uploaded || uploaded.file !== f) {
      clear(report, h("p", { class: "quiet" }, `uploading ${f.name}…`));
      const r = await api("POST", "/v1/packages", f);
      uploaded = { file: f, sha256: r.sha256 };
    }
    const v = (el) => Number(el.querySelector("input").value);
    return { package: uploaded.sha256, parallel: v(parallel),
      stop_timeout_ms: Math.round(v(stop) * 1000), on_stuck: onStuck.querySelector("select")
        .value, max_failures: v(maxf), strict: strict.querySelector("input").checked };
  };
  file.addEventListener("change", () => {
    startBtn.disabled = true;
    clear(report);
  });
  checkBtn.addEventListener("click", async () => {
    checkBtn.disabled = startBtn.disabled = true;
    try {
      const c = await api("POST", "/v1/upgrades/check", await body());
      const rows = [{ name: "site server", version: "", issues: c.site || [] },
        ...(c.systems || [])].flatMap((y) => (y.issues || []).map((i) =>
        ({ name: y.name, version: y.version, level: i.level, message: i.message })));
      clear(report, h("p", { class: c.ok ? "msg good" : "msg bad", id: "check-result" },
        `${c.version} (upgrades from ${c.min_version}): ${c.errors} errors, ${c.warnings
        } warnings${c.bound_ms ? `; the run takes at most ${duration(c.bound_ms)}` : ""}`),
      rows.length ? table([{ key: "name", label: "System" }, { key: "level", label: "Level" },
        { key: "message", label: "Check" }], rows) : null);
      startBtn.disabled = !c.ok;
    } catch (e) {
      clear(report, errorBox(e));
    } finally {
      checkBtn.disabled = false;
    }
  });
  startBtn.addEventListener("click", async () => {
    startBtn.disabled = true;
    try {
      await api("POST", "/v1/upgrades", await body());
      clear(out, h("p", { class: "msg info" }, "upgrade started"));
      follow.now();
      clear(report);
    } catch (e) {
      clear(report, errorBox(e));
    }
  });
  return h("section", { class: "card", id: "start-form" }, h("h2", null, "Start an upgrade"),
    h("div", { class: "form" }, h("label", null, "Service pack", file), parallel, stop,
      onStuck, maxf, strict), h("p", null, checkBtn, " ", startBtn), report);
}

export function render(main) {
  const live = h("div", { "aria-live": "polite" }, h("p", { class: "quiet" }, "Loading…"));
  const out = h("div");
  const acts = h("div");
  const note = h("div", { class: "quiet" });
  const follow = { now: () => {} };
  clear(main, h("h1", null, "Upgrades"),
    h("section", { class: "card" }, h("h2", null, "Latest run"), note, live, acts, out),
    can("operator") ? startForm(out, follow) : null);
  let last = "";
  const stop = followRun((run, err) => {
    // the last run shown stays while the server cannot be asked (it restarts in its
    // own upgrade)
    clear(note, err ? errorBox(err) : null);
    if (err) return;
    const key = JSON.stringify(run);
    if (key === last) return;
    last = key;
    if (!run) {
      clear(live, h("p", { class: "quiet", id: "run" }, "No upgrade has run on this site."));
      clear(acts);
      return;
    }
    clear(live, runView(run));
    clear(acts, actions(run, out, follow));
  }, () => {});
  follow.now = stop.now;
  return stop;
}
