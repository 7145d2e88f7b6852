"""The numbers behind the Strategy Browser's catalog charts (`alphaswarm_gateway.browser.catalog_math`),
checked against independent computations: the backtester's own Monte Carlo engine for the fan,
scipy for the Deflated Sharpe, pandas for alignment and concentration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_backtester.engine.montecarlo import monte_carlo
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.metrics import deflated_sharpe_ratio
from alphaswarm_gateway.browser import catalog_math as cm

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("n", "points"), [(1, 2), (5, 10), (10, 10), (11, 10), (5040, 500), (3, 2)])
def test_keep_indices_are_sorted_unique_within_budget_with_both_ends(n: int, points: int) -> None:
    idx = cm.keep_indices(n, points)
    assert len(idx) == min(n, points)
    assert idx[0] == 0 and idx[-1] == n - 1
    assert (np.diff(idx) > 0).all()


def test_keep_indices_needs_two_points() -> None:
    with pytest.raises(InvalidArgument) as err:
        cm.keep_indices(10, 1)
    assert err.value.field == "points"


def test_align_equity_on_the_union_of_dates_with_growth() -> None:
    a = (["2020-01-01", "2020-01-02", "2020-01-03"], np.array([100.0, 110.0, 99.0]))
    b = (["2020-01-02", "2020-01-03", "2020-01-06"], np.array([np.nan, 50.0, 55.0]))
    out = cm.align_equity([a, b], points=100)
    assert out["dates"] == ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-06"]
    assert out["equity"] == [[100.0, 110.0, 99.0, None], [None, None, 50.0, 55.0]]
    frame = pd.DataFrame({"a": pd.Series(a[1], index=a[0]), "b": pd.Series(b[1], index=b[0])})
    expected = frame / frame.apply(lambda c: c.dropna().iloc[0])
    got = pd.DataFrame(np.array(out["growth"], dtype=float).T, index=out["dates"], columns=["a", "b"])
    pd.testing.assert_frame_equal(got, expected.reindex(out["dates"]), check_names=False)


def _rows() -> list[dict]:
    rows = []
    k = 0
    for fast in (5, 10):
        for slow in (30.0, 60.0):
            for stop in (0.02, 0.05):
                k += 1
                rows.append(
                    {
                        "optimization_id": f"id{k}",
                        "parameter_set": k,
                        "parameters": {"fast": fast, "slow": slow, "stop": stop, "flag": True},
                        "sharpe_ratio": None if k == 1 else k / 10,
                        "p_value": None if k == 1 else 1 / k,
                    }
                )
    return rows


def test_optimization_grid_keeps_the_best_sharpe_per_cell_and_counts_sets() -> None:
    grid = cm.optimization_grid(_rows(), "fast", "slow")
    assert grid["x_values"] == [5, 10] and grid["y_values"] == [30, 60]
    cell = grid["cells"][0][0]  # fast 5, slow 30: sets 1 (no Sharpe) and 2
    assert cell["optimization_id"] == "id2" and cell["n_sets"] == 2 and cell["p_value"] == 0.5
    assert grid["cells"][1][1]["optimization_id"] == "id8"
    assert sum(c["n_sets"] for row in grid["cells"] for c in row) == 8
    # defaults: the varying parameters by name
    assert cm.optimization_grid(_rows(), None, None)[("x")] == "fast"
    with pytest.raises(InvalidArgument) as err:
        cm.optimization_grid(_rows(), "nope", None)
    assert err.value.field == "x"
    with pytest.raises(InvalidArgument) as err:
        cm.optimization_grid(_rows(), "fast", "fast")
    assert err.value.field == "y"


def test_walk_forward_recovers_the_in_sample_sharpe() -> None:
    windows = [
        {
            "out_of_sample_sharpe": 0.5,
            "degradation_factor": 0.5,
            "performance_ratio": 0.4,
            "is_profitable": True,
        },
        {
            "out_of_sample_sharpe": -0.2,
            "degradation_factor": 1.2,
            "performance_ratio": -0.1,
            "is_profitable": False,
        },
        {
            "out_of_sample_sharpe": 0.3,
            "degradation_factor": None,
            "performance_ratio": None,
            "is_profitable": True,
        },
    ]
    out = cm.walk_forward_bars(windows)
    assert [w["in_sample_sharpe"] for w in out["windows"]] == pytest.approx([1.0, 1.0, None])
    s = out["summary"]
    assert s["mean_performance_ratio"] == pytest.approx(0.15)
    assert s["walk_forward_efficiency"] == pytest.approx(0.15 / 1.0)
    assert s["profitable_share"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("method", ["stationary", "circular"])
@pytest.mark.parametrize("block", [1, 7, 21])
def test_fan_last_step_equals_the_engines_monte_carlo(method: str, block: int) -> None:
    r = np.random.default_rng(5).normal(0.0005, 0.015, 400)
    pct = [1.0, 5.0, 50.0, 95.0, 99.0]
    engine = monte_carlo(r, n_simulations=700, block_length=block, method=method, seed=11, percentiles=pct)
    fan = cm.fan(r, n_simulations=700, block_length=block, method=method, seed=11, percentiles=pct, points=50)
    last = [b[-1] - 1 for b in fan["bands"]]
    np.testing.assert_allclose(last, engine.distributions["total_return"].values, rtol=1e-10, atol=1e-13)
    assert fan["probability_of_loss"] == pytest.approx(engine.probability_of_loss)
    assert fan["steps"][0] == 0 and fan["steps"][-1] == 400 and len(fan["steps"]) == 50
    assert fan["actual"][-1] == pytest.approx(np.prod(1 + r))
    assert all(b[0] == 1.0 for b in fan["bands"])


def test_fan_rejects_bad_arguments_naming_them() -> None:
    r = np.full(10, 0.01)
    for kwargs, field in (
        ({"block_length": 11}, "block_length"),
        ({"n_simulations": 1}, "n_simulations"),
        ({"method": "iid"}, "method"),
        ({"percentiles": [101.0]}, "percentiles[0]"),
    ):
        with pytest.raises(InvalidArgument) as err:
            cm.fan(r, **{"block_length": 2, **kwargs})  # type: ignore[arg-type]
        assert err.value.field == field


def test_weights_view_concentration_against_pandas() -> None:
    rng = np.random.default_rng(2)
    w = rng.uniform(-0.3, 0.6, (30, 4))
    w[3] = 0.0
    dates = [str(d.date()) for d in pd.bdate_range("2021-01-01", periods=30)]
    out = cm.weights_view(dates, ["A", "B", "C", "D"], w, points=30)
    frame = pd.DataFrame(np.abs(w))
    hhi = (frame.div(frame.sum(axis=1), axis=0) ** 2).sum(axis=1).where(frame.sum(axis=1) > 0)
    np.testing.assert_allclose(np.array(out["hhi"], dtype=float), hhi, equal_nan=True)
    np.testing.assert_allclose(np.array(out["effective_n"], dtype=float), 1 / hhi, equal_nan=True)
    np.testing.assert_allclose(out["net_exposure"], w.sum(axis=1))


def _dsr_scipy(sr: float, n: int, skew: float, kurt: float, var: float, trials: int) -> float:
    g = np.euler_gamma
    sr0 = (
        math.sqrt(var)
        * ((1 - g) * stats.norm.ppf(1 - 1 / trials) + g * stats.norm.ppf(1 - 1 / (trials * math.e)))
        if trials > 1 and var > 0
        else 0.0
    )
    return float(
        stats.norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))
    )


def test_leaderboard_deflated_sharpe_against_scipy() -> None:
    rng = np.random.default_rng(9)
    entries = []
    for k in range(4):
        r = rng.standard_t(5, 750) * 0.01 + 0.0004 * k
        sr = r.mean() / r.std(ddof=1)
        entries.append(
            cm.Entry(
                key=f"b{k}",
                label=f"b{k}",
                kind="rule",
                sharpe=sr * math.sqrt(252),
                periods_per_year=252.0,
                n_obs=r.size,
                skewness=float(stats.skew(r)),
                kurtosis=float(stats.kurtosis(r, fisher=False)),
            )
        )
    trials = [e.sharpe for e in entries] + [0.3, None, -0.2, 1.1, None]
    board = cm.leaderboard(entries, trials)
    known = np.array([t for t in trials if t is not None]) / math.sqrt(252)
    var = float(np.var(known, ddof=1))
    assert board["n_trials"] == 9 and board["n_trials_with_sharpe"] == 7
    assert board["sharpe_trials_variance"] == pytest.approx(var)
    for row in board["entries"]:
        e = next(x for x in entries if x.key == row["key"])
        expected = _dsr_scipy(e.sharpe / math.sqrt(252), e.n_obs, e.skewness, e.kurtosis, var, 9)
        assert row["deflated_sharpe"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert row["p_value"] == pytest.approx(1 - expected)
        project = deflated_sharpe_ratio(e.sharpe / math.sqrt(252), var, 9, e.n_obs, e.skewness, e.kurtosis)
        assert row["deflated_sharpe"] == pytest.approx(project, rel=1e-12, abs=1e-15)
    assert [r["deflated_sharpe"] for r in board["entries"]] == sorted(
        (r["deflated_sharpe"] for r in board["entries"]), reverse=True
    )


def test_leaderboard_says_why_a_deflated_sharpe_is_missing() -> None:
    entries = [
        cm.Entry("a", "a", "rule", None, 252.0, 100, 0.0, 3.0),
        cm.Entry("b", "b", "rule", 1.0, 252.0, 1, 0.0, 3.0),
        cm.Entry("c", "c", "rule", 1.0, 252.0, 100, None, None),
        cm.Entry("d", "d", "rule", 252.0**0.5 * 3.0, 252.0, 100, 2.0, 1.0),  # 1 - 2*3 + 0 < 0
    ]
    rows = {r["key"]: r for r in cm.leaderboard(entries, [None, 1.0, 1.0])["entries"]}
    assert rows["a"]["reason"] == "no Sharpe ratio"
    assert rows["b"]["reason"] == "fewer than 2 returns"
    assert rows["c"]["reason"] == "no skewness / kurtosis"
    assert "is not positive" in rows["d"]["reason"]
    assert all(r["deflated_sharpe"] is None for r in rows.values())
