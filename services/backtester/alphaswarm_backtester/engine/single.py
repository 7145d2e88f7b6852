"""One symbol, close fills, rebalanced every bar: `run_backtest`'s output without its fill loop.

`kernel_backtest(side, close, ...)` returns what `run_backtest(size * side,
close, ...)` returns for one symbol (every array, the ledger and the
metrics, equal to rounding: tested), in a fixed number of NumPy passes over
the bars. `run_rule_backtest` takes this path for one symbol and the
optimizer uses it to rebuild the chosen set; it applies when the fills are
at the close, `rebalance_every == 1`, `rf == 0`, there are no stops and no
minimum fee (`kernel_applies`: the configuration only, never the data), and
the prices present are finite and positive; otherwise the caller runs
`run_backtest` (which reports invalid prices).

Missing closes and causality
----------------------------
A bar without a close is a no-op of `run_backtest`'s account for one
symbol: nothing can be ordered, cash earns nothing (`rf == 0`) and the
position is valued at its last close. So the closed form runs on the bars
that have a close, and the result is spread back over all bars (return,
traded and turnover 0 on a bar without a close; equity, drawdown and held
weight those of the bar before). The path taken therefore never depends on
the data, and every pass below computes a bar from the bars before it only
(blocks at fixed offsets, running products and maxima, Jacobi sweeps that
update a bar only when its predecessor moved, per-trade sums over the
trade's own bars): the numbers for bars `[0, t]`, and the ledger rows of
the trades closed by t, are bitwise the same whatever the bars after t
hold (missing closes included).

The account in closed form
--------------------------
With `w_s` the target in force at bar s (`size * side[s - lag]`, 0 before
the first fill), `a_s = P_s / P_{s-1}`, `c = fees + slippage` and `d_s` the
weight traded at s as a fraction of the pre-trade value `V_s` (the fill
costs `c d_s V_s`, paid from cash, see `accounting`):

    G_s = V_s / V_{s-1} = (1 - w_{s-1} - c d_{s-1}) + w_{s-1} a_s
    d_s = |w_s - w_{s-1} a_s / G_s|                 (target minus the drifted weight)
    E_s = V_s (1 - c d_s),  V_s = capital * prod_{u <= s} G_u
    r_s = E_s / E_{s-1} - 1 = G_s (1 - c d_s) / (1 - c d_{s-1}) - 1

`d_s` depends on `d_{s-1}` only through `c d_{s-1}`, with a derivative of
at most `c |w| a_s / G_s^2` (about 0.002 at the default costs): the
recursion is a strong contraction. It is solved by Jacobi sweeps: the first
sweep takes `d_{s-1} = 0` everywhere (exact wherever nothing traded the bar
before), each later sweep recomputes only the bars whose predecessor moved
in the previous sweep (with the same arithmetic whether it gathers those
bars or runs over whole arrays), until no value moves by more than 2**-60 (the error
left is below 1e-21; a sequential loop would compute the same numbers to
rounding). A long position held at a constant target settles within a few
bars (its drift correction shrinks by a factor c each bar), so for a
long-only rule the later sweeps touch a few bars per trade; a short one
keeps a small correction every bar, and its sweeps run over the whole
array (about five, each a handful of vectorised operations).

Everything else follows from `V`, `d` and `w`: shares `w V / P`, cash
`V (1 - c d - w)`, traded notional `d V`, end-of-bar weight `w / (1 - c d)`.

Memory and passes
-----------------
Every pass runs over blocks of `_CHUNK` bars, so a block's temporaries stay
in the CPU cache; the values that link a block to the one before (the last
bar's `d`, weight, close, running product and peak) are carried, and the
equity's running product and the drawdown's running maximum continue from
the carried value, so the blocks change no number. The weights are read
from the int8 sides block by block and never stored whole, the share path
goes straight into the ledger's per-trade sums, and `cash`,
`weights_target`, `costs` and `fill_bars`, which neither the ledger nor
the metrics need, are derived from the kept arrays when first read
(`BacktestOutput.extras`). The per-bar arrays that are kept are allocated
on huge-page boundaries (`alphaswarm_common.buffers`).

The ledger
----------
`trades.build_trades`' definitions for one symbol with close fills (see
that module), computed per trade with `reduceat` over each block: a trade
opens on a bar whose target sign differs from the bar before and is not
0, and closes on the next bar whose sign differs (a flip closes and opens
on the same bar) or at the end of the data; its entry and exit sums take
the opening and closing orders and every resize in between; its excursion
window is the bars after its entry through its exit bar.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine.accounting import StopEvents
from alphaswarm_backtester.engine.backtest import BacktestOutput, Extras
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.trades import _END, _REBALANCE, _SIGNAL, frame_trades
from alphaswarm_common.buffers import empty
from alphaswarm_common.metrics import BarStats, infer_periods_per_year, trading_metrics

__all__ = ["kernel_applies", "kernel_backtest"]

_TOL = 2.0**-60  # a change of d below this no longer moves any return (see the module docstring)
_MAX_SWEEPS = 200  # a chain that long means the contraction is not strong: run_backtest instead
_DENSE_SHARE = 4  # a sweep over more than 1/4 of the bars runs on whole arrays
_NAT = np.iinfo(np.int64).min
_NANOSECONDS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_CHUNK = 1 << 15  # bars per block of the per-bar passes: a block's temporaries stay in the CPU cache


def _blocks(n: int, start: int = 0) -> range:
    return range(start, n, _CHUNK)


def kernel_applies(config: EngineConfig, n_symbols: int) -> str | None:
    """Why the one-symbol closed form does not apply (None when it does)."""
    if n_symbols != 1:
        return "more than one symbol"
    if config.fill_price != "close":
        return "open fills"
    if config.rebalance_every != 1:
        return "rebalance_every > 1"
    if config.rf != 0.0:
        return "a non-zero risk-free rate"
    if config.has_stops:
        return "stops"
    if config.min_fee > 0.0:
        return "a minimum fee"
    return None


class _Target:
    """The target weight in force, `size * sgn`, read by blocks or at chosen bars (never stored whole)."""

    def __init__(self, sgn: np.ndarray, size: float) -> None:
        self.sgn, self.size, self.n = sgn, size, sgn.size
        self.buf = np.empty(min(self.n, _CHUNK) + 1)

    def window(self, i0: int, i1: int) -> np.ndarray:
        """The weights of bars `i0 - 1 .. i1 - 1` (`i1 - i0 + 1` values; 0 before the first bar)."""
        out = self.buf[: i1 - i0 + 1]
        if i0 == 0:
            out[0] = 0.0
            np.multiply(self.sgn[:i1], self.size, out=out[1:])
        else:
            np.multiply(self.sgn[i0 - 1 : i1], self.size, out=out)
        return out

    def at(self, bars: np.ndarray) -> np.ndarray:
        return np.multiply(self.sgn[bars], self.size)


def _traded_fraction(w: _Target, px: np.ndarray, c: float, d: np.ndarray, bounds: _Bounds) -> bool:
    """Solve for `d` (written into `d`, `(T,)`) as in the module docstring; False when the sweeps do not settle.

    Every pass runs block by block (`_CHUNK` bars), so its temporaries stay in
    the cache; a bar's update reads only the bar before it.
    """
    n = w.n
    wa = np.empty(min(n, _CHUNK))
    g = np.empty_like(wa)
    if w.size == 1.0 and int(w.sgn.min(initial=0)) >= 0:
        # Long positions of weight 1: the first sweep is 1 where the target changes (an entry
        # from flat, |1 - 0|; an exit, |0 - a / a|) and exactly 0 elsewhere (held: G_s = a_s,
        # |1 - a_s / a_s|; flat: 0). The bars to revisit are the ones after an entry (after an
        # exit the account is flat, and a flat bar's successor does not depend on its d).
        d.fill(0.0)
        d[bounds.change] = 1.0
        moved_parts = [bounds.starts + 1]
    else:
        moved_parts = _first_sweep(w, px, c, d, wa, g)
    if c == 0.0:
        return True
    moved = np.concatenate(moved_parts)
    moved = moved[moved < n]
    for _ in range(_MAX_SWEEPS):
        if moved.size == 0:
            return True
        if moved.size * _DENSE_SHARE > n:
            moved = _dense_sweep(w, px, c, d, moved, wa, g)
        else:
            moved = _sparse_sweeps(w, px, c, d, moved)
    return moved.size == 0


def _target_gap(
    px_cur: np.ndarray,
    px_prev: np.ndarray,
    w_prev: np.ndarray,
    w_cur: np.ndarray,
    a: np.ndarray,
    gm: np.ndarray,
    out: np.ndarray,
) -> None:
    """`out = |w_s - w_{s-1} a_s / G_s|` for a block; `gm` holds `G_s - w_{s-1} a_s`, `a` is scratch."""
    np.divide(px_cur, px_prev, out=a)
    a *= w_prev  # w_{s-1} a_s
    gm += a  # G_s
    np.divide(a, gm, out=out)
    np.subtract(w_cur, out, out=out)
    np.abs(out, out=out)


def _first_sweep(
    w: _Target, px: np.ndarray, c: float, d: np.ndarray, wa: np.ndarray, g: np.ndarray
) -> list[np.ndarray]:
    """`d` with `d_{s-1} = 0` everywhere; the bars whose predecessor's value may be off (when `c != 0`)."""
    n = w.n
    nonzero = np.empty(wa.size, dtype=bool)
    d[0] = abs(float(w.sgn[0]) * w.size)  # no bar before the first: nothing has drifted
    moved_parts = [np.flatnonzero(d[:1]) + 1]  # d[0] = |w[0]|: nonzero only when w[0] is
    with np.errstate(divide="ignore", invalid="ignore"):
        for i0 in _blocks(n, 1):
            i1 = min(i0 + _CHUNK, n)
            m = i1 - i0
            cur, prev = slice(i0, i1), slice(i0 - 1, i1 - 1)
            a, gm, dm = wa[:m], g[:m], d[cur]
            wb = w.window(i0, i1)
            w_prev, w_cur = wb[:-1], wb[1:]
            np.subtract(1.0, w_prev, out=gm)  # G_s less w_{s-1} a_s, with d_{s-1} = 0
            _target_gap(px[cur], px[prev], w_prev, w_cur, a, gm, dm)
            if c != 0.0:
                # the bar after one that traded while holding a position (after a flat bar
                # d_s = |w_s| whatever d_{s-1}: the first sweep's value is exact there)
                np.not_equal(dm, 0.0, out=nonzero[:m])
                nonzero[:m] &= w_cur != 0.0
                moved_parts.append(np.flatnonzero(nonzero[:m]) + (i0 + 1))
    return moved_parts


def _sparse_sweeps(w: _Target, px: np.ndarray, c: float, d: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """Jacobi sweeps on the bars `moved` (their predecessor changed) while they are few.

    Each sweep recomputes `d` on its bars; the next one takes the bars after
    those that moved by more than `_TOL`, whose predecessor values (`w`, the
    close, the new `d`) are already in hand, so a sweep gathers only its own
    bars' values. Returns the bars still to recompute: none when settled, or
    more than `1 / _DENSE_SHARE` of them (the caller sweeps whole arrays), or
    whatever is left after `_MAX_SWEEPS`.
    """
    n = d.size
    prev = moved - 1
    w_prev, px_prev, d_prev = w.at(prev), px[prev], d[prev]
    for _ in range(_MAX_SWEEPS):
        if moved.size == 0 or moved.size * _DENSE_SHARE > n:
            break
        w_cur, px_cur = w.at(moved), px[moved]
        with np.errstate(divide="ignore", invalid="ignore"):
            wa = px_cur / px_prev
            wa *= w_prev
            gs = ((1.0 - w_prev) - c * d_prev) + wa
            upd = np.abs(w_cur - wa / gs)
        delta = np.abs(upd - d[moved])
        d[moved] = upd
        go_on = delta > _TOL
        go_on &= moved < n - 1
        go_on &= w_cur != 0.0  # a flat bar's successor does not depend on its d
        moved = moved[go_on] + 1
        w_prev, px_prev, d_prev = w_cur[go_on], px_cur[go_on], upd[go_on]
    return moved


def _dense_sweep(
    w: _Target, px: np.ndarray, c: float, d: np.ndarray, moved: np.ndarray, wa: np.ndarray, g: np.ndarray
) -> np.ndarray:
    """`_sparse_sweeps`' next sweep on whole arrays (each bar reads its predecessor's previous value).

    Only the bars `moved` (sorted) are updated, with the sparse sweep's
    arithmetic, so the numbers do not depend on which of the two ran: a
    bar's value depends on the bars before it only. Returns the bars after
    those that moved. (A bar after a flat one may be listed: recomputing it
    gives its value again, `|w_s|`.)
    """
    n = d.size
    new = np.empty_like(wa)
    cd = np.empty_like(wa)
    due = np.empty(wa.size, dtype=bool)
    before = float(d[0])  # the previous sweep's value of the bar before the block
    moved_parts = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for i0 in _blocks(n, 1):
            i1 = min(i0 + _CHUNK, n)
            m = i1 - i0
            lo, hi = np.searchsorted(moved, (i0, i1))
            if lo == hi:
                before = float(d[i1 - 1])
                continue
            cur, prev = slice(i0, i1), slice(i0 - 1, i1 - 1)
            a, gm, nm, cm = wa[:m], g[:m], new[:m], cd[:m]
            wb = w.window(i0, i1)
            w_prev, w_cur = wb[:-1], wb[1:]
            np.multiply(d[prev], c, out=cm)
            cm[0] = c * before
            np.subtract(1.0, w_prev, out=gm)
            gm -= cm  # G_s less w_{s-1} a_s: ((1 - w_{s-1}) - c d_{s-1})
            _target_gap(px[cur], px[prev], w_prev, w_cur, a, gm, nm)
            before = float(d[i1 - 1])
            np.subtract(nm, d[cur], out=a)
            np.abs(a, out=a)
            go_on = a > _TOL
            if hi - lo == m:  # every bar of the block is due
                d[cur] = nm
            else:
                upd = due[:m]
                upd.fill(False)
                upd[moved[lo:hi] - i0] = True
                go_on &= upd
                np.copyto(d[cur], nm, where=upd)
            moved_parts.append(np.flatnonzero(go_on) + (i0 + 1))
    moved = np.concatenate(moved_parts) if moved_parts else np.empty(0, dtype=np.int64)
    return moved[moved < n]


def _accumulate_from(ufunc: np.ufunc, values: np.ndarray, before: float, out: np.ndarray) -> None:
    """`out = ufunc.accumulate(values)` continued from `before` (the value carried from the bar before).

    The first value is combined with `before` in place and restored, so the
    numbers are those of one accumulation over the whole series.
    """
    first = float(values[0])
    values[0] = ufunc(first, before)
    ufunc.accumulate(values, out=out)
    values[0] = first


_PEAK_ROW = 256  # bars per row of `_running_peak`


def _running_peak(values: np.ndarray, before: float, out: np.ndarray) -> None:
    """`out = maximum.accumulate(values)` continued from the peak `before`, the same numbers, less work.

    The values are cut in rows of `_PEAK_ROW` bars: the peak entering each row
    is the running maximum of the row maxima (vectorised), and only a row
    holding a new high needs a running maximum inside it; the others take the
    entering peak. An equity curve spends most of its bars under water, so few
    rows do; when over a quarter of them do, the plain running maximum is used.
    """
    rows = values.size // _PEAK_ROW
    if rows:
        grid = values[: rows * _PEAK_ROW].reshape(rows, _PEAK_ROW)
        row_max = grid.max(axis=1)
        entering = np.empty(rows)
        entering[0] = before
        np.maximum.accumulate(row_max[:-1], out=entering[1:])
        np.maximum(entering[1:], before, out=entering[1:])
        highs = np.flatnonzero(row_max > entering)
        if highs.size * 4 <= rows:
            peaks = out[: rows * _PEAK_ROW].reshape(rows, _PEAK_ROW)
            peaks[:] = entering[:, None]
            if highs.size:
                inside = np.maximum.accumulate(grid[highs], axis=1)
                np.maximum(inside, entering[highs, None], out=inside)
                peaks[highs] = inside
            done = rows * _PEAK_ROW
            if done == values.size:
                return
            before = max(float(entering[-1]), float(row_max[-1]))
            _accumulate_from(np.maximum, values[done:], before, out[done:])
            return
    _accumulate_from(np.maximum, values, before, out)


class _Account(NamedTuple):
    returns: np.ndarray
    equity: np.ndarray
    drawdown: np.ndarray
    held: np.ndarray
    traded: np.ndarray
    turnover: np.ndarray


def _account(
    w: _Target,
    px: np.ndarray,
    d: np.ndarray,
    c: float,
    capital: float,
    orders: _Orders,
    stats: BarStats | None,
) -> _Account | None:
    """Every per-bar array of the account from the solved `d` (module docstring), block by block.

    `d` becomes `traded`; the share path goes block by block into `orders`
    (the ledger's sums) and is not kept, and each block of the kept series
    goes into `stats` (the metrics' per-bar statistics) while in the cache. Returns None when an account value is not
    positive and finite. The carries between blocks keep the arithmetic of
    one pass over the whole series: the equity is the running product of the
    growth factors in bar order, the drawdown's peak the running maximum.
    """
    n = w.n
    returns, equity, drawdown, held, turnover = (empty(n) for _ in range(5))
    traded = d
    size = min(n, _CHUNK)
    keep, keep_prev, g, value = (np.empty(size) for _ in range(4))
    # carries from the bar before the block
    keep_before = 1.0  # post-trade equity / pre-trade value (1 before the first bar)
    d_before = px_before = held_before = 0.0
    growth_before, peak_before, equity_before = 1.0, capital, capital
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i0 in _blocks(n):
            i1 = min(i0 + _CHUNK, n)
            m = i1 - i0
            cur = slice(i0, i1)
            km, kp, gm, vm = keep[:m], keep_prev[:m], g[:m], value[:m]
            dm, pm = d[cur], px[cur]
            wb = w.window(i0, i1)
            w_prev, wm = wb[:-1], wb[1:]
            # G_s = ((1 - w_{s-1}) - c d_{s-1}) + w_{s-1} a_s
            kp[0] = d_before
            kp[1:] = d[i0 : i1 - 1]
            np.subtract(1.0, w_prev, out=gm)
            kp *= c
            gm -= kp
            if i0 == 0:
                gm[0] = 1.0
                np.divide(pm[1:], px[: i1 - 1], out=kp[1:])
                kp[0] = 0.0
            else:
                kp[0] = pm[0] / px_before
                np.divide(pm[1:], px[i0 : i1 - 1], out=kp[1:])
            kp *= w_prev  # w_{s-1} a_s
            gm += kp
            if not gm.min() > 0.0:  # a non-finite d shows up in the equity below
                return None
            np.multiply(dm, -c, out=km)
            km += 1.0  # keep_s
            kp[0] = keep_before
            kp[1:] = km[:-1]
            # E_s / E_{s-1} = G_s keep_s / keep_{s-1}: exactly 1 on a flat bar after an exit
            # (G_s = keep_{s-1}), so a flat account's equity is exactly constant.
            rm = returns[cur]
            np.multiply(gm, km, out=rm)
            rm /= kp
            em = equity[cur]
            _accumulate_from(np.multiply, rm, growth_before, em)  # the running product of the growth
            growth_before = float(em[-1])
            em *= capital
            # a running product of positive factors: an overflow stays to the last bar
            if not (em.min() > 0.0 and np.isfinite(em[-1])):
                return None
            rm -= 1.0
            ddm = drawdown[cur]
            _running_peak(em, peak_before, ddm)
            peak_before = float(ddm[-1])
            np.divide(em, ddm, out=ddm)
            ddm -= 1.0
            np.divide(em, km, out=vm)  # pre-trade account value V
            hm = held[cur]
            np.divide(wm, km, out=hm)  # end-of-bar weight
            tm = turnover[cur]
            tm[0] = hm[0] - held_before
            np.subtract(hm[1:], hm[:-1], out=tm[1:])
            np.abs(tm, out=tm)
            keep_before, d_before = float(km[-1]), float(dm[-1])
            px_before, held_before = float(pm[-1]), float(hm[-1])
            dm *= vm  # traded notional, then / equity[s-1]
            kp[0] = equity_before
            kp[1:] = em[:-1]
            dm /= kp
            equity_before = float(em[-1])
            np.multiply(wm, vm, out=vm)  # the position's value
            vm /= pm  # signed shares
            orders.add_block(i0, vm, pm, gm)
            if stats is not None:
                stats.add(rm, turnover=tm, traded=dm, drawdown=ddm, account_equity=em)
    return _Account(returns, equity, drawdown, held, traded, turnover)


def _spread(acct: _Account, bars: np.ndarray, n_bars: int, capital: float) -> _Account:
    """The account of the bars with a close (`bars`) over all `n_bars`.

    A bar without a close changes nothing: return, traded and turnover 0;
    equity, drawdown and held weight those of the last bar with a close (the
    initial capital, 0 and 0 before the first), exactly what the
    share-and-cash loop computes there.
    """
    last = np.zeros(n_bars, dtype=np.int64)
    last[bars] = 1
    np.cumsum(last, out=last)
    last -= 1  # the last bar with a close at or before each bar, -1 before the first
    before = last < 0
    np.maximum(last, 0, out=last)

    def held_over(values: np.ndarray, initial: float) -> np.ndarray:
        out = np.take(values, last, out=empty(n_bars))
        out[before] = initial
        return out

    def on_bars(values: np.ndarray) -> np.ndarray:
        out = empty(n_bars)
        out.fill(0.0)
        out[bars] = values
        return out

    return _Account(
        returns=on_bars(acct.returns),
        equity=held_over(acct.equity, capital),
        drawdown=held_over(acct.drawdown, 0.0),
        held=held_over(acct.held, 0.0),
        traded=on_bars(acct.traded),
        turnover=on_bars(acct.turnover),
    )


def _excursion(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, high: bool, skip_nan: bool = False
) -> np.ndarray:
    """Max (`high`) or min of `values[lo_k:hi_k]` per trade; NaN for an empty window.

    `skip_nan`: NaN values (bars without a price) are left out (NaN when a window has no other).

    The windows are ordered and disjoint (`lo_k <= hi_k <= lo_{k+1}`), so one
    `reduceat` over the interleaved bounds computes them all.
    """
    n = values.size
    out = np.full(lo.size, np.nan)
    ok = lo < hi
    if not ok.any():
        return out
    lo_ok, hi_ok = lo[ok], hi[ok]
    idx = np.empty(2 * lo_ok.size, dtype=np.int64)
    idx[0::2] = lo_ok
    idx[1::2] = hi_ok
    if idx[-1] >= n:  # the last window runs to the end of the data: reduceat's last segment does
        idx = idx[:-1]
    ufunc = (np.fmax if high else np.fmin) if skip_nan else (np.maximum if high else np.minimum)
    out[ok] = ufunc.reduceat(values, idx)[0::2]
    return out


class _Bounds(NamedTuple):
    """Where the trades of one symbol open and close (module docstring, "The ledger")."""

    change: np.ndarray  # bars whose target sign differs from the bar before
    starts: np.ndarray  # entry bar of each trade
    exit_bars: np.ndarray  # exit bar of each trade (n, the pad bar, for a trade still open)
    is_open: np.ndarray


def _trade_bounds(sgn: np.ndarray) -> _Bounds:
    n = sgn.size
    change = np.flatnonzero(sgn[1:] != sgn[:-1]) + 1
    if n and sgn[0] != 0:
        change = np.concatenate(([0], change))
    before = np.zeros(change.size, dtype=np.int8)
    has_before = change > 0
    before[has_before] = sgn[change[has_before] - 1]
    starts = change[sgn[change] != 0]
    exit_bars = change[before != 0]
    is_open = np.zeros(starts.size, dtype=bool)
    if starts.size > exit_bars.size:  # the last trade is still open: it "exits" at the pad bar n
        exit_bars = np.append(exit_bars, n)
        is_open[-1] = True
    return _Bounds(change, starts, exit_bars, is_open)


class _Orders:
    """Per trade, the sums over its orders that `_ledger` needs, accumulated block by block.

    Interior resizes (every bar strictly between a trade's entry and its exit;
    flat bars add 0): `abs_shares` = sum |dx|, `notional` = sum dx P,
    `abs_notional` = sum |dx| P, with x the signed shares. `x_open` and
    `x_close` are |x| on the entry bar and on the bar before the exit.
    """

    def __init__(self, bounds: _Bounds) -> None:
        k = bounds.starts.size
        self.bounds = bounds
        self.abs_shares, self.notional, self.abs_notional = np.zeros(k), np.zeros(k), np.zeros(k)
        self.x_open, self.x_close = np.zeros(k), np.zeros(k)
        self.closing = bounds.exit_bars - 1
        self.x_before = 0.0

    def add_block(self, i0: int, x: np.ndarray, px: np.ndarray, inner: np.ndarray) -> None:
        """Add the bars `[i0, i0 + x.size)`: `x` their shares, `px` their closes, `inner` a free buffer."""
        b = self.bounds
        i1 = i0 + x.size
        if b.starts.size == 0:
            return
        inner[0] = x[0] - self.x_before
        np.subtract(x[1:], x[:-1], out=inner[1:])
        self.x_before = float(x[-1])
        lo, hi = np.searchsorted(b.change, (i0, i1))
        inner[b.change[lo:hi] - i0] = 0.0
        # segments of the block: each trade's own bars `[entry, exit)` inside it (the entry's and
        # the exit's orders are zeroed above), so a trade's sums read its own bars only
        first = int(np.searchsorted(b.exit_bars, i0, side="right"))  # trades exiting after i0
        lo, stop = np.searchsorted(b.starts, (i0, i1))  # entries in [i0, i1)
        if stop > first:
            rows = slice(first, stop)
            cuts = np.empty(2 * (stop - first), dtype=np.int64)
            np.maximum(b.starts[rows], i0, out=cuts[0::2])
            np.minimum(b.exit_bars[rows], i1, out=cuts[1::2])
            cuts -= i0
            if cuts[-1] >= x.size:  # the last segment runs to the end of the block
                cuts = cuts[:-1]
            abs_inner = np.abs(inner)
            self.abs_shares[rows] += np.add.reduceat(abs_inner, cuts)[0::2]
            inner *= px
            self.notional[rows] += np.add.reduceat(inner, cuts)[0::2]
            np.abs(inner, out=inner)
            self.abs_notional[rows] += np.add.reduceat(inner, cuts)[0::2]
        self.x_open[lo:stop] = np.abs(x[b.starts[lo:stop] - i0])
        lo, hi = np.searchsorted(self.closing, (i0, i1))
        self.x_close[lo:hi] = np.abs(x[self.closing[lo:hi] - i0])


def _ledger(
    orders: _Orders,
    sgn: np.ndarray,
    px: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    cfg: EngineConfig,
    bars: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """`trades._block_trades`' columns for one symbol with close fills (module docstring).

    `bars`: the bars of the series (`hi`, `lo` run over all of them) that the
    account's bars (`sgn`, `px`, the orders) are, when some closes are missing.
    """
    n = px.size
    n_all = n if bars is None else hi.size
    starts, exit_bars, is_open = orders.bounds.starts, orders.bounds.exit_bars, orders.bounds.is_open
    direction = sgn[starts].astype(np.float64)
    s_abs, s_q, s_aq = orders.abs_shares, orders.notional, orders.abs_notional
    x_open, x_close = orders.x_open, orders.x_close
    # the opening order (the new position) and the closing order (the position held before the exit)
    p_open = px[starts]
    p_exit = np.where(is_open, px[-1], px[np.minimum(exit_bars, n - 1)])
    s_abs = s_abs + x_open + x_close
    s_q = s_q + direction * x_open * p_open - direction * x_close * p_exit
    s_aq = s_aq + x_open * p_open + x_close * p_exit

    size = 0.5 * s_abs
    ent_value = 0.5 * (s_aq + direction * s_q)
    ext_value = 0.5 * (s_aq - direction * s_q)
    traded_value = s_aq - np.where(is_open, x_close * p_exit, 0.0)
    fees = cfg.fees * traded_value
    slippage = cfg.slippage * traded_value
    pnl = direction * (ext_value - ent_value) - fees - slippage
    with np.errstate(divide="ignore", invalid="ignore"):
        entry_price = ent_value / size
        exit_price = ext_value / size
        pnl_pct = pnl / ent_value

    reason = np.full(starts.size, _SIGNAL, dtype=np.int8)
    flips = np.zeros(starts.size, dtype=bool)
    flips[:-1] = exit_bars[:-1] == starts[1:]
    reason[flips] = _REBALANCE
    reason[is_open] = _END

    # excursions over the bars after the entry through the exit bar, plus the exit price
    entry_bar, exit_bar = starts, np.minimum(exit_bars, n - 1)
    if bars is not None:
        entry_bar, exit_bar = bars[entry_bar], bars[exit_bar]
    exit_bar[is_open] = n_all - 1  # an open trade "exits" on the last bar
    win_lo, win_hi = entry_bar + 1, exit_bar + 1
    w_hi = _excursion(hi, win_lo, win_hi, high=True, skip_nan=bars is not None)
    w_lo = _excursion(lo, win_lo, win_hi, high=False, skip_nan=bars is not None)
    with np.errstate(divide="ignore", invalid="ignore"):
        r_exit = direction * (p_exit / entry_price - 1.0)
        r_fav = np.where(direction > 0, w_hi / entry_price - 1.0, 1.0 - w_lo / entry_price)
        r_adv = np.where(direction > 0, w_lo / entry_price - 1.0, 1.0 - w_hi / entry_price)
    mae = np.fmin(np.fmin(r_adv, r_exit), 0.0)
    mfe = np.fmax(np.fmax(r_fav, r_exit), 0.0)
    return {
        "col": np.zeros(starts.size, dtype=np.int64),
        "direction": sgn[starts],
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


def _quotes(arr: np.ndarray | None, px: np.ndarray) -> np.ndarray | bool | None:
    """A validated 1-D high / low, the close where it is missing; None when absent, False when invalid."""
    if arr is None:
        return None
    quotes = np.asarray(arr, dtype=np.float64).ravel()
    if quotes.size != px.size:
        return False
    if _positive_finite(quotes):
        return quotes
    present = ~np.isnan(quotes)
    if present.any() and not _positive_finite(quotes[present]):
        return False  # run_backtest reports it
    return np.where(present, quotes, px)  # NaN where the close is missing too


def _positive_finite(values: np.ndarray) -> bool:
    """Every value > 0 and finite (a NaN makes the minimum NaN), in two reductions and no temporary."""
    return bool(values.min() > 0.0) and bool(values.max() < np.inf)


def kernel_backtest(
    side: np.ndarray,
    close: np.ndarray,
    *,
    dates: Any,
    symbol: str,
    config: EngineConfig,
    size: float = 1.0,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    benchmark: np.ndarray | None = None,
) -> BacktestOutput | None:
    """`run_backtest(size * side, close, ...)` of one symbol, from the closed form (module docstring).

    `side` holds the decisions in {-1, 0, +1} (before the execution lag).
    `open` is accepted for symmetry with `run_backtest` and not needed (close
    fills, no stops). Missing closes (NaN) are bars where nothing trades
    (module docstring). Returns None when the closed form does not apply
    (`kernel_applies`, invalid prices or dates, no close at all, an account
    value reaching 0): the caller then runs `run_backtest`, which also
    reports input errors.
    """
    if kernel_applies(config, 1) is not None or not np.isfinite(size) or size < 0.0:
        return None
    px = np.asarray(close, dtype=np.float64).ravel()
    n_bars = px.size
    if n_bars < 2:
        return None
    bars = None  # the bars with a close, when some are missing
    if not _positive_finite(px):
        present = ~np.isnan(px)
        if not present.any() or not _positive_finite(px[present]):
            return None  # run_backtest reports invalid prices
        if open is not None and (np.isfinite(np.asarray(open, dtype=np.float64).ravel()) & ~present).any():
            return None  # run_backtest reports an open without a close
        bars = np.flatnonzero(present)
    hi_q, lo_q = _quotes(high, px), _quotes(low, px)
    if hi_q is False or lo_q is False:
        return None
    try:
        index = pd.DatetimeIndex(dates)
    except (TypeError, ValueError):
        return None
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    ticks = index.asi8  # NaT is the smallest int64: in a strictly increasing index it could only come first
    if ticks.size != n_bars or ticks[0] == _NAT or not (ticks[1:] > ticks[:-1]).all():
        return None
    per_unit = _NANOSECONDS.get(str(index.unit))
    if per_unit is None:
        return None
    if per_unit != 1:
        try:
            index[[0, -1]].as_unit("ns")  # sorted: the two ends bound every date
        except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
            return None
    # a copy in nanoseconds (the caller's array stays the caller's), scaled as integers
    stamps = empty(n_bars, "datetime64[ns]")
    np.multiply(ticks, per_unit, out=stamps.view(np.int64))

    bench = None
    if benchmark is not None:
        bench = np.asarray(benchmark, dtype=np.float64)
        if bench.shape != (n_bars,) or not np.isfinite(bench).all():
            return None
    sides = np.asarray(side).ravel()
    if sides.size != n_bars:
        return None
    sides = sides.astype(np.int8, copy=False)

    cfg, lag = config, config.execution_lag
    sgn = np.zeros(n_bars, dtype=np.int8)
    if n_bars > lag:
        sgn[lag:] = sides[: n_bars - lag]
    if size == 0.0:
        sgn[:] = 0
    # Bars without a close are no-ops of the account (no order, rf = 0, the position valued at
    # its last close): the account runs on the bars with a close and is spread back (_spread).
    sgn_k, px_k = (sgn, px) if bars is None else (sgn[bars], px[bars])
    n_k = px_k.size
    w = _Target(sgn_k, size)  # the target in force
    c = cfg.cost_rate
    capital = cfg.initial_capital
    d = empty(n_k)
    bounds = _trade_bounds(sgn_k)
    if not _traded_fraction(w, px_k, c, d, bounds):
        return None
    orders = _Orders(bounds)
    ppy = cfg.periods_per_year if cfg.periods_per_year is not None else infer_periods_per_year(stamps)
    stats = BarStats(
        periods_per_year=ppy,
        rf=cfg.rf,
        turnover_penalty=cfg.turnover_penalty,
        turnover=True,
        traded=True,
        drawdown=True,
        account_equity=True,
    )
    acct = _account(w, px_k, d, c, capital, orders, stats if bars is None else None)
    if acct is None:
        return None
    if bars is not None:
        acct = _spread(acct, bars, n_bars, capital)
        stats.add(
            acct.returns,
            turnover=acct.turnover,
            traded=acct.traded,
            drawdown=acct.drawdown,
            account_equity=acct.equity,
        )
    returns, equity, drawdown, held, traded, turnover = acct
    hi = hi_q if isinstance(hi_q, np.ndarray) else px
    lo = lo_q if isinstance(lo_q, np.ndarray) else px
    part = _ledger(orders, sgn_k, px_k, hi, lo, cfg, bars)
    closed = ~part["is_open"]
    closed_pnl, closed_ret = part["pnl"][closed], part["pnl_percent"][closed]
    names = (str(symbol),)
    trades = frame_trades([part] if part["col"].size else [], stamps, names)  # consumes `part`

    metrics = trading_metrics(
        returns,
        periods_per_year=ppy,
        rf=cfg.rf,
        turnover=turnover,
        traded=traded,
        turnover_penalty=cfg.turnover_penalty,
        trade_pnls=closed_pnl,
        trade_returns=closed_ret,
        benchmark=bench,
        initial_capital=capital,
        drawdown=drawdown,
        account_equity=equity,
        bar_stats=stats,
    )
    weights_held = held.reshape(n_bars, 1)
    for arr in (stamps, returns, equity, drawdown, weights_held, traded, turnover):
        arr.flags.writeable = False
    return BacktestOutput(
        dates=stamps,
        symbols=names,
        returns=returns,
        equity=equity,
        drawdown=drawdown,
        weights_held=weights_held,
        traded=traded,
        turnover=turnover,
        trades=trades,
        stops=StopEvents.empty(),
        metrics=metrics,
        periods_per_year=float(ppy),
        config=cfg,
        extras=Extras(derive=partial(_extras, sgn, size, equity, held, traded, c, lag)),
    )


def _extras(
    sgn: np.ndarray,
    size: float,
    equity: np.ndarray,
    held: np.ndarray,
    traded: np.ndarray,
    c: float,
    lag: int,
) -> dict[str, np.ndarray]:
    """`cash`, `weights_target`, `costs` and `fill_bars` of a one-symbol backtest, from what it keeps.

    Cash is the equity less the position (`equity * (1 - weights_held)`),
    costs are proportional to the traded notional (no minimum fee here), every
    bar from the first fill on is a fill (rebalanced every bar).
    """
    n = sgn.size
    cash = np.subtract(1.0, held, out=empty(n))
    cash *= equity
    weights_target = np.multiply(sgn, size, out=empty(n)).reshape(n, 1)
    costs = np.multiply(traded, c, out=empty(n))
    fill_bars = np.arange(min(lag, n), n, dtype=np.int64)
    return {"cash": cash, "weights_target": weights_target, "costs": costs, "fill_bars": fill_bars}
