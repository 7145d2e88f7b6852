// The alpha-backtest runs: a sortable, filterable, paginated table (sorted and filtered by the
// server), with runs in progress refreshed live.
import { api } from "../core/api.js";
import { go, register } from "../core/router.js";
import { badge, dataTable, fmt, h, modelLink } from "../core/ui.js";

const STATES = ["", "pending", "running", "succeeded", "failed", "cancelled"];
const LIVE = new Set(["pending", "running"]);

const COLUMNS = [
  { key: "status", label: "State", sortable: true, format: (v, r) => h("span", badge(v), LIVE.has(v) ? h("span.muted.stage", ` ${r.stage || ""}`) : null) },
  { key: "run_name", label: "Run", sortable: true, format: (v, r) => h("a", { href: `#/runs/${r.run_id}`, on: { click: (e) => e.stopPropagation() } }, v || r.run_id.slice(0, 8)) },
  { key: "model", label: "Model", sortable: true, format: (v, r) => (r.model_name ? modelLink(r.model_name, r.model_version) : fmt.text(r.model_type)) },
  { key: "window_start", label: "Window", sortable: true, format: (v, r) => (r.window_start ? `${fmt.date(r.window_start)} → ${fmt.date(r.window_end)}` : "—") },
  { key: "ic", label: "Rank IC", sortable: true, num: true, format: (v) => fmt.num(v, 4) },
  { key: "icir", label: "ICIR", sortable: true, num: true, format: (v) => fmt.num(v, 3) },
  { key: "sharpe", label: "Sharpe", sortable: true, num: true, format: (v) => fmt.num(v, 2) },
  { key: "max_drawdown", label: "Max DD", sortable: true, num: true, format: (v) => fmt.pct(v, 1) },
  { key: "score", label: "Score", sortable: true, num: true, format: (v) => fmt.num(v, 3) },
  { key: "started_at", label: "Started", sortable: true, format: (v, r) => fmt.datetime(v || r.created_at) },
  { key: "duration_seconds", label: "Duration", sortable: true, num: true, format: (v) => fmt.duration(v) },
];

register({
  id: "runs",
  path: "runs",
  nav: "Runs",
  order: 10,
  home: true,
  title: () => "Runs",
  async render(el, _params, ctx) {
    const q = ctx.query;
    const status = h("select#runs-status", { "aria-label": "state" }, STATES.map((s) => h("option", { value: s, selected: s === (q.get("status") || "") }, s || "any state")));
    const search = h("input#runs-search", { type: "search", placeholder: "name, model, id…", value: q.get("q") || "", "aria-label": "search" });
    const summary = h("span.muted#runs-total");
    const holder = h("div");
    el.append(
      h("div.toolbar", h("h1", "Alpha-backtest runs"), h("span.spacer"), summary, status, search,
        ctx.session.can.submit ? h("a.button", { href: "#/submit" }, "New run") : null),
      holder
    );
    let live = false;
    const table = dataTable(holder, {
      id: "runs-table",
      columns: COLUMNS,
      rowKey: "run_id",
      sort: q.get("sort") || "created_at",
      desc: q.get("desc") !== "false",
      pageSize: 50,
      onRow: (row) => go(`runs/${row.run_id}`),
      load: async (s) => {
        const res = await api.get("/browser/runs", {
          status: status.value,
          q: search.value.trim(),
          sort: s.sort,
          desc: s.desc,
          page: s.page,
          page_size: s.pageSize,
        }, { signal: ctx.signal });
        // while the gateway reads the runs (just started), the count is of those read so far
        live = res.partial || res.items.some((r) => LIVE.has(r.status));
        const count = res.partial ? `${fmt.int(res.total)}+ runs` : `${fmt.int(res.total)} run${res.total === 1 ? "" : "s"}`;
        summary.textContent = `${count}${res.active ? ` · ${res.active} in progress` : ""}`;
        return res;
      },
    });
    status.addEventListener("change", () => table.setFilter({ status: status.value }));
    let typing;
    search.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => table.setFilter({ q: search.value }), 250);
    });
    // Rows of runs in progress follow their state: refresh while any is shown.
    const timer = setInterval(() => {
      if (live && !document.hidden) table.refresh();
    }, 2000);
    return () => clearInterval(timer);
  },
});
