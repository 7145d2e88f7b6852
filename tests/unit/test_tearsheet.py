"""The tearsheet: its numbers are the catalog's, its computations agree with pandas / scipy references,
and the page loads nothing from anywhere."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.evaluation import ic_decay
from alphaswarm_common.metrics import trading_metrics
from alphaswarm_common.protoconv import array_to_proto, metricset_to_proto, struct_from_dict
from alphaswarm_common.reporting import (
    alpha_diagnostics,
    alpha_run_id_from_notes,
    buy_and_hold_equity,
    compute_comparisons,
    format_metric,
    from_catalog,
    render_tearsheet,
    verdict,
)
from alphaswarm_common.reporting.html import monthly_returns, rolling_sharpe

pytestmark = pytest.mark.unit


def _market(t: int = 300, n: int = 30, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2021-01-04"), np.datetime64("2021-01-04") + t).astype("datetime64[D]")
    r = rng.normal(0.0003, 0.015, (t, n))
    close = 40 * np.exp(np.cumsum(r, axis=0))
    close[rng.random((t, n)) < 0.03] = np.nan
    close[0] = np.where(np.isnan(close[0]), 40.0, close[0])
    nxt = np.vstack([close[2:] / close[1:-1] - 1, np.full((2, n), np.nan)])
    signal = np.nan_to_num(nxt) + rng.normal(0, 0.02, (t, n))
    return dates, close, signal


def _record(dates: np.ndarray, returns: np.ndarray, *, notes: str = "") -> ppb.BacktestRecord:
    capital = 10_000.0
    equity = capital * np.cumprod(1 + returns)
    peak = np.maximum.accumulate(np.maximum(equity, capital))
    ms = trading_metrics(returns, periods_per_year=252, initial_capital=capital)
    rec = ppb.BacktestRecord(
        backtest_id="0b0e7d1c-1111-4a4a-9c9c-123456789abc",
        symbol="PORTFOLIO",
        strategy_type="alpha:top_k",
        start_date=str(dates[0]),
        end_date=str(dates[-1]),
        initial_capital=capital,
        fees=0.001,
        slippage=0.0005,
        dates=[str(d) for d in dates],
        notes=notes,
        status="completed",
    )
    rec.equity_curve.CopyFrom(array_to_proto(equity))
    rec.drawdown_series.CopyFrom(array_to_proto(equity / peak - 1))
    rec.metrics.CopyFrom(metricset_to_proto(ms.values, ms.reasons, ms.conventions))
    rec.parameters.CopyFrom(
        struct_from_dict(
            {
                "strategy": {"type": "top_k", "params": {"k": 5}},
                "backtest": {"fees": 0.001, "slippage": 0.0005, "benchmark": "SPY", "execution_lag": 1},
                "symbols": [f"S{i}" for i in range(30)],
            }
        )
    )
    return rec


def _trades() -> list[resources_pb2.Trade]:
    return [
        resources_pb2.Trade(
            trade_number=i,
            symbol=f"S{i}",
            direction="long" if i % 2 else "short",
            entry_date="2021-02-01",
            entry_price=10.0,
            exit_date="2021-03-01" if i < 5 else "",
            exit_price=11.0 if i < 5 else 0.0,
            position_size=1000.0,
            pnl=(i - 3) * 10.0,
            pnl_percent=(i - 3) / 100,
            duration_bars=20,
            exit_reason="signal" if i < 5 else "end_of_data",
        )
        for i in range(1, 7)
    ]


def test_the_page_shows_the_catalogs_numbers_and_loads_nothing() -> None:
    dates, close, signal = _market()
    returns = np.random.default_rng(1).normal(0.0004, 0.01, dates.size)
    rec = _record(dates, returns)
    comparisons = compute_comparisons(
        dates=dates,
        initial_capital=rec.initial_capital,
        close=close,
        benchmark_returns=np.r_[0.0, np.diff(close[:, 0]) / close[:-1, 0]],
        signal=signal,
        execution_lag=1,
        fees=0.001,
        slippage=0.0005,
    )
    page = render_tearsheet(from_catalog(rec, _trades(), comparisons=comparisons))

    shown = dict(re.findall(r'data-metric="trading\.([a-z_]+)" data-value="([^"]*)"', page))
    from alphaswarm_common.protoconv import metricset_from_proto

    values, _, _ = metricset_from_proto(rec.metrics)
    assert set(shown) == set(values)
    for name, value in values.items():
        assert shown[name] == ("" if value is None else repr(float(value))), name
    assert format_metric("sharpe", values["sharpe"]) in page
    assert format_metric("max_drawdown", values["max_drawdown"]) in page  # percent with the % sign
    # Nothing external: no script, no link, no remote src/href/url().
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    charts = re.findall(r'data-chart="([a-z_]+)"', page)
    assert charts == ["equity", "drawdown", "rolling_sharpe", "monthly_returns", "ic", "ic_decay", "deciles"]
    for png in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        assert len(png) > 2000
    # What was tested.
    for text in (
        "30 symbols",
        "top_k",
        "fees 10.0 bp",
        "slippage 5.0 bp",
        "SPY",
        str(dates[0]),
        str(dates[-1]),
    ):
        assert text in page, text
    assert "buy-and-hold of the universe by" in page


def test_a_backtest_without_comparisons_says_so() -> None:
    dates, _, _ = _market(t=80)
    rec = _record(dates, np.full(dates.size, 0.001))
    data = from_catalog(rec, [])
    page = render_tearsheet(data)
    assert data.alpha is None and data.buy_and_hold_equity is None
    assert "No signal diagnostics recorded" in page and "none is recorded for this backtest" in page
    assert "buy-and-hold of the universe not recorded" in verdict(data)
    assert re.findall(r'data-chart="([a-z_]+)"', page) == [
        "equity",
        "drawdown",
        "rolling_sharpe",
        "monthly_returns",
    ]


def test_comparisons_of_other_dates_are_left_out() -> None:
    dates, close, _ = _market(t=60)
    rec = _record(dates, np.zeros(dates.size))
    other = compute_comparisons(dates=dates[1:], initial_capital=1.0, close=close[1:])
    data = from_catalog(rec, [], comparisons=other)
    assert data.buy_and_hold_equity is None and any("other dates" in n for n in data.notes)


def test_buy_and_hold_is_equal_weight_held_with_missing_closes_carried() -> None:
    _, close, _ = _market(t=50, n=6)
    close[0, 2] = np.nan  # not priced on the first date: not part of the portfolio
    got = buy_and_hold_equity(close, 1000.0)
    frame = pd.DataFrame(close).drop(columns=[2]).ffill()
    expected = 1000.0 * (frame / frame.iloc[0]).mean(axis=1).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_signal_diagnostics_match_scipy_and_pandas() -> None:
    _, close, signal = _market(t=120, n=25)
    fees, slip = 0.001, 0.0005
    diag = alpha_diagnostics(signal, close, execution_lag=1, fees=fees, slippage=slip)
    fwd = np.vstack([close[2:] / close[1:-1] - 1, np.full((2, close.shape[1]), np.nan)])
    for t in (5, 40, 90):
        ok = np.isfinite(signal[t]) & np.isfinite(fwd[t])
        assert diag.rank_ic[t] == pytest.approx(stats.spearmanr(signal[t, ok], fwd[t, ok])[0], abs=1e-12)
        assert diag.ic[t] == pytest.approx(stats.pearsonr(signal[t, ok], fwd[t, ok])[0], abs=1e-12)
    assert np.isnan(diag.ic[-1]) and np.isnan(diag.rank_ic[-2])
    # Deciles: pandas qcut per date, equal weight, turnover of the membership weights.
    gross, net = np.zeros(10), np.zeros(10)
    counts = np.zeros(10)
    prev = {q: pd.Series(dtype=float) for q in range(1, 11)}
    for t in range(close.shape[0]):
        ok = np.isfinite(signal[t]) & np.isfinite(fwd[t])
        if ok.sum() < 10:
            continue
        s = pd.Series(signal[t, ok], index=np.flatnonzero(ok))
        buckets = pd.qcut(s, 10, labels=False) + 1
        for q in range(1, 11):
            members = buckets.index[buckets == q]
            w = pd.Series(1.0 / len(members), index=members)
            turn = w.sub(prev[q], fill_value=0.0).abs().sum()
            ret = fwd[t, members].mean()
            gross[q - 1] += ret
            net[q - 1] += ret - (fees + slip) * turn
            counts[q - 1] += 1
            prev[q] = w
    np.testing.assert_allclose(diag.decile_gross_bps, gross / counts * 1e4, rtol=1e-9)
    np.testing.assert_allclose(diag.decile_net_bps, net / counts * 1e4, rtol=1e-9)
    assert (diag.decile_net_bps < diag.decile_gross_bps).all()
    reference = ic_decay(signal, close, execution_lag=1)
    assert set(diag.decay) == set(reference) == {1, 5, 10, 20}
    for h, (value, _) in reference.items():
        assert diag.decay[h] == pytest.approx(value, abs=1e-12), h


def test_monthly_returns_and_rolling_sharpe_match_pandas() -> None:
    dates, _, _ = _market(t=200)
    r = np.random.default_rng(7).normal(0.0005, 0.01, dates.size)
    years, grid = monthly_returns(dates, r)
    s = pd.Series(r, index=pd.DatetimeIndex(dates))
    monthly = (1 + s).groupby([s.index.year, s.index.month]).prod() - 1
    for (y, m), v in monthly.items():
        assert grid[years.index(y), m - 1] == pytest.approx(v, rel=1e-12)
    roll = rolling_sharpe(r, 63, 252.0)
    ref = s.rolling(63).mean() / s.rolling(63).std(ddof=1) * np.sqrt(252)
    np.testing.assert_allclose(roll[62:], ref.to_numpy()[62:], rtol=1e-9)
    assert np.isnan(roll[:62]).all()


def test_the_alpha_run_is_found_from_the_backtest_notes() -> None:
    run = "3f0a8c52-2b1d-4c8e-9f70-0123456789ab"
    assert alpha_run_id_from_notes(f"alpha-backtest run {run}: ridge v3") == run
    assert alpha_run_id_from_notes("a rule backtest") is None


def test_undefined_metrics_show_their_reason() -> None:
    dates, _, _ = _market(t=30)
    rec = _record(dates, np.full(dates.size, 0.001))  # no losing bar: sortino and calmar are undefined
    page = render_tearsheet(from_catalog(rec, []))
    assert 'data-metric="trading.calmar" data-value="">n/a (no drawdown)' in page
