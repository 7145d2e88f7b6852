// Monte Carlo fan chart of a backtest: block-bootstrap paths of its daily returns (the same
// draws as the Monte Carlo job with the same seed), percentiles of the growth of 1 per step,
// and the backtest's own path through them.
import { api } from "../core/api.js";
import { backtestLabel } from "../core/catalog.js";
import { echart, loadCharts } from "../core/charts.js";
import { go, register } from "../core/router.js";
import { fmt, h, metricGrid, section } from "../core/ui.js";

register({
  id: "monte-carlo",
  section: "backtests",
  path: "monte-carlo/:backtest_id",
  title: () => "Monte Carlo",
  async render(el, { backtest_id }, ctx) {
    const charts = loadCharts();
    const q = ctx.query;
    const params = {
      n_simulations: q.get("n_simulations") || 1000,
      block_length: q.get("block_length") || 21,
      seed: q.get("seed") || 0,
      method: q.get("method") || "stationary",
      points: 300,
    };
    const num = (id, value, label) => h(`input#${id}`, { type: "number", min: 0, value, "aria-label": label, style: "width:7em" });
    const sims = num("mc-sims", params.n_simulations, "paths");
    const block = num("mc-block", params.block_length, "block length");
    const seed = num("mc-seed", params.seed, "seed");
    const method = h("select#mc-method", { "aria-label": "bootstrap" }, ["stationary", "circular"].map((m) => h("option", { value: m, selected: m === params.method }, m)));
    const form = h("form.toolbar", { on: { submit: (e) => { e.preventDefault(); go(`monte-carlo/${backtest_id}`, { n_simulations: sims.value, block_length: block.value, seed: seed.value, method: method.value }); } } },
      h("h1", "Monte Carlo"), h("span.spacer"), h("label", "paths ", sims), h("label", "block ", block), h("label", "seed ", seed), method, h("button", { type: "submit" }, "Simulate"));
    el.append(form);
    const doc = await api.get(`/catalog-views/monte-carlo/${encodeURIComponent(backtest_id)}`, params, { signal: ctx.signal });
    const last = (k) => doc.bands[k][doc.bands[k].length - 1] - 1;
    const median = doc.percentiles.indexOf(50);
    el.append(
      h("p.muted", backtestLabel(doc.backtest), " · ", h("a", { href: `#/compare?ids=${backtest_id}` }, "equity")),
      metricGrid([
        ["Paths", fmt.int(doc.n_simulations)],
        ["Bars", fmt.int(doc.n_steps)],
        ["Block", `${doc.block_length} (${doc.method})`],
        ["P(loss)", fmt.pct(doc.probability_of_loss, 1), "share of paths ending below their start"],
        [`p${doc.percentiles[0]} total return`, fmt.pct(last(0), 1)],
        ["Median total return", median >= 0 ? fmt.pct(last(median), 1) : "—"],
        [`p${doc.percentiles[doc.percentiles.length - 1]} total return`, fmt.pct(last(doc.percentiles.length - 1), 1)],
        ["Actual total return", fmt.pct(doc.actual[doc.actual.length - 1] - 1, 1)],
      ])
    );
    const chartEl = h("div.chart-box#mc-fan");
    el.append(section("Growth of 1: percentiles of the simulated paths per bar", chartEl,
      h("p.muted.note", "Bands between symmetric percentiles; the dark line is the backtest itself. Resampled returns keep the blocks' autocorrelation, not the order of regimes.")));
    await charts;
    return drawFan(chartEl, doc);
  },
});

function drawFan(el, doc) {
  const x = doc.dates.map((d, i) => d || `start`);
  const pct = doc.percentiles;
  const series = [];
  // Symmetric pairs (p_lo, p_hi) from the outside in, drawn as stacked bands.
  const pairs = [];
  for (let i = 0, j = pct.length - 1; i < j; i++, j--) pairs.push([i, j]);
  const shades = ["rgba(37,99,235,0.12)", "rgba(37,99,235,0.25)", "rgba(37,99,235,0.4)"];
  pairs.forEach(([i, j], k) => {
    const stack = `band${k}`;
    series.push({ name: `p${pct[i]}`, type: "line", data: doc.bands[i], stack, symbol: "none", lineStyle: { opacity: 0 }, areaStyle: { opacity: 0 }, tooltip: { show: false }, color: shades[k % shades.length] });
    series.push({
      name: `p${pct[i]}–p${pct[j]}`,
      type: "line",
      data: doc.bands[j].map((v, t) => (v == null || doc.bands[i][t] == null ? null : v - doc.bands[i][t])),
      stack,
      symbol: "none",
      lineStyle: { opacity: 0 },
      areaStyle: { color: shades[k % shades.length] },
      color: shades[k % shades.length],
    });
  });
  const mid = pct.indexOf(50);
  if (mid >= 0) series.push({ name: "median", type: "line", data: doc.bands[mid], symbol: "none", color: "#2563eb", lineStyle: { width: 2 } });
  series.push({ name: "backtest", type: "line", data: doc.actual, symbol: "none", color: "#0f172a", lineStyle: { width: 2 } });
  return echart(
    el,
    {
      tooltip: {
        trigger: "axis",
        formatter: (items) => {
          const t = items[0].dataIndex;
          const lines = pct.map((p, k) => `p${p}: ${fmt.num(doc.bands[k][t], 3)}`);
          return `${x[t]}<br>${lines.join("<br>")}<br>backtest: ${fmt.num(doc.actual[t], 3)}`;
        },
      },
      legend: { top: 0, data: series.filter((s) => !s.tooltip).map((s) => s.name) },
      grid: { left: 60, right: 20, top: 30, bottom: 40 },
      xAxis: { type: "category", data: x, boundaryGap: false },
      yAxis: { type: "value", scale: true, name: "growth of 1" },
      series,
    },
    { height: 420 }
  );
}
