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

The ledger is computed without a per-trade Python loop. Per block of
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

from collections.abc import Sequence

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


def _cells_by_bar(
    sim: Simulation,
    fill_px: np.ndarray,
    high: np.ndarray | None,
    low: np.ndarray | None,
    close: np.ndarray,
    by_open: bool,
    j0: int,
    j1: int,
) -> _Cells | None:
    """Active cells without stops: one step per bar; values gathered from the `(T, N)` matrices.

    Only the int8 signs are transposed to (symbol, bar); the positions and
    prices of the active cells are gathered from the row-major matrices.
    """
    positions = sim.positions
    n_bars, n_syms = positions.shape
    width = n_bars + 1
    sgn_t = _padded_t(_sign(positions[:, j0:j1]), 0, j1 - j0, 0, dtype=np.int8)
    act, s_c, sp_c = _active(sgn_t.ravel())
    if act.size == 0:
        return None
    col, bar = np.divmod(act, width)
    pad = np.flatnonzero(bar == n_bars)
    src = bar * n_syms + (col + j0)
    src[pad] = j0  # any valid index: the pad's values are set below
    x = positions.ravel()[src]
    x[pad] = 0.0
    # a non-zero previous position sits in the previous active cell
    x_prev = np.empty(act.size)
    x_prev[0] = 0.0
    x_prev[1:] = x[:-1]
    x_prev[sp_c == 0] = 0.0
    raw = fill_px.ravel()[src]
    raw[pad] = np.nan_to_num(sim.last_mark[col[pad] + j0])
    price = raw if sim.fill_prices_clean else np.nan_to_num(raw, nan=0.0)

    def extreme(arr: np.ndarray | None) -> np.ndarray:
        base = close.ravel()[src]
        if arr is not None:
            vals = arr.ravel()[src]
            base = np.where(np.isnan(vals), base, vals)
        base[pad] = np.nan
        return base

    if high is None and low is None and not by_open:
        # the close is the fill price: the pad's last close is also the exit price, harmless
        hi = lo = raw
        extremes_have_nan = not sim.fill_prices_clean
    else:
        hi = extreme(high)
        lo = hi if high is None and low is None else extreme(low)
        extremes_have_nan = True
    at_close = np.full(width, not by_open)
    at_close[-1] = True
    step_bar = np.arange(width, dtype=np.int64)
    step_bar[-1] = n_bars - 1
    return _Cells(
        act=act,
        width=width,
        x=x,
        x_prev=x_prev,
        sign=s_c,
        sign_prev=sp_c,
        price=price,
        hi=hi,
        lo=lo,
        extremes_have_nan=extremes_have_nan,
        reason=None,
        step_bar=step_bar,
        at_close=at_close,
    )


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
    xp_ex = x_prev_c[exits]
    p_ex = p_c[exits]
    direction = s_c[starts].astype(np.float64)
    size = 0.5 * s_abs
    ent_value = 0.5 * (s_aq + direction * s_q)
    ext_value = 0.5 * (s_aq - direction * s_q)
    traded_value = s_aq - np.where(is_open, np.abs(xp_ex) * p_ex, 0.0)
    fees = cfg.fees * traded_value
    slippage = cfg.slippage * traded_value
    if cfg.min_fee > 0.0:
        # what the minimum adds to each order; a flipping order's is split by the shares of each side.
        extra = np.where(adx > 0, np.maximum(cfg.min_fee - cfg.cost_rate * aq, 0.0), 0.0)
        extra[exits[is_open]] = 0.0  # the pad "exit" is not an order
        s_extra = np.bincount(ids, weights=extra, minlength=n)
        moved = extra[starts[f]] * old_abs / adx[starts[f]]
        s_extra[f] -= moved
        s_extra[f - 1] += moved
        fees = fees + s_extra
    del ids, adx, aq
    pnl = direction * (ext_value - ent_value) - fees - slippage
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = ent_value / size
        exit_price = ext_value / size
        pnl_pct = pnl / ent_value

    reason = np.full(n, _SIGNAL, dtype=np.int8)
    if cells.reason is not None:
        stop_reason = cells.reason[exits]
        reason[stop_reason == REASON_STOP_LOSS] = _STOP_LOSS
        reason[stop_reason == REASON_TAKE_PROFIT] = _TAKE_PROFIT
    reason[(reason == _SIGNAL) & (x_c[exits] != 0)] = _REBALANCE
    reason[is_open] = _END

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
    win_hi[np.isneginf(win_hi)] = np.nan
    win_lo[np.isposinf(win_lo)] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        r_exit = direction * (p_ex / entry_price - 1.0)
        r_fav = np.where(direction > 0, win_hi / entry_price - 1.0, 1.0 - win_lo / entry_price)
        r_adv = np.where(direction > 0, win_lo / entry_price - 1.0, 1.0 - win_hi / entry_price)
    mae = np.fmin(np.fmin(r_adv, r_exit), 0.0)
    mfe = np.fmax(np.fmax(r_fav, r_exit), 0.0)

    return {
        "col": col,
        "direction": s_c[starts],
        "entry_bar": cells.step_bar[step_in],
        "exit_bar": cells.step_bar[step_out],
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
    with_stops = len(sim.stops) > 0
    width = 2 * n_bars + 1 if with_stops else n_bars + 1
    block = max(1, _CHUNK_CELLS // width)
    make_cells = _cells_with_stops if with_stops else _cells_by_bar
    parts: list[dict[str, np.ndarray]] = []
    for j0 in range(0, n_syms, block):
        j1 = min(n_syms, j0 + block)
        cells = make_cells(sim, fill_px, high, low, close, by_open, j0, j1)
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
