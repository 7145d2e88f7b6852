// Compare up to 10 backtests: their equity curves overlaid (each rebased to 1 on its first date,
// aligned by date, downsampled by the server) and their metrics lined up, best value marked.
import { api } from "../core/api.js";
import { backtestLabel, points } from "../core/catalog.js";
import { loadCharts, PALETTE, timeChart } from "../core/charts.js";
import { go, register } from "../core/router.js";
import { fmt, h, section } from "../core/ui.js";

const POINTS = 800;
const ROWS = [
  ["total_return", "Total return", fmt.pct, true],
  ["annualized_return", "Annualized return", fmt.pct, true],
  ["sharpe", "Sharpe (annualized)", (v) => fmt.num(v, 2), true],
  ["sortino", "Sortino", (v) => fmt.num(v, 2), true],
  ["calmar", "Calmar", (v) => fmt.num(v, 2), true],
  ["max_drawdown", "Max drawdown", fmt.pct, true],
  ["volatility", "Volatility (annualized)", fmt.pct, false],
  ["win_rate", "Win rate", fmt.pct, true],
  ["profit_factor", "Profit factor", (v) => fmt.num(v, 2), true],
  ["total_trades", "Trades", fmt.int, null],
  ["probabilistic_sharpe", "P(Sharpe > 0)", fmt.pct, true],
];

register({
  id: "compare",
  section: "backtests",
  path: "compare",
  title: () => "Compare backtests",
  async render(el, _params, ctx) {
    const charts = loadCharts();
    const ids = (ctx.query.get("ids") || "").split(",").filter(Boolean).slice(0, 10);
    const input = h("input#compare-ids", { type: "text", size: 60, value: ids.join(","), placeholder: "backtest ids, comma separated", "aria-label": "backtest ids" });
    const form = h("form.toolbar", { on: { submit: (e) => { e.preventDefault(); go("compare", { ids: input.value.replace(/\s+/g, "") }); } } },
      h("h1", "Compare backtests"), h("span.spacer"), input, h("button", { type: "submit" }, "Compare"), h("a", { href: "#/backtests" }, "pick from the catalog"));
    el.append(form);
    if (!ids.length) {
      el.append(h("p.muted", "Pick backtests in the catalog, or paste their ids."));
      return;
    }
    const query = ids.map((id) => `backtest_id=${encodeURIComponent(id)}`).join("&");
    const doc = await api.get(`/catalog-views/compare?${query}`, { points: POINTS }, { signal: ctx.signal });
    await charts;
    const chartEl = h("div.chart-box#compare-chart");
    const labels = doc.backtests.map((b, k) => `${k + 1}. ${backtestLabel(b)}`);
    el.append(
      section("Growth of 1 (each curve rebased on its first date)", chartEl,
        h("p.muted.note", `${fmt.int(doc.series.n_dates)} dates, shown at ${fmt.int(doc.series.dates.length)} (every value shown is exact; the metrics use every date).`)),
      section("Metrics", metricsTable(doc, labels))
    );
    return timeChart(chartEl, {
      height: 380,
      series: doc.series.growth.map((g, k) => ({ name: labels[k], data: points(doc.series.dates, g), color: PALETTE[k % PALETTE.length] })),
    });
  },
});

function metricsTable(doc, labels) {
  const head = h("tr", h("th", "Metric"), doc.backtests.map((b, k) => h("th.num", h("a", { href: `#/monte-carlo/${b.backtest_id}`, title: b.backtest_id }, labels[k]))));
  const body = ROWS.map(([key, label, format, higherBetter]) => {
    const values = doc.metrics[key] || [];
    const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
    const best = higherBetter === null || !finite.length ? null : higherBetter ? Math.max(...finite) : Math.min(...finite);
    return h(
      "tr",
      { dataset: { metric: key } },
      h("th", { scope: "row" }, label),
      values.map((v, k) => h("td.num", { style: v === best && finite.length > 1 ? "font-weight:700" : null, title: doc.metric_reasons[k]?.[key] || "" }, format(v)))
    );
  });
  const info = h("tr", h("th", "Window"), doc.backtests.map((b) => h("td.num", `${b.start_date} → ${b.end_date}`)));
  return h("div.table-wrap", h("table.data#compare-metrics", h("thead", head), h("tbody", info, body)));
}
