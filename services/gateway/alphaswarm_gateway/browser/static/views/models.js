// Registered models: aliases, versions with their headline training metrics, the dataset they
// were trained on (a link to its leaderboard) and the alpha-backtest runs that traded them.
import { api } from "../core/api.js";
import { echart, loadCharts } from "../core/charts.js";
import { register } from "../core/router.js";
import { fmt, h, section } from "../core/ui.js";

register({
  id: "models",
  path: "models",
  nav: "Models",
  order: 40,
  title: () => "Models",
  async render(el, _params, ctx) {
    const charts = loadCharts();
    const doc = await api.get("/catalog-views/models", null, { signal: ctx.signal });
    el.append(h("div.toolbar", h("h1", "Registered models"), h("span.spacer"), h("span.muted", `${doc.items.length} models`)));
    if (!doc.items.length) {
      el.append(h("p.muted", "No registered model yet: an alpha-backtest run registers the model it trains."));
      return;
    }
    const disposers = [];
    await charts;
    for (const m of doc.items) el.append(modelSection(m, doc.headline_metrics, disposers));
    return () => disposers.forEach((f) => f());
  },
});

// One registered model's page, a version picked out (`#/models/<name>?version=<v>`): the link
// the run page, the runs list, the leaderboard and the deployments give for a model version.
register({
  id: "model",
  path: "models/:name",
  title: (p) => `Model ${decodeURIComponent(p.name)}`,
  async render(el, { name }, ctx) {
    const charts = loadCharts();
    const model = decodeURIComponent(name);
    const version = ctx.query.get("version") || "";
    const doc = await api.get("/catalog-views/models", null, { signal: ctx.signal });
    const m = doc.items.find((x) => x.name === model);
    el.append(h("div.toolbar", h("h1", version ? `${model} v${version}` : model), h("span.spacer"), h("a", { href: "#/models" }, "all models")));
    if (!m) {
      el.append(h("p.error#model-missing", `No registered model named ${model}.`));
      return;
    }
    if (version && !m.versions.some((v) => v.version === version)) el.append(h("p.error#version-missing", `${model} has no version ${version}.`));
    const disposers = [];
    await charts;
    el.append(modelSection(m, doc.headline_metrics, disposers, version));
    el.querySelector("tr.selected")?.scrollIntoView({ block: "center" });
    return () => disposers.forEach((f) => f());
  },
});

function modelSection(m, headline, disposers, selected = "") {
  const chartEl = h("div.chart-box", { dataset: { model: m.name } });
  const out = section(
    m.name,
    h("p", h("span.muted", "aliases "), Object.keys(m.aliases).length ? Object.entries(m.aliases).map(([a, v]) => h("span.chip", `${a} → v${v}`)) : "—",
      m.description ? h("span.muted", ` · ${m.description}`) : null),
    versionTable(m, headline, selected),
    chartEl
  );
  const vs = m.versions.slice().reverse();
  disposers.push(
    echart(
      chartEl,
      {
        tooltip: { trigger: "axis" },
        legend: { top: 0 },
        grid: { left: 50, right: 50, top: 30, bottom: 30 },
        xAxis: { type: "category", data: vs.map((v) => `v${v.version}`) },
        yAxis: [{ type: "value", name: "Sharpe" }, { type: "value", name: "IC" }],
        series: [
          { name: "latest run Sharpe", type: "bar", barMaxWidth: 48, data: vs.map((v) => v.latest_run?.sharpe ?? "-") },
          { name: "valid rank IC", type: "line", yAxisIndex: 1, data: vs.map((v) => v.headline.valid_ic_spearman ?? "-") },
          { name: "test rank IC", type: "line", yAxisIndex: 1, data: vs.map((v) => v.headline.test_ic_spearman ?? "-") },
        ],
      },
      { height: 220, emptyMessage: "no version has metrics yet" }
    )
  );
  return out;
}

function versionTable(m, headline, selected = "") {
  const cols = ["Version", "Aliases", "Status", "Registered", ...headline, "Runs", "Sharpe", "Score", "Dataset"];
  return h(
    "div.table-wrap",
    h(
      "table.data.model-versions",
      { dataset: { model: m.name } },
      h("thead", h("tr", cols.map((c, i) => h(i >= 4 && i < cols.length - 1 ? "th.num" : "th", c)))),
      h(
        "tbody",
        m.versions.map((v) =>
          h(
            "tr",
            { class: v.version === selected ? "selected" : "", dataset: { version: v.version } },
            h("td", h("a", { href: `#/models/${encodeURIComponent(m.name)}?version=${encodeURIComponent(v.version)}` }, `v${v.version}`)),
            h("td", v.aliases.map((a) => h("span.chip", a))),
            h("td", v.status),
            h("td", v.created_at_ms ? fmt.datetime(v.created_at_ms) : "—"),
            headline.map((k) => h("td.num", fmt.num(v.headline[k], 4))),
            h("td.num", fmt.int(v.n_runs)),
            h("td.num", v.latest_run ? h("a", { href: `#/runs/${v.latest_run.run_id}` }, fmt.num(v.latest_run.sharpe, 2)) : "—"),
            h("td.num", fmt.num(v.latest_run?.score, 3)),
            h("td", v.dataset_fingerprint ? h("a", { href: `#/leaderboard/${v.dataset_fingerprint}`, title: v.dataset_fingerprint }, v.dataset_fingerprint.slice(0, 10)) : "—")
          )
        )
      )
    )
  );
}
