"""The catalog, models and deployments views in Chromium, on rows real backtester jobs and an
alpha-backtest run wrote: the backtest catalog, the compare view with three backtests, the
optimization heatmap, walk-forward windows, the Monte Carlo fan, a portfolio's weights, the
models page, the deployments page with its role-gated actions, and the dataset leaderboard.
Every chart must draw (a canvas with data points), with no console error and no failed request;
numbers on the page are checked against the API. Screenshots go to docs/img/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from tests.browser.conftest import SCREENSHOTS, Site, Watched
from tests.e2e.conftest import small_run, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = {
    "source": "sp500",
    "start_date": "2013-02-01",
    "end_date": "2017-12-29",
    "symbols": ["AAPL", "MSFT", "JNJ"],
}
WINDOW = {"start_date": "2014-01-02"}


def _submit(site: Site, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    headers = site.headers("researcher")
    resp = httpx.post(site.url + path, content=yaml.safe_dump(doc).encode(), headers=headers, timeout=60)
    assert resp.status_code == 202, resp.text
    events = sse_events(site.url + resp.json()["stream_url"], headers=headers)
    assert events[-1]["stage"] == "completed", events[-1]
    if "task_id" in resp.json() and path != "/ml/alpha-backtest-runs":
        task = httpx.get(f"{site.url}/tasks/{resp.json()['task_id']}", headers=headers, timeout=30).json()
        return task["result"]
    return resp.json()


def _api(site: Site, path: str, **params: Any) -> Any:
    resp = httpx.get(site.url + path, params=params, headers=site.headers("viewer"), timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def seeded(site: Site) -> dict[str, Any]:
    backtests = [
        _submit(
            site,
            "/backtests",
            {
                "source": {"dataset_cfg": DATASET, "symbols": symbols},
                "strategy_cfg": {"type": "sma_cross", "params": params},
                "backtest_cfg": WINDOW,
            },
        )["backtest_id"]
        for symbols, params in (
            (["AAPL"], {"fast_period": 10, "slow_period": 30}),
            (["MSFT"], {"fast_period": 20, "slow_period": 50}),
            (["AAPL", "JNJ"], {"fast_period": 5, "slow_period": 40}),
        )
    ]
    opt = _submit(
        site,
        "/optimizations",
        {
            "source": {"dataset_cfg": DATASET, "symbols": ["AAPL"]},
            "strategy_type": "sma_cross",
            "objective": "sharpe",
            "grid": {"fast_period": [5, 10, 20], "slow_period": [30, 60, 90]},
            "backtest_cfg": WINDOW,
        },
    )
    wf = _submit(
        site,
        "/walk-forward-tests",
        {
            "source": {"dataset_cfg": DATASET, "symbols": ["MSFT"]},
            "strategy_type": "sma_cross",
            "grid": {"fast_period": [5, 10], "slow_period": [30, 60]},
            "in_sample_bars": 252,
            "out_of_sample_bars": 126,
        },
    )
    pf = _submit(
        site,
        "/portfolio-backtests",
        {
            "dataset_cfg": DATASET,
            "portfolio_name": "browser-three-legs",
            "legs": [
                {"symbol": "AAPL"},
                {"symbol": "MSFT", "strategy_cfg": {"type": "sma_cross"}},
                {"symbol": "JNJ"},
            ],
            "rebalance_frequency": "monthly",
            "position_sizing_method": "inverse_volatility",
            "backtest_cfg": {"initial_capital": 100000, "start_date": "2013-09-03"},
        },
    )
    accepted = _submit(site, "/ml/alpha-backtest-runs", small_run(run_name="browser-catalog"))
    run = _api(site, f"/ml/alpha-backtest-runs/{accepted['run_id']}")
    assert run["status"] == "succeeded", run
    return {"backtests": backtests, "optimization": opt, "walk_forward": wf, "portfolio": pf, "run": run}


def _drawn(page: Any, selector: str) -> int:
    box = page.locator(selector).first
    box.wait_for(state="attached")
    page.wait_for_function(
        "(s) => { const e = document.querySelector(s); return e && e.dataset.drawn !== undefined; }",
        arg=selector,
    )
    assert box.get_attribute("data-drawn") == "1", f"{selector} did not draw"
    size = page.evaluate(
        "(s) => { const c = document.querySelector(s + ' canvas'); return c ? [c.width, c.height] : [0, 0]; }",
        selector,
    )
    assert size[0] > 50 and size[1] > 50, f"{selector} has no canvas: {size}"
    return int(box.get_attribute("data-points") or 0)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_catalog_list_filters_and_picks_three_backtests_to_compare(
    site: Site, seeded: dict[str, Any], watched: Watched
) -> None:
    page = watched.page
    watched.sign_in(site.tokens["viewer"], "backtests")
    page.wait_for_selector("#backtests-table tbody tr")
    page.fill("#bt-strategy", "sma_cross")
    page.wait_for_function(
        """() => { const tds = [...document.querySelectorAll('#backtests-table td[data-col=strategy_type]')];
                   return tds.length > 0 && tds.every((td) => td.textContent === 'sma_cross'); }"""
    )
    for bid in seeded["backtests"]:
        page.wait_for_selector(f"#backtests-table input[data-id='{bid}']").check()
    assert page.inner_text("#bt-compare") == "Compare (3)"
    # the tearsheet of a row downloads with the page's token
    with page.expect_download() as got:
        page.click(f"#backtests-table a.tearsheet[data-id='{seeded['backtests'][0]}']")
    html = Path(got.value.path()).read_text()
    stored = _api(site, f"/backtests/{seeded['backtests'][0]}")
    assert got.value.suggested_filename == f"tearsheet-{seeded['backtests'][0]}.html"
    assert "<html" in html.lower() and f"{stored['metrics']['sharpe']:.2f}" in html
    _shot(page, "browser-catalog.png")
    page.click("#bt-compare")
    page.wait_for_selector("#compare-metrics")
    points = _drawn(page, "#compare-chart")
    doc = _api(site, "/catalog-views/compare", backtest_id=seeded["backtests"], points=800)
    assert points == sum(sum(v is not None for v in g) for g in doc["series"]["growth"])
    # the metrics table shows the API's numbers, in the order picked
    cells = page.locator("#compare-metrics tr[data-metric='sharpe'] td").all_inner_texts()
    assert cells == [f"{v:,.2f}" for v in doc["metrics"]["sharpe"]]
    cells = page.locator("#compare-metrics tr[data-metric='max_drawdown'] td").all_inner_texts()
    assert cells == [f"{v * 100:.2f}%" for v in doc["metrics"]["max_drawdown"]]
    _shot(page, "browser-compare.png")
    watched.assert_clean()


def test_optimization_heatmap_shows_every_set_with_its_dsr_p_value(
    site: Site, seeded: dict[str, Any], watched: Watched
) -> None:
    page = watched.page
    bid = seeded["optimization"]["backtest_id"]
    watched.sign_in(site.tokens["viewer"], f"optimizations/{bid}")
    page.wait_for_selector("#heatmap-cells tbody tr")
    assert _drawn(page, "#heatmap-chart") == 9
    rows = _api(site, "/optimizations", backtest_id=bid, page_size=500)["items"]
    shown = page.locator("#heatmap-cells tbody tr td:nth-child(4)").all_inner_texts()
    expected = [f"{r['p_value']:,.4f}" for r in sorted(rows, key=lambda r: r["rank"])]
    assert shown == expected
    _shot(page, "browser-optimization-heatmap.png")
    # the axes can be swapped
    page.select_option("#heatmap-x", "slow_period")
    page.wait_for_function("() => location.hash.includes('x=slow_period&y=fast_period')")
    page.wait_for_function("() => document.querySelector('#heatmap-x')?.value === 'slow_period'")
    assert _drawn(page, "#heatmap-chart") == 9
    watched.assert_clean()


def test_walk_forward_monte_carlo_and_portfolio_views_draw(
    site: Site, seeded: dict[str, Any], watched: Watched
) -> None:
    page = watched.page
    pid = seeded["walk_forward"]["parent_backtest_id"]
    watched.sign_in(site.tokens["viewer"], f"walk-forward/{pid}")
    page.wait_for_selector("#wf-windows tbody tr")
    n = seeded["walk_forward"]["n_windows"]
    assert _drawn(page, "#wf-bars") >= n
    assert _drawn(page, "#wf-ratios") >= n
    _shot(page, "browser-walk-forward.png")

    bid = seeded["backtests"][0]
    page.goto(f"{site.url}/#/monte-carlo/{bid}?n_simulations=500&seed=3")
    assert _drawn(page, "#mc-fan") > 100
    fan = _api(site, f"/catalog-views/monte-carlo/{bid}", n_simulations=500, seed=3, points=300)
    assert page.inner_text("[data-metric='P(loss)']") == f"{fan['probability_of_loss'] * 100:.1f}%"
    _shot(page, "browser-monte-carlo.png")

    page.goto(f"{site.url}/#/portfolios")
    page.wait_for_selector("#portfolios-table tbody tr").click()
    page.wait_for_selector("#pf-weights")
    assert _drawn(page, "#pf-equity") > 10
    assert _drawn(page, "#pf-weights") > 10
    assert _drawn(page, "#pf-effective") > 10
    _shot(page, "browser-portfolio.png")
    watched.assert_clean()


def test_models_deployments_and_leaderboard(site: Site, seeded: dict[str, Any], watched: Watched) -> None:
    page = watched.page
    run = seeded["run"]
    model = run["links"]["model_name"]
    watched.sign_in(site.tokens["viewer"], "models")
    page.wait_for_selector(f"table.model-versions[data-model='{model}'] tbody tr")
    assert _drawn(page, f".chart-box[data-model='{model}']") > 0
    _shot(page, "browser-models.png")

    dep = run["links"]["deployment_id"]
    page.goto(f"{site.url}/#/deployments")
    card = f"section[data-deployment='{dep}']"
    page.wait_for_selector(card)
    assert page.locator(f"{card} button[data-action]").count() == 0  # a viewer sees no action
    assert _drawn(page, f".chart-box[data-deployment='{dep}']") > 0

    fingerprint = load_panel(DatasetConfig.model_validate(DATASET)).fingerprint
    page.goto(f"{site.url}/#/leaderboard")
    page.wait_for_selector(f"#datasets-table tr[data-key='{fingerprint}']").click()
    page.wait_for_selector("#leaderboard-table tbody tr")
    assert _drawn(page, "#leaderboard-chart") > 0
    board = _api(site, f"/catalog-views/leaderboard/{fingerprint}")
    assert page.inner_text("[data-metric='Trials on this data']") == f"{board['n_trials']:,}"
    assert page.inner_text("[data-metric='Backtests']") == f"{board['n_entries']:,}"
    shown = page.locator("#leaderboard-table tbody tr td[data-col=deflated_sharpe]").all_inner_texts()
    assert shown == [
        "—" if e["deflated_sharpe"] is None else f"{e['deflated_sharpe'] * 100:.1f}%"
        for e in board["entries"]
    ]
    # an alpha run's entry names its model version, a link to the version's page; others say "—"
    cells = page.locator("#leaderboard-table tbody td[data-col=model_name]")
    for i, entry in enumerate(board["entries"][: cells.count()]):
        link = cells.nth(i).locator("a.model-link")
        if entry.get("model_name"):
            assert link.get_attribute("href") == (
                f"#/models/{entry['model_name']}?version={entry['model_version']}"
            )
        else:
            assert link.count() == 0 and cells.nth(i).inner_text() == "—"
    _shot(page, "browser-leaderboard.png")
    watched.assert_clean()


def test_an_admin_sees_and_uses_the_deployment_actions(
    site: Site, seeded: dict[str, Any], watched: Watched
) -> None:
    page = watched.page
    dep = seeded["run"]["links"]["deployment_id"]
    card = f"section[data-deployment='{dep}']"
    watched.sign_in(site.tokens["researcher"], "deployments")
    page.wait_for_selector(card)
    actions = page.locator(f"{card} button[data-action]").evaluate_all("bs => bs.map(b => b.dataset.action)")
    assert actions == ["roll"]  # a researcher may roll, not promote, roll back or retire
    # sign out and in again as an admin
    page.evaluate("sessionStorage.clear()")
    page.goto(f"{site.url}/?as=admin#/deployments")
    page.wait_for_selector("#login[open]")
    page.fill("#login-token", site.tokens["admin"])
    page.click("#login-submit")
    watched.console_errors.clear()
    watched.failed.clear()
    page.wait_for_selector(card)
    actions = page.locator(f"{card} button[data-action]").evaluate_all("bs => bs.map(b => b.dataset.action)")
    assert actions == ["roll", "promote", "rollback", "retire"]
    _shot(page, "browser-deployments.png")
    page.once("dialog", lambda d: d.accept())
    page.click(f"{card} button[data-action='retire']")
    page.wait_for_selector(f"{card} .badge.s-retired")
    got = httpx.get(f"{site.url}/deployments/{dep}", headers=site.headers("viewer"), timeout=30).json()
    assert got["state"] == "retired"
    assert page.locator(f"{card} button[data-action]").count() == 0
    watched.assert_clean()
