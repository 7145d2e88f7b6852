// Deployments: what each serves, its history of versions, and the actions the caller's role
// allows (roll: researcher; promote, rollback, retire: admin). The API checks the role again.
import { api } from "../core/api.js";
import { echart, loadCharts } from "../core/charts.js";
import { register } from "../core/router.js";
import { badge, clear, deploymentLink, errorBox, fmt, h, modelLink, section } from "../core/ui.js";

register({
  id: "deployments",
  path: "deployments",
  nav: "Deployments",
  order: 45,
  title: () => "Deployments",
  async render(el, _params, ctx) {
    const charts = loadCharts();
    const body = h("div#deployments");
    el.append(h("div.toolbar", h("h1", "Deployments"), h("span.spacer"), h("span.muted#deployments-role")), body);
    const disposers = [];
    const draw = async () => {
      disposers.splice(0).forEach((f) => f());
      const doc = await api.get("/deployments", { page_size: 200 }, { signal: ctx.signal });
      el.querySelector("#deployments-role").textContent = `you are ${doc.caller_role}: roll needs ${doc.roles.roll}; promote, rollback and retire need ${doc.roles.promote}`;
      clear(body);
      if (!doc.items.length) {
        body.append(h("p.muted", "No deployment yet: an alpha-backtest run deploys the model it trains."));
        return;
      }
      const versions = await modelVersions(doc.items, ctx);
      await charts;
      for (const d of doc.items) body.append(card(d, versions, draw, disposers));
    };
    await draw();
    return () => disposers.forEach((f) => f());
  },
});

// One deployment's page: what it serves, its history and the actions (`#/deployments/<id>`).
register({
  id: "deployment",
  path: "deployments/:deployment_id",
  title: (p) => `Deployment ${p.deployment_id.slice(0, 8)}`,
  async render(el, { deployment_id }, ctx) {
    const charts = loadCharts();
    const body = h("div#deployment");
    el.append(h("div.toolbar", h("h1", "Deployment"), h("span.spacer"), h("a", { href: "#/deployments" }, "all deployments")), body);
    const disposers = [];
    const draw = async () => {
      disposers.splice(0).forEach((f) => f());
      const d = await api.get(`/deployments/${encodeURIComponent(deployment_id)}`, null, { signal: ctx.signal });
      const versions = await modelVersions([d], ctx);
      await charts;
      clear(body, card(d, versions, draw, disposers));
    };
    await draw();
    return () => disposers.forEach((f) => f());
  },
});

function card(d, versions, redraw, disposers) {
  const chartEl = h("div.chart-box", { dataset: { deployment: d.deployment_id } });
  const c = section(
    `${d.model_name} v${d.model_version}`,
    h("div.toolbar", badge(d.state), d.model_alias ? h("span.chip", d.model_alias) : null,
      deploymentLink(d.deployment_id), modelLink(d.model_name, d.model_version, "model version"),
      h("span.muted", `${fmt.text(d.dataset_source)} · ${fmt.text(d.strategy_type)} · updated ${fmt.datetime(d.updated_at)}`)),
    actions(d, versions[d.model_name] || [], redraw),
    historyTable(d),
    chartEl
  );
  c.dataset.deployment = d.deployment_id;
  disposers.push(historyChart(chartEl, d));
  return c;
}

async function modelVersions(items, ctx) {
  const names = [...new Set(items.map((d) => d.model_name))];
  const out = {};
  await Promise.all(
    names.map(async (n) => {
      try {
        const doc = await api.get(`/models/${encodeURIComponent(n)}/versions`, { page_size: 100 }, { signal: ctx.signal });
        out[n] = doc.items.map((v) => v.version);
      } catch {
        out[n] = [];
      }
    })
  );
  return out;
}

function actions(d, versions, redraw) {
  const a = d.actions;
  if (!Object.values(a).some(Boolean)) return h("p.muted.note", d.state === "active" ? "Your role may not change this deployment." : "Retired: kept for its history.");
  const msg = h("div.action-result");
  const run = async (label, path, body) => {
    clear(msg, h("span.muted", `${label}…`));
    try {
      await api.post(`/deployments/${d.deployment_id}:${path}`, body || {});
      await redraw();
    } catch (err) {
      clear(msg, errorBox(err));
    }
  };
  const pick = h("select", { "aria-label": "version", class: "version-pick" }, versions.filter((v) => v !== d.model_version).map((v) => h("option", { value: v }, `v${v}`)));
  const row = h("div.toolbar.deployment-actions");
  if (a.roll || a.promote) row.append(pick);
  if (a.roll) row.append(h("button", { type: "button", dataset: { action: "roll" }, disabled: !pick.options.length, on: { click: () => run("rolling", "roll", { model_version: pick.value }) } }, "Roll to version"));
  if (a.promote) row.append(h("button", { type: "button", dataset: { action: "promote" }, disabled: !pick.options.length, on: { click: () => run("promoting", "promote", { model_version: pick.value }) } }, "Promote version"));
  if (a.rollback) row.append(h("button", { type: "button", dataset: { action: "rollback" }, disabled: !d.history.length, on: { click: () => run("rolling back", "rollback") } }, "Roll back"));
  if (a.retire) row.append(h("button", { type: "button", dataset: { action: "retire" }, on: { click: () => confirm(`Retire deployment ${d.deployment_id}? It stops serving predictions.`) && run("retiring", "retire") } }, "Retire"));
  return h("div", row, msg);
}

function historyTable(d) {
  const rows = [...d.history, { model_name: d.model_name, version: d.model_version, from: d.history.length ? d.history[d.history.length - 1].to : d.created_at, to: null }];
  return h(
    "div.table-wrap",
    h(
      "table.data.deployment-history",
      h("thead", h("tr", h("th", "Model"), h("th", "Version"), h("th", "From"), h("th", "To"))),
      h("tbody", rows.map((r) => h("tr", h("td", r.model_name || d.model_name), h("td", modelLink(r.model_name || d.model_name, r.version, `v${r.version}`)), h("td", fmt.datetime(r.from)), h("td", r.to ? fmt.datetime(r.to) : d.state === "active" ? "serving" : "retired"))))
    )
  );
}

function historyChart(el, d) {
  const rows = [...d.history, { version: d.model_version, from: d.history.length ? d.history[d.history.length - 1].to : d.created_at, to: d.state === "active" ? new Date().toISOString() : d.updated_at }];
  const data = rows.filter((r) => r.from).map((r) => [r.from, Number(r.version), r.to || r.from]);
  return echart(
    el,
    {
      tooltip: { trigger: "axis" },
      grid: { left: 50, right: 20, top: 20, bottom: 30 },
      xAxis: { type: "time" },
      yAxis: { type: "value", name: "version", minInterval: 1 },
      series: [{ name: "version served", type: "line", step: "end", data: data.flatMap(([from, v, to]) => [[from, v], [to, v]]) }],
    },
    { height: 160, emptyMessage: "no history" }
  );
}
