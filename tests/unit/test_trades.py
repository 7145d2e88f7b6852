"""The trade ledger: hand-built cases and a plain per-bar reference ledger.

`_reference_ledger` below walks the share path bar by bar with the
definitions of METRICS.md and the ledger's docstring (a trade is a run of
one sign; increases are entries, decreases exits; a flipping order's cost is
split by shares; MAE/MFE over the bars held through plus the exit price).
It shares no code with the vectorised ledger, which must reproduce it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import TRADE_COLUMNS, EngineConfig, run_backtest

pytestmark = pytest.mark.unit


def _run(w, close, **kw):
    close = np.asarray(close, dtype=float)
    n_bars = close.shape[0]
    n_syms = 1 if close.ndim == 1 else close.shape[1]
    prices = {k: kw.pop(k) for k in ("open", "high", "low") if k in kw}
    return run_backtest(
        w,
        close,
        dates=pd.bdate_range("2024-01-01", periods=n_bars),
        symbols=[f"S{i}" for i in range(n_syms)],
        config=EngineConfig(**kw),
        **prices,
    )


def _reference_ledger(shares, price, high, low, last_close, fees, slippage):
    """One symbol, close fills, no stops: the trades of a share path, bar by bar."""
    rate = fees + slippage
    trades = []
    cur = None
    prev = 0.0
    for t in range(len(shares)):
        now = shares[t]
        if cur is not None and prev != 0 and now * prev >= 0 and now != 0:
            # held through bar t: its range counts
            cur["hi"] = max(cur["hi"], high[t])
            cur["lo"] = min(cur["lo"], low[t])
        if now == prev:
            continue
        order = abs(now - prev) * price[t]
        closes = prev != 0 and (now == 0 or np.sign(now) != np.sign(prev))
        if closes:
            part = abs(prev) / abs(now - prev)
            cur["hi"] = max(cur["hi"], high[t])
            cur["lo"] = min(cur["lo"], low[t])
            cur["exit_value"] += abs(prev) * price[t]
            cur["cost"] += rate * order * part
            cur["exit_bar"] = t
            cur["last_price"] = price[t]
            cur["open"] = False
            trades.append(cur)
            cur = None
        if now != 0 and (prev == 0 or closes):
            part = abs(now) / abs(now - prev)
            cur = {
                "entry_bar": t,
                "dir": np.sign(now),
                "size": abs(now),
                "entry_value": abs(now) * price[t],
                "exit_value": 0.0,
                "cost": rate * order * part,
                "hi": -np.inf,
                "lo": np.inf,
            }
        elif now != 0:  # resize, same sign
            if abs(now) > abs(prev):
                cur["size"] += abs(now) - abs(prev)
                cur["entry_value"] += (abs(now) - abs(prev)) * price[t]
            else:
                cur["exit_value"] += (abs(prev) - abs(now)) * price[t]
            cur["cost"] += rate * order
        prev = now
    if cur is not None:
        cur["exit_value"] += abs(prev) * last_close
        cur["exit_bar"] = len(shares) - 1
        cur["last_price"] = last_close
        cur["open"] = True
        trades.append(cur)
    rows = []
    for tr in trades:
        entry = tr["entry_value"] / tr["size"]
        pnl = tr["dir"] * (tr["exit_value"] - tr["entry_value"]) - tr["cost"]
        if tr["dir"] > 0:
            excursions = [tr["lo"] / entry - 1, tr["hi"] / entry - 1]
        else:
            excursions = [1 - tr["hi"] / entry, 1 - tr["lo"] / entry]
        excursions = [e for e in excursions if np.isfinite(e)]
        excursions += [tr["dir"] * (tr["last_price"] / entry - 1), 0.0]
        rows.append(
            {
                "entry_bar": tr["entry_bar"],
                "exit_bar": tr["exit_bar"],
                "direction": "long" if tr["dir"] > 0 else "short",
                "shares": tr["size"],
                "entry_price": entry,
                "exit_price": tr["exit_value"] / tr["size"],
                "pnl": pnl,
                "pnl_percent": pnl / tr["entry_value"],
                "fees_paid": tr["cost"] * fees / rate,
                "mae": min(excursions),
                "mfe": max(excursions),
                "is_open": tr["open"],
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", range(4))
def test_ledger_matches_the_reference_ledger(seed):
    rng = np.random.default_rng(seed)
    n_bars, n_syms = 120, 4
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_syms)), axis=0))
    high = close * (1 + rng.uniform(0, 0.02, close.shape))
    low = close * (1 - rng.uniform(0, 0.02, close.shape))
    # sticky signs: runs of long / flat / short with resizes in between
    state = np.cumsum(rng.random((n_bars, n_syms)) < 0.15, axis=0) % 3 - 1
    w = state * rng.uniform(0.05, 0.25, close.shape)
    fees, slip = 0.001, 0.0004
    out = _run(w, close, high=high, low=low, fees=fees, slippage=slip)
    shares = out.shares(close)
    for i in range(n_syms):
        ours = out.trades[out.trades["symbol"] == f"S{i}"].reset_index(drop=True)
        ref = _reference_ledger(shares[:, i], close[:, i], high[:, i], low[:, i], close[-1, i], fees, slip)
        assert len(ours) == len(ref) > 3
        np.testing.assert_array_equal(ours["entry_bar"], ref["entry_bar"])
        np.testing.assert_array_equal(ours["exit_bar"], ref["exit_bar"])
        np.testing.assert_array_equal(ours["direction"].astype(str), ref["direction"])
        np.testing.assert_array_equal(ours["is_open"], ref["is_open"])
        for col in ("shares", "entry_price", "exit_price", "pnl", "pnl_percent", "fees_paid", "mae", "mfe"):
            np.testing.assert_allclose(ours[col], ref[col], rtol=1e-9, atol=1e-9, err_msg=col)
    np.testing.assert_allclose(out.trades["slippage_cost"], out.trades["fees_paid"] * slip / fees, rtol=1e-12)


def test_open_resize_flip_close_and_end_of_data():
    # one symbol, no costs, decisions fill at the same close (lag 0)
    close = np.array([10.0, 10.0, 12.0, 15.0, 12.0, 10.0, 8.0, 9.0, 10.0])
    w = np.array([0.0, 0.5, 1.0, -0.5, -0.5, 0.0, 0.0, 0.4, 0.4])
    out = _run(w, close, fees=0.0, slippage=0.0, execution_lag=0, initial_capital=1000.0)
    tr = out.trades
    assert list(tr.columns) == list(TRADE_COLUMNS)
    assert list(tr["direction"].astype(str)) == ["long", "short", "long"]
    assert list(tr["exit_reason"].astype(str)) == ["rebalance", "signal", "end_of_data"]
    assert list(tr["is_open"]) == [False, False, True]
    assert list(tr["trade_number"]) == [1, 2, 3]
    # bar 1: 50 shares @10; bar 2: equity 1100 -> 1100/12 shares (resize, same trade);
    # bar 3: equity 1100 + 1100/12 * 3 = 1375, flip to -687.5 / 15 shares
    long_shares = 1100 / 12
    equity3 = 1375.0
    assert tr.loc[0, "shares"] == pytest.approx(long_shares)  # 50 entered + (1100/12 - 50) added
    assert tr.loc[0, "entry_price"] == pytest.approx((50 * 10 + (long_shares - 50) * 12) / long_shares)
    assert tr.loc[0, "exit_price"] == pytest.approx(15.0)
    assert tr.loc[0, "pnl"] == pytest.approx(equity3 - 1000.0)
    assert (tr.loc[0, "entry_bar"], tr.loc[0, "exit_bar"], tr.loc[0, "duration_bars"]) == (1, 3, 2)
    # the flip sells 1100/12 + 687.5/15 shares at 15 (cash 2062.5); bar 4: equity
    # 2062.5 - 45.83 * 12 = 1512.5, so the short grows to 756.25 / 12 shares, sold at 12
    short0 = equity3 * 0.5 / 15
    short1 = (2062.5 - short0 * 12) * 0.5 / 12
    assert tr.loc[1, "shares"] == pytest.approx(short1)
    assert tr.loc[1, "entry_price"] == pytest.approx((short0 * 15 + (short1 - short0) * 12) / short1)
    assert tr.loc[1, "exit_price"] == pytest.approx(10.0)  # bar 5: all covered at 10
    assert tr.loc[1, "pnl"] == pytest.approx(out.equity[5] - equity3)
    assert tr.loc[1, "exit_bar"] == 5
    # the last trade is open: valued at the last close, no exit cost
    assert tr.loc[2, "exit_price"] == pytest.approx(10.0)
    assert tr.loc[2, "exit_date"] == pd.Timestamp("2024-01-11")
    assert tr.loc[2, "pnl"] == pytest.approx(out.equity[-1] - out.equity[6])
    assert tr["pnl"].sum() == pytest.approx(out.equity[-1] - 1000.0)


def test_mae_mfe_come_from_high_and_low():
    close = np.array([100.0, 100.0, 104.0, 98.0, 103.0, 103.0])
    high = np.array([101.0, 101.0, 110.0, 99.0, 104.0, 104.0])
    low = np.array([99.0, 99.0, 102.0, 90.0, 101.0, 101.0])
    w = np.array([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    out = _run(w, close, high=high, low=low, fees=0.0, slippage=0.0, execution_lag=0)
    tr = out.trades.iloc[0]
    # entered at the close of bar 1 @100, held through bars 2-4, sold at the close of bar 4 @103;
    # resizes happen at 104 and 98, so the entry price is the size-weighted average of the buys
    entry = tr["entry_price"]
    assert tr["mfe"] == pytest.approx(110.0 / entry - 1)
    assert tr["mae"] == pytest.approx(90.0 / entry - 1)
    short = _run(-w, close, high=high, low=low, fees=0.0, slippage=0.0, execution_lag=0).trades.iloc[0]
    assert short["mfe"] == pytest.approx(1 - 90.0 / short["entry_price"])
    assert short["mae"] == pytest.approx(1 - 110.0 / short["entry_price"])
    # without high/low, the closes
    plain = _run(w, close, fees=0.0, slippage=0.0, execution_lag=0).trades.iloc[0]
    assert plain["mfe"] == pytest.approx(104.0 / plain["entry_price"] - 1)
    assert plain["mae"] == pytest.approx(98.0 / plain["entry_price"] - 1)


def _stop_case(**kw):
    close = np.array([100.0, 100.0, 101.0, 99.0, 98.0, 97.0, 99.0, 100.0, 102.0])
    high = close + 0.5
    low = close - 0.5
    low[3] = 94.0  # through the 5% stop of a long entered at 100
    w = np.ones(9)
    return close, high, low, w


def test_stop_loss_exits_intrabar_at_the_stop_price_and_blocks_reentry():
    close, high, low, w = _stop_case()
    w[5] = 0.0  # the decision of bar 5 (filled at 6) is flat: the block is lifted
    out = _run(w, close, high=high, low=low, fees=0.0, slippage=0.0, stop_loss=0.05)
    tr = out.trades
    first = tr.iloc[0]
    assert first["exit_reason"] == "stop_loss" and first["exit_bar"] == 3
    assert first["exit_price"] == pytest.approx(95.0)
    assert first["pnl"] == pytest.approx(100 * (95.0 - 100.0))
    assert first["mae"] == pytest.approx(-0.05)
    # flat after the stop although the target stays long, until a flat decision (bar 5)
    assert np.all(out.weights_held[3:7] == 0)
    np.testing.assert_allclose(out.equity[3:7], 9500.0)
    second = tr.iloc[1]
    assert second["entry_bar"] == 7 and second["is_open"] and second["exit_reason"] == "end_of_data"
    assert len(out.stops) == 1 and out.stops.price[0] == 95.0


def test_stop_fills_at_the_open_after_a_gap_and_take_profit_and_shorts():
    close, high, low, w = _stop_case()
    open_ = close.copy()
    open_[3] = 93.0  # opens below the stop: filled at the open, not at 95
    out = _run(w, close, open=open_, high=high, low=low, fees=0.0, slippage=0.0, stop_loss=0.05)
    assert out.trades.iloc[0]["exit_price"] == pytest.approx(93.0)
    # take profit at +2%: the high of bar 2 (101.5) is below 102, bar 8's (102.5) above
    tp = _run(w, close, high=high, low=low, fees=0.0, slippage=0.0, take_profit=0.02)
    first = tp.trades.iloc[0]
    assert first["exit_reason"] == "take_profit" and first["exit_bar"] == 8
    assert first["exit_price"] == pytest.approx(102.0)
    # a short stops out when the high reaches entry * (1 + stop_loss)
    up = np.array([100.0, 100.0, 103.0, 107.0, 108.0])
    short = _run(-np.ones(5), up, high=up + 1, low=up - 1, fees=0.0, slippage=0.0, stop_loss=0.05)
    s = short.trades.iloc[0]
    assert s["direction"] == "short" and s["exit_reason"] == "stop_loss" and s["exit_bar"] == 3
    assert short.stops.price[0] == pytest.approx(105.0)
    # 100 shorted at 100; bar 2 covers to 9700 / 103 shares at 103; the stop covers the rest at 105
    kept = 9700.0 / 103.0
    assert s["exit_price"] == pytest.approx(((100 - kept) * 103.0 + kept * 105.0) / 100)
    assert s["pnl"] == pytest.approx(short.equity[3] - 10_000.0)


def test_stop_loss_wins_when_both_levels_are_inside_one_bar():
    close, high, low, w = _stop_case()
    high[3] = 120.0
    out = _run(w, close, high=high, low=low, fees=0.0, slippage=0.0, stop_loss=0.05, take_profit=0.1)
    assert out.trades.iloc[0]["exit_reason"] == "stop_loss"


def test_open_fill_entry_stopped_on_its_own_bar():
    close = np.array([100.0, 100.0, 100.0, 100.0])
    open_ = np.array([100.0, 100.0, 100.0, 100.0])
    high = close + 1
    low = np.array([99.0, 90.0, 99.0, 99.0])  # bar 1 dips 10% after its open
    w = np.array([1.0, 0.0, 0.0, 0.0])
    out = _run(
        w, close, open=open_, high=high, low=low, fill_price="open", fees=0.0, slippage=0.0, stop_loss=0.05
    )
    tr = out.trades.iloc[0]
    assert (tr["entry_bar"], tr["exit_bar"], tr["duration_bars"]) == (1, 1, 0)
    assert tr["exit_reason"] == "stop_loss" and tr["exit_price"] == pytest.approx(95.0)
    assert tr["mae"] == pytest.approx(-0.05) and tr["mfe"] == 0.0
    assert out.equity[1] == pytest.approx(9500.0)


def test_costs_of_a_flip_are_split_by_shares_and_durations_use_calendar_days():
    close = np.array([10.0, 10.0, 10.0, 10.0])
    w = np.array([1.0, -1.0, -1.0, 0.0])
    out = _run(w, close, fees=0.01, slippage=0.0, execution_lag=0, initial_capital=1000.0)
    tr = out.trades
    # bar 0: buy 100 shares, fee 10, equity 990; bar 1: sell 100 and short 99, 199 shares: fee 19.9,
    # split 100:99; bar 2: equity 970.1 -> cover 1.99 shares (fee 0.199); bar 3: cover 97.01 (9.701)
    assert tr.loc[0, "fees_paid"] == pytest.approx(10.0 + 19.9 * 100 / 199)
    assert tr.loc[1, "fees_paid"] == pytest.approx(19.9 * 99 / 199 + 0.199 + 9.701)
    assert tr["fees_paid"].sum() == pytest.approx(1000.0 - out.equity[-1])
    weekly = run_backtest(
        w,
        close,
        dates=pd.date_range("2024-01-05", periods=4, freq="W-FRI"),
        symbols=["A"],
        config=EngineConfig(execution_lag=0),
    )
    assert list(weekly.trades["duration_days"]) == [7, 14]
    assert list(weekly.trades["duration_hours"]) == [168.0, 336.0]


def test_no_trades_gives_an_empty_ledger_with_the_columns():
    out = _run(np.zeros((5, 2)), np.full((5, 2), 10.0))
    assert len(out.trades) == 0
    assert list(out.trades.columns) == list(TRADE_COLUMNS)
    assert out.metrics["total_trades"] == 0
