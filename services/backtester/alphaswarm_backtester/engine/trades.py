"""The trade ledger of a backtest, computed from the held-shares matrix (METRICS.md, "Backtest accounting").

A trade is one continuous non-zero position in one symbol with one sign. It
opens when the position leaves 0 (or flips sign) and closes when it returns
to 0 (`exit_reason="signal"`), flips sign (`"rebalance"`: the closing part of
the flipping order ends this trade, the rest opens the next one), is stopped
out (`"stop_loss"`, `"take_profit"`), or is still open at the last bar
(`"end_of_data"`, valued at the last known close without exit costs,
`is_open=True`). Resizing without a sign change keeps the trade open.

A trade's numbers follow vectorbt's *positions* (`Portfolio.positions`),
which aggregate every fill of one position, so they can be checked against it:

- `shares`: total shares entered (opening fill plus every increase), absolute.
- `position_size`: the entry notional in currency, `shares * entry_price`.
- `entry_price`: size-weighted average price of the fills that opened or
  increased the position; `exit_price`: size-weighted average price of the
  fills that reduced or closed it (the last close for the open remainder).
- `pnl` (currency) = realised cash flows of all the trade's fills (plus the
  value of the open remainder) minus its costs
  = `direction * (exit_notional - entry_notional) - fees_paid - slippage_cost`.
  A flipping order's cost is split between the two trades in proportion to
  the shares each part trades.
- `pnl_percent` = `pnl / position_size` (a fraction).
- `fees_paid` = `fees * notional` (plus, with `min_fee`, what the minimum adds
  to an order); `slippage_cost` = `slippage * notional`.
- `mae` / `mfe`: the worst / best unrealised return of the trade relative to
  its `entry_price`, as fractions (`mae <= 0 <= mfe`), over the prices the
  trade was exposed to: the bars' lows and highs (closes when high/low are
  not given) from the first bar it was held through to the last, plus its
  exit price. With close fills a trade entered at the close of bar a is
  exposed from bar a+1, and one exited at the close of bar b through bar b;
  with open fills from the entry bar itself through the bar before the exit;
  on the bar a stop fires only the stop's fill price counts (the intrabar
  path after the trigger is unknown).
- `duration_bars` = exit bar - entry bar; `duration_days` whole calendar
  days and `duration_hours` between the entry and exit dates.

The ledger is computed without a per-trade Python loop: per block of symbols
the share path is transposed to (symbol, time), sign changes give the trade
boundaries, and every per-trade sum or extreme is one `ufunc.reduceat` over
the trades' contiguous segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine.accounting import (
    REASON_STOP_LOSS,
    REASON_TAKE_PROFIT,
    Simulation,
    StopEvents,
)
from alphaswarm_backtester.engine.config import EngineConfig

__all__ = ["EXIT_REASONS", "TRADE_COLUMNS", "build_trades", "closed_trades"]

EXIT_REASONS = ("signal", "rebalance", "stop_loss", "take_profit", "end_of_data")
_SIGNAL, _REBALANCE, _STOP_LOSS, _TAKE_PROFIT, _END = range(5)

TRADE_COLUMNS = (
    "trade_number",
    "symbol",
    "direction",
    "entry_date",
    "entry_bar",
    "entry_price",
    "exit_date",
    "exit_bar",
    "exit_price",
    "shares",
    "position_size",
    "pnl",
    "pnl_percent",
    "mae",
    "mfe",
    "duration_bars",
    "duration_days",
    "duration_hours",
    "exit_reason",
    "fees_paid",
    "slippage_cost",
    "is_open",
)

_CHUNK_CELLS = 1 << 18


def _shift_right(a: np.ndarray) -> np.ndarray:
    """`a` shifted one step along axis 1 with 0 in front (the value before each step)."""
    out = np.empty_like(a)
    out[:, 0] = 0
    out[:, 1:] = a[:, :-1]
    return out


def _segment_reduce(ufunc: np.ufunc, flat: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """`ufunc.reduce(flat[lo[k]:hi[k]])` for every k (requires `hi > lo`; `hi` may equal `len(flat)`)."""
    if lo.size == 0:
        return np.empty(0, dtype=flat.dtype)
    padded = np.append(flat, flat[:1])
    idx = np.empty(2 * lo.size, dtype=np.int64)
    idx[0::2] = lo
    idx[1::2] = hi
    return ufunc.reduceat(padded, idx)[0::2]


class _Path:
    """The share path of a block of symbols, one row per symbol, one column per step.

    A step is a bar, or with stops a half-bar: (stop, close fill) with close
    fills and (open fill, stop) with open fills.
    """

    def __init__(
        self,
        x: np.ndarray,
        price: np.ndarray,
        step_bar: np.ndarray,
        step_at_close: np.ndarray,
        reason: np.ndarray | None,
    ) -> None:
        self.x = x
        self.price = price
        self.step_bar = step_bar
        self.step_at_close = step_at_close
        self.reason = reason


def _block_path(
    sim: Simulation,
    fill_px: np.ndarray,
    by_open: bool,
    j0: int,
    j1: int,
    stops: StopEvents,
) -> _Path:
    n_bars = sim.positions.shape[0]
    x_end = np.ascontiguousarray(sim.positions[:, j0:j1].T)
    px = np.ascontiguousarray(fill_px[:, j0:j1].T)
    np.nan_to_num(px, copy=False, nan=0.0)
    sel = (stops.symbol >= j0) & (stops.symbol < j1)
    if len(stops) == 0:
        bars = np.arange(n_bars, dtype=np.int64)
        return _Path(x_end, px, bars, np.full(n_bars, not by_open), None)
    s_col = stops.symbol[sel] - j0
    s_bar = stops.bar[sel]
    n_cols = j1 - j0
    x = np.empty((n_cols, 2 * n_bars))
    price = np.zeros((n_cols, 2 * n_bars))
    reason = np.zeros((n_cols, 2 * n_bars), dtype=np.int8)
    if not by_open:
        # step 2s: stops (intrabar), step 2s+1: the close fill.
        mid = _shift_right(x_end)
        mid[s_col, s_bar] = 0.0
        x[:, 0::2] = mid
        x[:, 1::2] = x_end
        price[:, 1::2] = px
        price[s_col, 2 * s_bar] = stops.price[sel]
        reason[s_col, 2 * s_bar] = stops.reason[sel]
        at_close = np.tile(np.array([False, True]), n_bars)
    else:
        # step 2s: the open fill, step 2s+1: stops (intrabar).
        mid = x_end.copy()
        mid[s_col, s_bar] = stops.shares[sel]
        x[:, 0::2] = mid
        x[:, 1::2] = x_end
        price[:, 0::2] = px
        price[s_col, 2 * s_bar + 1] = stops.price[sel]
        reason[s_col, 2 * s_bar + 1] = stops.reason[sel]
        at_close = np.zeros(2 * n_bars, dtype=bool)
    return _Path(x, price, np.repeat(np.arange(n_bars, dtype=np.int64), 2), at_close, reason)


def _block_trades(
    path: _Path,
    hi_src: np.ndarray,
    lo_src: np.ndarray,
    last_mark: np.ndarray,
    cfg: EngineConfig,
) -> dict[str, np.ndarray]:
    """Every trade of one block of symbols (see the module docstring for the definitions)."""
    x, price = path.x, path.price
    n_cols, n_steps = x.shape
    n_bars = hi_src.shape[1]
    sgn = (x > 0).view(np.int8) - (x < 0).view(np.int8)
    sgn_prev = _shift_right(sgn)
    change = sgn != sgn_prev
    starts = np.flatnonzero(change & (sgn != 0))
    exits = np.flatnonzero(change & (sgn_prev != 0))
    n = starts.size
    if n == 0:
        return {}
    col = starts // n_steps
    col_end = (col + 1) * n_steps
    k = np.searchsorted(exits, starts, side="right")
    ex = exits[np.minimum(k, max(exits.size - 1, 0))] if exits.size else np.zeros(n, np.int64)
    closed = (k < exits.size) & (ex < col_end)
    seg_end = np.where(closed, ex, col_end)

    x_flat = x.ravel()
    x_prev = _shift_right(x).ravel()
    p_flat = price.ravel()
    dx = x_flat - x_prev
    q = dx * p_flat
    adx = np.abs(dx)
    aq = np.abs(q)

    s_abs = _segment_reduce(np.add, adx, starts, seg_end)
    s_q = _segment_reduce(np.add, q, starts, seg_end)
    s_aq = _segment_reduce(np.add, aq, starts, seg_end)

    x_st = x_flat[starts]
    xp_st = x_prev[starts]
    p_st = p_flat[starts]
    flip = xp_st != 0
    # the start cell of a flip also holds the previous trade's closing order: keep only our part.
    s_abs -= np.where(flip, adx[starts] - np.abs(x_st), 0.0)
    s_q -= np.where(flip, q[starts] - x_st * p_st, 0.0)
    s_aq -= np.where(flip, aq[starts] - np.abs(x_st) * p_st, 0.0)
    # and the exit cell's closing part belongs to the trade it closes.
    ex_c = np.where(closed, ex, 0)
    xp_ex = np.where(closed, x_prev[ex_c], 0.0)
    p_ex = np.where(closed, p_flat[ex_c], 0.0)
    s_abs += np.abs(xp_ex)
    s_q -= xp_ex * p_ex
    s_aq += np.abs(xp_ex) * p_ex

    direction = np.sign(x_st)
    x_last = np.where(closed, 0.0, x_flat[col_end - 1])
    mark = last_mark[col]
    remainder = np.abs(x_last)
    ent_size = 0.5 * (s_abs + direction * x_last)
    ent_value = 0.5 * (s_aq + direction * s_q)
    ext_size = 0.5 * (s_abs - direction * x_last) + remainder
    ext_value = 0.5 * (s_aq - direction * s_q) + remainder * np.nan_to_num(mark)

    rate = cfg.cost_rate
    fees = cfg.fees * s_aq
    slippage = cfg.slippage * s_aq
    if cfg.min_fee > 0.0:
        # what the minimum adds to each order, split at flips by the shares each side trades.
        extra = np.where(adx > 0, np.maximum(cfg.min_fee - rate * aq, 0.0), 0.0)
        s_extra = _segment_reduce(np.add, extra, starts, seg_end)
        share_old = np.where(flip, np.abs(xp_st) / (np.abs(xp_st) + np.abs(x_st)), 0.0)
        s_extra -= extra[starts] * share_old
        share_ex = np.where(closed, np.abs(xp_ex) / np.maximum(adx[ex_c], 1e-300), 0.0)
        s_extra += np.where(closed, extra[ex_c] * np.minimum(share_ex, 1.0), 0.0)
        fees = fees + s_extra
    pnl = direction * (ext_value - ent_value) - fees - slippage
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = ent_value / ent_size
        exit_price = ext_value / ext_size
        pnl_pct = pnl / ent_value

    step_in = starts - col * n_steps
    step_out = np.where(closed, ex - col * n_steps, n_steps - 1)
    bar_in = path.step_bar[step_in]
    bar_out = path.step_bar[step_out]
    if path.reason is not None:
        stop_reason = np.where(closed, path.reason.ravel()[ex_c], 0)
    else:
        stop_reason = np.zeros(n, dtype=np.int8)
    reason = np.where(
        ~closed,
        _END,
        np.where(
            stop_reason == REASON_STOP_LOSS,
            _STOP_LOSS,
            np.where(
                stop_reason == REASON_TAKE_PROFIT,
                _TAKE_PROFIT,
                np.where(x_flat[ex_c] != 0, _REBALANCE, _SIGNAL),
            ),
        ),
    )

    # excursions: bars [w0, w1] fully or partly held, plus the exit price.
    w0 = bar_in + path.step_at_close[step_in]
    w1 = np.where(closed, bar_out - (~path.step_at_close[step_out]), n_bars - 1)
    nonempty = w1 >= w0
    base = col * n_bars
    lo_idx = base + np.minimum(w0, n_bars - 1)
    hi_idx = base + np.maximum(w1, np.minimum(w0, n_bars - 1)) + 1
    win_hi = _segment_reduce(np.fmax, hi_src.ravel(), lo_idx, hi_idx)
    win_lo = _segment_reduce(np.fmin, lo_src.ravel(), lo_idx, hi_idx)
    win_hi = np.where(nonempty, win_hi, np.nan)
    win_lo = np.where(nonempty, win_lo, np.nan)
    x_out = np.where(closed, p_ex, mark)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_exit = direction * (x_out / entry_price - 1.0)
        r_fav = np.where(direction > 0, win_hi / entry_price - 1.0, 1.0 - win_lo / entry_price)
        r_adv = np.where(direction > 0, win_lo / entry_price - 1.0, 1.0 - win_hi / entry_price)
    mae = np.fmin(np.fmin(r_adv, r_exit), 0.0)
    mfe = np.fmax(np.fmax(r_fav, r_exit), 0.0)

    return {
        "col": col,
        "step_in": step_in,
        "direction": direction,
        "entry_bar": bar_in,
        "exit_bar": bar_out,
        "entry_price": entry_price,
        "exit_price": exit_price,
        "shares": ent_size,
        "position_size": ent_value,
        "pnl": pnl,
        "pnl_percent": pnl_pct,
        "mae": mae,
        "mfe": mfe,
        "reason": reason,
        "fees_paid": fees,
        "slippage_cost": slippage,
        "is_open": ~closed,
    }


def _excursion_source(extreme: np.ndarray | None, close: np.ndarray, j0: int, j1: int) -> np.ndarray:
    src = np.ascontiguousarray(close[:, j0:j1].T)
    if extreme is not None:
        ext = np.ascontiguousarray(extreme[:, j0:j1].T)
        np.copyto(src, ext, where=~np.isnan(ext))
    return src


def build_trades(
    sim: Simulation,
    *,
    close: np.ndarray,
    dates: np.ndarray,
    symbols: Sequence[str],
    config: EngineConfig,
    open: np.ndarray | None = None,  # noqa: A002 - the name of the price field
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ledger of `sim` as a DataFrame with `TRADE_COLUMNS`, one row per trade, chronological.

    Rows are ordered by entry bar, then symbol order; `trade_number` counts
    from 1 in that order. `dates` is `datetime64[ns]`, `(T,)`.
    """
    n_bars, n_syms = sim.positions.shape
    by_open = config.fill_price == "open"
    fill_px = open if by_open else close
    if fill_px is None:
        raise ValueError("fill_price='open' needs open prices")
    n_steps = n_bars if len(sim.stops) == 0 else 2 * n_bars
    block = max(1, _CHUNK_CELLS // n_steps)
    parts: list[dict[str, np.ndarray]] = []
    for j0 in range(0, n_syms, block):
        j1 = min(n_syms, j0 + block)
        path = _block_path(sim, fill_px, by_open, j0, j1, sim.stops)
        hi_src = _excursion_source(high, close, j0, j1)
        lo_src = _excursion_source(low, close, j0, j1)
        part = _block_trades(path, hi_src, lo_src, sim.last_mark[j0:j1], config)
        if part:
            part["col"] = part["col"] + j0
            parts.append(part)
    return _frame(parts, dates, symbols)


def _frame(parts: list[dict[str, np.ndarray]], dates: np.ndarray, symbols: Sequence[str]) -> pd.DataFrame:
    if parts:
        cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    else:
        cols = {
            key: np.empty(0, dtype=np.int64 if key in ("col", "step_in", "entry_bar", "exit_bar") else float)
            for key in (
                "col",
                "step_in",
                "direction",
                "entry_bar",
                "exit_bar",
                "entry_price",
                "exit_price",
                "shares",
                "position_size",
                "pnl",
                "pnl_percent",
                "mae",
                "mfe",
                "reason",
                "fees_paid",
                "slippage_cost",
            )
        }
        cols["reason"] = np.empty(0, dtype=np.int64)
        cols["is_open"] = np.empty(0, dtype=bool)
    order = np.lexsort((cols["col"], cols["step_in"]))
    cols = {key: value[order] for key, value in cols.items()}
    n = order.size
    entry_dates = dates[cols["entry_bar"]]
    exit_dates = dates[cols["exit_bar"]]
    span = (exit_dates - entry_dates).astype("timedelta64[ns]").astype(np.int64)
    sym_cat = pd.Categorical.from_codes(cols["col"], categories=pd.Index(list(symbols), dtype=object))
    direction = pd.Categorical.from_codes(
        (cols["direction"] < 0).astype(np.int8), categories=pd.Index(["long", "short"], dtype=object)
    )
    reason = pd.Categorical.from_codes(
        cols["reason"].astype(np.int8), categories=pd.Index(list(EXIT_REASONS), dtype=object)
    )
    frame = pd.DataFrame(
        {
            "trade_number": np.arange(1, n + 1, dtype=np.int64),
            "symbol": sym_cat,
            "direction": direction,
            "entry_date": entry_dates,
            "entry_bar": cols["entry_bar"].astype(np.int64),
            "entry_price": cols["entry_price"],
            "exit_date": exit_dates,
            "exit_bar": cols["exit_bar"].astype(np.int64),
            "exit_price": cols["exit_price"],
            "shares": cols["shares"],
            "position_size": cols["position_size"],
            "pnl": cols["pnl"],
            "pnl_percent": cols["pnl_percent"],
            "mae": cols["mae"],
            "mfe": cols["mfe"],
            "duration_bars": (cols["exit_bar"] - cols["entry_bar"]).astype(np.int64),
            "duration_days": span // 86_400_000_000_000,
            "duration_hours": span / 3_600_000_000_000,
            "exit_reason": reason,
            "fees_paid": cols["fees_paid"],
            "slippage_cost": cols["slippage_cost"],
            "is_open": cols["is_open"].astype(bool),
        },
        columns=list(TRADE_COLUMNS),
    )
    return frame


def closed_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """The trades that were closed before the end of the data (trade statistics use these only)."""
    return trades.loc[~trades["is_open"].to_numpy()]
