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
- `entry_date` / `exit_date` (and `entry_bar` / `exit_bar`, indices into the
  dates): the bars of the opening and of the closing fill; an open trade
  "exits" on the last date at the last known close (`is_open=True`), so
  `exit_price` is never missing.

Rows are ordered by symbol, then entry time (as vectorbt orders its records);
`trade_number` counts from 1 in that order. Trade statistics (win rate,
profit factor, ...) use the closed trades only.

Without stops the ledger is one compiled pass over the rows of the share
matrix (`_ledger_pass`): each symbol keeps its open trade's running sums
and writes the trade's row when it closes; the formulas that turn the sums
into the columns are `_finish_trades`, shared with the vectorised path.
With stops (two steps per bar) it is computed without a per-trade Python
loop. Per block of
symbols, the signs of the share path are laid out by (symbol, step) with one
zero "pad" step after the last one, and compressed to the active cells (a
non-zero position at the step or the one before). In that order a trade's
cells, from its opening step to its exit step, are contiguous and trades
follow each other, so per-trade sums are one `bincount` over the cells'
trade ids and per-trade extremes one `reduceat` over the trade starts. A
trade still open at the end "exits" at the pad step, at the last known
close. Only the active cells' prices are gathered, so the work is
proportional to the time positions are held, not to T x N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import pandas as pd

from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.kernels import REASON_STOP_LOSS, REASON_TAKE_PROFIT, Simulation

__all__ = [
    "EXIT_REASONS",
    "TRADE_COLUMNS",
    "build_trades",
    "closed_trade_stats",
    "closed_trades",
    "frame_trades",
]

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
_FMAX = float(np.finfo(np.float64).max)
_NONE2 = np.empty((0, 0))
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


def _as_matrix(arr: np.ndarray | None) -> np.ndarray:
    """A C-contiguous float64 matrix for the compiled pass (`None`: the empty "not given" one)."""
    return _NONE2 if arr is None else np.require(arr, np.float64, ["C"])


@_jit
def _nan_to_num(v: float) -> float:
    """`np.nan_to_num(v, nan=0.0)` of one value."""
    if math.isnan(v):
        return 0.0
    if math.isinf(v):
        return _FMAX if v > 0.0 else -_FMAX
    return v


_TILE_ROWS = 512


def _transpose_into(out: np.ndarray, src: np.ndarray, j0: int, j1: int) -> None:
    """`out[:, :T] = src[:, j0:j1].T`, copied in row tiles (twice as fast as one strided copy)."""
    n_bars = src.shape[0]
    for r0 in range(0, n_bars, _TILE_ROWS):
        r1 = min(n_bars, r0 + _TILE_ROWS)
        out[:, r0:r1] = src[r0:r1, j0:j1].T


def _padded_t(
    src: np.ndarray, j0: int, j1: int, pad: float | np.ndarray, dtype: type = np.float64
) -> np.ndarray:
    """`src[:, j0:j1].T` with one extra step at the end holding `pad`: shape `(j1 - j0, T + 1)`."""
    out = np.empty((j1 - j0, src.shape[0] + 1), dtype=dtype)
    _transpose_into(out, src, j0, j1)
    out[:, -1] = pad
    return out


def _sign(a: np.ndarray) -> np.ndarray:
    """Sign of a float array as int8."""
    return (a > 0).view(np.int8) - (a < 0).view(np.int8)


class _Cells:
    """The active cells of a block of symbols, in (symbol, step) order.

    Steps are laid out in rows of `width` (one row per symbol, the last step
    of a row is the pad); `act` holds the flat indices of the active cells.
    Per cell: the position after the step and before it, their signs, the
    fill price of the step (0 where nothing fills; the last known close at
    the pad), the high / low attached to the step for excursions (NaN where
    none), and with stops the stop reason. Per step of a row: its bar and
    whether a fill at that step happens at the bar's close.
    """

    def __init__(
        self,
        *,
        act: np.ndarray,
        width: int,
        x: np.ndarray,
        x_prev: np.ndarray,
        sign: np.ndarray,
        sign_prev: np.ndarray,
        price: np.ndarray,
        hi: np.ndarray,
        lo: np.ndarray,
        extremes_have_nan: bool,
        reason: np.ndarray | None,
        step_bar: np.ndarray,
        at_close: np.ndarray,
    ) -> None:
        self.act = act
        self.width = width
        self.x = x
        self.x_prev = x_prev
        self.sign = sign
        self.sign_prev = sign_prev
        self.price = price
        self.hi = hi
        self.lo = lo
        self.extremes_have_nan = extremes_have_nan
        self.reason = reason
        self.step_bar = step_bar
        self.at_close = at_close


def _active(sgn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(act, sign, sign_prev)` of a flat (symbol, step) sign grid whose rows end with a zero pad.

    The cell before a row's first step is the previous row's pad (0), so one
    flat shift gives every row's previous sign.
    """
    prev = np.empty_like(sgn)
    prev[0] = 0
    prev[1:] = sgn[:-1]
    act = np.flatnonzero(np.bitwise_or(sgn, prev))
    return act, sgn[act], prev[act]


def _cells_with_stops(
    sim: Simulation,
    fill_px: np.ndarray,
    high: np.ndarray | None,
    low: np.ndarray | None,
    close: np.ndarray,
    by_open: bool,
    j0: int,
    j1: int,
) -> _Cells | None:
    """Active cells with stops: two steps per bar, (stop, close fill) or (open fill, stop)."""
    n_bars = sim.positions.shape[0]
    stops = sim.stops
    sel = (stops.symbol >= j0) & (stops.symbol < j1)
    s_col = stops.symbol[sel] - j0
    s_bar = stops.bar[sel]
    n_cols = j1 - j0
    width = 2 * n_bars + 1
    x_end = _padded_t(sim.positions, j0, j1, 0.0)[:, :-1]
    px_t = _padded_t(fill_px, j0, j1, np.nan)[:, :-1]
    close_t = _padded_t(close, j0, j1, np.nan)[:, :-1]
    x = np.zeros((n_cols, width))
    price = np.full((n_cols, width), np.nan)
    price[:, -1] = np.nan_to_num(sim.last_mark[j0:j1])
    reason = np.zeros((n_cols, width), dtype=np.int8)
    # a bar's high / low sits on its second step: inside a trade's excursion window exactly when
    # the trade was held through the bar (see `_block_trades`).
    hi = np.full((n_cols, width), np.nan)
    lo = np.full((n_cols, width), np.nan)
    for out, arr in ((hi, high), (lo, low)):
        vals = close_t if arr is None else _padded_t(arr, j0, j1, np.nan)[:, :-1]
        out[:, 1:-1:2] = vals if arr is None else np.where(np.isnan(vals), close_t, vals)
    if not by_open:
        # step 2s: stops (intrabar), step 2s+1: the close fill.
        mid = np.zeros_like(x_end)
        mid[:, 1:] = x_end[:, :-1]
        mid[s_col, s_bar] = 0.0
        x[:, 0:-1:2] = mid
        x[:, 1:-1:2] = x_end
        price[:, 1:-1:2] = px_t
        price[s_col, 2 * s_bar] = stops.price[sel]
        reason[s_col, 2 * s_bar] = stops.reason[sel]
        at_close = np.tile(np.array([False, True]), n_bars)
    else:
        # step 2s: the open fill, step 2s+1: stops (intrabar).
        mid = x_end.copy()
        mid[s_col, s_bar] = stops.shares[sel]
        x[:, 0:-1:2] = mid
        x[:, 1:-1:2] = x_end
        price[:, 0:-1:2] = px_t
        price[s_col, 2 * s_bar + 1] = stops.price[sel]
        reason[s_col, 2 * s_bar + 1] = stops.reason[sel]
        at_close = np.zeros(2 * n_bars, dtype=bool)
    x_flat = x.ravel()
    act, sign, sign_prev = _active(_sign(x_flat))
    if act.size == 0:
        return None
    return _Cells(
        act=act,
        width=width,
        x=x_flat[act],
        x_prev=x_flat[act - 1],  # act[0] - 1 may be -1: the last pad, also 0
        sign=sign,
        sign_prev=sign_prev,
        price=np.nan_to_num(price.ravel()[act], nan=0.0),
        hi=hi.ravel()[act],
        lo=lo.ravel()[act],
        extremes_have_nan=True,
        reason=reason.ravel()[act],
        step_bar=np.append(np.repeat(np.arange(n_bars, dtype=np.int64), 2), n_bars - 1),
        at_close=np.append(at_close, True),
    )


def _block_trades(cells: _Cells, cfg: EngineConfig) -> dict[str, np.ndarray]:
    """Every trade of one block of symbols (see the module docstring for the definitions).

    Segment k of the compressed cells is `[start_k, start_{k+1})`: the trade's
    own cells plus its exit cell, except after a flip, where the flipping
    cell opens segment k + 1 and is split between the two trades.
    """
    act, width = cells.act, cells.width
    pad_step = width - 1
    x_c, x_prev_c, s_c, p_c = cells.x, cells.x_prev, cells.sign, cells.price
    change = s_c != cells.sign_prev
    starts = np.flatnonzero(change & (s_c != 0))
    exits = np.flatnonzero(change & (cells.sign_prev != 0))
    n = starts.size
    ids = np.repeat(np.arange(n), np.diff(starts, append=act.size))

    dx = x_c - x_prev_c
    q = dx * p_c
    adx = np.abs(dx)
    aq = np.abs(q)
    s_abs = np.bincount(ids, weights=adx, minlength=n)
    s_q = np.bincount(ids, weights=q, minlength=n)
    s_aq = np.bincount(ids, weights=aq, minlength=n)
    del q, dx

    xp_st = x_prev_c[starts]
    p_st = p_c[starts]
    f = np.flatnonzero(xp_st != 0)
    # a flipping cell opens segment k but its closing part belongs to trade k - 1.
    old_abs = np.abs(xp_st[f])
    old_q = -xp_st[f] * p_st[f]
    old_aq = old_abs * p_st[f]
    s_abs[f] -= old_abs
    s_q[f] -= old_q
    s_aq[f] -= old_aq
    s_abs[f - 1] += old_abs
    s_q[f - 1] += old_q
    s_aq[f - 1] += old_aq

    col = act[starts] // width
    step_in = act[starts] - col * width
    step_out = act[exits] - col * width
    is_open = step_out == pad_step
    s_extra = None
    if cfg.min_fee > 0.0:
        # what the minimum adds to each order; a flipping order's is split by the shares of each side.
        extra = np.where(adx > 0, np.maximum(cfg.min_fee - cfg.cost_rate * aq, 0.0), 0.0)
        extra[exits[is_open]] = 0.0  # the pad "exit" is not an order
        s_extra = np.bincount(ids, weights=extra, minlength=n)
        moved = extra[starts[f]] * old_abs / adx[starts[f]]
        s_extra[f] -= moved
        s_extra[f - 1] += moved
    del ids, adx, aq

    stop_reason = None if cells.reason is None else cells.reason[exits]

    # excursions: the window of trade k is [start + at_close(start), exit + at_close(exit)), so a
    # close-type start cell and a not-close-type exit cell are masked out of segment k, and the
    # close-type flipping cell, which sits in segment k + 1, is added back to trade k.
    hi_c, lo_c = cells.hi, cells.lo
    hi_m = hi_c.copy()
    lo_m = lo_c.copy()
    if cells.extremes_have_nan:
        hi_m[np.isnan(hi_m)] = -np.inf
        lo_m[np.isnan(lo_m)] = np.inf
    start_close = cells.at_close[step_in]
    masked = starts[start_close]
    hi_m[masked] = -np.inf
    lo_m[masked] = np.inf
    exit_open = exits[~cells.at_close[step_out] & (x_c[exits] == 0)]
    hi_m[exit_open] = -np.inf
    lo_m[exit_open] = np.inf
    win_hi = np.maximum.reduceat(hi_m, starts)
    win_lo = np.minimum.reduceat(lo_m, starts)
    back = f[start_close[f]]
    if back.size:
        win_hi[back - 1] = np.fmax(win_hi[back - 1], hi_c[starts[back]])
        win_lo[back - 1] = np.fmin(win_lo[back - 1], lo_c[starts[back]])
    return _finish_trades(
        cfg,
        col=col,
        direction=s_c[starts],
        entry_bar=cells.step_bar[step_in],
        exit_bar=cells.step_bar[step_out],
        is_open=is_open,
        s_abs=s_abs,
        s_q=s_q,
        s_aq=s_aq,
        s_extra=s_extra,
        xp_ex=x_prev_c[exits],
        p_ex=p_c[exits],
        x_ex=x_c[exits],
        stop_reason=stop_reason,
        win_hi=win_hi,
        win_lo=win_lo,
    )


def _finish_trades(
    cfg: EngineConfig,
    *,
    col: np.ndarray,
    direction: np.ndarray,
    entry_bar: np.ndarray,
    exit_bar: np.ndarray,
    is_open: np.ndarray,
    s_abs: np.ndarray,
    s_q: np.ndarray,
    s_aq: np.ndarray,
    s_extra: np.ndarray | None,
    xp_ex: np.ndarray,
    p_ex: np.ndarray,
    x_ex: np.ndarray,
    stop_reason: np.ndarray | None,
    win_hi: np.ndarray,
    win_lo: np.ndarray,
) -> dict[str, np.ndarray]:
    """The ledger's columns of trades from their sums over their fills (one formula for every path).

    Per trade: the sums of `|d|`, `d * price`, `|d * price|` and of what a
    minimum fee adds over its fills (a flipping fill split by the shares of
    each side), its direction (int8), entry / exit bar, whether it is still
    open, the previous position, price and position of its exit cell, its
    stop reason (or None without stops) and the high / low of its excursion
    window (-inf / +inf when empty).
    """
    n = s_abs.size
    sign = direction.astype(np.float64)
    size = 0.5 * s_abs
    ent_value = 0.5 * (s_aq + sign * s_q)
    ext_value = 0.5 * (s_aq - sign * s_q)
    traded_value = s_aq - np.where(is_open, np.abs(xp_ex) * p_ex, 0.0)
    fees = cfg.fees * traded_value
    slippage = cfg.slippage * traded_value
    if s_extra is not None:
        fees = fees + s_extra
    pnl = sign * (ext_value - ent_value) - fees - slippage
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = ent_value / size
        exit_price = ext_value / size
        pnl_pct = pnl / ent_value

    reason = np.full(n, _SIGNAL, dtype=np.int8)
    if stop_reason is not None:
        reason[stop_reason == REASON_STOP_LOSS] = _STOP_LOSS
        reason[stop_reason == REASON_TAKE_PROFIT] = _TAKE_PROFIT
    reason[(reason == _SIGNAL) & (x_ex != 0)] = _REBALANCE
    reason[is_open] = _END

    win_hi[np.isneginf(win_hi)] = np.nan
    win_lo[np.isposinf(win_lo)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        r_exit = sign * (p_ex / entry_price - 1.0)
        r_fav = np.where(sign > 0, win_hi / entry_price - 1.0, 1.0 - win_lo / entry_price)
        r_adv = np.where(sign > 0, win_lo / entry_price - 1.0, 1.0 - win_hi / entry_price)
    mae = np.fmin(np.fmin(r_adv, r_exit), 0.0)
    mfe = np.fmax(np.fmax(r_fav, r_exit), 0.0)

    return {
        "col": col,
        "direction": direction,
        "entry_bar": entry_bar,
        "exit_bar": exit_bar,
        "entry_price": entry_price,
        "exit_price": exit_price,
        "shares": size,
        "position_size": ent_value,
        "pnl": pnl,
        "pnl_percent": pnl_pct,
        "mae": mae,
        "mfe": mfe,
        "reason": reason,
        "fees_paid": fees,
        "slippage_cost": slippage,
        "is_open": is_open,
    }


# per-trade fields of the compiled ledger (`_ledger_pass`), rows of its float buffer
_F_COL, _F_DIR, _F_IN, _F_OUT, _F_OPEN = range(5)
_F_ABS, _F_Q, _F_AQ, _F_X, _F_XP_EX, _F_P_EX, _F_X_EX, _F_HI, _F_LO = range(5, 14)
_N_FIELDS = 14


@_jit
def _ledger_pass(
    positions: np.ndarray,
    fill_px: np.ndarray,
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    last_mark: np.ndarray,
    by_open: bool,
    clean: bool,
    simple: bool,
    cost_rate: float,
    min_fee: float,
    slot: np.ndarray,
    out: np.ndarray,
    j0: int,
    j1: int,
) -> None:
    """The per-trade sums of `_block_trades` in one pass over the rows of the share matrix (no stops).

    Symbols `j0 .. j1 - 1` only: each symbol's trades are its own, so blocks
    of symbols run in parallel (`_ledger_blocks`) with the same numbers.

    The cells are a symbol's bars with a non-zero position at the bar or the
    one before, then a zero pad step after the last bar (`_Cells`, one step
    per bar), visited bar by bar; each symbol keeps its open
    trade's running sums, added in the cells' order as `bincount` adds them,
    and the flip adjustments of `_block_trades` in the same order, so the
    sums are the same bit for bit. A trade is written, when it closes, to
    column `slot[j]` of `out` (rows `_F_*`; `slot[j]` starts at the first
    column of symbol j, from the trade counts of the account), so the columns are in the
    ledger's order: by symbol, then entry time.
    """
    n_bars, n_syms = positions.shape
    has_high = high.shape[0] > 0
    has_low = low.shape[0] > 0
    fill_close = not by_open
    prev = np.zeros(n_syms, dtype=np.int8)
    start = np.zeros(n_syms, dtype=np.int64)
    acc = np.zeros((n_syms, 4))  # running sums of |d|, d * price, |d * price|, min-fee extra
    pend = np.zeros((n_syms, 4))  # what a flip that opened the trade moves back to the trade before
    flipped = np.zeros(n_syms, dtype=np.bool_)
    win = np.empty((n_syms, 2))  # excursion window high, low
    for b in range(n_bars + 1):
        pad = b == n_bars
        for j in range(j0, j1):
            p_sign = prev[j]
            if pad:
                if p_sign == 0:
                    continue
                x = 0.0
                s = 0
            else:
                x = positions[b, j]
                s = 1 if x > 0.0 else (-1 if x < 0.0 else 0)
                if s == 0 and p_sign == 0:
                    continue
                prev[j] = s
            xp = positions[b - 1, j] if p_sign != 0 else 0.0
            if pad:
                px = last_mark[j]
                price = _nan_to_num(px)
                hi = price if simple else np.nan
                lo = hi
                at_close = True
            else:
                raw = fill_px[b, j]
                price = raw if clean else _nan_to_num(raw)
                at_close = fill_close
                if simple:
                    hi = raw
                    lo = raw
                else:
                    base = close[b, j]
                    hi = base
                    if has_high and not math.isnan(high[b, j]):
                        hi = high[b, j]
                    lo = hi
                    if has_high or has_low:
                        lo = base
                        if has_low and not math.isnan(low[b, j]):
                            lo = low[b, j]
            dx = x - xp
            q = dx * price
            adx = abs(dx)
            aq = abs(q)
            extra = 0.0
            if min_fee > 0.0 and adx > 0.0 and not pad:
                extra = max(min_fee - cost_rate * aq, 0.0)
            if p_sign != 0 and s == 0:
                # the trade closes: the exit cell is its last cell
                acc[j, 0] += adx
                acc[j, 1] += q
                acc[j, 2] += aq
                acc[j, 3] += extra
                if not at_close:
                    hi = -np.inf
                    lo = np.inf
            if p_sign != 0 and s != p_sign:
                old_abs = 0.0
                old_q = 0.0
                old_aq = 0.0
                moved = 0.0
                if s != 0:  # a flip: its closing part ends this trade
                    old_abs = abs(xp)
                    old_q = -xp * price
                    old_aq = old_abs * price
                    if min_fee > 0.0:
                        moved = extra * old_abs / adx
                n = slot[j]
                slot[j] = n + 1
                sums = (acc[j, 0], acc[j, 1], acc[j, 2], acc[j, 3])
                for k in range(4):
                    v = sums[k]
                    if flipped[j]:
                        v -= pend[j, k]
                    out[_F_ABS + k, n] = v
                if s != 0:
                    out[_F_ABS, n] += old_abs
                    out[_F_Q, n] += old_q
                    out[_F_AQ, n] += old_aq
                    out[_F_X, n] += moved
                w_hi = win[j, 0]
                w_lo = win[j, 1]
                # the exit cell (masked above when open-type), or a close-type flipping cell, which
                # belongs to this trade's window
                if s == 0 or at_close:
                    if not math.isnan(hi):
                        w_hi = max(w_hi, hi)
                    if not math.isnan(lo):
                        w_lo = min(w_lo, lo)
                out[_F_COL, n] = j
                out[_F_DIR, n] = p_sign
                out[_F_IN, n] = start[j]
                out[_F_OUT, n] = n_bars - 1 if pad else b
                out[_F_OPEN, n] = 1.0 if pad else 0.0
                out[_F_XP_EX, n] = xp
                out[_F_P_EX, n] = price
                out[_F_X_EX, n] = x
                out[_F_HI, n] = w_hi
                out[_F_LO, n] = w_lo
                if s != 0:
                    pend[j, 0] = old_abs
                    pend[j, 1] = old_q
                    pend[j, 2] = old_aq
                    pend[j, 3] = moved
            if s != 0 and s != p_sign:
                # a trade opens on this cell (the flipping cell: in full, its closing part taken off at the end)
                flipped[j] = p_sign != 0
                start[j] = b
                acc[j, 0] = 0.0 + adx
                acc[j, 1] = 0.0 + q
                acc[j, 2] = 0.0 + aq
                acc[j, 3] = 0.0 + extra
                w_hi = -np.inf
                w_lo = np.inf
                if not at_close:
                    if not math.isnan(hi):
                        w_hi = hi
                    if not math.isnan(lo):
                        w_lo = lo
                win[j, 0] = w_hi
                win[j, 1] = w_lo
            elif s != 0:
                acc[j, 0] += adx
                acc[j, 1] += q
                acc[j, 2] += aq
                acc[j, 3] += extra
                if not math.isnan(hi):
                    win[j, 0] = max(win[j, 0], hi)
                if not math.isnan(lo):
                    win[j, 1] = min(win[j, 1], lo)
        if pad:
            break


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _ledger_blocks(
    positions: np.ndarray,
    fill_px: np.ndarray,
    close: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    last_mark: np.ndarray,
    by_open: bool,
    clean: bool,
    simple: bool,
    cost_rate: float,
    min_fee: float,
    slot: np.ndarray,
    out: np.ndarray,
    n_blocks: int,
) -> None:
    """`_ledger_pass` over `n_blocks` blocks of symbols, in parallel."""
    n_syms = positions.shape[1]
    for k in numba.prange(n_blocks):
        _ledger_pass(
            positions, fill_px, close, high, low, last_mark, by_open, clean, simple, cost_rate, min_fee,
            slot, out, k * n_syms // n_blocks, (k + 1) * n_syms // n_blocks,
        )  # fmt: skip


def _compiled_trades(
    sim: Simulation,
    fill_px: np.ndarray,
    high: np.ndarray | None,
    low: np.ndarray | None,
    close: np.ndarray,
    by_open: bool,
    cfg: EngineConfig,
) -> dict[str, np.ndarray] | None:
    """Every trade without stops, from the compiled pass (`_ledger_pass`) and `_finish_trades`."""
    positions = sim.positions
    n_syms = positions.shape[1]
    simple = high is None and low is None and not by_open
    counts = sim.trade_counts
    n = int(counts.sum())
    if n == 0:
        return None
    slot = np.zeros(n_syms, dtype=np.int64)
    np.cumsum(counts[:-1], out=slot[1:])
    rec = np.empty((_N_FIELDS, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        _ledger_blocks(
            positions, _as_matrix(fill_px), _as_matrix(close), _as_matrix(high), _as_matrix(low),
            np.ascontiguousarray(sim.last_mark, dtype=np.float64), by_open,
            bool(sim.fill_prices_clean), simple, float(cfg.cost_rate), float(cfg.min_fee), slot, rec,
            min(n_syms, numba.get_num_threads()),
        )  # fmt: skip
    return _finish_trades(
        cfg,
        col=rec[_F_COL].astype(np.int64),
        direction=rec[_F_DIR].astype(np.int8),
        entry_bar=rec[_F_IN].astype(np.int64),
        exit_bar=rec[_F_OUT].astype(np.int64),
        is_open=rec[_F_OPEN] != 0.0,
        s_abs=rec[_F_ABS],
        s_q=rec[_F_Q],
        s_aq=rec[_F_AQ],
        s_extra=rec[_F_X] if cfg.min_fee > 0.0 else None,
        xp_ex=rec[_F_XP_EX],
        p_ex=rec[_F_P_EX],
        x_ex=rec[_F_X_EX],
        stop_reason=None,
        win_hi=rec[_F_HI],
        win_lo=rec[_F_LO],
    )


def build_trades(
    sim: Simulation,
    *,
    close: np.ndarray,
    dates: np.ndarray,
    symbols: Sequence[str],
    config: EngineConfig,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
) -> pd.DataFrame:
    """The ledger of `sim` as a DataFrame with `TRADE_COLUMNS`, one row per trade.

    Reads `sim.positions` (share counts). Rows are ordered by symbol (in
    `symbols` order), then entry time, as vectorbt orders its position
    records; `trade_number` counts from 1 in that order. `dates` is
    `datetime64[ns]`, `(T,)`.
    """
    n_bars, n_syms = sim.positions.shape
    by_open = config.fill_price == "open"
    fill_px = open if by_open else close
    if fill_px is None:
        raise ValueError("fill_price='open' needs open prices")
    if len(sim.stops) == 0:
        part = _compiled_trades(sim, fill_px, high, low, close, by_open, config)
        return frame_trades([] if part is None else [part], dates, symbols)
    width = 2 * n_bars + 1
    block = max(1, _CHUNK_CELLS // width)
    parts: list[dict[str, np.ndarray]] = []
    for j0 in range(0, n_syms, block):
        j1 = min(n_syms, j0 + block)
        cells = _cells_with_stops(sim, fill_px, high, low, close, by_open, j0, j1)
        if cells is None:
            continue
        part = _block_trades(cells, config)
        part["col"] = part["col"] + j0
        parts.append(part)
    return frame_trades(parts, dates, symbols)


_INT_KEYS = ("col", "entry_bar", "exit_bar", "reason", "direction")


def frame_trades(
    parts: list[dict[str, np.ndarray]], dates: np.ndarray, symbols: Sequence[str]
) -> pd.DataFrame:
    if parts:
        # one column at a time, releasing the blocks' arrays as they are copied (bounded peak memory).
        cols = {k: np.concatenate([p.pop(k) for p in parts]) for k in list(parts[0])}
    else:
        cols = {k: np.empty(0, dtype=np.int64) for k in _INT_KEYS}
        cols["is_open"] = np.empty(0, dtype=bool)
    n = cols["col"].size

    def num(key: str) -> np.ndarray:
        return cols.get(key, np.empty(0)) if n else np.empty(0)

    entry_bar = cols["entry_bar"].astype(np.int64, copy=False)
    exit_bar = cols["exit_bar"].astype(np.int64, copy=False)
    entry_dates = dates[entry_bar]
    exit_dates = dates[exit_bar]
    span = (exit_dates - entry_dates).astype("timedelta64[ns]").view(np.int64)
    categories = {
        "symbol": pd.Index(list(symbols), dtype=object),
        "direction": pd.Index(["long", "short"], dtype=object),
        "exit_reason": pd.Index(list(EXIT_REASONS), dtype=object),
    }
    data = {
        "trade_number": np.arange(1, n + 1, dtype=np.int64),
        "symbol": pd.Categorical.from_codes(cols["col"], dtype=pd.CategoricalDtype(categories["symbol"])),
        "direction": pd.Categorical.from_codes(
            (cols["direction"] < 0).view(np.int8), dtype=pd.CategoricalDtype(categories["direction"])
        ),
        "entry_date": entry_dates,
        "entry_bar": entry_bar,
        "entry_price": num("entry_price"),
        "exit_date": exit_dates,
        "exit_bar": exit_bar,
        "exit_price": num("exit_price"),
        "shares": num("shares"),
        "position_size": num("position_size"),
        "pnl": num("pnl"),
        "pnl_percent": num("pnl_percent"),
        "mae": num("mae"),
        "mfe": num("mfe"),
        "duration_bars": exit_bar - entry_bar,
        "duration_days": span // 86_400_000_000_000,
        "duration_hours": span / 3_600_000_000_000,
        "exit_reason": pd.Categorical.from_codes(
            cols["reason"].astype(np.int8), dtype=pd.CategoricalDtype(categories["exit_reason"])
        ),
        "fees_paid": num("fees_paid"),
        "slippage_cost": num("slippage_cost"),
        "is_open": cols["is_open"].astype(bool, copy=False),
    }
    return pd.DataFrame(data, columns=list(TRADE_COLUMNS), copy=False)


def closed_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """The trades that were closed before the end of the data (trade statistics use these only)."""
    return trades.loc[~trades["is_open"].to_numpy()]


def closed_trade_stats(trades: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """`(pnl, pnl_percent)` of the closed trades, as float arrays (without copying the frame)."""
    closed = ~trades["is_open"].to_numpy()
    return (
        trades["pnl"].to_numpy(dtype=np.float64)[closed],
        trades["pnl_percent"].to_numpy(dtype=np.float64)[closed],
    )
