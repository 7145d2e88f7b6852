// The backtest catalog: every backtest (alpha and rule, optimizations' best sets, walk-forward
// parents) with the catalog's filters and ordering, paginated by the server; pick up to 10 rows
// to compare their equity curves.
import { api } from "../core/api.js";
import { backtestKind, backtestLinks, keysetLoader } from "../core/catalog.js";
import { go, register } from "../core/router.js";
import { badge, dataTable, fmt, h } from "../core/ui.js";

const MAX_COMPARE = 10;

// Columns the catalog can order by (`order_by`); the others are shown as they come.
const COLUMNS = [
  { key: "pick", label: "", format: (_, r) => r._pick },
  { key: "backtest_date", label: "Ran", sortable: true, format: (v) => fmt.datetime(v) },
  { key: "kind", label: "Kind", format: (_, r) => h("span.chip", backtestKind(r)) },
  { key: "strategy_type", label: "Strategy", format: (v, r) => h("span", { title: JSON.stringify(r.parameters?.strategy?.params || {}) }, v) },
  { key: "symbol", label: "Symbol" },
  { key: "start_date", label: "Window", format: (v, r) => `${fmt.date(v)} → ${fmt.date(r.end_date)}` },
  { key: "total_return", label: "Return", sortable: true, num: true, format: (_, r) => fmt.pct(r.metrics.total_return, 1) },
  { key: "sharpe_ratio", label: "Sharpe", sortable: true, num: true, format: (_, r) => fmt.num(r.metrics.sharpe, 2) },
  { key: "sortino_ratio", label: "Sortino", sortable: true, num: true, format: (_, r) => fmt.num(r.metrics.sortino, 2) },
  { key: "max_drawdown", label: "Max DD", sortable: true, num: true, format: (_, r) => fmt.pct(r.metrics.max_drawdown, 1) },
  { key: "total_trades", label: "Trades", sortable: true, num: true, format: (_, r) => fmt.int(r.metrics.total_trades) },
  { key: "status", label: "Status", format: (v) => badge(v) },
  { key: "links", label: "Views", format: (_, r) => backtestLinks(r) },
];

register({
  id: "backtests",
  path: "backtests",
  nav: "Catalog",
  order: 30,
  title: () => "Backtest catalog",
  async render(el, _params, ctx) {
    const q = ctx.query;
    const picked = new Set((q.get("ids") || "").split(",").filter(Boolean));
    const symbol = h("input#bt-symbol", { type: "search", placeholder: "symbol", value: q.get("symbol") || "", size: 8, "aria-label": "symbol" });
    const strategy = h("input#bt-strategy", { type: "search", placeholder: "strategy type", value: q.get("strategy_type") || "", size: 14, "aria-label": "strategy type" });
    const status = h("select#bt-status", { "aria-label": "status" }, ["", "completed", "failed"].map((s) => h("option", { value: s }, s || "any status")));
    const from = h("input#bt-from", { type: "date", "aria-label": "ran from" });
    const to = h("input#bt-to", { type: "date", "aria-label": "ran to" });
    const compare = h("button#bt-compare", { type: "button", disabled: picked.size < 2 }, `Compare (${picked.size})`);
    const holder = h("div");
    el.append(
      h("div.toolbar", h("h1", "Backtest catalog"), h("span.spacer"), symbol, strategy, status, from, to, compare),
      h("p.muted.note", "Alpha and rule backtests, optimizations (their best set) and walk-forward tests. Tick up to 10 rows to compare them."),
      holder
    );
    compare.addEventListener("click", () => go("compare", { ids: [...picked].join(",") }));
    const filters = () => ({ symbol: symbol.value.trim(), strategy_type: strategy.value.trim(), status: status.value, from_date: from.value, to_date: to.value });
    const load = keysetLoader(async (token, s) => {
      const doc = await api.get(
        "/backtests",
        { ...s.filter, order_by: s.sort ? `${s.desc ? "-" : ""}${s.sort}` : "", page_size: s.pageSize, page_token: token },
        { signal: ctx.signal }
      );
      for (const row of doc.items) {
        const box = h("input", { type: "checkbox", "aria-label": `compare ${row.backtest_id}`, checked: picked.has(row.backtest_id), dataset: { id: row.backtest_id } });
        box.addEventListener("click", (e) => e.stopPropagation());
        box.addEventListener("change", () => {
          if (box.checked && picked.size >= MAX_COMPARE) {
            box.checked = false;
            return;
          }
          if (box.checked) picked.add(row.backtest_id);
          else picked.delete(row.backtest_id);
          compare.textContent = `Compare (${picked.size})`;
          compare.disabled = picked.size < 2;
        });
        row._pick = box;
      }
      return doc;
    });
    const table = dataTable(holder, {
      id: "backtests-table",
      columns: COLUMNS,
      rowKey: "backtest_id",
      sort: q.get("order_by") || "backtest_date",
      desc: true,
      pageSize: 25,
      load: (s) => load({ ...s, filter: filters() }),
      onRow: (row) => {
        const kind = backtestKind(row);
        if (kind === "optimization") go(`optimizations/${row.backtest_id}`);
        else if (kind === "walk-forward") go(`walk-forward/${row.backtest_id}`);
        else go("compare", { ids: row.backtest_id });
      },
    });
    let typing;
    const refilter = () => {
      clearTimeout(typing);
      typing = setTimeout(() => table.setFilter(filters()), 250);
    };
    [symbol, strategy].forEach((i) => i.addEventListener("input", refilter));
    [status, from, to].forEach((i) => i.addEventListener("change", refilter));
  },
});
