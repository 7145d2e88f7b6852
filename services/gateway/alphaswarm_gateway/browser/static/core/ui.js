// Small DOM helpers, number formats and a paginated sortable table shared by every view.

/** h("div.card#id", {attrs, on: {click}}, ...children) -> Element. */
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || "div");
  for (const part of rest) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);

export const fmt = {
  num: (v, digits = 2) => (isNum(v) ? v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "—"),
  int: (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : "—"),
  pct: (v, digits = 2) => (isNum(v) ? `${(v * 100).toFixed(digits)}%` : "—"),
  bps: (v, digits = 1) => (isNum(v) ? `${(v * 1e4).toFixed(digits)} bps` : "—"),
  ratio: (v) => (isNum(v) ? v.toFixed(3) : "—"),
  date: (v) => (v ? String(v).slice(0, 10) : "—"),
  datetime: (v) => (v ? new Date(v).toISOString().replace("T", " ").slice(0, 19) : "—"),
  duration: (s) => {
    if (!isNum(s)) return "—";
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  },
  text: (v) => (v === null || v === undefined || v === "" ? "—" : String(v)),
};

export function badge(status) {
  return h(`span.badge.s-${String(status || "unknown").toLowerCase()}`, String(status || "unknown"));
}

export function errorBox(err) {
  const box = h("div.error-box", { role: "alert" }, h("strong", err.status ? `Error ${err.status}` : "Error"), " ", err.message || String(err));
  if (err.violations && err.violations.length) {
    box.append(h("ul.violations", err.violations.map((v) => h("li", h("code.field", v.field || "(body)"), ": ", v.description))));
  }
  if (err.requestId) box.append(h("div.muted", `request id ${err.requestId}`));
  return box;
}

export function metricGrid(items) {
  return h(
    "dl.metrics",
    items.map(([label, value, hint]) => h("div.metric", { title: hint || "" }, h("dt", label), h("dd", { dataset: { metric: label } }, value)))
  );
}

/**
 * A sortable, paginated table. `load({sort, desc, page, pageSize, filter})` returns
 * `{items, total}` (total may be null when unknown: then "next" stays enabled while a full page
 * comes back). Columns: {key, label, format?(value,row), sortable?, num?}.
 */
export function dataTable(el, { columns, load, pageSize = 50, sort = null, desc = true, onRow, rowKey, id }) {
  const state = { sort, desc, page: 0, pageSize, filter: {} };
  const table = h("table.data", { id });
  const pager = h("div.pager");
  clear(el, h("div.table-wrap", table), pager);
  let seq = 0;

  async function refresh() {
    const mine = ++seq;
    table.setAttribute("aria-busy", "true");
    let res;
    try {
      res = await load({ ...state });
    } catch (err) {
      if (mine === seq) clear(pager, errorBox(err));
      table.removeAttribute("aria-busy");
      return;
    }
    if (mine !== seq) return;
    const head = h(
      "tr",
      columns.map((c) => {
        const th = h("th", { class: c.num ? "num" : "", scope: "col" }, c.label);
        if (c.sortable) {
          th.classList.add("sortable");
          th.dataset.key = c.key;
          if (state.sort === c.key) th.classList.add(state.desc ? "desc" : "asc");
          th.addEventListener("click", () => {
            if (state.sort === c.key) state.desc = !state.desc;
            else {
              state.sort = c.key;
              state.desc = true;
            }
            state.page = 0;
            refresh();
          });
        }
        return th;
      })
    );
    const body = res.items.map((row) => {
      const tr = h(
        "tr",
        { dataset: rowKey ? { key: row[rowKey] } : {} },
        columns.map((c) => {
          const v = c.key.split(".").reduce((o, k) => (o == null ? o : o[k]), row);
          const shown = c.format ? c.format(v, row) : fmt.text(v);
          return h("td", { class: c.num ? "num" : "", dataset: { col: c.key } }, shown);
        })
      );
      if (onRow) {
        tr.classList.add("clickable");
        tr.addEventListener("click", () => onRow(row));
      }
      return tr;
    });
    clear(table, h("thead", head), h("tbody", body));
    table.removeAttribute("aria-busy");
    table.dataset.at = performance.now().toFixed(0); // rows drawn at, ms since the page's navigation
    const pages = res.total == null ? null : Math.max(1, Math.ceil(res.total / state.pageSize));
    const hasNext = pages == null ? res.items.length === state.pageSize : state.page + 1 < pages;
    clear(
      pager,
      h("button", { type: "button", disabled: state.page === 0, on: { click: () => { state.page--; refresh(); } } }, "‹ Prev"),
      h("span.muted", pages == null ? `page ${state.page + 1}` : `page ${state.page + 1} of ${pages} · ${fmt.int(res.total)} rows`),
      h("button", { type: "button", disabled: !hasNext, on: { click: () => { state.page++; refresh(); } } }, "Next ›")
    );
  }

  refresh();
  return {
    refresh,
    setFilter(filter) {
      state.filter = filter;
      state.page = 0;
      return refresh();
    },
    state,
  };
}

/** A loader over rows held in the page: sorts, filters (substring per key) and pages locally. */
export function localLoader(rows) {
  return async ({ sort, desc, page, pageSize, filter }) => {
    let out = rows;
    for (const [k, v] of Object.entries(filter || {})) {
      if (v === "" || v == null) continue;
      const needle = String(v).toLowerCase();
      out = out.filter((r) => String(r[k] ?? "").toLowerCase().includes(needle));
    }
    if (sort) {
      out = out.slice().sort((a, b) => compare(a[sort], b[sort]) * (desc ? -1 : 1));
    }
    return { items: out.slice(page * pageSize, (page + 1) * pageSize), total: out.length };
  };
}

function compare(a, b) {
  if (a == null && b == null) return 0;
  if (a == null) return -1;
  if (b == null) return 1;
  return typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b));
}

export function section(title, ...children) {
  return h("section.card", h("h2", title), ...children);
}

/** A link to a model version's page (`#/models/<name>?version=<v>`), shown as "name vV". */
export function modelLink(name, version, label) {
  if (!name) return label ?? "—";
  const href = `#/models/${encodeURIComponent(name)}${version ? `?version=${encodeURIComponent(version)}` : ""}`;
  return h("a.model-link", { href, on: { click: (e) => e.stopPropagation() } }, label ?? `${name}${version ? ` v${version}` : ""}`);
}

/** A link to a deployment's page (`#/deployments/<id>`), shown as its id. */
export function deploymentLink(id) {
  if (!id) return "—";
  return h("a.deployment-link", { href: `#/deployments/${encodeURIComponent(id)}`, on: { click: (e) => e.stopPropagation() } }, h("code", id));
}
