// Portfolio backtests: the list, and one portfolio's equity, its weights over time (stacked),
// the effective number of holdings per date and the diversification measures.
import { api } from "../core/api.js";
import { keysetLoader, points } from "../core/catalog.js";
import { echart, loadCharts, PALETTE, timeChart } from "../core/charts.js";
import { go, register } from "../core/router.js";
import { badge, dataTable, fmt, h, metricGrid, section } from "../core/ui.js";

register({
  id: "portfolios",
  path: "portfolios",
  nav: "Portfolios",
  order: 35,
  title: () => "Portfolio backtests",
  async render(el, _params, ctx) {
    const name = h("input#pf-name", { type: "search", placeholder: "portfolio name", "aria-label": "portfolio name" });
    const holder = h("div");
    el.append(h("div.toolbar", h("h1", "Portfolio backtests"), h("span.spacer"), name), holder);
    const load = keysetLoader((token, s) =>
      api.get("/portfolio-backtests", { portfolio_name: s.filter.portfolio_name || "", page_size: s.pageSize, page_token: token }, { signal: ctx.signal })
    );
    const table = dataTable(holder, {
      id: "portfolios-table",
      rowKey: "portfolio_backtest_id",
      pageSize: 25,
      columns: [
        { key: "backtest_date", label: "Ran", format: (v) => fmt.datetime(v) },
        { key: "portfolio_name", label: "Portfolio" },
        { key: "symbols", label: "Symbols", format: (v) => (v.length > 6 ? `${v.slice(0, 6).join(", ")} +${v.length - 6}` : v.join(", ")) },
        { key: "start_date", label: "Window", format: (v, r) => `${v} → ${r.end_date}` },
        { key: "rebalance_frequency", label: "Rebalance" },
        { key: "position_sizing_method", label: "Sizing" },
        { key: "m.sharpe", label: "Sharpe", num: true, format: (_, r) => fmt.num(r.metrics.sharpe, 2) },
        { key: "m.total_return", label: "Return", num: true, format: (_, r) => fmt.pct(r.metrics.total_return, 1) },
        { key: "m.diversification_ratio", label: "Divers. ratio", num: true, format: (_, r) => fmt.num(r.metrics.diversification_ratio, 2) },
        { key: "status", label: "Status", format: (v) => badge(v) },
      ],
      load,
      onRow: (row) => go(`portfolios/${row.portfolio_backtest_id}`),
    });
    name.addEventListener("change", () => table.setFilter({ portfolio_name: name.value.trim() }));
  },
});

register({
  id: "portfolio",
  section: "portfolios",
  path: "portfolios/:portfolio_id",
  title: () => "Portfolio backtest",
  async render(el, { portfolio_id }, ctx) {
    const charts = loadCharts();
    const doc = await api.get(`/catalog-views/portfolios/${encodeURIComponent(portfolio_id)}`, { points: 600 }, { signal: ctx.signal });
    const m = doc.metrics;
    const d = doc.diversification;
    el.append(
      h("div.toolbar", h("h1", doc.portfolio_name), h("span.muted", `${doc.start_date} → ${doc.end_date} · ${doc.symbols.length} symbols · ${fmt.text(doc.rebalance_frequency)} · ${fmt.text(doc.position_sizing_method)}`)),
      metricGrid([
        ["Total return", fmt.pct(m.total_return, 1)],
        ["Sharpe", fmt.num(m.sharpe, 2)],
        ["Max drawdown", fmt.pct(m.max_drawdown, 1)],
        ["Volatility", fmt.pct(m.volatility, 1)],
        ["Diversification ratio", fmt.num(d.diversification_ratio, 2), "volatility-weighted average of the holdings / the volatility of the portfolio they form (Choueifaty & Coignard), on the time-averaged held weights"],
        ["Concentration (HHI)", fmt.num(d.concentration_index, 3), "mean Herfindahl index of the weights"],
        ["Turnover (annualized)", fmt.num(d.turnover_rate, 2), "notional traded per year, a multiple of equity"],
      ])
    );
    const equityEl = h("div.chart-box#pf-equity");
    const weightsEl = h("div.chart-box#pf-weights");
    const effEl = h("div.chart-box#pf-effective");
    el.append(section("Equity", equityEl), section("Weights over time", weightsEl), section("Effective number of holdings (1 / HHI) and gross exposure", effEl));
    const disposers = [];
    await charts;
    if (doc.equity) disposers.push(timeChart(equityEl, { series: [{ name: "equity", type: "area", data: points(doc.equity.dates, doc.equity.values) }] }));
    const w = doc.weights;
    if (w) {
      disposers.push(
        echart(
          weightsEl,
          {
            tooltip: { trigger: "axis", valueFormatter: (v) => fmt.pct(v, 1) },
            legend: { top: 0, type: "scroll" },
            grid: { left: 55, right: 20, top: 30, bottom: 40 },
            xAxis: { type: "category", data: w.dates, boundaryGap: false },
            yAxis: { type: "value", min: (v) => Math.min(0, v.min), max: (v) => Math.max(1, v.max), axisLabel: { formatter: (v) => `${Math.round(v * 100)}%` } },
            series: w.symbols.map((s, i) => ({
              name: s,
              type: "line",
              stack: "weights",
              symbol: "none",
              areaStyle: {},
              lineStyle: { width: 0.5 },
              color: PALETTE[i % PALETTE.length],
              data: w.values.map((row) => row[i]),
            })),
          },
          { height: 340 }
        )
      );
      disposers.push(
        timeChart(effEl, {
          series: [
            { name: "effective holdings", data: points(w.dates, w.effective_n) },
            { name: "gross exposure", data: points(w.dates, w.gross_exposure) },
          ],
          height: 220,
        })
      );
    }
    return () => disposers.forEach((f) => f());
  },
});
