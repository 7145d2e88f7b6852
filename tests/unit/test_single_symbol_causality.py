"""A one-symbol rule backtest's past does not depend on its future, to the last bit.

The same bars `[0, t]` must give bitwise identical equity, drawdown, held
weight, returns, traded and turnover, and identical ledger rows for the
trades closed by t, whether the bars after t are complete or have missing
closes (a symbol suspended or delisted later).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.rules import run_rule_backtest

pytestmark = pytest.mark.unit

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("sma_cross", {"fast_period": 10, "slow_period": 30}),
    ("sma_cross", {"fast_period": 5, "slow_period": 20, "allow_short": True}),
    ("rsi", {"period": 14}),
    ("momentum", {"lookback": 20}),
    ("buy_and_hold", {}),
    ("macd", {}),
    ("bollinger", {"allow_short": True}),
]


def _series(seed: int, n_bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.015, n_bars)))
    high = close * (1.0 + rng.uniform(0.0, 0.01, n_bars))
    low = close * (1.0 - rng.uniform(0.0, 0.01, n_bars))
    return close, high, low, pd.bdate_range("2001-01-02", periods=n_bars)


def _holes(x: np.ndarray, t: int, seed: int) -> np.ndarray:
    """`x` with missing values after bar t: scattered bars, a suspension, and the last bars."""
    out = x.copy()
    rng = np.random.default_rng(seed)
    later = np.arange(t + 1, x.size)
    out[later[rng.random(later.size) < 0.05]] = np.nan
    out[t + 3 : t + 40] = np.nan
    out[-25:] = np.nan
    return out


def _assert_same_past(clean: Any, holed: Any, t: int, *, closes: bool) -> None:
    for name in ("equity", "drawdown", "weights_held", "returns", "traded", "turnover"):
        a, b = getattr(clean, name)[: t + 1], getattr(holed, name)[: t + 1]
        assert np.array_equal(a, b), f"{name}: first difference at bar {np.flatnonzero(a != b)[:1]}"
    closed_a = clean.trades[(~clean.trades["is_open"]) & (clean.trades["exit_bar"] <= t)]
    closed_b = holed.trades[(~holed.trades["is_open"]) & (holed.trades["exit_bar"] <= t)]
    assert len(closed_a) == len(closed_b)
    assert len(closed_a) > 0 or not closes
    for col in closed_a.columns:
        assert np.array_equal(closed_a[col].to_numpy(), closed_b[col].to_numpy()), col
    # the entries made by t (trades still open then included)
    entered_a = clean.trades[clean.trades["entry_bar"] <= t]
    entered_b = holed.trades[holed.trades["entry_bar"] <= t]
    assert len(entered_a) == len(entered_b) > 0
    for col in ("entry_bar", "entry_date", "direction"):
        assert np.array_equal(entered_a[col].to_numpy(), entered_b[col].to_numpy()), col


@pytest.mark.parametrize(("strategy", "params"), STRATEGIES)
def test_missing_future_closes_leave_the_past_bitwise_unchanged(
    strategy: str, params: dict[str, Any]
) -> None:
    n_bars = 3000
    close, high, low, dates = _series(41, n_bars)
    kwargs = {"dates": dates, "symbols": ["X"], "config": EngineConfig(fees=0.001, slippage=0.0005)}
    clean = run_rule_backtest(strategy, params, close=close, high=high, low=low, **kwargs)
    for k, t in enumerate((900, 1700, 2600)):
        c = _holes(close, t, 7 + k)
        missing = np.isnan(c)
        h = np.where(missing, np.nan, high)
        lo = np.where(missing, np.nan, low)
        holed = run_rule_backtest(strategy, params, close=c, high=h, low=lo, **kwargs)
        _assert_same_past(clean, holed, t, closes=strategy != "buy_and_hold")
        assert not np.array_equal(clean.equity, holed.equity)
