// Start an alpha-backtest run or a backtester job from a YAML (or JSON) document. The API
// validates it; its messages name the field. Once accepted, the page follows it live.
import { api, followStream } from "../core/api.js";
import { go, register } from "../core/router.js";
import { clear, errorBox, h } from "../core/ui.js";

export const KINDS = {
  run: {
    label: "Alpha-backtest run (train, deploy, predict, backtest)",
    path: "/ml/alpha-backtest-runs",
    template: `run_name: ridge-alpha-backtest
train_first: true
capture_predictions: true
dataset_cfg:
  source: sp500
  start_date: "2009-01-01"
  end_date: "2019-06-28"
  segments:
    train: ["2010-01-01", "2015-12-31"]
    valid: ["2016-01-01", "2016-12-30"]
    test: ["2017-01-03", "2018-12-31"]
  features:
    - {name: ret, windows: [1, 5, 20], cs_rank: true}
    - {name: vol, windows: [20]}
    - {name: ma_ratio, windows: [10, 50]}
  label: {horizon: 1, execution_lag: 1}
model_cfg: {type: ridge, name: ridge-alpha, params: {alpha: 10.0}}
strategy_cfg: {type: long_short_topk, params: {top_k: 3}}
backtest_cfg: {fees: 0.001, slippage: 0.001}
`,
  },
  backtest: {
    label: "Rule backtest",
    path: "/backtests",
    template: `source:
  dataset_cfg: {source: sp500, start_date: "2012-01-01", end_date: "2018-12-31"}
  symbols: [AAPL]
strategy_cfg: {type: sma_cross, params: {fast_period: 10, slow_period: 30}}
`,
  },
  optimization: {
    label: "Parameter optimization",
    path: "/optimizations",
    template: `source:
  dataset_cfg: {source: sp500, start_date: "2012-01-01", end_date: "2018-12-31"}
  symbols: [AAPL]
strategy_type: sma_cross
objective: sharpe
grid: {fast_period: [5, 10, 20], slow_period: [30, 60, 90]}
`,
  },
  walk_forward: {
    label: "Walk-forward test",
    path: "/walk-forward-tests",
    template: `source:
  dataset_cfg: {source: sp500, start_date: "2012-01-01", end_date: "2018-12-31"}
  symbols: [AAPL]
strategy_type: sma_cross
grid: {fast_period: [5, 10], slow_period: [30, 60]}
`,
  },
  portfolio_backtest: {
    label: "Portfolio backtest",
    path: "/portfolio-backtests",
    template: `dataset_cfg: {source: sp500, start_date: "2012-01-01", end_date: "2018-12-31"}
portfolio_name: two-legs
legs:
  - {symbol: AAPL}
  - {symbol: JNJ, strategy_cfg: {type: sma_cross}}
`,
  },
  monte_carlo: {
    label: "Monte Carlo of a backtest",
    path: "/monte-carlo",
    template: `backtest_id: 00000000-0000-0000-0000-000000000000
n_simulations: 500
seed: 1
`,
  },
};

register({
  id: "submit",
  path: "submit",
  nav: "Submit",
  order: 90,
  needs: "submit",
  title: () => "Submit",
  async render(el, _params, ctx) {
    if (!ctx.session.can.submit) {
      el.append(h("div.card", h("h2", "Submit"), h("p", `Your role (${ctx.session.role}) may read but not start runs or jobs.`)));
      return;
    }
    const initial = ctx.query.get("kind") in KINDS ? ctx.query.get("kind") : "run";
    const kind = h("select#submit-kind", { "aria-label": "kind" }, Object.entries(KINDS).map(([k, v]) => h("option", { value: k, selected: k === initial }, v.label)));
    const editor = h("textarea#submit-doc", { spellcheck: false, rows: 24, "aria-label": "document" });
    editor.value = KINDS[initial].template;
    const out = h("div#submit-result");
    const send = h("button#submit-send", { type: "submit" }, "Submit");
    kind.addEventListener("change", () => {
      editor.value = KINDS[kind.value].template;
      clear(out);
    });
    const form = h(
      "form.card#submit-form",
      h("h1", "Start a run or a job"),
      h("p.muted", "YAML or JSON. The gateway checks the document and names any field it refuses."),
      h("label", "Kind ", kind),
      editor,
      h("div.toolbar", send),
      out
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      send.disabled = true;
      clear(out, h("p.muted", "Submitting…"));
      const spec = KINDS[kind.value];
      try {
        const accepted = await api.post(spec.path, editor.value, { contentType: "application/x-yaml", signal: ctx.signal });
        if (accepted.run_id) {
          go(`runs/${accepted.run_id}`);
          return;
        }
        const log = h("ol.timeline#job-events");
        clear(out, h("p", "Accepted task ", h("code#job-task", accepted.task_id)), log);
        const last = await followStream(accepted.stream_url, (e) => {
          log.append(h(`li.st-${e.status === "failed" ? "failed" : e.status === "done" ? "done" : "running"}`, { dataset: { stage: e.stage } }, h("span.dot"), h("strong", e.stage), h("span.muted", ` ${e.message || ""}`)));
        }, { signal: ctx.signal });
        const task = await api.get(`/tasks/${accepted.task_id}`, null, { signal: ctx.signal });
        out.append(h("div#job-outcome", { dataset: { status: task.status } }, h("h2", `Outcome: ${task.status}`), h("pre", JSON.stringify(task.result || task.error || last, null, 2))));
      } catch (err) {
        clear(out, errorBox(err));
      } finally {
        send.disabled = false;
      }
    });
    el.append(form);
  },
});
