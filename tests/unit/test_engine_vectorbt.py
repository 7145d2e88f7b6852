"""The engine against vectorbt 1.2's `Portfolio.from_orders(size_type="targetpercent", cash_sharing=True)`.

The same target weights, placed by hand at their fill bars (the execution
lag applied), go through vectorbt with `fees = fees + slippage`; the two
equity curves must agree to 1e-9 relative (ours scaled to vectorbt's
initial cash), and our trade ledger must match vectorbt's position records
(vectorbt's positions aggregate every fill of a position, as ours do).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig, run_backtest
from alphaswarm_backtester.engine.kernels import decision_schedule

vbt = pytest.importorskip("vectorbt")

pytestmark = pytest.mark.unit

INIT_CASH = 1e12


def _panel(seed: int, n_bars: int = 90, n_syms: int = 6, *, net: float = 0.9, nan_prices: bool = False):
    rng = np.random.default_rng(seed)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_syms)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.006, close.shape))
    w = rng.uniform(-1.0, 1.0, close.shape)
    w[rng.random(close.shape) < 0.3] = 0.0
    w[rng.random(close.shape) < 0.05] = np.nan  # no opinion -> 0
    # long-short with a net long below 1, so vectorbt never runs out of cash
    gross = np.nansum(np.abs(w), axis=1, keepdims=True)
    w = w / np.where(gross > 0, gross, 1.0) * net
    if nan_prices:
        close[:8, 1] = np.nan  # listed late
        open_[:8, 1] = np.nan
        close[40:47, 3] = np.nan  # suspended while possibly held
        open_[40:47, 3] = np.nan
    return close, open_, w


def _vbt(close, w, *, fees, lag, every, open_=None):
    n_bars = close.shape[0]
    decisions, fills = decision_schedule(n_bars, lag, every)
    size = np.full(close.shape, np.nan)
    size[fills] = np.nan_to_num(w[decisions])
    return _vbt_orders(close, size, fees=fees, open_=open_)


def _vbt_orders(close, size, *, fees, open_=None):
    """Target-percent orders `size` (NaN = no order) with shared cash, filled at the close or `open_`."""
    kwargs = {}
    if open_ is not None:
        # our convention for an untradable holding at an open fill: its last close (vectorbt's
        # default would be its last order price); with every open present this is just the open.
        last_close = pd.DataFrame(close).ffill().shift(1).to_numpy()
        val = np.where(np.isfinite(open_), open_, last_close)
        kwargs = {"price": pd.DataFrame(open_), "val_price": pd.DataFrame(val)}
    return vbt.Portfolio.from_orders(
        pd.DataFrame(close),
        size=pd.DataFrame(size),
        size_type="targetpercent",
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        fees=fees,
        init_cash=INIT_CASH,
        direction="both",
        freq="1D",
        **kwargs,
    )


def _ours(close, w, *, fees, slippage, lag, every, fill="close", open_=None):
    cfg = EngineConfig(
        fees=fees, slippage=slippage, execution_lag=lag, rebalance_every=every, fill_price=fill
    )
    return run_backtest(
        w,
        close,
        dates=pd.bdate_range("2021-01-04", periods=close.shape[0]),
        symbols=[f"s{i}" for i in range(close.shape[1])],
        config=cfg,
        open=open_,
    )


CASES = [
    # seed, fees, slippage, lag, rebalance_every, fill, nan prices
    (0, 0.0, 0.0, 1, 1, "close", False),
    (1, 0.001, 0.001, 1, 1, "close", False),
    (2, 0.003, 0.0005, 0, 1, "close", False),
    (3, 0.002, 0.0, 1, 3, "close", False),
    (4, 0.001, 0.001, 2, 5, "close", False),
    (5, 0.001, 0.001, 1, 1, "open", False),
    (6, 0.0, 0.0, 2, 2, "open", False),
    (7, 0.001, 0.001, 1, 1, "close", True),
    (8, 0.002, 0.0, 1, 2, "open", True),
]


@pytest.mark.parametrize(("seed", "fees", "slippage", "lag", "every", "fill", "nan_prices"), CASES)
def test_equity_matches_vectorbt(seed, fees, slippage, lag, every, fill, nan_prices):
    close, open_, w = _panel(seed, nan_prices=nan_prices)
    px_open = open_ if fill == "open" else None
    out = _ours(close, w, fees=fees, slippage=slippage, lag=lag, every=every, fill=fill, open_=px_open)
    pf = _vbt(close, w, fees=fees + slippage, lag=lag, every=every, open_=px_open)
    theirs = pf.value().to_numpy() / INIT_CASH
    ours = out.equity / out.config.initial_capital
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)
    np.testing.assert_allclose(out.returns, pf.returns().to_numpy(), rtol=0, atol=1e-9)
    # our weights_held are vectorbt's asset values over the group value
    their_w = pf.asset_value(group_by=False).to_numpy() / pf.value().to_numpy()[:, None]
    np.testing.assert_allclose(out.weights_held, their_w, rtol=0, atol=1e-9)


def test_full_investment_without_fees_matches_vectorbt():
    # fully invested long-only book: no cash buffer is needed when there are no fees
    rng = np.random.default_rng(11)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, (60, 4)), axis=0))
    w = rng.random((60, 4))
    w /= w.sum(axis=1, keepdims=True)
    out = _ours(close, w, fees=0.0, slippage=0.0, lag=1, every=1)
    pf = _vbt(close, w, fees=0.0, lag=1, every=1)
    np.testing.assert_allclose(out.equity / 1e4, pf.value().to_numpy() / INIT_CASH, rtol=1e-9)


@pytest.mark.parametrize(
    ("seed", "fees", "slippage", "lag", "every", "fill", "nan_prices"), CASES[1:6] + CASES[7:]
)
def test_ledger_matches_vectorbt_positions(seed, fees, slippage, lag, every, fill, nan_prices):
    close, open_, w = _panel(seed, nan_prices=nan_prices)
    px_open = open_ if fill == "open" else None
    out = _ours(close, w, fees=fees, slippage=slippage, lag=lag, every=every, fill=fill, open_=px_open)
    pf = _vbt(close, w, fees=fees + slippage, lag=lag, every=every, open_=px_open)
    rec = pd.DataFrame(pf.positions.values).sort_values(["col", "entry_idx"], kind="stable")
    tr = out.trades
    assert len(tr) == len(rec) > 20
    scale = out.config.initial_capital / INIT_CASH
    np.testing.assert_array_equal(tr["symbol"].cat.codes.to_numpy(), rec["col"].to_numpy())
    np.testing.assert_array_equal(tr["entry_bar"].to_numpy(), rec["entry_idx"].to_numpy())
    np.testing.assert_array_equal(tr["exit_bar"].to_numpy(), rec["exit_idx"].to_numpy())
    np.testing.assert_array_equal((tr["direction"] == "short").to_numpy(), rec["direction"].to_numpy() == 1)
    np.testing.assert_array_equal(tr["is_open"].to_numpy(), rec["status"].to_numpy() == 0)
    np.testing.assert_allclose(tr["shares"].to_numpy(), rec["size"].to_numpy() * scale, rtol=1e-9)
    np.testing.assert_allclose(tr["entry_price"].to_numpy(), rec["entry_price"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(tr["exit_price"].to_numpy(), rec["exit_price"].to_numpy(), rtol=1e-9)
    # currency amounts: to 1e-9 of the trade's notional
    notional = tr["position_size"].to_numpy()
    pnl_gap = np.abs(tr["pnl"].to_numpy() - rec["pnl"].to_numpy() * scale) / notional
    assert pnl_gap.max() < 1e-9
    np.testing.assert_allclose(tr["pnl_percent"].to_numpy(), rec["return"].to_numpy(), rtol=0, atol=1e-9)
    their_costs = (rec["entry_fees"] + rec["exit_fees"]).to_numpy() * scale
    ours_costs = (tr["fees_paid"] + tr["slippage_cost"]).to_numpy()
    assert (np.abs(ours_costs - their_costs) / notional).max() < 1e-9


@pytest.mark.parametrize(
    ("seed", "fill", "nan_prices"), [(21, "close", False), (22, "close", True), (23, "open", True)]
)
def test_order_mask_matches_vectorbt_orders_on_chosen_cells(seed, fill, nan_prices):
    # an order mask is vectorbt's NaN size: that symbol places no order on that row
    close, open_, w = _panel(seed, nan_prices=nan_prices)
    # long-only and at most 0.12 a symbol: the symbols not ordered keep their drifted weights, so the
    # book stays well below 1 and vectorbt never caps a purchase by its cash
    w = np.abs(w) * 0.12 / np.nanmax(np.abs(w))
    rng = np.random.default_rng(seed + 100)
    mask = rng.random(close.shape) < 0.3
    mask[rng.random(close.shape[0]) < 0.2] = False  # rows without any order are no fill
    px_open = open_ if fill == "open" else None
    cfg = EngineConfig(fees=0.001, slippage=0.001, execution_lag=1, fill_price=fill)
    out = run_backtest(
        w,
        close,
        dates=pd.bdate_range("2021-01-04", periods=close.shape[0]),
        symbols=[f"s{i}" for i in range(close.shape[1])],
        config=cfg,
        open=px_open,
        order_mask=mask,
    )
    masked_w = np.where(mask, np.nan_to_num(w), np.nan)
    size = np.full(close.shape, np.nan)
    size[1:] = masked_w[:-1]
    pf = _vbt_orders(close, size, fees=0.002, open_=px_open)
    np.testing.assert_allclose(out.equity / 1e4, pf.value().to_numpy() / INIT_CASH, rtol=1e-9)
    their_w = pf.asset_value(group_by=False).to_numpy() / pf.value().to_numpy()[:, None]
    np.testing.assert_allclose(out.weights_held, their_w, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out.fill_bars, np.flatnonzero(mask[:-1].any(axis=1)) + 1)
    rec = pd.DataFrame(pf.positions.values).sort_values(["col", "entry_idx"], kind="stable")
    assert len(out.trades) == len(rec) > 10
    np.testing.assert_array_equal(out.trades["entry_bar"].to_numpy(), rec["entry_idx"].to_numpy())
    np.testing.assert_array_equal(out.trades["exit_bar"].to_numpy(), rec["exit_idx"].to_numpy())
