// Helpers shared by the catalog views (backtests, compare, optimization, walk-forward, Monte
// Carlo, portfolios, leaderboard): what kind of backtest a catalog row is, the links to its
// views, and the keyset pager of the catalog's lists.
import { token } from "./api.js";
import { h } from "./ui.js";

/** "optimization", "walk-forward", "rule" or "alpha", from what the backtester recorded. */
export function backtestKind(row) {
  const p = row.parameters || {};
  if (p.optimization) return "optimization";
  if (p.walk_forward) return "walk-forward";
  if ("capital_per_symbol" in p || "warmup_bars" in p) return "rule";
  return "alpha";
}

/** Links to the views of one backtest row. */
export function backtestLinks(row) {
  const id = row.backtest_id;
  const kind = backtestKind(row);
  const stop = { click: (e) => e.stopPropagation() };
  const links = [
    kind === "optimization" ? h("a", { href: `#/optimizations/${id}`, on: stop }, "heatmap") : null,
    kind === "walk-forward" ? h("a", { href: `#/walk-forward/${id}`, on: stop }, "windows") : null,
    h("a", { href: `#/monte-carlo/${id}`, on: stop }, "Monte Carlo"),
    h("a", { href: "#", class: "tearsheet", dataset: { id }, on: { click: (e) => { e.preventDefault(); e.stopPropagation(); downloadTearsheet(id, e.target); } } }, "tearsheet"),
  ].filter(Boolean);
  return h("span.links", links.flatMap((a, i) => (i ? [" · ", a] : [a])));
}

/**
 * Download the backtest's tearsheet (`GET /backtests/{id}/tearsheet.html?download=true`): the
 * request carries the page's token, so it is fetched and saved from a blob rather than linked.
 */
export async function downloadTearsheet(id, link) {
  const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
  if (link) link.setAttribute("aria-busy", "true");
  try {
    const res = await fetch(`/backtests/${encodeURIComponent(id)}/tearsheet.html?download=true`, { headers });
    if (!res.ok) throw new Error(`tearsheet: HTTP ${res.status}`);
    const url = URL.createObjectURL(await res.blob());
    const a = h("a", { href: url, download: `tearsheet-${id}.html` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  } finally {
    if (link) link.removeAttribute("aria-busy");
  }
}

/** A short label of a backtest: strategy, its parameters (flags only when set), symbol. */
export function backtestLabel(b) {
  const entries = b.strategy && b.strategy.params ? Object.entries(b.strategy.params).filter(([, v]) => v !== false && v !== null) : [];
  entries.sort(([a], [c]) => a.localeCompare(c));
  const params = entries.map(([k, v]) => (v === true ? k : `${k}=${v}`)).join(", ");
  return `${b.strategy_type}${params ? ` (${params})` : ""} · ${b.symbol}`;
}

/**
 * A loader for dataTable over a keyset-paginated list: remembers the token of every page seen,
 * so "next" and "prev" work; `fetchPage(token, state)` returns {items, next_page_token}. The
 * tokens restart when the sort or the filter changes.
 */
export function keysetLoader(fetchPage) {
  let tokens = [""];
  let key = "";
  return async (state) => {
    const k = JSON.stringify([state.sort, state.desc, state.filter, state.pageSize]);
    if (k !== key) {
      tokens = [""];
      key = k;
      state.page = 0;
    }
    const page = Math.min(state.page, tokens.length - 1);
    state.page = page;
    const doc = await fetchPage(tokens[page], state);
    if (doc.next_page_token) tokens[page + 1] = doc.next_page_token;
    else tokens.length = page + 1;
    return { items: doc.items, total: doc.next_page_token ? null : page * state.pageSize + doc.items.length, more: !!doc.next_page_token };
  };
}

/** [{time, value}] points of a dated series for timeChart (nulls dropped by the chart). */
export function points(dates, values) {
  return dates.map((d, i) => ({ time: d, value: values[i] }));
}

export const pValueColor = (p) => (p == null ? "#94a3b8" : p < 0.05 ? "#16a34a" : p < 0.2 ? "#ca8a04" : "#dc2626");
