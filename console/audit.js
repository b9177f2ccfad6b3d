// The audit log: every change an administrator made, and every refusal, newest first.
import { api, clear, errorBox, h, table, when } from "./lib.js";

const REFRESH_MS = 10000;

export function render(main) {
  const filter = h("input", { id: "audit-filter", type: "search", autocomplete: "off",
    placeholder: "Filter by who, path or outcome", "aria-label": "Filter the audit log" });
  const body = h("div", null, h("p", { class: "quiet" }, "Loading…"));
  clear(main, h("h1", null, "Audit"), h("div", { class: "toolbar" }, filter), body);
  let records = [], stopped = false, timer = null;
  const draw = () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = records.filter((r) => words.every((w) =>
      `${r.who} ${r.method} ${r.path} ${r.status} ${r.outcome} ${r.address}`.toLowerCase()
        .includes(w)));
    clear(body, rows.length ? table([
      { key: "at", label: "When", render: (r) => when(r.at), sortValue: (r) => -r.at },
      { key: "who", label: "Who" },
      { key: "method", label: "Method" },
      { key: "path", label: "Path" },
      { key: "status", label: "Status", class: "num" },
      { key: "outcome", label: "Outcome" },
      { key: "address", label: "From" },
    ], rows, { class: "audit", sort: "at" }) : h("p", { class: "quiet" }, "No records."));
  };
  filter.addEventListener("input", draw);
  const load = async () => {
    try {
      const r = await api("GET", "/v1/audit?limit=1000");
      if (stopped) return;
      records = r.records || [];
      draw();
    } catch (e) {
      if (!stopped) clear(body, errorBox(e));
    }
    if (!stopped) timer = setTimeout(load, REFRESH_MS);
  };
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
