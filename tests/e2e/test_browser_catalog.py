"""The Strategy Browser's catalog views over REST (`/catalog-views/...`) on rows real backtester jobs wrote.

Every expected number is computed here independently of the gateway: the
aligned curves from the stored series, the heatmap cells from the
optimization rows, the fan's last step from the Monte Carlo job's own
distribution, the concentration measures with pandas, and the Deflated
Sharpe of every leaderboard entry with scipy from the entry's stored equity
curve (Bailey & López de Prado 2014, written out here).

The session's stack is shared with other e2e tests, so the jobs here run on
a dataset window of their own: its fingerprint is this module's alone.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from tests.e2e.conftest import sse_events

pytestmark = pytest.mark.e2e

DATASET = {
    "source": "sp500",
    "start_date": "2013-02-01",
    "end_date": "2017-12-29",
    "symbols": ["AAPL", "MSFT"],
}
SOURCE = {"dataset_cfg": DATASET, "symbols": ["AAPL"]}
WINDOW = {"start_date": "2014-01-02"}
GRID = {"fast_period": [5, 10, 20], "slow_period": [30, 60]}


def _submit(rest_url: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(rest_url + path, content=yaml.safe_dump(doc).encode(), timeout=60)
    assert resp.status_code == 202, resp.text
    events = sse_events(rest_url + resp.json()["stream_url"])
    assert events[-1]["stage"] == "completed", events[-1]
    task = httpx.get(f"{rest_url}/tasks/{resp.json()['task_id']}", timeout=30).json()
    return task["result"]


def _get(rest_url: str, path: str, **params: Any) -> dict[str, Any]:
    resp = httpx.get(rest_url + path, params=params, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def jobs(rest_url: str) -> dict[str, Any]:
    """Three rule backtests, an optimization, a walk-forward test and a portfolio on DATASET."""
    backtests = [
        _submit(
            rest_url,
            "/backtests",
            {
                "source": {**SOURCE, "symbols": symbols},
                "strategy_cfg": {"type": "sma_cross", "params": params},
                "backtest_cfg": WINDOW,
            },
        )["backtest_id"]
        for symbols, params in (
            (["AAPL"], {"fast_period": 10, "slow_period": 30}),
            (["MSFT"], {"fast_period": 20, "slow_period": 50}),
            (["AAPL", "MSFT"], {"fast_period": 5, "slow_period": 40}),
        )
    ]
    opt = _submit(
        rest_url,
        "/optimizations",
        {
            "source": SOURCE,
            "strategy_type": "sma_cross",
            "objective": "sharpe",
            "grid": GRID,
            "backtest_cfg": WINDOW,
        },
    )
    wf = _submit(
        rest_url,
        "/walk-forward-tests",
        {
            "source": SOURCE,
            "strategy_type": "sma_cross",
            "grid": {"fast_period": [5, 10], "slow_period": [30, 60]},
            "in_sample_bars": 252,
            "out_of_sample_bars": 126,
        },
    )
    pf = _submit(
        rest_url,
        "/portfolio-backtests",
        {
            "dataset_cfg": DATASET,
            "portfolio_name": "browser-two-legs",
            "legs": [{"symbol": "AAPL"}, {"symbol": "MSFT", "strategy_cfg": {"type": "sma_cross"}}],
            "rebalance_frequency": "monthly",
            "position_sizing_method": "inverse_volatility",
            "backtest_cfg": {"initial_capital": 100000, "start_date": "2013-09-03"},
        },
    )
    return {"backtests": backtests, "optimization": opt, "walk_forward": wf, "portfolio": pf}


# ----------------------------------------------------------------------------- compare


def test_compare_aligns_three_equity_curves_and_lines_up_their_metrics(
    rest_url: str, jobs: dict[str, Any]
) -> None:
    ids = jobs["backtests"]
    doc = _get(rest_url, "/catalog-views/compare", backtest_id=ids, points=20_000)
    stored = [_get(rest_url, f"/backtests/{b}") for b in ids]
    union = sorted({d for s in stored for d in s["series"]["dates"]})
    assert doc["series"]["dates"] == union
    for k, s in enumerate(stored):
        frame = pd.Series(s["series"]["equity"], index=s["series"]["dates"], dtype=float).reindex(union)
        got = pd.Series(doc["series"]["equity"][k], index=union, dtype=float)
        pd.testing.assert_series_equal(got, frame, check_names=False)
        growth = pd.Series(doc["series"]["growth"][k], index=union, dtype=float)
        first = frame.dropna().iloc[0]
        np.testing.assert_allclose(growth.dropna(), (frame / first).dropna(), rtol=1e-12)
    for name in ("sharpe", "max_drawdown", "total_return"):
        assert doc["metrics"][name] == [s["metrics"].get(name) for s in stored]
    assert [b["backtest_id"] for b in doc["backtests"]] == ids


def test_compare_downsamples_keeping_first_and_last_exact(rest_url: str, jobs: dict[str, Any]) -> None:
    ids = jobs["backtests"]
    full = _get(rest_url, "/catalog-views/compare", backtest_id=ids, points=20_000)["series"]
    small = _get(rest_url, "/catalog-views/compare", backtest_id=ids, points=50)["series"]
    assert len(small["dates"]) == 50 and small["n_dates"] == len(full["dates"])
    assert small["dates"][0] == full["dates"][0] and small["dates"][-1] == full["dates"][-1]
    where = {d: i for i, d in enumerate(full["dates"])}
    for k in range(3):
        assert small["equity"][k] == [full["equity"][k][where[d]] for d in small["dates"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "backtest_id"),
        ({"backtest_id": [f"00000000-0000-0000-0000-{i:012d}" for i in range(11)]}, "backtest_id"),
        ({"backtest_id": ["nope", "nope2"]}, "backtest_id"),
        ({"backtest_id": ["00000000-0000-0000-0000-000000000001"] * 2, "points": 1}, "points"),
    ],
)
def test_compare_rejects_bad_queries_naming_the_field(rest_url: str, params: dict, field: str) -> None:
    resp = httpx.get(rest_url + "/catalog-views/compare", params=params, timeout=30)
    assert resp.status_code in (400, 422), resp.text
    assert field in resp.text


def test_compare_of_an_unknown_backtest_is_404(rest_url: str, jobs: dict[str, Any]) -> None:
    ids = [jobs["backtests"][0], "00000000-0000-0000-0000-00000000dead"]
    resp = httpx.get(rest_url + "/catalog-views/compare", params={"backtest_id": ids}, timeout=30)
    assert resp.status_code == 404


# ----------------------------------------------------------------------------- optimization heatmap


def _dsr(sr: float, n_obs: int, skew: float, kurt: float, variance: float, n_trials: int) -> float:
    """Bailey & López de Prado (2014), written out with scipy: per-period SR, non-excess kurtosis."""
    if n_trials > 1 and variance > 0:
        g = np.euler_gamma
        sr0 = math.sqrt(variance) * (
            (1 - g) * stats.norm.ppf(1 - 1 / n_trials) + g * stats.norm.ppf(1 - 1 / (n_trials * math.e))
        )
    else:
        sr0 = 0.0
    z = (sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr * sr)
    return float(stats.norm.cdf(z))


def test_optimization_heatmap_has_every_set_with_sharpe_and_dsr_p_value(
    rest_url: str, jobs: dict[str, Any]
) -> None:
    bid = jobs["optimization"]["backtest_id"]
    doc = _get(rest_url, f"/catalog-views/optimizations/{bid}/heatmap", x="fast_period", y="slow_period")
    assert doc["x_values"] == GRID["fast_period"] and doc["y_values"] == GRID["slow_period"]
    rows = _get(rest_url, "/optimizations", backtest_id=bid, page_size=500)["items"]
    assert doc["n_sets"] == len(rows) == 6
    by_params = {(r["parameters"]["fast_period"], r["parameters"]["slow_period"]): r for r in rows}
    for j, slow in enumerate(GRID["slow_period"]):
        for i, fast in enumerate(GRID["fast_period"]):
            cell, row = doc["cells"][j][i], by_params[(fast, slow)]
            assert cell["n_sets"] == 1
            assert cell["sharpe_ratio"] == row["sharpe_ratio"]
            assert cell["p_value"] == row["p_value"]
            assert cell["optimization_id"] == row["optimization_id"]
    # transposed: the same cells
    t = _get(rest_url, f"/catalog-views/optimizations/{bid}/heatmap", x="slow_period", y="fast_period")
    assert t["cells"][0][1]["optimization_id"] == doc["cells"][1][0]["optimization_id"]
    # the best set's p-value is 1 - DSR of its stored backtest given the optimization's trials
    best = _get(rest_url, f"/backtests/{bid}")
    stored_best = next(r for r in rows if r["rank"] == 1)
    equity = np.array(best["series"]["equity"], dtype=float)
    returns = equity / np.concatenate(([best["initial_capital"]], equity[:-1])) - 1
    ppy = best["conventions"]["periods_per_year"]
    per_period = np.array([r["sharpe_ratio"] for r in rows if r["sharpe_ratio"] is not None]) / math.sqrt(ppy)
    sr = returns.mean() / returns.std(ddof=1)
    expected = 1 - _dsr(
        sr,
        returns.size,
        float(stats.skew(returns)),
        float(stats.kurtosis(returns, fisher=False)),
        float(np.var(per_period, ddof=1)),
        len(per_period),
    )
    assert stored_best["p_value"] == pytest.approx(expected, abs=2e-3)


def test_heatmap_rejects_an_unknown_parameter_naming_it(rest_url: str, jobs: dict[str, Any]) -> None:
    bid = jobs["optimization"]["backtest_id"]
    resp = httpx.get(
        f"{rest_url}/catalog-views/optimizations/{bid}/heatmap", params={"x": "nope"}, timeout=30
    )
    assert resp.status_code == 400 and resp.json()["error"]["details"]["field"] == "x"
    resp = httpx.get(f"{rest_url}/catalog-views/optimizations/{jobs['backtests'][0]}/heatmap", timeout=30)
    assert resp.status_code == 404


# ----------------------------------------------------------------------------- walk-forward


def test_walk_forward_bars_recover_in_sample_sharpe_and_carry_ratio_and_degradation(
    rest_url: str, jobs: dict[str, Any]
) -> None:
    pid = jobs["walk_forward"]["parent_backtest_id"]
    doc = _get(rest_url, f"/catalog-views/walk-forward/{pid}")
    stored = _get(rest_url, "/walk-forward-tests", parent_backtest_id=pid, page_size=500)["items"]
    assert len(doc["windows"]) == len(stored) == jobs["walk_forward"]["n_windows"] >= 3
    by_id = {w["walk_forward_id"]: w for w in stored}
    for w in doc["windows"]:
        s = by_id[w["walk_forward_id"]]
        assert w["performance_ratio"] == s["performance_ratio"]
        assert w["degradation_factor"] == s["degradation_factor"]
        assert w["out_of_sample_sharpe"] == s["out_of_sample_sharpe"]
        if w["in_sample_sharpe"] is not None:
            assert 1 - s["out_of_sample_sharpe"] / w["in_sample_sharpe"] == pytest.approx(
                s["degradation_factor"], abs=1e-9
            )
    ratios = [w["performance_ratio"] for w in stored if w["performance_ratio"] is not None]
    assert doc["summary"]["mean_performance_ratio"] == pytest.approx(float(np.mean(ratios)))
    assert doc["objective"] == "sharpe"


# ----------------------------------------------------------------------------- Monte Carlo fan


def test_fan_last_step_equals_the_monte_carlo_jobs_total_return_percentiles(
    rest_url: str, jobs: dict[str, Any]
) -> None:
    bid = jobs["backtests"][0]
    pct = [5.0, 25.0, 50.0, 75.0, 95.0]
    mc = _submit(
        rest_url, "/monte-carlo", {"backtest_id": bid, "n_simulations": 300, "seed": 7, "block_length": 10}
    )
    fan = _get(
        rest_url,
        f"/catalog-views/monte-carlo/{bid}",
        n_simulations=300,
        seed=7,
        block_length=10,
        points=60,
    )
    assert fan["percentiles"] == pct and len(fan["steps"]) == 60
    assert fan["steps"][0] == 0 and fan["steps"][-1] == fan["n_steps"]
    last = [band[-1] - 1 for band in fan["bands"]]
    job = mc["distributions"]["total_return"]
    np.testing.assert_allclose(last, [job[f"p{p:g}"] for p in pct], rtol=1e-9, atol=1e-12)
    assert fan["probability_of_loss"] == pytest.approx(mc["probability_of_loss"])
    # bands are ordered at every step, and the real path ends at the stored total return
    bands = np.array(fan["bands"], dtype=float)
    assert (np.diff(bands, axis=0) >= -1e-12).all()
    stored = _get(rest_url, f"/backtests/{bid}")
    assert fan["actual"][-1] - 1 == pytest.approx(stored["metrics"]["total_return"], abs=1e-4)


def test_fan_rejects_a_block_longer_than_the_series(rest_url: str, jobs: dict[str, Any]) -> None:
    resp = httpx.get(
        f"{rest_url}/catalog-views/monte-carlo/{jobs['backtests'][0]}",
        params={"block_length": 999_999},
        timeout=30,
    )
    assert resp.status_code == 400 and resp.json()["error"]["details"]["field"] == "block_length"


# ----------------------------------------------------------------------------- portfolio


def test_portfolio_weights_over_time_and_diversification(rest_url: str, jobs: dict[str, Any]) -> None:
    pid = jobs["portfolio"]["portfolio_backtest_id"]
    doc = _get(rest_url, f"/catalog-views/portfolios/{pid}", points=80)
    stored = _get(rest_url, f"/portfolio-backtests/{pid}")
    dates = stored["series"]["dates"]
    weights = pd.DataFrame(stored["series"]["weights"]["values"], index=dates, columns=stored["symbols"])
    w = doc["weights"]
    assert len(w["dates"]) == 80 and w["dates"][0] == dates[0] and w["dates"][-1] == dates[-1]
    kept = weights.loc[w["dates"]]
    np.testing.assert_allclose(np.array(w["values"], dtype=float), kept.to_numpy(), equal_nan=True)
    shares = kept.abs().div(kept.abs().sum(axis=1), axis=0)
    hhi = (shares**2).sum(axis=1).where(kept.abs().sum(axis=1) > 0)
    np.testing.assert_allclose(np.array(w["hhi"], dtype=float), hhi.to_numpy(), equal_nan=True)
    np.testing.assert_allclose(np.array(w["effective_n"], dtype=float), (1 / hhi).to_numpy(), equal_nan=True)
    for key in ("diversification_ratio", "concentration_index", "turnover_rate"):
        assert doc["diversification"][key] == stored["metrics"].get(key)


# ----------------------------------------------------------------------------- leaderboard


def test_leaderboard_deflates_each_sharpe_by_every_trial_on_the_data(
    rest_url: str, jobs: dict[str, Any]
) -> None:
    fingerprint = load_panel(DatasetConfig.model_validate(DATASET)).fingerprint
    datasets = _get(rest_url, "/catalog-views/datasets")["items"]
    mine = next(d for d in datasets if d["fingerprint"] == fingerprint)
    # three backtests, the optimization's best row, the walk-forward parent
    assert mine["n_backtests"] == 5
    board = _get(rest_url, f"/catalog-views/leaderboard/{fingerprint}")
    entries = {e["backtest_id"]: e for e in board["entries"]}
    assert set(entries) == {
        *jobs["backtests"],
        jobs["optimization"]["backtest_id"],
        jobs["walk_forward"]["parent_backtest_id"],
    }
    # the trials: 3 backtests + 6 optimization sets + windows x 4 in-sample sets
    n_windows = jobs["walk_forward"]["n_windows"]
    assert board["n_trials"] == 3 + 6 + 4 * n_windows
    rows = _get(rest_url, "/optimizations", backtest_id=jobs["optimization"]["backtest_id"], page_size=500)
    trial_sharpes = [r["sharpe_ratio"] for r in rows["items"] if r["sharpe_ratio"] is not None]
    trial_sharpes += [_get(rest_url, f"/backtests/{b}")["metrics"]["sharpe"] for b in jobs["backtests"]]
    ppy = 252.0
    variance = float(np.var(np.array(trial_sharpes) / math.sqrt(ppy), ddof=1))
    assert board["sharpe_trials_variance"] == pytest.approx(variance, rel=1e-9)
    n_trials = board["n_trials"]
    checked = 0
    for bid, entry in entries.items():
        stored = _get(rest_url, f"/backtests/{bid}")
        equity = np.array(stored["series"]["equity"], dtype=float)
        returns = equity / np.concatenate(([stored["initial_capital"]], equity[:-1])) - 1
        assert entry["n_obs"] == returns.size
        sr = returns.mean() / returns.std(ddof=1)
        assert entry["sharpe"] == pytest.approx(sr * math.sqrt(ppy), abs=1e-3)
        expected = _dsr(
            sr,
            returns.size,
            float(stats.skew(returns)),
            float(stats.kurtosis(returns, fisher=False)),
            variance,
            n_trials,
        )
        assert entry["deflated_sharpe"] == pytest.approx(expected, abs=1e-3), entry
        assert entry["p_value"] == pytest.approx(1 - entry["deflated_sharpe"])
        checked += 1
    assert checked == 5
    dsrs = [e["deflated_sharpe"] for e in board["entries"]]
    assert dsrs == sorted(dsrs, reverse=True)
    assert entries[jobs["optimization"]["backtest_id"]]["trials"] == 6
    assert entries[jobs["optimization"]["backtest_id"]]["kind"] == "optimization"


def test_leaderboard_of_an_unknown_dataset_is_404_and_a_bad_fingerprint_422(rest_url: str) -> None:
    assert httpx.get(f"{rest_url}/catalog-views/leaderboard/{'0' * 64}", timeout=60).status_code == 404
    assert httpx.get(f"{rest_url}/catalog-views/leaderboard/xyz", timeout=60).status_code == 422


def test_leaderboard_sees_a_backtest_written_after_it_was_read(rest_url: str, jobs: dict[str, Any]) -> None:
    fingerprint = load_panel(DatasetConfig.model_validate(DATASET)).fingerprint
    before = _get(rest_url, f"/catalog-views/leaderboard/{fingerprint}")
    added = _submit(
        rest_url,
        "/backtests",
        {
            "source": {**SOURCE, "symbols": ["MSFT"]},
            "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 7, "slow_period": 70}},
            "backtest_cfg": WINDOW,
        },
    )["backtest_id"]
    after = _get(rest_url, f"/catalog-views/leaderboard/{fingerprint}")
    assert after["n_trials"] == before["n_trials"] + 1
    assert added in {e["backtest_id"] for e in after["entries"]}
