// The leaderboard of a dataset: every model and strategy tried on the same data (by the
// dataset's fingerprint), each Sharpe next to its Deflated Sharpe given every trial ever run on
// that data (Bailey & López de Prado 2014): the multiple-testing view.
import { api } from "../core/api.js";
import { pValueColor } from "../core/catalog.js";
import { echart, loadCharts } from "../core/charts.js";
import { go, register } from "../core/router.js";
import { dataTable, fmt, h, localLoader, metricGrid, modelLink, section } from "../core/ui.js";

const TOP = 40;

register({
  id: "leaderboard-datasets",
  path: "leaderboard",
  nav: "Leaderboard",
  order: 50,
  title: () => "Datasets",
  async render(el, _params, ctx) {
    const doc = await api.get("/catalog-views/datasets", null, { signal: ctx.signal });
    const holder = h("div");
    el.append(
      h("div.toolbar", h("h1", "Leaderboards by dataset"), h("span.spacer"), h("span.muted", doc.unfingerprinted ? `${doc.unfingerprinted} backtests without a dataset fingerprint are left out` : "")),
      h("p.muted.note", "A dataset is the exact data a backtest ran on (the SHA-256 of its prices). Open one to rank everything tried on it."),
      holder
    );
    dataTable(holder, {
      id: "datasets-table",
      rowKey: "fingerprint",
      sort: "n_backtests",
      columns: [
        { key: "fingerprint", label: "Fingerprint", format: (v) => h("code", v.slice(0, 16)) },
        { key: "n_backtests", label: "Backtests", sortable: true, num: true, format: fmt.int },
        { key: "start_date", label: "From", sortable: true },
        { key: "end_date", label: "To", sortable: true },
        { key: "symbols", label: "Symbols", format: (v, r) => `${v.slice(0, 6).join(", ")}${r.n_symbols > 6 ? ` +${r.n_symbols - 6}` : ""}` },
        { key: "strategies", label: "Strategies", format: (v) => v.join(", ") },
      ],
      load: localLoader(doc.items),
      onRow: (row) => go(`leaderboard/${row.fingerprint}`),
    });
  },
});

register({
  id: "leaderboard",
  section: "leaderboard-datasets",
  path: "leaderboard/:fingerprint",
  title: () => "Leaderboard",
  async render(el, { fingerprint }, ctx) {
    const charts = loadCharts();
    const doc = await api.get(`/catalog-views/leaderboard/${encodeURIComponent(fingerprint)}`, null, { signal: ctx.signal });
    el.append(
      h("div.toolbar", h("h1", "Leaderboard"), h("code.muted", fingerprint)),
      metricGrid([
        ["Trials on this data", fmt.int(doc.n_trials), "every backtest, every optimization set and every walk-forward in-sample evaluation run on it"],
        ["with a Sharpe", fmt.int(doc.n_trials_with_sharpe)],
        ["Expected max Sharpe", fmt.num(doc.expected_max_sharpe, 2), "annualized Sharpe the best of that many skill-less trials would show"],
        ["Var. of trial Sharpes", fmt.num(doc.sharpe_trials_variance, 6), "per-period"],
        ["Backtests", fmt.int(doc.n_entries), doc.n_entries > doc.entries.length ? `the best ${doc.entries.length} by Deflated Sharpe are listed` : ""],
      ]),
      h("p.muted.note", "Deflated Sharpe = P(true Sharpe > 0) after the selection among all trials, with each entry's own skewness, kurtosis and length. Green: p < 0.05.")
    );
    const chartEl = h("div.chart-box#leaderboard-chart");
    const holder = h("div");
    el.append(section(`Sharpe vs Deflated Sharpe${doc.entries.length > TOP ? ` (the best ${TOP} by Deflated Sharpe)` : ""}`, chartEl), section("Entries", holder));
    dataTable(holder, {
      id: "leaderboard-table",
      rowKey: "backtest_id",
      sort: "deflated_sharpe",
      pageSize: 50,
      columns: [
        { key: "label", label: "Model / strategy", sortable: true, format: (v, r) => (r.run_id ? h("a", { href: `#/runs/${r.run_id}` }, v) : h("a", { href: `#/compare?ids=${r.backtest_id}` }, v)) },
        { key: "model_name", label: "Model version", sortable: true, format: (v, r) => (v ? modelLink(v, r.model_version) : "—") },
        { key: "kind", label: "Kind", sortable: true, format: (v) => h("span.chip", v) },
        { key: "start_date", label: "Window", format: (v, r) => `${v} → ${r.end_date}` },
        { key: "trials", label: "Trials", sortable: true, num: true, format: fmt.int },
        { key: "sharpe", label: "Sharpe", sortable: true, num: true, format: (v) => fmt.num(v, 2) },
        { key: "deflated_sharpe", label: "Deflated Sharpe", sortable: true, num: true, format: (v, r) => h("span", { title: r.reason || "" }, fmt.pct(v, 1)) },
        { key: "p_value", label: "p-value", sortable: true, num: true, format: (v) => h("span", { style: `color:${pValueColor(v)}` }, fmt.num(v, 4)) },
        { key: "total_return", label: "Return", sortable: true, num: true, format: (v) => fmt.pct(v, 1) },
        { key: "max_drawdown", label: "Max DD", sortable: true, num: true, format: (v) => fmt.pct(v, 1) },
        { key: "n_obs", label: "Bars", num: true, format: fmt.int },
      ],
      load: localLoader(doc.entries),
    });
    const shown = doc.entries.filter((e) => e.sharpe !== null).slice(0, TOP);
    await charts;
    return echart(
      chartEl,
      {
        tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
        legend: { top: 0 },
        grid: { left: 50, right: 50, top: 30, bottom: 90 },
        xAxis: { type: "category", data: shown.map((e) => e.label), axisLabel: { rotate: 30, width: 140, overflow: "truncate" } },
        yAxis: [
          { type: "value", name: "Sharpe" },
          { type: "value", name: "DSR", min: 0, max: 1, axisLabel: { formatter: (v) => `${Math.round(v * 100)}%` } },
        ],
        series: [
          { name: "Sharpe (annualized)", type: "bar", data: shown.map((e) => e.sharpe), markLine: { silent: true, symbol: "none", data: [{ yAxis: doc.expected_max_sharpe, name: "expected max" }], label: { position: "insideEndTop", formatter: "expected max Sharpe of N skill-less trials" } } },
          { name: "Deflated Sharpe", type: "line", yAxisIndex: 1, data: shown.map((e) => ({ value: e.deflated_sharpe ?? "-", itemStyle: { color: pValueColor(e.p_value) } })), symbolSize: 9 },
        ],
      },
      { height: 360 }
    );
  },
});
