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

from alphaswarm_backtester.engine.accounting import REASON_STOP_LOSS, REASON_TAKE_PROFIT, Simulation
from alphaswarm_backtester.engine.config import EngineConfig

__all__ = ["EXIT_REASONS", "TRADE_COLUMNS", "build_trades", "closed_trade_stats", "closed_trades"]

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


def _padded_t(src: np.ndarray, j0: int, j1: int, pad: float | np.ndarray) -> np.ndarray:
    """`src[:, j0:j1].T` with one extra step at the end holding `pad`: shape `(j1 - j0, T + 1)`."""
    out = np.empty((j1 - j0, src.shape[0] + 1))
    _transpose_into(out, src, j0, j1)
    out[:, -1] = pad
    return out


def _shift_right(a: np.ndarray) -> np.ndarray:
    """`a` shifted one step along axis 1 with 0 in front (the value before each step)."""
    out = np.empty_like(a)
    out[:, 0] = 0
    out[:, 1:] = a[:, :-1]
    return out


class _Path:
    """The share path of a block of symbols: one row per symbol, one column per step, plus a pad step.

    A step is a bar, or with stops a half-bar: (stop, close fill) with close
    fills, (open fill, stop) with open fills. The pad step after the last one
    holds a zero position: a trade still open at the end "exits" there
    (`end_of_data`, at the symbol's last known close, no cost).

    `price` is the fill price of each step (NaN: no fill; the pad holds the
    last known close), `hi` / `lo` the
    excursion prices attached to each step (NaN: none), `at_close[step]`
    whether a fill at that step happens at the close of its bar.
    """

    def __init__(
        self,
        x: np.ndarray,
        price: np.ndarray,
        hi: np.ndarray,
        lo: np.ndarray,
        step_bar: np.ndarray,
        at_close: np.ndarray,
        reason: np.ndarray | None,
        price_has_nan: bool = True,
        extremes_have_nan: bool = True,
    ) -> None:
        self.x = x
        self.price = price
        self.price_has_nan = price_has_nan
        self.extremes_have_nan = extremes_have_nan
        self.hi = hi
        self.lo = lo
        self.step_bar = step_bar
        self.at_close = at_close
        self.reason = reason


def _block_path(
    sim: Simulation,
    px_t: np.ndarray,
    hi_t: np.ndarray,
    lo_t: np.ndarray,
    by_open: bool,
    j0: int,
    j1: int,
    px_has_nan: bool,
) -> _Path:
    """The path of symbols `j0:j1`; `*_t` are transposed `(symbols, T + 1)` prices.

    `px_t`'s pad holds the last known close; `hi_t` / `lo_t` are NaN-padded
    except when they are `px_t` itself (the last close is then also an
    excursion price, which changes nothing: it is the trade's exit price).
    """
    n_bars = sim.positions.shape[0]
    stops = sim.stops
    x_end = _padded_t(sim.positions, j0, j1, 0.0)
    if len(stops) == 0:
        bars = np.arange(n_bars + 1, dtype=np.int64)
        bars[-1] = n_bars - 1
        at_close = np.full(n_bars + 1, not by_open)
        at_close[-1] = True
        extremes_nan = px_has_nan or hi_t is not px_t or lo_t is not px_t
        return _Path(x_end, px_t, hi_t, lo_t, bars, at_close, None, px_has_nan, extremes_nan)
    sel = (stops.symbol >= j0) & (stops.symbol < j1)
    s_col = stops.symbol[sel] - j0
    s_bar = stops.bar[sel]
    n_cols = j1 - j0
    width = 2 * n_bars + 1
    x = np.zeros((n_cols, width))
    price = np.full((n_cols, width), np.nan)
    price[:, -1] = px_t[:, -1]
    reason = np.zeros((n_cols, width), dtype=np.int8)
    # a bar's high/low is attached to its second step: inside a trade's window exactly when the
    # trade was held through the bar (see `_block_trades`).
    hi = np.full((n_cols, width), np.nan)
    lo = np.full((n_cols, width), np.nan)
    hi[:, 1:-1:2] = hi_t[:, :-1]
    lo[:, 1:-1:2] = lo_t[:, :-1]
    if not by_open:
        # step 2s: stops (intrabar), step 2s+1: the close fill.
        mid = _shift_right(x_end[:, :-1])
        mid[s_col, s_bar] = 0.0
        x[:, 0:-1:2] = mid
        x[:, 1:-1:2] = x_end[:, :-1]
        price[:, 1:-1:2] = px_t[:, :-1]
        price[s_col, 2 * s_bar] = stops.price[sel]
        reason[s_col, 2 * s_bar] = stops.reason[sel]
        at_close = np.tile(np.array([False, True]), n_bars)
    else:
        # step 2s: the open fill, step 2s+1: stops (intrabar).
        mid = x_end[:, :-1].copy()
        mid[s_col, s_bar] = stops.shares[sel]
        x[:, 0:-1:2] = mid
        x[:, 1:-1:2] = x_end[:, :-1]
        price[:, 0:-1:2] = px_t[:, :-1]
        price[s_col, 2 * s_bar + 1] = stops.price[sel]
        reason[s_col, 2 * s_bar + 1] = stops.reason[sel]
        at_close = np.zeros(2 * n_bars, dtype=bool)
    bars = np.append(np.repeat(np.arange(n_bars, dtype=np.int64), 2), n_bars - 1)
    return _Path(x, price, hi, lo, bars, np.append(at_close, True), reason)


def _block_trades(path: _Path, cfg: EngineConfig) -> dict[str, np.ndarray]:
    """Every trade of one block of symbols (see the module docstring for the definitions).

    The block is first compressed to its active cells (position non-zero at
    this step or the previous one). In that order the cells of each trade,
    from its opening step to its exit step, are contiguous and consecutive
    trades follow each other, so segment k is `[start_k, start_{k+1})`: the
    trade's own cells plus its exit cell, except after a flip, where the
    flipping cell opens the next segment and is split between the two trades.
    Per-trade sums are one `bincount` over the cells' trade ids, per-trade
    extremes one `reduceat` over the starts.
    """
    x = path.x
    width = x.shape[1]
    pad_step = width - 1
    x_flat = x.ravel()
    sgn = (x_flat > 0).view(np.int8) - (x_flat < 0).view(np.int8)
    # the cell before a row's first step is the previous row's pad (0): one flat shift serves all rows.
    sgn_prev = np.empty_like(sgn)
    sgn_prev[0] = 0
    sgn_prev[1:] = sgn[:-1]
    act = np.flatnonzero(sgn | sgn_prev)
    n_act = act.size
    if n_act == 0:
        return {}
    x_c = x_flat[act]
    x_prev_c = x_flat[act - 1]  # act[0] - 1 may be -1: the last pad, also 0
    s_c = sgn[act]
    sp_c = sgn_prev[act]
    change = s_c != sp_c
    starts = np.flatnonzero(change & (s_c != 0))
    exits = np.flatnonzero(change & (sp_c != 0))
    n = starts.size
    ids = np.repeat(np.arange(n), np.diff(starts, append=n_act))

    # the fill price (its pad step holds the last known close); NaN only where nothing trades.
    raw_c = path.price.ravel()[act]
    p_c = np.nan_to_num(raw_c, nan=0.0) if path.price_has_nan else raw_c
    dx = x_c - x_prev_c
    q = dx * p_c
    adx = np.abs(dx)
    aq = np.abs(q)
    s_abs = np.bincount(ids, weights=adx, minlength=n)
    s_q = np.bincount(ids, weights=q, minlength=n)
    s_aq = np.bincount(ids, weights=aq, minlength=n)

    x_st = x_c[starts]
    xp_st = x_prev_c[starts]
    p_st = p_c[starts]
    flip = xp_st != 0
    f = np.flatnonzero(flip)
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
    pnl = direction * (ext_value - ent_value) - fees - slippage
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = ent_value / size
        exit_price = ext_value / size
        pnl_pct = pnl / ent_value

    if path.reason is not None:
        stop_reason = path.reason.ravel()[act[exits]]
        reason = np.where(
            stop_reason == REASON_STOP_LOSS,
            _STOP_LOSS,
            np.where(stop_reason == REASON_TAKE_PROFIT, _TAKE_PROFIT, _SIGNAL),
        )
    else:
        reason = np.full(n, _SIGNAL)
    reason = np.where((reason == _SIGNAL) & (x_c[exits] != 0), _REBALANCE, reason)
    reason[is_open] = _END

    # excursions: the window of trade k is [start + at_close(start), exit + at_close(exit)), so a
    # close-type start cell and a not-close-type exit cell are masked out of segment k, and the
    # close-type flipping cell, which sits in segment k + 1, is added back to trade k.
    hi_c = raw_c if path.hi is path.price else path.hi.ravel()[act]
    lo_c = hi_c if path.lo is path.hi else path.lo.ravel()[act]
    hi_m = hi_c.copy()
    lo_m = lo_c.copy()
    if path.extremes_have_nan:
        hi_m[np.isnan(hi_m)] = -np.inf
        lo_m[np.isnan(lo_m)] = np.inf
    start_close = path.at_close[step_in]
    masked = starts[start_close]
    hi_m[masked] = -np.inf
    lo_m[masked] = np.inf
    exit_open = exits[~path.at_close[step_out] & (x_c[exits] == 0)]
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
        "step_in": step_in,
        "direction": direction,
        "entry_bar": path.step_bar[step_in],
        "exit_bar": path.step_bar[step_out],
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


def _excursion_source(
    extreme: np.ndarray | None, close_t: np.ndarray, j0: int, j1: int
) -> np.ndarray:
    """High (or low) of symbols `j0:j1`, transposed and NaN-padded, the close where it is missing."""
    if extreme is None:
        return close_t
    out = _padded_t(extreme, j0, j1, np.nan)
    np.copyto(out, close_t, where=np.isnan(out))
    return out


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
    """The ledger of `sim` as a DataFrame with `TRADE_COLUMNS`, one row per trade.

    Rows are ordered by symbol (in `symbols` order), then entry time, as
    vectorbt orders its position records; `trade_number` counts from 1 in
    that order. `dates` is `datetime64[ns]`, `(T,)`.
    """
    n_bars, n_syms = sim.positions.shape
    by_open = config.fill_price == "open"
    if by_open and open is None:
        raise ValueError("fill_price='open' needs open prices")
    n_steps = n_bars if len(sim.stops) == 0 else 2 * n_bars
    block = max(1, _CHUNK_CELLS // (n_steps + 1))
    px_has_nan = not sim.fill_prices_clean
    parts: list[dict[str, np.ndarray]] = []
    for j0 in range(0, n_syms, block):
        j1 = min(n_syms, j0 + block)
        mark = np.nan_to_num(sim.last_mark[j0:j1])
        close_t = _padded_t(close, j0, j1, mark if not by_open else np.nan)
        px_t = close_t if not by_open else _padded_t(open, j0, j1, mark)  # type: ignore[arg-type]
        hi_t = _excursion_source(high, close_t, j0, j1)
        lo_t = _excursion_source(low, close_t, j0, j1)
        path = _block_path(sim, px_t, hi_t, lo_t, by_open, j0, j1, px_has_nan)
        part = _block_trades(path, config)
        if part:
            part["col"] = part["col"] + j0
            parts.append(part)
    return _frame(parts, dates, symbols)


_INT_KEYS = ("col", "step_in", "entry_bar", "exit_bar", "reason")


def _frame(parts: list[dict[str, np.ndarray]], dates: np.ndarray, symbols: Sequence[str]) -> pd.DataFrame:
    if parts:
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        cols = {k: np.empty(0, dtype=np.int64) for k in _INT_KEYS}
        cols["is_open"] = np.empty(0, dtype=bool)
        cols["direction"] = np.empty(0)
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
