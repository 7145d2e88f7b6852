// One alpha-backtest run: the stage timeline (live from the progress stream), the combined
// metrics with their conventions, the backtest's charts, the trade ledger and the prediction audit.
import { api, download, followStream, TERMINAL } from "../core/api.js";
import { echart, loadCharts, pctAxis, timeChart } from "../core/charts.js";
import { register } from "../core/router.js";
import { badge, clear, dataTable, deploymentLink, errorBox, fmt, h, metricGrid, modelLink, section } from "../core/ui.js";

export const STAGES = ["accepted", "training", "registering", "deploying", "predicting", "backtesting", "persisting", "completed"];
const POINTS = 800;

register({
  id: "run",
  section: "runs",
  path: "runs/:run_id",
  title: (p) => `Run ${p.run_id.slice(0, 8)}`,
  async render(el, { run_id }, ctx) {
    loadCharts().catch(() => {}); // parse the chart libraries while the run's data arrives
    const disposers = [];
    const header = h("div.run-header");
    const timeline = h("ol.timeline#timeline");
    const metrics = h("div#run-metrics");
    const body = h("div#run-body");
    el.append(header, section("Stages", timeline), metrics, body);

    let run = await api.get(`/ml/alpha-backtest-runs/${encodeURIComponent(run_id)}`, null, { signal: ctx.signal });
    drawHeader(header, run, ctx);
    const stages = new Map(STAGES.map((s) => [s, { state: "waiting", message: "", pct: 0 }]));
    drawTimeline(timeline, stages);

    const finish = async (refetch = true) => {
      if (refetch) {
        run = await api.get(`/ml/alpha-backtest-runs/${encodeURIComponent(run_id)}`, null, { signal: ctx.signal });
        drawHeader(header, run, ctx);
      }
      drawMetrics(metrics, run);
      if (run.status === "succeeded") await drawBody(body, run, ctx, disposers);
      else if (run.error) clear(body, errorBox({ status: null, message: `${run.error.stage}: ${run.error.message}`, violations: run.error.field ? [{ field: run.error.field, description: run.error.message }] : [] }));
    };

    // Replay and follow the events: a finished run replays its history, a live run streams.
    const streaming = followStream(run.links.stream_url, (ev) => {
      const st = stages.get(ev.stage) || { state: "waiting", message: "", pct: 0 };
      if (!stages.has(ev.stage)) stages.set(ev.stage, st);
      const idx = STAGES.indexOf(ev.stage);
      STAGES.slice(0, Math.max(idx, 0)).forEach((s) => {
        const prev = stages.get(s);
        if (prev.state === "waiting" || prev.state === "running") prev.state = "done";
      });
      st.state = ev.status === "failed" || ev.stage === "failed" ? "failed" : ev.status === "done" || TERMINAL.has(ev.stage) ? "done" : "running";
      st.message = ev.message;
      st.pct = ev.pct;
      drawTimeline(timeline, stages, ev);
    }, { signal: ctx.signal });
    if (TERMINAL.has(run.stage) || ["succeeded", "failed", "cancelled"].includes(run.status)) {
      streaming.catch(() => {});
      await finish(false);
    } else {
      drawMetrics(metrics, run);
      streaming.then(() => !ctx.signal.aborted && finish()).catch((err) => !ctx.signal.aborted && body.append(errorBox(err)));
    }
    return () => disposers.forEach((d) => d());
  },
});

function drawHeader(el, run, ctx) {
  const l = run.links || {};
  const cfg = run.config || {};
  const win = run.combined_metrics?.window;
  const cancel =
    ctx.session.can.submit && ["pending", "running"].includes(run.status)
      ? h("button#cancel-run", { type: "button", on: { click: async (e) => { e.target.disabled = true; try { await api.post(`/ml/alpha-backtest-runs/${run.run_id}:cancel`); } catch (err) { el.append(errorBox(err)); } } } }, "Cancel run")
      : null;
  const tearsheet = l.backtest_id
    ? h("button#download-tearsheet", { type: "button", title: "one self-contained HTML page: charts, metrics, conventions, config", on: { click: async (e) => {
        e.target.disabled = true;
        try { await download(`/backtests/${l.backtest_id}/tearsheet.html?download=true`, `tearsheet-${l.backtest_id}.html`); } catch (err) { el.append(errorBox(err)); } finally { e.target.disabled = false; }
      } } }, "Download tearsheet")
    : null;
  clear(
    el,
    h("div.toolbar", h("h1", run.run_name || run.run_id), badge(run.status), h("span.muted", ` ${run.stage || ""}`), h("span.spacer"), tearsheet, cancel),
    h(
      "dl.facts",
      fact("Run id", h("code", run.run_id)),
      fact("Model", l.model_name ? modelLink(l.model_name, l.model_version) : cfg.model_cfg?.type),
      fact("Strategy", cfg.strategy_cfg ? `${cfg.strategy_cfg.type} ${JSON.stringify(cfg.strategy_cfg.params || {})}` : "—"),
      fact("Window", win ? `${win.start} → ${win.end} (${fmt.int(win.n_dates)} dates, ${fmt.int((win.symbols || []).length)} symbols)` : "—"),
      fact("Costs", cfg.backtest_cfg ? `fees ${fmt.bps(cfg.backtest_cfg.fees)} + slippage ${fmt.bps(cfg.backtest_cfg.slippage)} per side` : "—"),
      fact("Started", fmt.datetime(run.started_at || run.created_at)),
      fact("Duration", fmt.duration(run.duration_seconds)),
      fact("Deployment", deploymentLink(l.deployment_id)),
      fact("Backtest", l.backtest_id ? h("code", l.backtest_id) : "—"),
      fact("MLflow", h("span#mlflow-links", mlflowLinks(run)))
    )
  );
}

function mlflowLinks(run) {
  const l = run.links || {};
  const ids = [["parent", l.mlflow_parent_run_id], ["train", l.mlflow_train_run_id], ["backtest", l.mlflow_backtest_run_id]].filter(([, v]) => v);
  if (!ids.length) return "—";
  return ids.map(([role, id]) => h("a.chip", { href: `/ml/alpha-backtest-runs/${run.run_id}/mlflow`, title: `MLflow run ${id}`, dataset: { role }, on: { click: (e) => { e.preventDefault(); showMlflow(run.run_id); } } }, `${role} ${id.slice(0, 8)}`));
}

async function showMlflow(runId) {
  const doc = await api.get(`/ml/alpha-backtest-runs/${runId}/mlflow`);
  const dlg = h("dialog.wide", h("h2", "MLflow runs"), h("pre", JSON.stringify(doc, null, 2)), h("form", { method: "dialog" }, h("button", "Close")));
  document.body.append(dlg);
  dlg.addEventListener("close", () => dlg.remove());
  dlg.showModal();
}

const fact = (k, v) => h("div", h("dt", k), h("dd", v ?? "—"));

function drawTimeline(el, stages, last) {
  clear(
    el,
    [...stages.entries()]
      .filter(([name, st]) => STAGES.includes(name) || st.state !== "waiting")
      .map(([name, st]) => h(`li.st-${st.state}`, { dataset: { stage: name, state: st.state } }, h("span.dot"), h("strong", name), h("span.muted", st.message ? ` ${st.message}` : ""), st.state === "running" && st.pct ? h("progress", { max: 100, value: st.pct }) : null))
  );
  if (last) el.dataset.last = last.stage;
}

function drawMetrics(el, run) {
  const m = run.combined_metrics;
  if (!m) return clear(el);
  const ml = { ...(m.ml_all || {}), ...(m.ml || {}) };
  const tr = { ...(m.trading_all || {}), ...(m.trading || {}) };
  const why = (k) => (m.reasons || {})[k];
  const conv = m.conventions || {};
  const tconv = conv.trading || {};
  clear(
    el,
    section(
      "Combined metrics",
      metricGrid([
        ["Score", fmt.num(m.score, 3), "the combined score of ML and trading metrics"],
        ["Rank IC", fmt.num(ml.ic_spearman, 4), "mean Spearman correlation across symbols per date"],
        ["IC", fmt.num(ml.ic_pearson, 4), "mean Pearson correlation across symbols per date"],
        ["ICIR", fmt.num(ml.icir, 3), "mean(RankIC) / std(RankIC), not annualised"],
        ["Sharpe", fmt.num(tr.sharpe, 2), "annualised, net of costs"],
        ["Annual return", fmt.pct(tr.annualized_return), "geometric, net of costs"],
        ["Total return", fmt.pct(tr.total_return), "net of costs"],
        ["Max drawdown", fmt.pct(tr.max_drawdown), "worst peak-to-trough of equity"],
        ["Volatility", fmt.pct(tr.volatility), "annualised"],
        ["Sortino", fmt.num(tr.sortino, 2), why("trading.sortino") || "annualised"],
        ["Calmar", fmt.num(tr.calmar, 2), why("trading.calmar") || "annual return / |max drawdown|"],
        ["Turnover-adj. Sharpe", fmt.num(tr.turnover_adj_sharpe, 2), "Sharpe after the turnover penalty"],
        ["Hit rate", fmt.pct(ml.hit_rate, 1), "share of pairs where the prediction's sign is the label's"],
      ]),
      h(
        "details#conventions",
        h("summary", "Conventions"),
        h("dl.facts", Object.entries({ ...flat(conv) }).map(([k, v]) => fact(k, typeof v === "object" ? JSON.stringify(v) : String(v)))),
        tconv.periods_per_year ? h("p.muted", `Annualised with ${tconv.periods_per_year} periods a year.`) : null
      )
    )
  );
}

function flat(obj, prefix = "") {
  const out = {};
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flat(v, `${prefix}${k}.`));
    else out[`${prefix}${k}`] = v;
  }
  return out;
}

const line = (dates, values) => dates.map((t, i) => ({ time: t, value: values[i] })).filter((d) => d.value !== null);

async function drawBody(el, run, ctx, disposers) {
  const [s] = await Promise.all([
    api.get(`/browser/runs/${run.run_id}/series`, { points: POINTS }, { signal: ctx.signal }),
    loadCharts(),
  ]);
  // The sections first (so the tables start loading), then the first screen's chart (equity);
  // the others draw when they come into view, or one at a time in idle time after it.
  const tasks = [];
  const box = (id, title, note) => {
    const c = h(`div.chart-box#${id}`);
    el.append(h("section.card", { dataset: { panel: id } }, h("h2", title), note ? h("p.muted.note", note) : null, c));
    return c;
  };
  const chart = (id, title, note, draw) => {
    const c = box(id, title, note);
    tasks.push({ el: c, draw: () => draw(c) });
  };
  clear(el);
  const eq = s.equity;
  const eqSeries = [{ name: "strategy (net of costs)", data: line(eq.dates, eq.strategy) }];
  if (eq.benchmark) eqSeries.push({ name: `benchmark ${eq.benchmark_symbol}`, data: line(eq.dates, eq.benchmark) });
  if (eq.buy_and_hold) eqSeries.push({ name: "buy-and-hold, equal weight universe", data: line(eq.dates, eq.buy_and_hold) });
  chart("chart-equity", "Equity (growth of 1)", s.notes.equity, (c) => timeChart(c, { series: eqSeries }));
  chart("chart-drawdown", "Drawdown (underwater)", null, (c) =>
    timeChart(c, { series: [{ name: "drawdown", type: "area", color: "#dc2626", data: line(s.drawdown.dates, s.drawdown.values) }], format: "pct" }));
  chart("chart-rolling-sharpe", `Rolling Sharpe (${s.rolling_sharpe.window} bars, annualised)`, null, (c) =>
    timeChart(c, { series: [{ name: "rolling Sharpe", data: line(s.rolling_sharpe.dates, s.rolling_sharpe.values) }] }));
  chart("chart-monthly", "Monthly returns (net)", null, (c) => monthlyHeatmap(c, s.monthly));
  if (s.ic) {
    chart("chart-ic", "IC and Rank IC per date, with cumulative Rank IC", s.notes.ic, (c) =>
      timeChart(c, {
        series: [
          { name: "Rank IC", type: "histogram", color: "#93c5fd", data: line(s.ic.dates, s.ic.rank_ic) },
          { name: "IC", type: "line", color: "#f97316", options: { lineWidth: 1 }, data: line(s.ic.dates, s.ic.ic) },
          { name: "cumulative Rank IC", type: "line", color: "#1d4ed8", options: { priceScaleId: "left" }, data: line(s.ic.dates, s.ic.cum_rank_ic) },
        ],
      }));
    chart("chart-ic-decay", "IC decay (horizon in bars)", s.notes.decay, (c) =>
      echart(c, {
        tooltip: { trigger: "axis" }, legend: {}, xAxis: { type: "category", data: s.ic_decay.map((d) => `${d.horizon}`) }, yAxis: { type: "value" },
        series: [{ name: "Rank IC", type: "bar", data: s.ic_decay.map((d) => d.rank_ic) }, { name: "IC", type: "bar", data: s.ic_decay.map((d) => d.ic) }],
      }));
    chart("chart-deciles", "Mean return per prediction decile, per bar", s.notes.deciles, (c) =>
      echart(c, {
        tooltip: { trigger: "axis", valueFormatter: (v) => fmt.bps(v) }, legend: {}, xAxis: { type: "category", data: s.deciles.labels },
        yAxis: { type: "value", axisLabel: { formatter: (v) => `${(v * 1e4).toFixed(0)} bps` } },
        series: [{ name: "gross of costs", type: "bar", data: s.deciles.gross }, { name: "net of costs", type: "bar", data: s.deciles.net }],
      }));
    chart("chart-exposure", "Positions: exposure and count", null, (c) =>
      timeChart(c, {
        series: [
          { name: "gross exposure", data: line(s.exposure.dates, s.exposure.gross) },
          { name: "net exposure", data: line(s.exposure.dates, s.exposure.net) },
          { name: "positions", color: "#9ca3af", options: { priceScaleId: "left" }, data: line(s.exposure.dates, s.exposure.n_positions) },
        ],
      }));
    chart("chart-weights", `Weights over time (the ${s.weights.symbols.length} largest positions)`, null, (c) =>
      timeChart(c, {
        format: "pct",
        series: s.weights.symbols.map((sym) => ({ name: sym.symbol, options: { lineWidth: 1 }, data: line(s.weights.dates, sym.values) })),
      }));
  } else {
    el.append(h("section.card#no-audit", h("h2", "Predictions"), h("p.muted", s.notes.ic)));
  }
  // The scatter's trades come from the server: every trade up to its limit, else a sample that
  // keeps the extremes (the note says how it is drawn); the page never reads the whole ledger.
  chart("chart-mae-mfe", "Trades: MAE vs MFE", s.notes.trades, async (c) => {
    const sc = await api.get(`/browser/runs/${run.run_id}/trades/scatter`, null, { signal: ctx.signal });
    const of = (win) => sc.items.filter((t) => (t.pnl_percent > 0) === win).map((t) => [t.mae, t.mfe, t.pnl_percent, t.trade_number]);
    const dots = { type: "scatter", symbolSize: 4, large: true, largeThreshold: 500 };
    c.dataset.sampled = sc.sampled ? "1" : "0";
    return echart(c, {
      tooltip: { formatter: (p) => `trade ${p.data[3]}: MAE ${fmt.pct(p.data[0])}, MFE ${fmt.pct(p.data[1])}, P&L ${fmt.pct(p.data[2])}` },
      legend: {}, xAxis: { type: "value", name: "MAE", ...pctAxis }, yAxis: { type: "value", name: "MFE", ...pctAxis },
      series: [
        { ...dots, name: "winning trades", itemStyle: { color: "#16a34a" }, data: of(true) },
        { ...dots, name: "losing trades", itemStyle: { color: "#dc2626" }, data: of(false) },
      ],
    }, { emptyMessage: "no trades" });
  });
  const ledger = h("div#trade-ledger");
  el.append(section(`Trade ledger (${fmt.int(s.trades.total)} trades)`, ledger));
  dataTable(ledger, {
    id: "trades-table",
    rowKey: "trade_number",
    sort: "trade_number",
    desc: false,
    pageSize: 25,
    columns: [
      { key: "trade_number", label: "#", sortable: true, num: true },
      { key: "symbol", label: "Symbol", sortable: true },
      { key: "direction", label: "Side", sortable: true },
      { key: "entry_date", label: "Entry", sortable: true },
      { key: "exit_date", label: "Exit", sortable: true },
      { key: "duration_bars", label: "Bars", sortable: true, num: true, format: fmt.int },
      { key: "pnl_percent", label: "Return", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "pnl", label: "P&L", sortable: true, num: true, format: (v) => fmt.num(v, 2) },
      { key: "mae", label: "MAE", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "mfe", label: "MFE", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "fees_paid", label: "Fees", sortable: true, num: true, format: (v) => fmt.num(v, 2) },
      { key: "exit_reason", label: "Exit reason", sortable: true },
    ],
    load: (st) => api.get(`/browser/runs/${run.run_id}/trades`, { sort: st.sort, desc: st.desc, page: st.page, page_size: st.pageSize }, { signal: ctx.signal }),
  });
  if (s.ic) drawAudit(el, run, s, ctx);
  await drawLazily(tasks, ctx, disposers);
  el.dataset.drawn = "1";
}

/** Draw the first task now, then each other one when it comes into view or, failing that, in
 * idle time one at a time (so everything is drawn without scrolling, after the first screen). */
async function drawLazily(tasks, ctx, disposers) {
  const pending = new Set(tasks.slice(1));
  const run = async (t) => {
    if (ctx.signal.aborted) return;
    const dispose = await t.draw();
    if (dispose) disposers.push(dispose);
  };
  if (tasks.length) await run(tasks[0]);
  let done;
  const all = new Promise((resolve) => (done = resolve));
  let running = 0;
  const take = (t) => {
    if (!pending.delete(t)) return;
    io.unobserve(t.el);
    running += 1;
    run(t).catch(() => {}).finally(() => {
      running -= 1;
      if (!pending.size && !running) done();
    });
  };
  const io = new IntersectionObserver((entries) => entries.forEach((e) => e.isIntersecting && take(tasks.find((t) => t.el === e.target))), { rootMargin: "200px" });
  pending.forEach((t) => io.observe(t.el));
  disposers.push(() => io.disconnect());
  const idle = window.requestIdleCallback ? (f) => requestIdleCallback(f, { timeout: 200 }) : (f) => setTimeout(f, 16);
  const next = () => {
    if (ctx.signal.aborted) return;
    const [t] = pending;
    if (!t) return;
    take(t);
    idle(next);
  };
  if (!pending.size) done();
  else idle(next);
  await all;
  io.disconnect();
}

function drawAudit(el, run, s, ctx) {
  const dates = s.audit.dates;
  const date = h("input#audit-date", { type: "date", min: dates[0], max: dates[dates.length - 1], value: dates[dates.length - 1], "aria-label": "date" });
  const symbol = h("input#audit-symbol", { type: "search", placeholder: "symbol", list: "audit-symbols", "aria-label": "symbol" });
  const list = h("datalist#audit-symbols", s.audit.symbols.map((x) => h("option", { value: x })));
  const holder = h("div#audit-table-holder");
  el.append(section("Prediction audit", h("p.muted", "Pick a date to see every symbol that day, or a symbol to see it over time."), h("div.toolbar", date, symbol, list), holder));
  const table = dataTable(holder, {
    id: "audit-table",
    sort: "prediction",
    desc: true,
    pageSize: 25,
    columns: [
      { key: "date", label: "Date", sortable: true },
      { key: "symbol", label: "Symbol", sortable: true },
      { key: "prediction", label: "Prediction", sortable: true, num: true, format: (v) => fmt.num(v, 5) },
      { key: "realized_return", label: "Realised", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "target_weight", label: "Target w", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "held_weight", label: "Held w", sortable: true, num: true, format: (v) => fmt.pct(v) },
      { key: "pnl_contribution", label: "P&L contrib.", sortable: true, num: true, format: (v) => fmt.bps(v) },
    ],
    load: (st) => api.get(`/browser/runs/${run.run_id}/audit`, symbol.value.trim() ? { symbol: symbol.value.trim(), sort: st.sort, desc: st.desc, page: st.page, page_size: st.pageSize } : { date: date.value, sort: st.sort, desc: st.desc, page: st.page, page_size: st.pageSize }, { signal: ctx.signal }),
  });
  date.addEventListener("change", () => { symbol.value = ""; table.setFilter({ date: date.value }); });
  symbol.addEventListener("change", () => table.setFilter({ symbol: symbol.value }));
}

function monthlyHeatmap(el, monthly) {
  const years = [...new Set(monthly.map((m) => m.year))].sort();
  const months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const row = new Map(years.map((y, i) => [y, i]));
  const data = monthly.map((m) => [m.month - 1, row.get(m.year), m.ret]);
  const labelled = years.length <= 12 ? data.map((d) => ({ value: d, label: { formatter: d[2] == null ? "" : (d[2] * 100).toFixed(1) } })) : data;
  const lim = Math.max(0.01, ...monthly.map((m) => Math.abs(m.ret || 0)));
  return echart(el, {
    tooltip: { formatter: (p) => `${years[p.value[1]]} ${months[p.value[0]]}: ${fmt.pct(p.value[2])}` },
    grid: { left: 60, right: 20, top: 10, bottom: 60 },
    // no split areas, a fixed legend and labels precomputed (no per-cell formatter call)
    xAxis: { type: "category", data: months },
    yAxis: { type: "category", data: years.map(String) },
    visualMap: { min: -lim, max: lim, orient: "horizontal", left: "center", bottom: 0, itemHeight: 120, inRange: { color: ["#dc2626", "#f8fafc", "#16a34a"] }, text: [fmt.pct(lim, 1), fmt.pct(-lim, 1)] },
    series: [{ type: "heatmap", progressive: 0, data: labelled, label: { show: years.length <= 12 } }],
  }, { height: Math.max(160, 40 + years.length * 24 + 60) });
}
