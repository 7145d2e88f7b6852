"""The Strategy Browser in a real browser: Playwright driving Debian's Chromium
(`/usr/bin/chromium`, or `ALPHASWARM_CHROMIUM`) against a gateway served by uvicorn over an
embedded stack with token authentication.

Without Chromium the tests are skipped, except with `CI=true`, where they fail: CI must run
them (`scripts/ensure_services.sh` installs the package)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.auth import hash_token, new_token
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials
from tests.e2e.conftest import serving

CHROMIUM = Path(os.environ.get("ALPHASWARM_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI runs the browser tests", pytrace=False)
    pytest.skip(message)


@dataclass
class Site:
    """The served gateway, its stack and one token per role."""

    url: str
    stack: EmbeddedStack
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "researcher") -> dict[str, str]:
        return {"authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    settings = Settings(
        home=tmp_path_factory.mktemp("browser-home"),
        auth="tokens",
        token_cache_seconds=0,
        ml_prediction_audit_enabled=True,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
        data_roots=[tmp_path_factory.getbasetemp()],
        submit_burst=50,
        max_concurrent_runs_per_token=20,
    )
    with EmbeddedStack(settings) as stack:
        persistence = ppb_grpc.PersistenceServiceStub(
            channel(stack.settings.persistence_addr or "", credentials=client_credentials(stack.settings))
        )
        tokens = {}
        for role in ("viewer", "researcher", "admin"):
            token = new_token()
            persistence.CreateApiToken(
                ppb.CreateApiTokenRequest(
                    name=f"browser-{role}-{uuid.uuid4().hex[:6]}", role=role, token_hash=hash_token(token)
                ),
                timeout=10,
            )
            tokens[role] = token
        with serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url):
            yield Site(url=url, stack=stack, tokens=tokens)


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Any]:
    """Chromium for one test module: Playwright's sync API runs one instance per thread at a time,
    so a module that starts its own must not find this one still running."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(chromium_path),
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        yield b
        b.close()


class Watched:
    """A page whose console errors and failed requests are recorded."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _request_failed(self, req: Any) -> None:
        # A stream or refresh cut short by leaving a view is the page's own doing, not a failure.
        if "ERR_ABORTED" in (req.failure or ""):
            return
        self.failed.append(f"{req.method} {req.url}: {req.failure}")

    def _response(self, resp: Any) -> None:
        if resp.status >= 400 and resp.url.startswith(self.base):
            self.failed.append(f"{resp.request.method} {resp.url}: HTTP {resp.status}")

    def sign_in(self, token: str, path: str = "") -> None:
        self.page.goto(f"{self.base}/#/{path}")
        self.page.wait_for_selector("#login[open]")
        self.page.fill("#login-token", token)
        self.page.click("#login-submit")
        self.page.wait_for_selector("#who:not(:empty)")
        # Before signing in, the page's first call answered 401 (that is how it knew to ask).
        self.console_errors.clear()
        self.failed.clear()

    def assert_clean(self, *, allow: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.console_errors if not any(a in e for a in allow)]
        failed = [f for f in self.failed if not any(a in f for a in allow)]
        assert not errors, f"console errors: {errors}"
        assert not failed, f"failed requests: {failed}"


@pytest.fixture
def watched(browser: Any, site: Site) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield Watched(page, site.url)
    context.close()
