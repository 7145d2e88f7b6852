// The REST client of the page: the token (sessionStorage, this tab only), JSON calls with
// `Authorization: Bearer`, the gateway's error shape, and the progress stream read with fetch
// (EventSource cannot send headers).

const TOKEN_KEY = "alphaswarm.token";
let onUnauthenticated = () => {};

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function whenUnauthenticated(fn) {
  onUnauthenticated = fn;
}

/** An error answered by the API: `status`, `code`, `reason`, `field` and `violations`. */
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.reason = err.reason || "";
    const details = err.details || {};
    this.field = details.field || null;
    this.violations = details.violations || (this.field ? [{ field: this.field, description: this.message }] : []);
    this.requestId = details.request_id || "";
  }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export function url(path, params) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u.pathname + u.search;
}

async function call(method, path, { params, body, contentType, signal } = {}) {
  const init = { method, headers: headers(contentType ? { "Content-Type": contentType } : {}), signal };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  if (body !== undefined && !contentType) init.headers["Content-Type"] = "application/json";
  const res = await fetch(url(path, params), init);
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, doc);
    if (res.status === 401) onUnauthenticated(err);
    throw err;
  }
  return doc;
}

/** Fetch a file with the token and hand it to the browser as a download named `filename`. */
export async function download(path, filename) {
  const res = await fetch(path, { headers: headers({ Accept: "*/*" }) });
  if (!res.ok) {
    const err = new ApiError(res.status, await res.json().catch(() => null));
    if (res.status === 401) onUnauthenticated(err);
    throw err;
  }
  const href = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

export const api = {
  get: (path, params, opts = {}) => call("GET", path, { ...opts, params }),
  post: (path, body, opts = {}) => call("POST", path, { ...opts, body }),
  del: (path, opts = {}) => call("DELETE", path, opts),
};

/**
 * Follow a task's progress events (`/chat/stream/{task_id}`) until the terminal one.
 * `onEvent(event)` gets each parsed event; resolves with the last event. Reconnects with
 * `Last-Event-ID` when the connection drops before the end.
 */
export async function followStream(streamUrl, onEvent, { signal } = {}) {
  let lastId = "";
  let last = null;
  for (let attempt = 0; attempt < 20 && !signal?.aborted; attempt++) {
    const h = headers({ Accept: "text/event-stream" });
    if (lastId) h["Last-Event-ID"] = lastId;
    let res;
    try {
      res = await fetch(streamUrl, { headers: h, signal });
    } catch (err) {
      if (signal?.aborted) return last;
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (!res.ok) {
      const err = new ApiError(res.status, await res.json().catch(() => null));
      if (res.status === 401) onUnauthenticated(err);
      throw err;
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const msg = parseBlock(block);
          if (!msg || msg.event !== "progress") continue;
          if (msg.id) lastId = msg.id;
          last = JSON.parse(msg.data);
          onEvent(last);
          if (TERMINAL.has(last.stage)) ended = true;
        }
      }
    } catch (err) {
      if (signal?.aborted) return last;
    }
    if (ended) return last;
  }
  return last;
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function parseBlock(block) {
  const msg = { event: "message", data: "", id: "" };
  let seen = false;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const key = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (key === "data") msg.data += (msg.data ? "\n" : "") + value;
    else if (key === "event") msg.event = value;
    else if (key === "id") msg.id = value;
    seen = true;
  }
  return seen && msg.data ? msg : null;
}
