// A tiny hash router. A view registers itself with `register({...})`; the shell shows the
// views that have a `nav` label in the top bar and calls `render` when the hash matches.
//
//   register({
//     id: "runs",                 // unique name
//     path: "runs/:run_id",       // after "#/"; ":name" captures one segment
//     nav: "Runs", order: 10,     // optional: a link in the top bar
//     title: (params) => "Run",   // optional: the document title
//     render: async (el, params, ctx) => cleanup?  // draw into `el`; may return a cleanup function
//   });
//
// `ctx` carries `session` (subject, role, can.submit/can.admin), `query` (the hash's ?query as
// URLSearchParams) and `signal` (aborted when the user leaves the view).

const views = [];
const listeners = [];

export function register(view) {
  if (!view.id || view.path === undefined || typeof view.render !== "function") {
    throw new Error(`a view needs id, path and render: ${JSON.stringify(view.id)}`);
  }
  if (views.some((v) => v.id === view.id)) throw new Error(`view ${view.id} is registered twice`);
  view.pattern = compile(view.path);
  views.push(view);
  views.sort((a, b) => (a.order ?? 100) - (b.order ?? 100));
  listeners.forEach((fn) => fn());
}

export function allViews() {
  return views.slice();
}

export function onRegister(fn) {
  listeners.push(fn);
}

function compile(path) {
  const names = [];
  const source = path
    .split("/")
    .map((part) => {
      if (part.startsWith(":")) {
        names.push(part.slice(1));
        return "([^/]+)";
      }
      return part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    })
    .join("/");
  return { re: new RegExp(`^${source}$`), names };
}

export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

export function match(path) {
  for (const view of views) {
    const m = view.pattern.re.exec(path);
    if (m) {
      const params = {};
      view.pattern.names.forEach((name, i) => {
        params[name] = decodeURIComponent(m[i + 1]);
      });
      return { view, params };
    }
  }
  return null;
}

export function href(path, query) {
  const q = query ? new URLSearchParams(query).toString() : "";
  return `#/${path}${q ? `?${q}` : ""}`;
}

export function go(path, query) {
  location.hash = href(path, query);
}
