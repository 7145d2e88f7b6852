"""The Strategy Browser: the web page the gateway serves at `/`.

The page is plain HTML, CSS and JavaScript modules under `static/` (no build
step); the chart libraries are vendored under `static/vendor/` (see
docs/browser.md and `make ui-vendor`). Everything ships inside the wheel, so the
page works offline and loads nothing from a third party.

`install_browser(app)` mounts the assets under `/ui` and answers `/` with the
page. Both are public (`auth.PUBLIC_PATHS`): the page holds no data. It asks
for a token, keeps it in the tab's sessionStorage and sends it as
`Authorization: Bearer` to the API routes, which check the caller's role as for
any other client (the progress stream is read with `fetch`, so it carries the
header too).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "INDEX_PATH", "STATIC_DIR", "install_browser"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_PATH = "/ui"
INDEX_PATH = "/"

# Module scripts must come with a JavaScript type; some platforms' tables lack .mjs.
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")

_SECURITY_HEADERS = {
    # Everything the page loads comes from the gateway itself.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install_browser(app: FastAPI) -> None:
    """Mount the page's assets under `/ui` and serve `index.html` at `/`."""
    if not (STATIC_DIR / "index.html").is_file():
        raise RuntimeError(f"the Strategy Browser's assets are missing from {STATIC_DIR}")
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="browser-assets")

    async def index(_: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_SECURITY_HEADERS)

    # A plain Starlette route, as the API docs' pages are: outside the API's operations.
    app.add_route(INDEX_PATH, index, include_in_schema=False)
