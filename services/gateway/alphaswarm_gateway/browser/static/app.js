// The Strategy Browser's shell: sign-in, the top bar, and the view the hash names.
import { api, setToken, token, whenUnauthenticated } from "./core/api.js";
import { allViews, match, onRegister, parseHash } from "./core/router.js";
import { clear, errorBox, h } from "./core/ui.js";
import "./views/index.js";

const main = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signout = document.getElementById("signout");
const dialog = document.getElementById("login");
const ctx = { session: null };
let current = null; // {abort, cleanup}

function drawNav() {
  const { path } = parseHash();
  const here = match(path);
  clear(
    nav,
    allViews()
      .filter((v) => v.nav && (!v.needs || (ctx.session && ctx.session.can[v.needs])))
      .map((v) =>
        h("a", { href: `#/${v.navPath ?? v.path}`, class: here && (here.view.id === v.id || here.view.section === v.id) ? "active" : "" }, v.nav)
      )
  );
}

function askToken(message) {
  document.getElementById("login-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
}

async function signIn() {
  try {
    ctx.session = await api.get("/browser/session");
  } catch (err) {
    ctx.session = null;
    if (err.status === 401 || err.status === 403) {
      askToken(token() ? err.message : "");
      return false;
    }
    clear(main, errorBox(err));
    return false;
  }
  who.textContent = `${ctx.session.subject} · ${ctx.session.role}`;
  who.dataset.role = ctx.session.role;
  document.body.dataset.role = ctx.session.role;
  signout.hidden = ctx.session.via === "none";
  return true;
}

async function route() {
  if (current) {
    current.abort.abort();
    if (typeof current.cleanup === "function") current.cleanup();
    current = null;
  }
  drawNav();
  if (!ctx.session && !(await signIn())) return;
  drawNav();
  let { path, query } = parseHash();
  if (!path) path = allViews().find((v) => v.home)?.path ?? "runs";
  const found = match(path);
  if (!found) {
    clear(main, h("div.card", h("h2", "Not found"), h("p", `No view at #/${path}.`)));
    return;
  }
  const abort = new AbortController();
  current = { abort, cleanup: null };
  document.title = `${found.view.title ? found.view.title(found.params) : found.view.nav || found.view.id} · AlphaSwarm`;
  const el = h("div.view", { dataset: { view: found.view.id } });
  clear(main, el);
  main.dataset.view = found.view.id;
  try {
    const cleanup = await found.view.render(el, found.params, { ...ctx, query, signal: abort.signal });
    if (current && current.abort === abort) current.cleanup = cleanup;
    else if (typeof cleanup === "function") cleanup();
  } catch (err) {
    if (!abort.signal.aborted) clear(el, errorBox(err));
  }
}

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  setToken(document.getElementById("login-token").value.trim());
  document.getElementById("login-token").value = "";
  if (await signIn()) {
    dialog.close();
    route();
  }
});
dialog.addEventListener("cancel", (ev) => ev.preventDefault());
signout.addEventListener("click", () => {
  setToken("");
  ctx.session = null;
  who.textContent = "";
  signout.hidden = true;
  askToken();
});
whenUnauthenticated((err) => {
  ctx.session = null;
  askToken(err.message);
});

onRegister(drawNav);
window.addEventListener("hashchange", route);
route();
