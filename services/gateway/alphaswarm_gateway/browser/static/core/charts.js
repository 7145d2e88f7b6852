// Chart helpers over the two vendored libraries:
//  * TradingView lightweight-charts for dated series (equity, drawdown, rolling Sharpe, IC):
//    fast canvas rendering, a time axis with crosshair and zoom.
//  * Apache ECharts for everything else (heatmaps, bars, scatter, fan charts, stacked areas).
// Each helper marks its element with data-chart / data-points (the number of data points
// drawn) so tests and the benchmark can tell a chart drew, and returns a dispose function.

// The libraries load on first use (`await loadCharts()`), so views without charts never
// download or parse them, and a view can fetch its data while they load.
let LWC = null;
let echarts = null;
let loading = null;

export function loadCharts() {
  loading ??= Promise.all([
    import("../vendor/lightweight-charts/lightweight-charts.js"),
    import("../vendor/echarts/echarts.js"),
  ]).then(([lwc, ec]) => {
    LWC = lwc;
    echarts = ec;
  });
  return loading;
}

export const PALETTE = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"];

const seriesKind = (type) =>
  ({ line: LWC.LineSeries, area: LWC.AreaSeries, histogram: LWC.HistogramSeries, baseline: LWC.BaselineSeries })[type];

function mark(el, kind, points) {
  el.dataset.chart = kind;
  el.dataset.points = String(points);
  el.dataset.drawn = points > 0 ? "1" : "0";
}

function empty(el, message) {
  el.replaceChildren();
  const p = document.createElement("p");
  p.className = "muted empty";
  p.textContent = message || "no data";
  el.append(p);
  mark(el, "empty", 0);
  return () => {};
}

/**
 * A dated chart. series: [{name, type: line|area|histogram|baseline, data: [{time: "YYYY-MM-DD", value}],
 * color, options}]. `format`: "pct" (fractions shown as percent), "num" (default).
 */
export function timeChart(el, opts = {}) {
  return timed(el, () => drawTime(el, opts));
}

/** Run `draw`, recording its duration as a performance measure `chart:<id>` and in data-ms. */
function timed(el, draw) {
  if (!LWC || !echarts) throw new Error("call `await loadCharts()` before drawing");
  const start = performance.now();
  const dispose = draw();
  const ms = performance.now() - start;
  el.dataset.ms = ms.toFixed(1);
  el.dataset.at = (start + ms).toFixed(0); // drawn at, ms since the page's navigation
  if (el.id) performance.measure(`chart:${el.id}`, { start, duration: ms });
  return dispose;
}

function drawTime(el, { series, format = "num", height = 280, emptyMessage } = {}) {
  const total = series.reduce((n, s) => n + (s.data ? s.data.length : 0), 0);
  if (!total) return empty(el, emptyMessage);
  el.replaceChildren();
  el.classList.add("chart");
  const priceFormat =
    format === "pct"
      ? { type: "custom", formatter: (v) => `${(v * 100).toFixed(2)}%`, minMove: 0.0001 }
      : { type: "price", precision: 3, minMove: 0.001 };
  const chart = LWC.createChart(el, {
    height,
    autoSize: true,
    layout: { background: { color: "transparent" }, textColor: "#334155", attributionLogo: false },
    grid: { vertLines: { color: "#eef2f7" }, horzLines: { color: "#eef2f7" } },
    rightPriceScale: { borderVisible: false },
    leftPriceScale: { visible: series.some((s) => s.options && s.options.priceScaleId === "left"), borderVisible: false },
    timeScale: { borderVisible: false },
    localization: { priceFormatter: priceFormat.formatter },
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    const kind = seriesKind(s.type || "line");
    const opts = { title: "", lineWidth: 2, priceFormat, lastValueVisible: false, priceLineVisible: false, ...(s.options || {}) };
    if ((s.type || "line") === "line") opts.color = color;
    if (s.type === "area") Object.assign(opts, { lineColor: color, topColor: `${color}33`, bottomColor: `${color}05` });
    if (s.type === "histogram") opts.color = color;
    const handle = chart.addSeries(kind, opts);
    handle.setData(s.data.filter((d) => d.value !== null && d.value !== undefined && Number.isFinite(d.value)));
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.append(document.createTextNode(s.name || ""));
    legend.append(item);
  });
  if (series.length > 1 || series[0].name) el.append(legend);
  chart.timeScale().fitContent();
  mark(el, "time", total);
  return () => chart.remove();
}

/** An ECharts chart from an option object; counts the points of its series. */
export function echart(el, option, opts = {}) {
  return timed(el, () => drawEchart(el, option, opts));
}

function drawEchart(el, option, { height = 300, emptyMessage } = {}) {
  const total = (option.series || []).reduce((n, s) => n + (Array.isArray(s.data) ? s.data.length : 0), 0);
  if (!total) return empty(el, emptyMessage);
  el.replaceChildren();
  el.classList.add("chart");
  el.style.height = `${height}px`;
  const chart = echarts.init(el, null, { renderer: "canvas" });
  chart.setOption({ animation: false, color: PALETTE, textStyle: { fontFamily: "inherit" }, ...option });
  const ro = new ResizeObserver(() => chart.resize());
  ro.observe(el);
  mark(el, "echarts", total);
  return () => {
    ro.disconnect();
    chart.dispose();
  };
}

export const pctAxis = { axisLabel: { formatter: (v) => `${(v * 100).toFixed(0)}%` } };
