"""Trading metrics against empyrical-reloaded and scipy on seeded random return series.

Where METRICS.md follows empyrical (sharpe, sortino, downside risk, max drawdown,
annual return, annual volatility, calmar, beta, alpha) the values must agree to
floating-point precision once empyrical is given our per-period risk-free rate
(`rf / periods_per_year`: empyrical's `risk_free` / `required_return` are per
period, ours is annual). Where the conventions differ on purpose (undefined
values are None with a reason instead of NaN/inf, NaN returns are rejected
instead of skipped), the tests say so.
"""

from __future__ import annotations

import itertools
import json
import math

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
from empyrical.stats import drawdown_series as ep_drawdown_series
from scipy import integrate, stats

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics import (
    BarStats,
    MetricSet,
    deflated_sharpe_ratio,
    drawdown_series,
    expected_max_sharpe,
    infer_periods_per_year,
    max_drawdown_duration,
    probabilistic_sharpe_ratio,
    trading_metrics,
)
from alphaswarm_common.metrics import trading as trading_module

pytestmark = pytest.mark.unit


@pytest.fixture(params=[None, 37], ids=["one-block", "blocks-of-37"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the per-bar passes in one block, and in many (a partial last one, carries across blocks)."""
    if request.param is not None:
        monkeypatch.setattr(trading_module, "_BLOCK", request.param)


def _v(ms: MetricSet, name: str) -> float:
    """A metric that must be defined."""
    value = ms[name]
    assert value is not None, ms.reason(name)
    return float(value)


def _returns(seed: int, n: int = 750, *, drift: float = 0.0004, vol: float = 0.012) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # fat tails and skew, so the moment terms of the PSR matter
    return (
        drift
        + vol * (rng.standard_t(df=4, size=n) / math.sqrt(2.0))
        + 0.002 * rng.exponential(size=n)
        - 0.002
    )


CASES = [
    (seed, rf, ppy)
    for seed in (0, 1, 2)
    for rf, ppy in ((0.0, 252.0), (0.04, 252.0), (-0.01, 252.0), (0.03, 52.0), (0.02, 12.0))
]


@pytest.mark.parametrize(("seed", "rf", "ppy"), CASES)
def test_agrees_with_empyrical(seed: int, rf: float, ppy: float, blocks: None) -> None:
    r = _returns(seed)
    rng = np.random.default_rng(100 + seed)
    bench = 0.6 * r + rng.normal(0.0002, 0.01, r.size)
    ms = trading_metrics(r, periods_per_year=ppy, rf=rf, benchmark=bench)
    rf_p = rf / ppy
    kw = {"annualization": ppy}

    assert ms["total_return"] == pytest.approx(ep.cum_returns_final(r), rel=1e-10)
    assert ms["annualized_return"] == pytest.approx(ep.annual_return(r, **kw), rel=1e-10)
    assert ms["volatility"] == pytest.approx(ep.annual_volatility(r, **kw), rel=1e-12)
    assert ms["sharpe"] == pytest.approx(ep.sharpe_ratio(r, risk_free=rf_p, **kw), rel=1e-10)
    assert ms["downside_volatility"] == pytest.approx(
        ep.downside_risk(r, required_return=rf_p, **kw), rel=1e-12
    )
    assert ms["sortino"] == pytest.approx(ep.sortino_ratio(r, required_return=rf_p, **kw), rel=1e-10)
    assert ms["max_drawdown"] == pytest.approx(ep.max_drawdown(r), rel=1e-12)
    assert ms["calmar"] == pytest.approx(ep.calmar_ratio(r, **kw), rel=1e-10)
    assert ms["beta"] == pytest.approx(ep.beta(r, bench, risk_free=rf_p), rel=1e-10)
    assert ms["alpha"] == pytest.approx(ep.alpha(r, bench, risk_free=rf_p, **kw), rel=1e-9)
    assert ms.conventions["periods_per_year"] == ppy
    assert ms.conventions["rf"] == rf
    assert ms.conventions["rf_per_period"] == pytest.approx(rf_p)


@pytest.mark.parametrize("seed", [0, 3])
def test_definitions_written_out(seed: int, blocks: None) -> None:
    """METRICS.md's table, term by term, with plain NumPy (the definitions empyrical shares)."""
    r = _returns(seed, n=333)
    ppy, rf = 252.0, 0.05
    rf_p = rf / ppy
    ms = trading_metrics(r, periods_per_year=ppy, rf=rf)
    total = np.prod(1 + r) - 1
    assert ms["annualized_return"] == pytest.approx((1 + total) ** (ppy / r.size) - 1, rel=1e-12)
    ex = r - rf_p
    assert ms["sharpe"] == pytest.approx(ex.mean() / ex.std(ddof=1) * math.sqrt(ppy), rel=1e-12)
    downside = math.sqrt(np.mean(np.minimum(ex, 0) ** 2)) * math.sqrt(ppy)  # all periods in the mean
    assert ms["downside_volatility"] == pytest.approx(downside, rel=1e-12)
    # not the std of the negative excess returns alone
    assert ms["downside_volatility"] != pytest.approx(np.std(ex[ex < 0], ddof=1) * math.sqrt(ppy), rel=1e-3)
    assert ms["sortino"] == pytest.approx(ex.mean() * ppy / downside, rel=1e-12)
    equity = np.cumprod(np.concatenate([[1.0], 1 + r]))  # the initial 1 is a peak
    assert ms["max_drawdown"] == pytest.approx(np.min(equity / np.maximum.accumulate(equity) - 1), rel=1e-12)
    assert ms["calmar"] == pytest.approx(_v(ms, "annualized_return") / abs(_v(ms, "max_drawdown")), rel=1e-12)


def test_first_bar_loss_is_a_drawdown_from_the_initial_equity() -> None:
    r = np.array([-0.1, 0.05, 0.02])
    np.testing.assert_allclose(drawdown_series(r), ep_drawdown_series(r), rtol=1e-12)
    assert drawdown_series(r)[0] == pytest.approx(-0.1)
    assert trading_metrics(r)["max_drawdown"] == pytest.approx(-0.1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_drawdown_series_matches_empyrical(seed: int) -> None:
    r = _returns(seed, n=400)
    np.testing.assert_allclose(drawdown_series(r), ep_drawdown_series(r), rtol=1e-12, atol=1e-15)


def _duration_reference(r: np.ndarray) -> int:
    """Straightforward loop: longest run of bars with equity strictly below the running peak."""
    equity, peak, run, best = 1.0, 1.0, 0, 0
    for x in r:
        equity *= 1 + x
        if equity < peak:
            run += 1
            best = max(best, run)
        else:
            peak, run = equity, 0
    return best


@pytest.mark.parametrize("seed", range(6))
def test_max_drawdown_duration_matches_a_loop(seed: int, blocks: None) -> None:
    r = _returns(seed, n=500, drift=0.0002)
    assert max_drawdown_duration(r) == _duration_reference(r)
    assert trading_metrics(r)["max_drawdown_duration"] == _duration_reference(r)


@pytest.mark.parametrize("block", [1, 2, 3, 7])
def test_max_drawdown_duration_across_tiny_blocks(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trading_module, "_BLOCK", block)
    for seed in range(20):
        r = _returns(seed, n=60, drift=0.0)
        assert trading_metrics(r)["max_drawdown_duration"] == _duration_reference(r), seed


def test_max_drawdown_duration_small_cases() -> None:
    assert max_drawdown_duration(np.array([0.01, 0.02])) == 0
    assert max_drawdown_duration(np.array([-0.01, -0.01, 0.5, -0.01])) == 2
    assert max_drawdown_duration(np.array([0.1, -0.1, 0.0, 0.0, 0.0])) == 4  # unrecovered: runs to the end
    assert max_drawdown_duration(np.array([])) == 0


# ----------------------------------------------------------------------------- probabilistic / deflated Sharpe


def _psr_reference(r: np.ndarray, rf_p: float = 0.0, sr_star: float = 0.0) -> float:
    sr = np.mean(r - rf_p) / np.std(r - rf_p, ddof=1)
    g3 = stats.skew(r)
    g4 = stats.kurtosis(r, fisher=False)
    sigma = math.sqrt((1 - g3 * sr + (g4 - 1) / 4 * sr**2) / (r.size - 1))
    return float(stats.norm.cdf((sr - sr_star) / sigma))


@pytest.mark.parametrize(("seed", "rf"), [(0, 0.0), (1, 0.03), (2, 0.0), (4, -0.02)])
def test_probabilistic_sharpe_matches_scipy_formulation(seed: int, rf: float, blocks: None) -> None:
    r = _returns(seed, n=300, drift=0.0006)
    ms = trading_metrics(r, rf=rf)
    assert ms["skewness"] == pytest.approx(stats.skew(r), rel=1e-10)
    assert ms["kurtosis"] == pytest.approx(stats.kurtosis(r, fisher=False), rel=1e-10)
    assert ms["probabilistic_sharpe"] == pytest.approx(_psr_reference(r, rf / 252), rel=1e-10)
    sr = _v(ms, "sharpe") / math.sqrt(252)
    assert probabilistic_sharpe_ratio(sr, r.size, _v(ms, "skewness"), _v(ms, "kurtosis")) == pytest.approx(
        ms["probabilistic_sharpe"], rel=1e-12
    )


def test_probabilistic_sharpe_penalises_negative_skew_and_fat_tails() -> None:
    base = probabilistic_sharpe_ratio(0.05, 250, 0.0, 3.0)
    assert probabilistic_sharpe_ratio(0.05, 250, -1.0, 3.0) < base
    assert probabilistic_sharpe_ratio(0.05, 250, 0.0, 9.0) < base
    assert probabilistic_sharpe_ratio(0.05, 1000, 0.0, 3.0) > base
    assert probabilistic_sharpe_ratio(0.0, 250, 0.0, 3.0) == pytest.approx(0.5)


def _expected_max_normal(n: int) -> float:
    """E[max of n iid N(0, 1)] by numerical integration (the exact value the DSR approximates)."""
    return integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -10, 10)[0]


@pytest.mark.parametrize("n_trials", [10, 100, 1000])
def test_expected_max_sharpe_approximates_the_exact_expectation(n_trials: int) -> None:
    variance = 0.0004
    approx = expected_max_sharpe(variance, n_trials)
    assert approx == pytest.approx(math.sqrt(variance) * _expected_max_normal(n_trials), rel=0.03)


def test_deflated_sharpe_ratio_matches_its_formula() -> None:
    sr, var, n_trials, n_obs, g3, g4 = 0.12, 0.002, 50, 500, -0.4, 5.0
    gamma = 0.5772156649015329
    sr0 = math.sqrt(var) * (
        (1 - gamma) * stats.norm.ppf(1 - 1 / n_trials) + gamma * stats.norm.ppf(1 - 1 / (n_trials * math.e))
    )
    want = stats.norm.cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))
    assert deflated_sharpe_ratio(sr, var, n_trials, n_obs, g3, g4) == pytest.approx(want, rel=1e-12)


def test_deflated_sharpe_ratio_properties() -> None:
    psr = probabilistic_sharpe_ratio(0.1, 400, 0.0, 3.0)
    assert deflated_sharpe_ratio(0.1, 0.003, 1, 400, 0.0, 3.0) == pytest.approx(
        psr
    )  # one trial: no deflation
    assert deflated_sharpe_ratio(0.1, 0.0, 100, 400, 0.0, 3.0) == pytest.approx(psr)  # identical trials
    values = [deflated_sharpe_ratio(0.1, 0.003, n, 400, 0.0, 3.0) for n in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_trials": 0}, "n_trials"),
        ({"n_obs": 1}, "n_obs"),
        ({"sharpe_trials_variance": -1.0}, "sharpe_trials_variance"),
        ({"kurtosis": 0.0, "sharpe_selected_per_period": 3.0}, "kurtosis"),
        ({"skew": float("nan")}, "skew"),
    ],
)
def test_deflated_sharpe_ratio_rejects_bad_inputs(kwargs: dict, field: str) -> None:
    args = {
        "sharpe_selected_per_period": 0.1,
        "sharpe_trials_variance": 0.001,
        "n_trials": 10,
        "n_obs": 100,
        "skew": 0.0,
        "kurtosis": 3.0,
    } | kwargs
    with pytest.raises(InvalidArgument) as err:
        deflated_sharpe_ratio(**args)
    assert err.value.field == field


# ----------------------------------------------------------------------------- turnover, trades, account


def test_turnover_and_turnover_adjusted_sharpe(blocks: None) -> None:
    r = _returns(7, n=260)
    rng = np.random.default_rng(7)
    turnover = rng.uniform(0, 0.6, r.size)
    traded = rng.uniform(0, 0.5, r.size)
    ms = trading_metrics(r, rf=0.02, turnover=turnover, traded=traded, turnover_penalty=0.002)
    assert ms["turnover"] == pytest.approx(turnover.mean())
    want = ep.sharpe_ratio(r - 0.002 * traded, risk_free=0.02 / 252)
    assert ms["turnover_adj_sharpe"] == pytest.approx(want, rel=1e-10)
    assert _v(ms, "turnover_adj_sharpe") < _v(ms, "sharpe")
    assert ms.conventions["turnover_adj_basis"] == "traded"
    assert ms.conventions["turnover_penalty"] == 0.002
    fallback = trading_metrics(r, turnover=turnover)
    assert fallback["turnover_adj_sharpe"] == pytest.approx(ep.sharpe_ratio(r - 0.001 * turnover), rel=1e-10)
    assert fallback.conventions["turnover_adj_basis"] == "turnover"


def test_trade_statistics_worked_example() -> None:
    pnls = np.array([10.0, -5.0, 0.0, 20.0, -15.0])
    ms = trading_metrics(_returns(0, n=10), trade_pnls=pnls, trade_returns=pnls / 1000)
    assert ms["total_trades"] == 5
    assert ms["winning_trades"] == 2 and ms["losing_trades"] == 2
    assert ms["win_rate"] == pytest.approx(0.4)  # the break-even trade counts in the denominator
    assert ms["profit_factor"] == pytest.approx(30 / 20)
    assert ms["average_win"] == pytest.approx(15.0)
    assert ms["average_loss"] == pytest.approx(-10.0)
    assert ms["largest_win"] == pytest.approx(20.0)
    assert ms["largest_loss"] == pytest.approx(-15.0)
    assert ms["average_trade_return"] == pytest.approx(0.002)
    assert ms.conventions["trade_basis"] == "pnl"


def test_trade_statistics_on_random_trades() -> None:
    pnls = np.random.default_rng(3).normal(5, 50, 200)
    s = pd.Series(pnls)
    ms = trading_metrics(_returns(1, n=50), trade_pnls=pnls)
    assert ms["win_rate"] == pytest.approx((s > 0).mean())
    assert ms["profit_factor"] == pytest.approx(s[s > 0].sum() / -s[s < 0].sum())
    assert ms["average_win"] == pytest.approx(s[s > 0].mean())
    assert ms["average_loss"] == pytest.approx(s[s < 0].mean())
    assert ms["largest_win"] == pytest.approx(s.max())
    assert ms["largest_loss"] == pytest.approx(s.min())


def test_trade_returns_alone_are_the_basis() -> None:
    ms = trading_metrics(_returns(0, n=10), trade_returns=np.array([0.1, 0.2]))
    assert ms.conventions["trade_basis"] == "return"
    assert ms["profit_factor"] is None and ms.reason("profit_factor") == "no losing trades"
    assert ms["average_loss"] is None and ms["largest_loss"] is None
    assert ms["win_rate"] == 1.0


def test_no_closed_trades() -> None:
    ms = trading_metrics(_returns(0, n=10), trade_pnls=np.array([]))
    assert ms["total_trades"] == 0
    assert ms["win_rate"] is None and ms.reason("win_rate") == "no closed trades"
    json.dumps(ms.to_dict(), allow_nan=False)


def test_account_values() -> None:
    r = _returns(5, n=300)
    ms = trading_metrics(r, initial_capital=10_000.0)
    equity = ep.cum_returns(r, starting_value=10_000.0)
    assert ms["final_value"] == pytest.approx(equity[-1], rel=1e-12)
    assert ms["peak_value"] == pytest.approx(max(10_000.0, equity.max()), rel=1e-12)
    losing = trading_metrics(np.array([-0.01, -0.02]), initial_capital=100.0)
    assert losing["peak_value"] == 100.0


def test_optional_inputs_absent_means_keys_absent() -> None:
    ms = trading_metrics(_returns(0, n=50))
    for name in ("turnover", "turnover_adj_sharpe", "win_rate", "beta", "alpha", "final_value"):
        assert name not in ms


# ----------------------------------------------------------------------------- undefined values and JSON


def test_empty_returns() -> None:
    ms = trading_metrics(np.array([]), turnover=np.array([]), benchmark=np.array([]))
    assert ms["n_periods"] == 0
    for name in ("total_return", "sharpe", "sortino", "max_drawdown", "calmar", "turnover", "beta"):
        assert ms[name] is None and ms.reason(name) == "no returns"
    json.dumps(ms.to_dict(), allow_nan=False)


def test_single_return() -> None:
    ms = trading_metrics(np.array([0.01]))
    assert ms["total_return"] == pytest.approx(0.01)
    assert ms["annualized_return"] == pytest.approx(1.01**252 - 1)
    assert ms["volatility"] is None and ms.reason("volatility") == "fewer than 2 periods"
    assert ms["sharpe"] is None and ms["sortino"] is None


def test_constant_returns_have_zero_volatility_and_no_sharpe() -> None:
    ms = trading_metrics(np.full(100, 0.001))
    assert ms["volatility"] == 0.0
    assert ms["sharpe"] is None and ms.reason("sharpe") == "zero variance"
    assert ms["probabilistic_sharpe"] is None
    # empyrical reports the same case as inf / NaN, which JSON cannot carry
    assert not np.isfinite(ep.sharpe_ratio(np.full(100, 0.001)))
    json.dumps(ms.to_dict(), allow_nan=False)


def test_never_losing_has_no_drawdown_and_no_downside() -> None:
    r = np.abs(_returns(2, n=100)) + 1e-4
    ms = trading_metrics(r)
    assert ms["max_drawdown"] == 0.0 and ms["max_drawdown_duration"] == 0
    assert ms["calmar"] is None and ms.reason("calmar") == "no drawdown"
    assert np.isnan(ep.calmar_ratio(r))  # empyrical agrees the ratio is undefined
    assert ms["downside_volatility"] == 0.0
    assert ms["sortino"] is None and "downside" in (ms.reason("sortino") or "")
    json.dumps(ms.to_dict(), allow_nan=False)


def test_constant_benchmark_has_no_beta() -> None:
    ms = trading_metrics(_returns(0, n=20), benchmark=np.full(20, 0.001))
    assert ms["beta"] is None and ms.reason("beta") == "benchmark has zero variance"
    assert ms["alpha"] is None


def test_overflow_is_none_not_inf() -> None:
    ms = trading_metrics(np.full(300, 10.0) + np.linspace(0, 1, 300))
    assert ms["total_return"] is None and "not finite" in (ms.reason("total_return") or "")
    assert ms["max_drawdown"] is None and ms["max_drawdown_duration"] is None and ms["calmar"] is None
    json.dumps(ms.to_dict(), allow_nan=False)


def test_wiped_out_account() -> None:
    ms = trading_metrics(np.array([0.1, -1.0, 0.0]))
    assert ms["total_return"] == -1.0
    assert ms["annualized_return"] == -1.0
    assert ms["max_drawdown"] == -1.0
    negative = trading_metrics(np.array([0.1, -1.5, 0.0]))
    assert negative["annualized_return"] is None and negative.reason("annualized_return")


@pytest.mark.parametrize(
    ("kwargs", "field", "error"),
    [
        ({"returns": np.array([0.01, np.nan])}, "returns", DataError),
        ({"returns": np.zeros((3, 2))}, "returns", InvalidArgument),
        ({"periods_per_year": 0.0}, "periods_per_year", InvalidArgument),
        ({"rf": float("inf")}, "rf", InvalidArgument),
        ({"turnover_penalty": -0.1}, "turnover_penalty", InvalidArgument),
        ({"benchmark": np.zeros(4)}, "benchmark", InvalidArgument),
        ({"turnover": np.zeros(4)}, "turnover", InvalidArgument),
        ({"traded": np.zeros(4)}, "traded", InvalidArgument),
        ({"trade_pnls": np.array([1.0, np.inf])}, "trade_pnls", DataError),
        ({"trade_pnls": np.ones(2), "trade_returns": np.ones(3)}, "trade_returns", InvalidArgument),
        ({"initial_capital": 0.0}, "initial_capital", InvalidArgument),
    ],
)
def test_rejects_bad_inputs(kwargs: dict, field: str, error: type[Exception]) -> None:
    args = {"returns": np.full(5, 0.01)} | kwargs
    with pytest.raises(error) as err:
        trading_metrics(**args)
    assert err.value.field == field  # type: ignore[attr-defined]


def test_metric_set_round_trips_through_json() -> None:
    r = _returns(9, n=120)
    ms = trading_metrics(r, turnover=np.full(r.size, 0.1), trade_pnls=np.array([1.0]), initial_capital=1e5)
    again = MetricSet.from_dict(json.loads(json.dumps(ms.to_dict(), allow_nan=False)))
    assert again == ms


# ----------------------------------------------------------------------------- periods per year


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (pd.bdate_range("2020-01-01", periods=600), 252.0),
        (pd.bdate_range("2020-01-01", periods=600).delete([5, 50, 51, 300]), 252.0),  # holidays
        (pd.date_range("2021-01-01", periods=400, freq="D"), 365.0),  # crypto: weekends trade
        (pd.date_range("2015-01-02", periods=200, freq="W-FRI"), 52.0),
        (pd.date_range("2000-01-31", periods=120, freq="ME"), 12.0),
        (pd.date_range("2000-03-31", periods=40, freq="QE"), 4.0),
        (pd.date_range("1990-12-31", periods=30, freq="YE"), 1.0),
    ],
)
def test_infer_periods_per_year(dates: pd.DatetimeIndex, expected: float) -> None:
    assert infer_periods_per_year(dates.values) == expected


def test_infer_periods_per_year_intraday_and_panels() -> None:
    days = pd.bdate_range("2022-01-03", periods=30)
    hourly = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(9, 16)])
    assert infer_periods_per_year(hourly.values) == 252.0 * 7
    panel = np.repeat(pd.bdate_range("2020-01-01", periods=50).values, 3)  # long format: repeated dates
    assert infer_periods_per_year(panel) == 252.0
    with pytest.raises(InvalidArgument) as err:
        infer_periods_per_year(np.array(["2020-01-01"], dtype="datetime64[ns]"))
    assert err.value.field == "dates"


# ----------------------------------------------------------------------------- streamed per-bar statistics


def test_bar_stats_fed_in_uneven_blocks_give_the_same_metrics() -> None:
    r = _returns(21, n=5000)
    rng = np.random.default_rng(21)
    traded = rng.uniform(0, 0.3, r.size)
    turnover = rng.uniform(0, 0.4, r.size)
    capital = 1e5
    equity = capital * np.cumprod(1 + r)
    dd = equity / np.maximum(np.maximum.accumulate(equity), capital) - 1.0
    common = {"periods_per_year": 252.0, "rf": 0.02, "turnover_penalty": 0.002}
    arrays = {"turnover": turnover, "traded": traded, "drawdown": dd, "account_equity": equity}
    whole = trading_metrics(r, initial_capital=capital, **arrays, **common)
    stats = BarStats(**common, turnover=True, traded=True, drawdown=True, account_equity=True)
    cuts = [0, 1, 2, 700, 701, 3333, 5000]
    for lo, hi in itertools.pairwise(cuts):
        stats.add(r[lo:hi], **{k: v[lo:hi] for k, v in arrays.items()})
    streamed = trading_metrics(r, initial_capital=capital, **arrays, **common, bar_stats=stats)
    assert whole.values.keys() == streamed.values.keys()
    for name, value in whole.values.items():
        assert streamed.get(name) == pytest.approx(value, rel=1e-12, abs=1e-15), name
    assert streamed["sharpe"] == pytest.approx(ep.sharpe_ratio(r, risk_free=0.02 / 252), rel=1e-10)
    assert streamed["kurtosis"] == pytest.approx(stats_kurtosis(r), rel=1e-10)


def stats_kurtosis(r: np.ndarray) -> float:
    return float(stats.kurtosis(r, fisher=False))


def test_bar_stats_must_match_the_call() -> None:
    r = _returns(22, n=100)
    built = BarStats(periods_per_year=252.0)
    built.add(r)
    with pytest.raises(InvalidArgument) as err:
        trading_metrics(r, periods_per_year=12.0, bar_stats=built)
    assert err.value.field == "bar_stats"
    with pytest.raises(InvalidArgument) as err:
        trading_metrics(r[:50], bar_stats=built)
    assert err.value.field == "bar_stats"
    with pytest.raises(InvalidArgument) as err:  # no drawdown accumulated
        trading_metrics(r, bar_stats=built)
    assert err.value.field == "bar_stats" and "drawdown" in str(err.value)
    with_dd = BarStats(drawdown=True)
    with_dd.add(r, drawdown=np.minimum(r, 0.0))
    with pytest.raises(InvalidArgument) as err:  # traded given, not accumulated
        trading_metrics(r, traded=np.abs(r), drawdown=np.minimum(r, 0.0), bar_stats=with_dd)
    assert err.value.field == "bar_stats" and "traded" in str(err.value)
    with pytest.raises(InvalidArgument) as err:
        built.add(r, traded=r)  # not declared at construction
    assert err.value.field == "traded"
    bad = r.copy()
    bad[7] = np.nan
    with pytest.raises(DataError) as derr:
        BarStats().add(bad)
    assert derr.value.field == "returns" and "position 7" in str(derr.value)
