// A walk-forward test: per window, the in-sample Sharpe of the optimum next to the Sharpe it
// earned out of sample, with the performance ratio and the degradation (METRICS.md).
import { api } from "../core/api.js";
import { backtestLabel } from "../core/catalog.js";
import { echart, loadCharts } from "../core/charts.js";
import { register } from "../core/router.js";
import { fmt, h, metricGrid, section } from "../core/ui.js";

register({
  id: "walk-forward",
  section: "backtests",
  path: "walk-forward/:backtest_id",
  title: () => "Walk-forward test",
  async render(el, { backtest_id }, ctx) {
    const charts = loadCharts();
    const doc = await api.get(`/catalog-views/walk-forward/${encodeURIComponent(backtest_id)}`, null, { signal: ctx.signal });
    const s = doc.summary;
    el.append(
      h("div.toolbar", h("h1", "Walk-forward test"), h("span.muted", backtestLabel(doc.backtest)), h("span.spacer"),
        h("a", { href: `#/compare?ids=${backtest_id}` }, "stitched out-of-sample equity")),
      metricGrid([
        ["Windows", fmt.int(s.n_windows)],
        ["Objective", fmt.text(doc.objective)],
        ["Mean IS Sharpe", fmt.num(s.mean_in_sample_sharpe, 2)],
        ["Mean OOS Sharpe", fmt.num(s.mean_out_of_sample_sharpe, 2)],
        ["WF efficiency", fmt.num(s.walk_forward_efficiency, 2), "mean OOS Sharpe / mean IS Sharpe"],
        ["Mean perf. ratio", fmt.num(s.mean_performance_ratio, 2), "OOS annualized return / IS annualized return"],
        ["Mean degradation", fmt.num(s.mean_degradation_factor, 2), "1 − OOS Sharpe / IS Sharpe"],
        ["Profitable windows", fmt.pct(s.profitable_share, 0)],
        ["Stitched OOS Sharpe", fmt.num(doc.stitched_metrics.sharpe, 2)],
      ])
    );
    const bars = h("div.chart-box#wf-bars");
    const ratios = h("div.chart-box#wf-ratios");
    el.append(
      section("In-sample vs out-of-sample Sharpe per window", bars),
      section("Performance ratio and degradation per window", ratios),
      section("Windows", windowTable(doc.windows))
    );
    const labels = doc.windows.map((w) => `${w.test_period_start}`);
    await charts;
    const d1 = echart(bars, {
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 50, right: 20, top: 30, bottom: 60 },
      xAxis: { type: "category", data: labels, axisLabel: { rotate: 30 }, name: "test period start", nameLocation: "middle", nameGap: 45 },
      yAxis: { type: "value", name: "Sharpe" },
      series: [
        { name: "In-sample", type: "bar", data: doc.windows.map((w) => w.in_sample_sharpe ?? "-") },
        { name: "Out-of-sample", type: "bar", data: doc.windows.map((w) => w.out_of_sample_sharpe ?? "-") },
      ],
    });
    const d2 = echart(ratios, {
      tooltip: { trigger: "axis" },
      legend: { top: 0 },
      grid: { left: 50, right: 20, top: 30, bottom: 60 },
      xAxis: { type: "category", data: labels, axisLabel: { rotate: 30 } },
      yAxis: { type: "value" },
      series: [
        { name: "Performance ratio", type: "line", data: doc.windows.map((w) => w.performance_ratio ?? "-"), markLine: { silent: true, symbol: "none", data: [{ yAxis: 1 }] } },
        { name: "Degradation", type: "line", data: doc.windows.map((w) => w.degradation_factor ?? "-") },
      ],
    }, { height: 240 });
    return () => {
      d1();
      d2();
    };
  },
});

function windowTable(windows) {
  const cols = ["Training", "Test", "Optimum", "IS objective", "IS Sharpe", "OOS Sharpe", "OOS return", "OOS max DD", "Perf. ratio", "Degradation"];
  return h(
    "div.table-wrap",
    h(
      "table.data#wf-windows",
      h("thead", h("tr", cols.map((c, i) => h(i > 2 ? "th.num" : "th", c)))),
      h(
        "tbody",
        windows.map((w) =>
          h(
            "tr",
            h("td", `${w.training_start} → ${w.training_end}`),
            h("td", `${w.test_period_start} → ${w.test_period_end}`),
            h("td", w.optimal_parameters ? Object.entries(w.optimal_parameters).map(([k, v]) => `${k}=${v}`).join(", ") : "—"),
            h("td.num", fmt.num(w.in_sample_objective, 3)),
            h("td.num", fmt.num(w.in_sample_sharpe, 2)),
            h("td.num", fmt.num(w.out_of_sample_sharpe, 2)),
            h("td.num", fmt.pct(w.out_of_sample_return)),
            h("td.num", fmt.pct(w.out_of_sample_drawdown)),
            h("td.num", fmt.num(w.performance_ratio, 2)),
            h("td.num", fmt.num(w.degradation_factor, 2))
          )
        )
      )
    )
  );
}
