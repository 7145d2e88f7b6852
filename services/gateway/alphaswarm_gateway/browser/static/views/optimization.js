// An optimization as a heatmap over two of its parameters: each cell's Sharpe (colour) and its
// Deflated-Sharpe p-value (label), given the number of parameter sets the optimization tried.
import { api } from "../core/api.js";
import { backtestLabel, pValueColor } from "../core/catalog.js";
import { echart, loadCharts } from "../core/charts.js";
import { go, register } from "../core/router.js";
import { fmt, h, metricGrid, section } from "../core/ui.js";

register({
  id: "optimization",
  section: "backtests",
  path: "optimizations/:backtest_id",
  title: () => "Optimization heatmap",
  async render(el, { backtest_id }, ctx) {
    const charts = loadCharts();
    const q = ctx.query;
    const doc = await api.get(
      `/catalog-views/optimizations/${encodeURIComponent(backtest_id)}/heatmap`,
      { x: q.get("x") || "", y: q.get("y") || "" },
      { signal: ctx.signal }
    );
    const names = Object.keys(doc.parameters);
    const pick = (id, value) => h(`select#${id}`, { "aria-label": id }, names.map((n) => h("option", { value: n, selected: n === value }, `${n} (${doc.parameters[n].length})`)));
    const xs = pick("heatmap-x", doc.x);
    const ys = pick("heatmap-y", doc.y);
    // Choosing the other axis's parameter swaps the two axes.
    const redraw = (changed) => {
      let x = xs.value;
      let y = ys.value;
      if (x === y) [x, y] = changed === "x" ? [x, doc.x] : [doc.y, y];
      go(`optimizations/${backtest_id}`, { x, y });
    };
    xs.addEventListener("change", () => redraw("x"));
    ys.addEventListener("change", () => redraw("y"));
    const opt = doc.optimization || {};
    el.append(
      h("div.toolbar", h("h1", "Optimization"), h("span.muted", backtestLabel(doc.backtest)), h("span.spacer"),
        h("label", "across ", xs), h("label", "down ", ys), h("a", { href: `#/compare?ids=${backtest_id}` }, "best set's equity")),
      metricGrid([
        ["Parameter sets", fmt.int(opt.n_trials ?? doc.n_sets), "sets evaluated (trials of the Deflated Sharpe)"],
        ["Objective", fmt.text(opt.objective)],
        ["Search", fmt.text(opt.method)],
        ["Var. of trial Sharpes", fmt.num(opt.sharpe_trials_variance, 6), "per-period Sharpe variance across the trials"],
        ["Best set", `#${fmt.text(opt.parameter_set)}`],
      ])
    );
    const chartEl = h("div.chart-box#heatmap-chart");
    el.append(
      section(`Sharpe by ${doc.x} × ${doc.y}`, chartEl,
        h("p.muted.note", "Colour: annualized Sharpe of the best set in the cell (other parameters may vary: n sets per cell in the tooltip). Label: p = 1 − Deflated Sharpe given every set tried; green below 0.05.")),
      section("Cells", cellTable(doc))
    );
    await charts;
    return drawHeatmap(chartEl, doc);
  },
});

function drawHeatmap(el, doc) {
  const data = [];
  const values = [];
  doc.cells.forEach((row, j) =>
    row.forEach((cell, i) => {
      if (!cell) return;
      const v = cell.sharpe_ratio;
      if (v !== null) values.push(v);
      data.push({ value: [i, j, v ?? "-"], cell });
    })
  );
  const lo = values.length ? Math.min(...values) : 0;
  const hi = values.length ? Math.max(...values) : 1;
  const bound = Math.max(Math.abs(lo), Math.abs(hi), 1e-6);
  return echart(
    el,
    {
      tooltip: {
        formatter: (p) => {
          const c = p.data.cell;
          return `${Object.entries(c.parameters).map(([k, v]) => `${k}=${v}`).join(", ")}<br>Sharpe ${fmt.num(c.sharpe_ratio, 3)} · p ${fmt.num(c.p_value, 4)}<br>return ${fmt.pct(c.total_return)} · max DD ${fmt.pct(c.max_drawdown)}<br>${c.n_sets} set(s) in the cell · rank ${fmt.text(c.rank)}`;
        },
      },
      grid: { left: 70, right: 90, top: 20, bottom: 50 },
      xAxis: { type: "category", name: doc.x, nameLocation: "middle", nameGap: 30, data: doc.x_values.map(String), splitArea: { show: true } },
      yAxis: { type: "category", name: doc.y, nameLocation: "middle", nameGap: 50, data: doc.y_values.map(String), splitArea: { show: true } },
      visualMap: { min: -bound, max: bound, calculable: true, orient: "vertical", right: 0, top: "center", inRange: { color: ["#b91c1c", "#fca5a5", "#f8fafc", "#86efac", "#15803d"] }, text: ["Sharpe", ""] },
      series: [
        {
          type: "heatmap",
          data,
          // Labels on every cell up to a 12 x 12 grid; beyond, the tooltip and the table say it.
          label: {
            show: data.length <= 144,
            formatter: (p) => `${fmt.num(p.data.cell.sharpe_ratio, 2)}\np=${p.data.cell.p_value == null ? "—" : p.data.cell.p_value.toFixed(3)}`,
            color: "#0f172a",
            fontSize: 11,
            lineHeight: 15,
          },
          emphasis: { itemStyle: { borderColor: "#0f172a", borderWidth: 1 } },
        },
      ],
    },
    { height: Math.max(260, 46 * doc.y_values.length + 90) }
  );
}

function cellTable(doc) {
  const rows = [];
  doc.cells.forEach((row) => row.forEach((c) => c && rows.push(c)));
  rows.sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9));
  return h(
    "div.table-wrap",
    h(
      "table.data#heatmap-cells",
      h("thead", h("tr", ["Rank", "Parameters", "Sharpe", "p-value (DSR)", "Return", "Max DD", "Trades", "Sets"].map((t, i) => h(i > 1 ? "th.num" : "th", t)))),
      h(
        "tbody",
        rows.map((c) =>
          h(
            "tr",
            h("td", fmt.text(c.rank)),
            h("td", Object.entries(c.parameters).map(([k, v]) => `${k}=${v}`).join(", ")),
            h("td.num", fmt.num(c.sharpe_ratio, 3)),
            h("td.num", { style: `color:${pValueColor(c.p_value)}` }, fmt.num(c.p_value, 4)),
            h("td.num", fmt.pct(c.total_return)),
            h("td.num", fmt.pct(c.max_drawdown)),
            h("td.num", fmt.int(c.total_trades)),
            h("td.num", fmt.int(c.n_sets))
          )
        )
      )
    )
  );
}
