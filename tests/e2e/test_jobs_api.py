"""Backtester jobs over REST: submit, stream to the terminal event, read the task and the
catalog rows it produced; bad documents are 4xx naming the field with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import sse_events

pytestmark = pytest.mark.e2e

SOURCE = {
    "dataset_cfg": {"source": "sp500", "start_date": "2012-01-01", "end_date": "2018-12-31"},
    "symbols": ["AAPL", "MSFT"],
}


def _terminal(rest_url: str, stream_url: str) -> dict:
    events = sse_events(rest_url + stream_url)
    assert events
    return events[-1]


def _submit(rest_url: str, path: str, doc: dict) -> dict:
    resp = httpx.post(rest_url + path, content=yaml.safe_dump(doc).encode(), timeout=60)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert set(accepted) == {"task_id", "kind", "status", "stream_url"}
    end = _terminal(rest_url, accepted["stream_url"])
    task = httpx.get(f"{rest_url}/tasks/{accepted['task_id']}", timeout=30).json()
    assert end["stage"] == "completed", end["message"]
    assert task["status"] == "succeeded"
    return task


def test_backtest_job_lands_in_the_catalog(rest_url: str) -> None:
    task = _submit(
        rest_url,
        "/backtests",
        {
            "source": SOURCE,
            "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 10, "slow_period": 30}},
        },
    )
    backtest_id = task["result"]["backtest_id"]
    stored = httpx.get(f"{rest_url}/backtests/{backtest_id}", timeout=30).json()
    assert stored["strategy_type"] == "sma_cross"
    trades = httpx.get(f"{rest_url}/backtests/{backtest_id}/trades", timeout=30).json()
    assert len(trades["items"]) == task["result"]["trades"] > 0


def test_optimization_then_monte_carlo_on_its_best_backtest(rest_url: str) -> None:
    task = _submit(
        rest_url,
        "/optimizations",
        {
            "source": SOURCE,
            "strategy_type": "sma_cross",
            "objective": "sharpe",
            "grid": {"fast_period": [5, 10], "slow_period": [30, 60]},
        },
    )
    result = task["result"]
    assert result["n_trials"] == 4 and len(result["optimization_ids"]) == 4
    assert 0.0 <= result["p_value"] <= 1.0
    rows = httpx.get(
        f"{rest_url}/optimizations", params={"backtest_id": result["backtest_id"]}, timeout=30
    ).json()
    assert [r["rank"] for r in rows["items"]] == sorted(r["rank"] for r in rows["items"])
    mc = _submit(
        rest_url, "/monte-carlo", {"backtest_id": result["backtest_id"], "n_simulations": 200, "seed": 1}
    )
    assert 0.0 <= mc["result"]["probability_of_loss"] <= 1.0
    assert set(mc["result"]["distributions"]) == {"total_return", "max_drawdown", "sharpe"}


def test_walk_forward_and_portfolio_jobs(rest_url: str) -> None:
    wf = _submit(
        rest_url,
        "/walk-forward-tests",
        {
            "source": {**SOURCE, "symbols": ["AAPL"]},
            "strategy_type": "sma_cross",
            "grid": {"fast_period": [5, 10], "slow_period": [30, 60]},
            "in_sample_bars": 504,
            "out_of_sample_bars": 126,
        },
    )
    assert wf["result"]["n_windows"] >= 3 and wf["result"]["parent_backtest_id"]
    windows = httpx.get(
        f"{rest_url}/walk-forward-tests",
        params={"parent_backtest_id": wf["result"]["parent_backtest_id"]},
        timeout=30,
    ).json()
    assert len(windows["items"]) == wf["result"]["n_windows"]
    pf = _submit(
        rest_url,
        "/portfolio-backtests",
        {
            "dataset_cfg": SOURCE["dataset_cfg"],
            "portfolio_name": "two-legs",
            "legs": [{"symbol": "AAPL"}, {"symbol": "JNJ", "strategy_cfg": {"type": "sma_cross"}}],
            "rebalance_frequency": "monthly",
            "position_sizing_method": "inverse_volatility",
            # bars before start_date warm up the rules and the 63-bar volatility estimate
            "backtest_cfg": {"initial_capital": 100000, "start_date": "2012-06-01"},
        },
    )
    stored = httpx.get(
        f"{rest_url}/portfolio-backtests/{pf['result']['portfolio_backtest_id']}", timeout=30
    ).json()
    assert stored["portfolio_name"] == "two-legs"


@pytest.mark.parametrize(
    ("path", "doc", "status", "field"),
    [
        (
            "/backtests",
            {"source": SOURCE, "strategy_cfg": {"type": "no_such_rule"}},
            400,
            "strategy_cfg.type",
        ),
        (
            "/backtests",
            {
                "source": SOURCE,
                "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 50, "slow_period": 20}},
            },
            400,
            "strategy_cfg.params.slow_period",
        ),
        (
            "/optimizations",
            {
                "source": SOURCE,
                "strategy_type": "sma_cross",
                "objective": "luck",
                "grid": {"fast_period": [5]},
            },
            422,
            "objective",
        ),
        ("/monte-carlo", {"n_simulations": 10}, 422, None),
        (
            "/backtests",
            {"source": SOURCE, "strategy_cfg": {"type": "long_short_topk"}},
            400,
            "strategy_cfg.type",
        ),
        (
            "/optimizations",
            {"source": SOURCE, "strategy_type": "nope", "grid": {"fast_period": [5]}},
            400,
            "strategy_type",
        ),
        (
            "/backtests",
            {
                "source": SOURCE,
                "strategy_cfg": {"type": "sma_cross"},
                "backtest_cfg": {"fill_price": "open", "execution_lag": 0},
            },
            400,
            None,
        ),
        (
            "/portfolio-backtests",
            {"dataset_cfg": {"source": "sp500"}, "portfolio_name": "x", "legs": []},
            422,
            "legs",
        ),
    ],
)
def test_bad_job_documents_are_4xx_naming_the_field(
    rest_url: str, path: str, doc: dict, status: int, field: str | None
) -> None:
    resp = httpx.post(rest_url + path, json=doc, timeout=60)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    if field:
        assert field == err["details"].get("field") or field in err["message"], err


def test_unknown_task_is_404(rest_url: str) -> None:
    assert httpx.get(f"{rest_url}/tasks/00000000-0000-0000-0000-000000000000", timeout=30).status_code == 404
    cancel = httpx.post(f"{rest_url}/tasks/00000000-0000-0000-0000-000000000000:cancel", timeout=30)
    assert cancel.status_code == 404


def test_cancelling_a_finished_task_is_409_and_changes_nothing(rest_url: str) -> None:
    task = _submit(
        rest_url,
        "/backtests",
        {"source": SOURCE, "strategy_cfg": {"type": "buy_and_hold"}},
    )
    resp = httpx.post(f"{rest_url}/tasks/{task['task_id']}:cancel", timeout=30)
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["code"] == "FAILED_PRECONDITION"
    assert resp.json()["error"]["details"]["field"] == "task_id"
    after = httpx.get(f"{rest_url}/tasks/{task['task_id']}", timeout=30).json()
    assert after["status"] == "succeeded" and after["result"] == task["result"]


def test_cli_backtest_and_optimize(tmp_path: Path) -> None:
    cli = str(Path(sys.executable).parent / "alphaswarm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_"))}
    bt = subprocess.run(
        [
            cli,
            "backtest",
            "--symbols",
            "AAPL",
            "--start",
            "2015-01-01",
            "--end",
            "2018-12-31",
            "--strategy",
            "rsi",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert bt.returncode == 0, bt.stderr
    assert json.loads(bt.stdout)["summary"]["backtest_id"]
    opt = subprocess.run(
        [
            cli,
            "optimize",
            "--symbols",
            "AAPL",
            "--strategy",
            "sma_cross",
            "--grid",
            "fast_period=5,10",
            "--grid",
            "slow_period=30,50",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert opt.returncode == 0, opt.stderr
    assert "best parameter sets" in opt.stdout
