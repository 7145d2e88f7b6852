"""The tearsheet file in a real browser (Debian's Chromium driven by Playwright): downloaded from the
gateway after a real run, opened from disk with the network cut, it draws every chart, shows the
catalog's numbers, logs no console error and makes no request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alphaswarm.embedded import EmbeddedStack
from alphaswarm_common.reporting import format_metric
from alphaswarm_common.settings import Settings
from tests.e2e.conftest import serving, small_run, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = os.environ.get("ALPHASWARM_CHROMIUM", "/usr/bin/chromium")
CHARTS = ["equity", "drawdown", "rolling_sharpe", "monthly_returns", "ic", "ic_decay", "deciles"]


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A finished run's tearsheet saved from the gateway, and the catalog's view of its backtest."""
    settings = Settings(
        home=tmp_path_factory.mktemp("browser-home"),
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
    )
    with (
        EmbeddedStack(settings) as stack,
        serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url),
    ):
        body = yaml.safe_dump(small_run(run_name="tearsheet-browser")).encode()
        accepted = httpx.post(url + "/ml/alpha-backtest-runs", content=body, timeout=60).json()
        sse_events(url + accepted["stream_url"])
        run = httpx.get(f"{url}/ml/alpha-backtest-runs/{accepted['run_id']}", timeout=30).json()
        assert run["status"] == "succeeded", run
        backtest_id = run["links"]["backtest_id"]
        page = httpx.get(
            f"{url}/backtests/{backtest_id}/tearsheet.html", params={"download": "true"}, timeout=120
        )
        assert page.status_code == 200
        catalog = httpx.get(f"{url}/backtests/{backtest_id}", timeout=60).json()
        path = tmp_path_factory.mktemp("download") / f"tearsheet-{backtest_id}.html"
        path.write_bytes(page.content)
        yield path, catalog


def test_the_tearsheet_file_renders_offline_with_the_catalogs_numbers(
    downloaded: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    path, catalog = downloaded
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri(), wait_until="load")

        # Every chart drew: each <img> decoded a real bitmap.
        drawn = page.eval_on_selector_all(
            "img.chart",
            "els => els.map(e => [e.dataset.chart, e.complete && e.naturalWidth > 200 && e.naturalHeight > 100])",
        )
        assert drawn == [[name, True] for name in CHARTS]
        # The metrics table shows the catalog's numbers, formatted with their units.
        cells = page.eval_on_selector_all(
            "#metrics td[data-metric^='trading.']",
            "els => els.map(e => [e.dataset.metric.slice(8), e.dataset.value, e.textContent])",
        )
        assert {name for name, _, _ in cells} == set(catalog["metrics"])
        for name, value, text in cells:
            want = catalog["metrics"][name]
            if want is None:
                assert value == "" and text.startswith("n/a ("), name
            else:
                assert float(value) == want and text == format_metric(name, want), name
        verdict = page.text_content("#verdict") or ""
        assert "buy-and-hold of the universe" in verdict
        assert page.text_content("#config") and "long_short_topk" in (page.text_content("#config") or "")
        shot = Path(os.environ.get("ALPHASWARM_SCREENSHOT_DIR", tmp_path)) / "tearsheet.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == []
    # Only the file itself and its inline data: images were loaded; nothing from any network.
    assert [u for u in requests if not u.startswith(("file://", "data:"))] == []
    assert shot.stat().st_size > 50_000
    shutil.copy(shot, tmp_path / "kept.png")
