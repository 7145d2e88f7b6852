"""The runs views in Chromium: submit a run from the YAML editor, follow it live from the run
list and the run page to completion, check the page's numbers against the API, check every
chart drew, browse the ledger and the audit; the validation messages name the field; roles
hide what they may not do. Screenshots of the main views go to docs/img/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.browser.conftest import SCREENSHOTS, Site, Watched
from tests.e2e.conftest import small_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHARTS = [
    "chart-equity",
    "chart-drawdown",
    "chart-rolling-sharpe",
    "chart-monthly",
    "chart-ic",
    "chart-ic-decay",
    "chart-deciles",
    "chart-exposure",
    "chart-weights",
    "chart-mae-mfe",
]


def _pct(v: float, digits: int = 2) -> str:
    return f"{v * 100:.{digits}f}%"


def _num(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}"


def _run_yaml(name: str) -> str:
    doc = small_run(run_name=name, capture_predictions=True)
    doc["backtest_cfg"] = {**doc["backtest_cfg"], "benchmark": "AAPL"}
    return yaml.safe_dump(doc, sort_keys=False)


def _drawn(page: Any, chart_id: str) -> int:
    box = page.locator(f"#{chart_id}")
    box.wait_for(state="attached")
    # charts below the first screen draw when they come into view (or in idle time)
    box.scroll_into_view_if_needed()
    page.wait_for_selector(f"#{chart_id}[data-chart]", timeout=60_000)
    assert box.get_attribute("data-drawn") == "1", f"{chart_id} did not draw"
    points = int(box.get_attribute("data-points") or 0)
    # The library drew onto a canvas of real size.
    size = page.evaluate(
        """(id) => { const c = document.querySelector('#' + id + ' canvas');
                      return c ? [c.width, c.height] : [0, 0]; }""",
        chart_id,
    )
    assert size[0] > 50 and size[1] > 50, f"{chart_id} has no canvas: {size}"
    return points


def test_submit_follow_live_and_check_the_run_page(site: Site, watched: Watched, browser: Any) -> None:
    page = watched.page
    watched.sign_in(site.tokens["researcher"], "submit")
    page.wait_for_selector("#submit-doc")
    page.fill("#submit-doc", _run_yaml("browser-live-run"))
    page.click("#submit-send")

    # The page moves to the run and follows its stages live.
    page.wait_for_url("**/#/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    page.wait_for_selector("#timeline li[data-state=running], #timeline li[data-state=done]")

    # Meanwhile the run list shows it as a live row.
    other = Watched(browser.new_page(viewport={"width": 1400, "height": 900}), site.url)
    other.sign_in(site.tokens["viewer"], "runs")
    row = other.page.locator(f"#runs-table tr[data-key='{run_id}']")
    row.wait_for()
    first_state = row.locator("td[data-col=status] .badge").inner_text()
    assert first_state in ("pending", "running", "succeeded")

    page.wait_for_selector("#timeline[data-last=completed]", timeout=300_000)
    states = page.eval_on_selector_all(
        "#timeline li", "els => els.map(e => [e.dataset.stage, e.dataset.state])"
    )
    assert [s for s, _ in states][:8] == [
        "accepted",
        "training",
        "registering",
        "deploying",
        "predicting",
        "backtesting",
        "persisting",
        "completed",
    ]
    assert all(state == "done" for _, state in states), states

    # The numbers on the page are the API's.
    run = httpx.get(f"{site.url}/ml/alpha-backtest-runs/{run_id}", headers=site.headers(), timeout=30).json()
    assert run["status"] == "succeeded"
    page.wait_for_selector("#run-metrics dd[data-metric=Sharpe]")
    tr, ml = run["combined_metrics"]["trading"], run["combined_metrics"]["ml"]
    shown = {
        k: page.inner_text(f"#run-metrics dd[data-metric='{k}']")
        for k in ("Score", "Rank IC", "ICIR", "Sharpe", "Max drawdown", "Total return")
    }
    assert shown == {
        "Score": _num(run["combined_metrics"]["score"], 3),
        "Rank IC": _num(ml["ic_spearman"], 4),
        "ICIR": _num(ml["icir"], 3),
        "Sharpe": _num(tr["sharpe"], 2),
        "Max drawdown": _pct(tr["max_drawdown"]),
        "Total return": _pct(tr["total_return"]),
    }

    # The tearsheet downloads with the token and holds the run's Sharpe.
    with page.expect_download() as got:
        page.click("#download-tearsheet")
    saved = got.value.path()
    assert got.value.suggested_filename == f"tearsheet-{run['links']['backtest_id']}.html"
    html = Path(saved).read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") and "Sharpe" in html

    # Every chart drew, with the points the series endpoint serves.
    series = httpx.get(
        f"{site.url}/browser/runs/{run_id}/series", params={"points": 800}, headers=site.headers(), timeout=60
    ).json()
    page.wait_for_selector("#chart-mae-mfe[data-chart]", timeout=60_000)
    points = {c: _drawn(page, c) for c in CHARTS}
    eq = series["equity"]
    assert points["chart-equity"] == sum(
        sum(v is not None for v in eq[k]) for k in ("strategy", "benchmark", "buy_and_hold")
    )
    assert eq["benchmark"] is not None and eq["buy_and_hold"] is not None
    assert points["chart-monthly"] == len(series["monthly"])
    assert points["chart-ic-decay"] == 2 * len(series["ic_decay"]) == 8
    assert points["chart-deciles"] == 20
    scatter = httpx.get(
        f"{site.url}/browser/runs/{run_id}/trades/scatter", headers=site.headers(), timeout=60
    ).json()
    assert scatter["total"] == series["trades"]["total"] and not scatter["sampled"]
    assert points["chart-mae-mfe"] == len(scatter["items"]) == scatter["total"] > 0
    # The final growth of 1 is the backtest's total return.
    assert eq["strategy"][-1] - 1 == pytest.approx(tr["total_return"], rel=1e-6, abs=1e-9)

    # The trade ledger sorts on the server.
    page.wait_for_selector("#trades-table tbody tr")
    page.click("#trades-table th[data-key=pnl]")
    page.wait_for_selector("#trades-table th[data-key=pnl].desc")
    page.wait_for_function("() => !document.querySelector('#trades-table').hasAttribute('aria-busy')")
    top = httpx.get(
        f"{site.url}/browser/runs/{run_id}/trades",
        params={"sort": "pnl", "desc": True, "page_size": 1},
        headers=site.headers(),
        timeout=30,
    ).json()["items"][0]
    first_row = page.locator("#trades-table tbody tr").first
    assert first_row.get_attribute("data-key") == str(top["trade_number"])

    # The prediction audit on the last date, then for one symbol.
    page.wait_for_selector("#audit-table tbody tr")
    n_rows = page.locator("#audit-table tbody tr").count()
    assert n_rows > 0
    page.fill("#audit-symbol", "AAPL")
    page.dispatch_event("#audit-symbol", "change")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#audit-table td[data-col=symbol]')].every(td => td.textContent === 'AAPL')"
    )
    # Another date: the gateway reads that date alone from the catalog; the rows are the API's.
    audit_dates = series["audit"]["dates"]
    middle = (
        dt.date.fromisoformat(audit_dates[0])
        + (dt.date.fromisoformat(audit_dates[-1]) - dt.date.fromisoformat(audit_dates[0])) / 2
    ).isoformat()
    want = httpx.get(
        f"{site.url}/browser/runs/{run_id}/audit",
        params={"date": middle, "page_size": 25},
        headers=site.headers(),
        timeout=60,
    ).json()
    assert want["date"] <= middle and want["date"] != audit_dates[-1] and want["items"]
    page.fill("#audit-symbol", "")
    page.fill("#audit-date", middle)
    page.dispatch_event("#audit-date", "change")
    page.wait_for_function(
        "(d) => { const c = [...document.querySelectorAll('#audit-table td[data-col=date]')];"
        " return c.length && c.every(td => td.textContent === d); }",
        arg=want["date"],
    )
    shown_symbols = page.eval_on_selector_all(
        "#audit-table td[data-col=symbol]", "els => els.map(e => e.textContent)"
    )
    assert shown_symbols == [r["symbol"] for r in want["items"]]

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "run-full.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)  # the charts follow the new size
    page.screenshot(path=str(SCREENSHOTS / "run.png"))

    # The run list caught up with the end of the run (its live row refreshes).
    other.page.wait_for_function(
        f"""() => {{ const b = document.querySelector("#runs-table tr[data-key='{run_id}'] td[data-col=status] .badge");
                    return b && b.textContent === 'succeeded'; }}""",
        timeout=30_000,
    )
    row_sharpe = other.page.inner_text(f"#runs-table tr[data-key='{run_id}'] td[data-col=sharpe]")
    assert row_sharpe == _num(tr["sharpe"], 2)
    other.page.screenshot(path=str(SCREENSHOTS / "runs.png"), full_page=True)
    # The model version in the run list is a link to its page.
    other.page.click(f"#runs-table tr[data-key='{run_id}'] a.model-link")
    other.page.wait_for_url(
        f"**/#/models/{run['links']['model_name']}?version={run['links']['model_version']}"
    )
    other.page.wait_for_selector(f"tr.selected[data-version='{run['links']['model_version']}']")
    other.assert_clean()
    other.page.close()

    # On the run page, the model version and the deployment are links to their pages.
    links = run["links"]
    assert links["model_version"] and links["deployment_id"]
    page.click("dl.facts a.model-link")
    page.wait_for_url(lambda u: u.endswith(_model_hash(links)))
    page.wait_for_selector(f"table.model-versions tr.selected[data-version='{links['model_version']}']")
    assert page.locator("table.model-versions tr.selected").count() == 1
    page.go_back()
    page.wait_for_selector("dl.facts a.deployment-link")
    page.click("dl.facts a.deployment-link")
    page.wait_for_url(f"**/#/deployments/{links['deployment_id']}")
    page.wait_for_selector(
        f"#deployment section[data-deployment='{links['deployment_id']}'] table.deployment-history"
    )
    watched.assert_clean()


def _model_hash(links: dict[str, Any]) -> str:
    name, version = quote(links["model_name"], safe=""), quote(links["model_version"], safe="")
    return f"#/models/{name}?version={version}"


def test_the_run_list_sorts_and_filters_on_the_server(site: Site, watched: Watched) -> None:
    api = httpx.get(
        f"{site.url}/browser/runs",
        params={"sort": "sharpe", "desc": False},
        headers=site.headers(),
        timeout=30,
    ).json()
    assert api["total"] >= 1
    watched.sign_in(site.tokens["viewer"], "runs")
    page = watched.page
    page.wait_for_selector("#runs-table tbody tr")
    page.click("#runs-table th[data-key=sharpe]")  # descending first
    page.wait_for_selector("#runs-table th[data-key=sharpe].desc")
    page.click("#runs-table th[data-key=sharpe]")
    page.wait_for_selector("#runs-table th[data-key=sharpe].asc")
    page.wait_for_function("() => !document.querySelector('#runs-table').hasAttribute('aria-busy')")
    keys = page.eval_on_selector_all("#runs-table tbody tr", "els => els.map(e => e.dataset.key)")
    assert keys == [r["run_id"] for r in api["items"]][: len(keys)]
    page.select_option("#runs-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#runs-table tbody tr').length === 0")
    watched.assert_clean()


def test_validation_messages_name_the_field(site: Site, watched: Watched) -> None:
    watched.sign_in(site.tokens["researcher"], "submit")
    page = watched.page
    bad = yaml.safe_load(_run_yaml("bad"))
    bad["backtest_cfg"]["fees"] = 2.5
    page.fill("#submit-doc", yaml.safe_dump(bad))
    page.click("#submit-send")
    page.wait_for_selector("#submit-result .error-box")
    fields = page.eval_on_selector_all(
        "#submit-result .violations code.field", "els => els.map(e => e.textContent)"
    )
    api = httpx.post(
        f"{site.url}/ml/alpha-backtest-runs",
        content=yaml.safe_dump(bad).encode(),
        headers={**site.headers(), "content-type": "application/x-yaml"},
        timeout=30,
    )
    assert api.status_code == 422
    assert fields and fields[0] == api.json()["error"]["details"]["field"]
    assert fields[0] == "backtest_cfg.fees"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "submit.png"))
    # The one failed request is the refused submission itself.
    assert len(watched.failed) == 1 and "HTTP 422" in watched.failed[0]
    watched.failed.clear()
    watched.console_errors[:] = [e for e in watched.console_errors if "422" not in e]
    watched.assert_clean()


def test_a_viewer_sees_no_submit_or_cancel(site: Site, watched: Watched) -> None:
    watched.sign_in(site.tokens["viewer"], "runs")
    page = watched.page
    page.wait_for_selector("#runs-table")
    nav = page.eval_on_selector_all("#nav a", "els => els.map(e => e.textContent)")
    assert "Runs" in nav and "Submit" not in nav
    assert page.locator("a.button[href='#/submit']").count() == 0
    assert page.inner_text("#who").endswith("viewer")
    watched.assert_clean()


def test_a_wrong_token_is_refused_in_the_dialog(site: Site, watched: Watched) -> None:
    page = watched.page
    page.goto(site.url + "/")
    page.wait_for_selector("#login[open]")
    page.fill("#login-token", "asw_not-a-token")
    page.click("#login-submit")
    page.wait_for_function("() => document.querySelector('#login-error').textContent.length > 0")
    assert page.locator("#login[open]").count() == 1
    msg = page.inner_text("#login-error")
    assert "token" in msg.lower() or "auth" in msg.lower(), msg


def test_the_browser_routes_refuse_bad_input_naming_the_field(site: Site) -> None:
    bad = httpx.get(f"{site.url}/browser/runs", params={"sort": "nope"}, headers=site.headers(), timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "sort"
    bad = httpx.get(f"{site.url}/browser/runs", params={"page_size": 0}, headers=site.headers(), timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "page_size"
    missing = httpx.get(
        f"{site.url}/browser/runs/00000000-0000-0000-0000-000000000000/series",
        headers=site.headers(),
        timeout=30,
    )
    assert missing.status_code == 404
    anonymous = httpx.get(f"{site.url}/browser/runs", timeout=30)
    assert anonymous.status_code == 401
    assert httpx.get(f"{site.url}/", timeout=30).status_code == 200  # the page itself is public


def test_a_job_submitted_from_the_form_is_followed_to_its_outcome(site: Site, watched: Watched) -> None:
    watched.sign_in(site.tokens["researcher"], "submit?kind=backtest")
    page = watched.page
    page.wait_for_selector("#submit-doc")
    assert page.input_value("#submit-kind") == "backtest"
    page.fill(
        "#submit-doc",
        yaml.safe_dump(
            {
                "source": {
                    "dataset_cfg": {"source": "sp500", "start_date": "2015-01-01", "end_date": "2016-12-31"},
                    "symbols": ["AAPL"],
                },
                "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 5, "slow_period": 20}},
            }
        ),
    )
    page.click("#submit-send")
    page.wait_for_selector("#job-outcome", timeout=300_000)
    assert page.get_attribute("#job-outcome", "data-status") == "succeeded"
    task_id = page.inner_text("#job-task")
    task = httpx.get(f"{site.url}/tasks/{task_id}", headers=site.headers(), timeout=30).json()
    assert task["status"] == "succeeded"
    stages = page.eval_on_selector_all("#job-events li", "els => els.map(e => e.dataset.stage)")
    assert stages and stages[-1] == "completed"
    watched.assert_clean()
