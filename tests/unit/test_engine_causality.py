"""Causality (METRICS.md, "Time and causality"): data after t never changes anything at or before t.

For every alpha strategy and several engine configurations, all data after
a random date t (predictions, open, high, low, close) is replaced by noise;
the weights, held weights, equity, returns, cash, traded, costs, turnover,
stop exits and every trade closed by t must be identical at or before t.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig, run_backtest, weights_from_signal

pytestmark = pytest.mark.unit

STRATEGIES = [
    ("long_short_topk", {"top_k": 3}),
    ("long_only_topk", {"top_k": 4}),
    ("long_only_topk", {"top_k": 4, "n_drop": 1}),
    ("quantile", {"quantile": 0.25}),
    ("signal_weighted", {"normalize": "zscore"}),
    ("signal_weighted", {"normalize": "rank"}),
    ("threshold", {"upper": 0.5, "lower": -0.5, "size": 0.1}),
]

CONFIGS = [
    {},
    {"execution_lag": 0, "rebalance_every": 2, "rf": 0.03},
    {"execution_lag": 2, "fill_price": "open", "min_fee": 0.5},
    {"stop_loss": 0.03, "take_profit": 0.04},
    {"stop_loss": 0.03, "fill_price": "open", "rebalance_every": 3, "max_gross_leverage": 0.8},
]


def _market(rng: np.random.Generator, n_bars: int, n_syms: int) -> dict[str, np.ndarray]:
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.025, (n_bars, n_syms)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.01, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, close.shape))
    close[:5, 0] = open_[:5, 0] = high[:5, 0] = low[:5, 0] = np.nan  # listed late
    signal = rng.normal(size=close.shape)
    signal[rng.random(signal.shape) < 0.1] = np.nan
    return {"signal": signal, "open": open_, "high": high, "low": low, "close": close}


def _perturbed(data: dict[str, np.ndarray], t: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in data.items()}
    tail = out["close"][t + 1 :].shape
    out["signal"][t + 1 :] = rng.normal(size=tail) * 3
    for k in ("open", "high", "low", "close"):
        out[k][t + 1 :] = rng.uniform(1.0, 100.0, tail)
    return out


def _backtest(data, strategy, params, cfg):
    every = cfg.get("rebalance_every", 1)
    w = weights_from_signal(data["signal"], strategy, params, rebalance_every=every)
    out = run_backtest(
        w,
        data["close"],
        dates=pd.bdate_range("2023-01-02", periods=len(w)),
        symbols=[f"s{i}" for i in range(w.shape[1])],
        config=EngineConfig(**cfg),
        open=data["open"],
        high=data["high"],
        low=data["low"],
    )
    return w, out


def _closed_by(trades: pd.DataFrame, t: int) -> pd.DataFrame:
    done = trades[(~trades["is_open"]) & (trades["exit_bar"] <= t)]
    return done.drop(columns=["trade_number"]).reset_index(drop=True)


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default"
)
@pytest.mark.parametrize(("strategy", "params"), STRATEGIES, ids=lambda x: x if isinstance(x, str) else "")
def test_future_data_never_changes_the_past(strategy, params, cfg):
    rng = np.random.default_rng(zlib.crc32(f"{strategy}{params}{cfg}".encode()))
    data = _market(rng, n_bars=70, n_syms=10)
    for t in rng.integers(8, 62, size=2):
        w0, base = _backtest(data, strategy, params, cfg)
        w1, alt = _backtest(_perturbed(data, int(t), rng), strategy, params, cfg)
        s = slice(0, int(t) + 1)
        np.testing.assert_array_equal(w0[s], w1[s])
        for name in (
            "weights_target",
            "weights_held",
            "equity",
            "returns",
            "cash",
            "traded",
            "costs",
            "turnover",
        ):
            np.testing.assert_array_equal(getattr(base, name)[s], getattr(alt, name)[s], err_msg=name)
        keep0, keep1 = base.stops.bar <= t, alt.stops.bar <= t
        np.testing.assert_array_equal(base.stops.symbol[keep0], alt.stops.symbol[keep1])
        np.testing.assert_array_equal(base.stops.price[keep0], alt.stops.price[keep1])
        pd.testing.assert_frame_equal(_closed_by(base.trades, int(t)), _closed_by(alt.trades, int(t)))
        # the test can fail: the future does change later bars
        assert not np.array_equal(base.equity, alt.equity)
        assert len(_closed_by(base.trades, int(t))) > 0
        if "stop_loss" in cfg:
            assert len(base.stops) > 0
