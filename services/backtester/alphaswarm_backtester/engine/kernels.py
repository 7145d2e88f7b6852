"""The share-and-cash account of METRICS.md ("Backtest accounting"), written once, compiled with numba.

Every backtest of the engine runs through `_account`: one target-weight
panel (`simulate`, used by `run_backtest` and the portfolio), one symbol (a
panel of one column), and K parameter sets of a rule at once
(`account_sets`, used by the optimizer, parallel over the sets). The same
pass forms the per-bar equity, returns, traded, costs and drawdown, and the
ledger's trade counts; it reads the targets on the fill bars of the
schedule (`t + lag` for `t = 0, k, 2k, ...`) without building the targets
in force, which `run_backtest` derives only when asked (or when a leverage
cap or an order mask needs them in the loop). The optimizer's common case,
one symbol without stops, runs `_sets_one`: `_account`'s operations for a
column, four sets advancing side by side through one bar loop (each bar's
fill waits on the cash of the bar before; independent sets fill that wait),
with each set's statistics formed as it goes. The kernels are
`numba.njit(cache=True)`: compiled once per signature into the numba
cache (`alphaswarm warmup` fills it at install; see
`alphaswarm_backtester.engine.warmup`).

Arrays are `(T, N)`, bars by symbols, float64.

Timing
------
- Decision bars are `t = 0, k, 2k, ...` (`k = rebalance_every`, counted from
  the first bar of the window). The target row `w[t]` is formed from data
  through the close of t; it fills at bar `f = t + execution_lag`, at the
  close of f (`fill_price="close"`) or its open (`"open"`, which needs a lag
  >= 1). Decisions whose fill bar falls after the last bar never trade.
- NaN in a target row means "no opinion" and is read as weight 0. With
  `max_gross_leverage` set, a row with `sum|w| > limit` is scaled down to the
  limit, proportions kept.

One fill (the convention of vectorbt 1.2's `Portfolio.from_orders(...,
size_type="targetpercent", cash_sharing=True)`; see `simulate_from_orders_nb`
and `execute_order_nb` in `vectorbt/portfolio/nb.py`)
------------------------------------------------------------------------
vectorbt computes the group value *once per row, before any order of the
row*: `value = cash + sum(position * val_price)` with the valuation price
equal to the order price, and with `update_value=False` (its default) the
value is not updated after each order. Every target-percent order is then
sized against that same value, so the order in which the orders of a row
execute (`call_seq="auto"` sorts sells first) changes nothing as long as
cash does not run out; fees are paid from cash after sizing. We do exactly
that, for all symbols at once:

    V      = cash + sum_i shares[i] * price[i]        (pre-trade value at the fill price)
    target = w[i] * V / price[i]                     (shares)
    d      = target - shares
    cash  -= sum_i d[i] * price[i] + sum_i cost_i
    cost_i = (fees + slippage) * |d[i]| * price[i]   (or max(min_fee, that) when min_fee > 0 and d[i] != 0)

so the position after the fill is exactly `w * V` in value and the costs
come out of cash (post-trade equity is `V - cost`). vectorbt applies
`slippage` to the price; we book it as a cost, which is the same as giving
vectorbt `fees = fees + slippage, slippage = 0`. Unlike vectorbt we never
cap an order by the available cash: cash may go negative (a loan at `rf`)
when the targets ask for leverage. An account whose pre-trade value is <= 0
does not trade on that bar (vectorbt rejects such orders too).

Between fills share counts stay fixed and the weights drift with prices.

Order masks
-----------
`order_mask[t, i]` False means decision row t places no order for symbol i:
at its fill the symbol keeps its share count (valued at the fill price, or
its last close when that is missing), exactly as if its fill price were
missing, and the other symbols are sized against the same pre-trade value
V. A decision row without any order is no fill at all (no bar in
`fill_bars`). The target in force of a symbol is that of its last order. A
schedule that trades on chosen bars only (a portfolio's rebalance dates and
signal changes) is a mask over the decision rows; the costs of a fill are
then paid from cash and nothing trades them back before the next order.

Marking, returns, costs
-----------------------
- `equity[s] = cash[s] + sum_i shares[s, i] * mark[s, i]`, marked at the
  close; `mark` is the last known close (a NaN close keeps the previous one).
- Cash earns `rf / periods_per_year` per bar, credited at the start of every
  bar (bar 0 included) on the cash carried from the previous close: a
  portfolio that never trades grows as `initial_capital * (1 + rf_p) ** (s + 1)`.
- `returns[s] = equity[s] / equity[s-1] - 1` with `equity[-1] = initial_capital`.
- `traded[s]` is the notional traded on bar s and `costs[s]` the costs paid
  on it, both divided by `equity[s-1]` (the equity at the start of the bar),
  so that, with close fills and for every bar,

      returns[s] = sum_i h[s-1, i] * r[s, i] + cash_w[s-1] * rf_p - costs[s]

  holds exactly (`h` = `weights_held`, `r` the close-to-close return,
  `cash_w = 1 - sum_i h`), and `costs[s] = (fees + slippage) * traded[s]`
  exactly when `min_fee == 0`. METRICS.md's cost term is written per unit of
  pre-trade value V; dividing by `equity[s-1]` instead makes its additive
  formula exact (the two bases differ by the bar's gross growth factor, i.e.
  by the "fee rounding" METRICS.md allows).
- `turnover[s] = sum_i |h[s, i] - h[s-1, i]|` with `h[-1] = 0` (drift included).

Missing prices
--------------
A symbol whose fill price is NaN on a fill bar (not listed yet, suspended,
delisted) cannot be traded: its share count is left unchanged (no entry if
flat; a held position is held), and it is valued at its last known close.
A position in a symbol that never trades again is therefore carried at its
last price to the end (and closed in the ledger at `end_of_data`). The
weights of the other symbols are not renormalised. An open on a bar whose
close is NaN is rejected by `run_backtest` (a bar that opens must close).

Stops (`stop_loss`, `take_profit`)
----------------------------------
Per position, relative to the trade's entry price: the size-weighted average
price of the fills that opened or increased it (vectorbt's position entry
price), at the time of the check. A long is stopped out when the bar's low
reaches `entry * (1 - stop_loss)` and takes profit when the high reaches
`entry * (1 + take_profit)` (shorts mirror this); without high/low the bar's
range is its open and close (the close alone without an open). The exit
fills at the stop price, or at the open when the bar opens beyond it (a gap
fills at the open, never at a price the market did not trade); with closes
only, a close beyond the level still fills at the level (optimistic: pass
open/high/low for realistic fills). The exit pays the usual costs. When both
levels are inside one bar's range the stop loss wins (the intrabar order is
unknown; assume the worst). Stops are checked on every bar the position is
held through: with close fills from the bar after the entry, with open fills
from the entry bar itself (after the open fill). After a stop the symbol
stays flat: targets of the same sign are ignored until a decision's target
for it is zero or of the opposite sign, so a daily rebalance does not buy
back what the stop just sold.

Closed trades in the K-set kernel
---------------------------------
`account_sets` also books the PnL of every closed trade as the ledger
(`trades`) defines it: a trade's PnL is minus the cash its fills moved,
`-sum(d * price)`, less their costs, a flipping order's cost split between
the closing and the opening trade by the shares of each part.

Causality
---------
The kernels are one forward loop over the bars: the numbers of bars
`[0, t]` are computed from the inputs of bars `[0, t]` alone, so they are
bitwise the same whatever later bars hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from alphaswarm_backtester.engine.config import EngineConfig

__all__ = [
    "REASON_STOP_LOSS",
    "REASON_TAKE_PROFIT",
    "SET_STATS",
    "SetAccounts",
    "Simulation",
    "StopEvents",
    "account_sets",
    "date_order",
    "decision_schedule",
    "ffill_rows",
    "scan_values",
    "simulate",
    "weights_held",
]

REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2

#: The per-bar statistics of each parameter set, in the order of `SetAccounts.stats`.
SET_STATS = (
    "n",
    "total",
    "mean",
    "m2",
    "m3",
    "m4",
    "constant",
    "downside_ss",
    "drawdown_low",
    "drawdown_high",
    "underwater",
    "drawdown_last",
    "equity_high",
    "equity_last",
)

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# inlined into the caller: no call (and no reference counting of its arguments) per bar
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")


@dataclass(frozen=True)
class StopEvents:
    """Stop exits, one row per (bar, symbol) stopped out, in bar order.

    `shares` is the signed position closed by the stop, `price` the fill
    price, `reason` `REASON_STOP_LOSS` or `REASON_TAKE_PROFIT`.
    """

    bar: np.ndarray
    symbol: np.ndarray
    shares: np.ndarray
    price: np.ndarray
    reason: np.ndarray

    @classmethod
    def empty(cls) -> StopEvents:
        return cls(
            bar=np.empty(0, np.int64),
            symbol=np.empty(0, np.int64),
            shares=np.empty(0),
            price=np.empty(0),
            reason=np.empty(0, np.int8),
        )

    def __len__(self) -> int:
        return int(self.bar.size)


@dataclass(frozen=True)
class Simulation:
    """Raw result of `simulate`.

    - `positions[s]`: signed shares held at the end of bar s (after its fill
      and stops). `weights_held(..., in_place=True)` turns this buffer into
      the end-of-bar weights.
    - `cash[s]`: at the close of bar s; `equity[s]`: cash plus the holdings
      at the last known close.
    - `returns[s]`, `traded[s]`, `costs[s]` (fractions of the equity before
      the bar), `drawdown[s]`: see "Marking, returns, costs"; `finite`: every
      return is finite.
    - `trade_counts[i]`: the number of trades of symbol i (the ledger's rows).
    - `last_mark`: the last known close of every symbol at the final bar
      (NaN if it never had one); `fill_prices_clean`: no NaN fill price from
      the first fill on.
    - `weights_target()`: the target in force at each bar (the decision row
      of the last fill at or before s, NaN read as 0, leverage-capped; 0
      before the first fill); `fill_bars()`: the bars with a rebalance fill.
      Both are derived on request (the account does not need them).
    """

    positions: np.ndarray
    cash: np.ndarray
    equity: np.ndarray
    returns: np.ndarray
    traded: np.ndarray
    costs: np.ndarray
    drawdown: np.ndarray
    finite: bool
    trade_counts: np.ndarray
    last_mark: np.ndarray
    stops: StopEvents
    fill_prices_clean: bool
    schedule: _Schedule = field(repr=False)

    def weights_target(self) -> np.ndarray:
        return self.schedule.targets()

    def fill_bars(self) -> np.ndarray:
        return self.schedule.fills


@dataclass(frozen=True)
class _Schedule:
    """The fills of a simulation and what derives its targets in force (see `simulate`)."""

    target_weights: np.ndarray
    decisions: np.ndarray
    fills: np.ndarray
    max_gross: float | None
    orders: np.ndarray | None
    capped: np.ndarray | None  # the targets in force, when the account needed them

    def targets(self) -> np.ndarray:
        if self.capped is not None:
            return self.capped
        return _targets_in_force(self.target_weights, self.decisions, self.fills, self.max_gross, self.orders)


# ============================================================================= the account


@_inline
def _sign(x: float) -> float:
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0


@_inline
def _trade_pnl(
    s_q: float, s_aq: float, s_x: float, direction: float, fees: float, slippage: float, min_fee: float
) -> float:
    """A closed trade's PnL from its sums, with the ledger's arithmetic (`trades._block_trades`)."""
    ent = 0.5 * (s_aq + direction * s_q)
    ext = 0.5 * (s_aq - direction * s_q)
    paid = fees * s_aq
    if min_fee > 0.0:
        paid = paid + s_x
    return direction * (ext - ent) - paid - slippage * s_aq


@_inline
def _book(
    t: tuple[float, float, float, float, float, float, float],
    before: float,
    after: float,
    price: float,
    rate: float,
    fees: float,
    slippage: float,
    min_fee: float,
) -> tuple[tuple[float, float, float, float, float, float, float], float, bool]:
    """Book one order (`before` -> `after` shares at `price`) in its symbol's trade `t`.

    `t`: the trade's running sums of `d * price`, `|d * price|` and of what a
    minimum fee adds, the same three for the closing part of the order that
    opened it by a flip (taken off at the close, as the ledger does), and its
    direction. Returns the new `t`, and the PnL of the trade this order closes
    with True (else 0.0, False), operation for operation as the ledger
    (`trades._block_trades`) computes it, so to the last bit.
    Scalars only: called per order inside the bar loop.
    """
    sq, saq, sx, iq, iaq, ix, direction = t
    d = after - before
    q = d * price
    aq = abs(q)
    extra = max(min_fee - rate * aq, 0.0) if min_fee > 0.0 else 0.0
    if before == 0.0:
        return (q, aq, extra, 0.0, 0.0, 0.0, _sign(after)), 0.0, False
    if _sign(after) == _sign(before):
        return (sq + q, saq + aq, sx + extra, iq, iaq, ix, direction), 0.0, False
    if after == 0.0:
        sq, saq, sx = sq + q, saq + aq, sx + extra
        pnl = _trade_pnl(sq - iq, saq - iaq, sx - ix, direction, fees, slippage, min_fee)
        return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), pnl, True
    # a flip: its closing part ends this trade, the order opens the next
    old_abs = abs(before)
    old_q = -before * price
    old_aq = old_abs * price
    moved = extra * old_abs / abs(d) if min_fee > 0.0 else 0.0
    pnl = _trade_pnl(
        (sq - iq) + old_q, (saq - iaq) + old_aq, (sx - ix) + moved, direction, fees, slippage, min_fee
    )
    return (q, aq, extra, old_q, old_aq, moved, _sign(after)), pnl, True


@_inline
def _stop_level(
    q: float, entry: float, hi: float, lo: float, op: float, stop_loss: float, take_profit: float
) -> tuple[float, int]:
    """`(fill price, reason)` of a stop hit by the bar's range, `(nan, 0)` when none is."""
    px = np.nan
    reason = 0
    if not math.isnan(take_profit):
        if q > 0.0:
            lvl = entry * (1.0 + take_profit)
            if hi >= lvl:
                px, reason = (lvl if math.isnan(op) else max(lvl, op)), REASON_TAKE_PROFIT
        else:
            lvl = entry * (1.0 - take_profit)
            if lo <= lvl:
                px, reason = (lvl if math.isnan(op) else min(lvl, op)), REASON_TAKE_PROFIT
    if not math.isnan(stop_loss):  # checked last: when both are in the range the stop loss wins
        if q > 0.0:
            lvl = entry * (1.0 - stop_loss)
            if lo <= lvl:
                px, reason = (lvl if math.isnan(op) else min(lvl, op)), REASON_STOP_LOSS
        else:
            lvl = entry * (1.0 + stop_loss)
            if hi >= lvl:
                px, reason = (lvl if math.isnan(op) else max(lvl, op)), REASON_STOP_LOSS
    return px, reason


@_inline
def _close_trade(
    tr: np.ndarray,
    i: int,
    before: float,
    after: float,
    price: float,
    rate: float,
    fees: float,
    slippage: float,
    min_fee: float,
    pnls: np.ndarray,
    n_pnl: int,
) -> int:
    """Book one order of symbol i in its open trade (`tr[:, i]`, see `_book`); returns the new count
    of closed trades (the PnL of one this order closes goes to `pnls`, when it fits)."""
    trade = (tr[0, i], tr[1, i], tr[2, i], tr[3, i], tr[4, i], tr[5, i], tr[6, i])
    trade, pnl, closed = _book(trade, before, after, price, rate, fees, slippage, min_fee)
    for k in range(7):
        tr[k, i] = trade[k]
    if closed:
        if n_pnl < pnls.shape[1]:
            pnls[0, n_pnl] = pnl
            pnls[1, n_pnl] = i
        n_pnl += 1
    return n_pnl


@_jit
def _account(
    tgt: np.ndarray,
    direct: bool,
    lag: int,
    every: int,
    scale: float,
    close: np.ndarray,
    fill_px: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    orders: np.ndarray,
    capital: float,
    growth: float,
    rate: float,
    fees: float,
    slippage: float,
    min_fee: float,
    by_open: bool,
    stop_loss: float,
    take_profit: float,
    positions: np.ndarray,
    cash_end: np.ndarray,
    equity: np.ndarray,
    returns: np.ndarray,
    traded: np.ndarray,
    costs: np.ndarray,
    drawdown: np.ndarray,
    counts: np.ndarray,
    last_mark: np.ndarray,
    track_trades: bool,
    pnls: np.ndarray,
    events: np.ndarray,
) -> tuple[int, int, bool, bool]:
    """The account over every bar (module docstring) and its per-bar series, in one pass.

    Fills: decision bars `t = 0, every, 2 every, ...` fill at `s = t + lag`;
    the target of symbol i there is `tgt[t, i] * scale` (NaN read as 0), or
    `tgt[s, i] * scale` with `direct` (a panel of targets in force, already
    capped). `orders` (`(decisions, N)` bool, row `t // every`) says which
    symbols a decision orders (a row without any is no fill); no rows means
    "all". `open_` / `high` / `low` with no rows mean "not given";
    `stop_loss` / `take_profit` NaN mean "none".

    Per bar s it writes `equity` (marked at the last known close), `returns`,
    `drawdown` and, when they have rows, `traded` / `costs` (fractions of the
    equity before the bar, see "Marking, returns, costs"); with `positions`
    rows the end-of-bar shares, `cash_end` the cash and `counts` the number
    of trades of each symbol (sign changes to a non-zero sign, as the ledger
    counts them). `last_mark` receives the last known close of every symbol.
    Stop exits go to the columns of `events` (rows: bar, symbol, shares,
    price, reason) and, with `track_trades`, closed trades to `pnls`; both
    buffers are preallocated (no array is created or replaced inside the bar
    loop, which keeps it free of reference counting) and what does not fit
    is counted, not written. Returns `(number of stop exits, number of
    closed trades, every return finite, no missing fill price from the first
    fill on)`.
    """
    n_bars, n_cols = close.shape
    has_open = open_.shape[0] > 0
    has_high = high.shape[0] > 0
    has_low = low.shape[0] > 0
    has_orders = orders.shape[0] > 0
    has_stops = not (math.isnan(stop_loss) and math.isnan(take_profit))
    keep = positions.shape[0] > 0
    flows = traded.shape[0] > 0
    fill_phase = 0 if by_open else 1  # open fills before the bar's stops, close fills after them
    shares = np.zeros(n_cols)
    tw = np.empty(n_cols)
    mark = np.full(n_cols, np.nan)
    sign_prev = np.zeros(n_cols, dtype=np.int8)
    blocked = np.zeros(n_cols)  # sign of the last stopped-out position, 0 = free
    ent = np.zeros((2, n_cols))  # entry size and notional of each open trade (for stops)
    tr = np.zeros((7, n_cols))  # each symbol's open trade (`_book`)
    if keep:
        counts[:] = 0
    n_pnl = 0
    n_ev = 0
    cash = capital
    prev = capital
    peak = capital
    finite = True
    filled = False
    px_clean = True
    next_fill = lag
    o = -1
    # The fill is written out here rather than called: a call per bar would count references
    # to every array it is given, which costs more than the arithmetic.
    for s in range(n_bars):
        if growth != 1.0:  # x * 1.0 is x: the multiplication only lengthens the bar's dependency chain
            cash *= growth
        bar_traded = 0.0
        bar_cost = 0.0
        is_fill = s == next_fill
        if is_fill:
            next_fill += every
            o += 1
            if has_orders:
                placed = False
                for i in range(n_cols):
                    placed = placed or orders[o, i]
                is_fill = placed
        for phase in range(2):
            if phase == fill_phase and is_fill:
                filled = True
                row = s if direct else s - lag
                for i in range(n_cols):
                    t = tgt[row, i] * scale
                    if math.isnan(t):
                        t = 0.0
                    if has_stops and blocked[i] != 0.0 and not (has_orders and not orders[o, i]):
                        # after a stop the symbol stays flat until a target of another sign
                        if _sign(t) == blocked[i]:
                            t = 0.0
                        else:
                            blocked[i] = 0.0
                    tw[i] = t
                # pre-trade value V: untradable holdings at their last known close
                value = cash
                for i in range(n_cols):
                    p = fill_px[s, i]
                    if math.isfinite(p):
                        value += shares[i] * p
                    else:
                        m = mark[i]
                        value += shares[i] * (m if math.isfinite(m) else 0.0)
                if value > 0.0:
                    flow = 0.0
                    notional = 0.0
                    cost = 0.0
                    for i in range(n_cols):
                        p = fill_px[s, i]
                        if not math.isfinite(p) or (has_orders and not orders[o, i]):
                            continue
                        before = shares[i]
                        w = tw[i]
                        q = (value if w == 1.0 else w * value) / p  # 1.0 * value is value
                        d = q - before
                        if d == 0.0:
                            continue
                        flow += d * p
                        ad = abs(d) * p
                        notional += ad
                        if min_fee > 0.0:
                            cost += max(ad * rate, min_fee)
                        if track_trades:
                            n_pnl = _close_trade(
                                tr, i, before, q, p, rate, fees, slippage, min_fee, pnls, n_pnl
                            )
                        if has_stops:  # the trade's entry size and notional (its entry price)
                            if before != 0.0 and _sign(before) == _sign(q):
                                inc = max(abs(q) - abs(before), 0.0)
                                ent[0, i] += inc
                                ent[1, i] += inc * p
                            elif q != 0.0:
                                ent[0, i] = abs(q)
                                ent[1, i] = abs(q) * p
                        shares[i] = q
                    if min_fee == 0.0:
                        cost = rate * notional
                    cash = cash - flow - cost
                    bar_traded += notional
                    bar_cost += cost
            elif phase != fill_phase and has_stops:
                for i in range(n_cols):
                    q = shares[i]
                    c = close[s, i]
                    if q == 0.0 or not math.isfinite(c):
                        continue
                    op = open_[s, i] if has_open else np.nan
                    # the bar's observed range: high / low, else the open and the close
                    hi = c if math.isnan(op) else max(c, op)
                    lo = c if math.isnan(op) else min(c, op)
                    if has_high and not math.isnan(high[s, i]):
                        hi = high[s, i]
                    if has_low and not math.isnan(low[s, i]):
                        lo = low[s, i]
                    entry = ent[1, i] / ent[0, i] if ent[0, i] != 0.0 else np.nan
                    px, reason = _stop_level(q, entry, hi, lo, op, stop_loss, take_profit)
                    if reason == 0:
                        continue
                    notional = abs(q) * px
                    cost = notional * rate
                    if min_fee > 0.0:
                        cost = max(cost, min_fee)
                    cash += q * px - cost
                    bar_traded += notional
                    bar_cost += cost
                    if track_trades:
                        n_pnl = _close_trade(tr, i, q, 0.0, px, rate, fees, slippage, min_fee, pnls, n_pnl)
                    if n_ev < events.shape[1]:
                        events[0, n_ev] = s
                        events[1, n_ev] = i
                        events[2, n_ev] = q
                        events[3, n_ev] = px
                        events[4, n_ev] = reason
                    n_ev += 1
                    blocked[i] = _sign(q)
                    shares[i] = 0.0
        # the close: marks, equity (cash plus the holdings at the last known close, in symbol order)
        eq = cash
        for i in range(n_cols):
            c = close[s, i]
            if not math.isnan(c):
                mark[i] = c
            m = mark[i]
            x = shares[i]
            eq += x * (m if not math.isnan(m) else 0.0)
            if keep:
                positions[s, i] = x
                sg = np.int8(x > 0.0) - np.int8(x < 0.0)
                counts[i] += sg != 0 and sg != sign_prev[i]
                sign_prev[i] = sg
                if filled and math.isnan(fill_px[s, i]):
                    px_clean = False
        if keep:
            cash_end[s] = cash
        equity[s] = eq
        r = eq / prev - 1.0
        returns[s] = r
        if flows:
            traded[s] = bar_traded / prev
            costs[s] = bar_cost / prev
        finite = finite and math.isfinite(r)
        prev = eq
        peak = max(peak, eq)
        drawdown[s] = eq / peak - 1.0
    for i in range(n_cols):
        last_mark[i] = mark[i]
    return n_ev, n_pnl, finite, px_clean


@_jit
def _weights(positions: np.ndarray, equity: np.ndarray, close: np.ndarray, turnover: np.ndarray) -> None:
    """End-of-bar weights (written over the share counts `positions`) and turnover, marked at the last known close."""
    n_bars, n_cols = positions.shape
    mark = np.zeros(n_cols)
    prev = np.zeros(n_cols)
    for s in range(n_bars):
        eq = equity[s]
        to = 0.0
        for i in range(n_cols):
            c = close[s, i]
            if not math.isnan(c):
                mark[i] = c
            w = positions[s, i] * mark[i] / eq
            positions[s, i] = w
            to += abs(w - prev[i])
            prev[i] = w
        turnover[s] = to


# ============================================================================= K parameter sets


@dataclass(frozen=True)
class SetAccounts:
    """The accounts of K target sequences on one panel (`account_sets`).

    `returns`, `equity`, `drawdown` `(K, T)` as `run_backtest` computes them
    (`equity` and `drawdown` None when not asked for); `finite[k]`: every
    return of set k is finite; `pnls[k]` the PnL of every closed trade of
    set k, in the ledger's order; `stats[k]` the per-bar statistics of set k
    (`SET_STATS`), for `BarStats.from_totals`.
    """

    returns: np.ndarray
    equity: np.ndarray | None
    drawdown: np.ndarray | None
    finite: np.ndarray
    pnls: list[np.ndarray]
    stats: np.ndarray


@_jit
def _set_stats(
    returns: np.ndarray, equity: np.ndarray, drawdown: np.ndarray, rf_p: float, out: np.ndarray
) -> None:
    """The per-bar statistics `BarStats.from_totals` takes, from an account's curves.

    In `SET_STATS` order: the sum, mean and centred power sums of the
    returns (the two-pass algorithm: the centred sums need the mean, the rest
    is gathered in the first pass), whether they are constant, the downside
    sum of squares, the drawdown's low, high, longest run below 0 and last
    value, the equity's high and last value. The formulas that turn them
    into metrics are `alphaswarm_common.metrics.trading`'s.
    """
    n = equity.size
    total = 0.0
    high = -np.inf
    low = np.inf
    downside = 0.0
    dd_low = np.inf
    dd_high = -np.inf
    run = best = 0
    eq_high = -np.inf
    for s in range(n):
        x = returns[s]
        dd = drawdown[s]
        total += x
        high = max(high, x)
        low = min(low, x)
        d = min(x - rf_p, 0.0)
        downside += d * d
        dd_low = min(dd_low, dd)
        dd_high = max(dd_high, dd)
        if dd < 0.0:
            run += 1
            best = max(best, run)
        else:
            run = 0
        eq_high = max(eq_high, equity[s])
    last_dd = drawdown[n - 1] if n else 0.0
    last_eq = equity[n - 1] if n else np.nan
    _put_stats(
        out, returns, n, total, high == low, downside, dd_low, dd_high, best, last_dd, eq_high, last_eq
    )


@_jit
def _put_stats(
    out: np.ndarray,
    returns: np.ndarray,
    n: int,
    total: float,
    flat: bool,
    downside: float,
    dd_low: float,
    dd_high: float,
    longest: float,
    last_dd: float,
    eq_high: float,
    last_eq: float,
) -> None:
    """`out` in `SET_STATS` order, the returns' centred power sums taken here (their second pass)."""
    mean = total / n if n else 0.0
    m2 = m3 = m4 = 0.0
    for x in returns:
        c = x - mean
        c2 = c * c
        m2 += c2
        m3 += c2 * c
        m4 += c2 * c2
    out[0] = n
    out[1] = total
    out[2] = mean
    out[3] = m2
    out[4] = m3
    out[5] = m4
    out[6] = 1.0 if flat else 0.0
    out[7] = downside
    out[8] = dd_low
    out[9] = dd_high
    out[10] = longest
    out[11] = last_dd
    out[12] = eq_high
    out[13] = last_eq


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sets(
    sides: np.ndarray,
    lag: int,
    every: int,
    size: float,
    close: np.ndarray,
    fill_px: np.ndarray,
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    capital: float,
    growth: float,
    rate: float,
    fees: float,
    slippage: float,
    min_fee: float,
    by_open: bool,
    stop_loss: float,
    take_profit: float,
    returns: np.ndarray,
    equity: np.ndarray,
    drawdown: np.ndarray,
    pnls: np.ndarray,
    n_pnls: np.ndarray,
    rf_p: float,
    stats: np.ndarray,
    finite: np.ndarray,
) -> None:
    """The account of every set (`_account` on `size * sides[k]`), then its statistics, parallel over the sets."""
    n_cols = close.shape[1]
    for k in numba.prange(sides.shape[0]):
        _, n_pnls[k], finite[k], _ = _account(
            sides[k], False, lag, every, size, close, fill_px, open_, high, low,
            np.empty((0, n_cols), dtype=np.bool_), capital, growth, rate, fees, slippage, min_fee,
            by_open, stop_loss, take_profit, np.empty((0, n_cols)), np.empty(0), equity[k], returns[k],
            np.empty(0), np.empty(0), drawdown[k], np.empty(0, dtype=np.int64), np.empty(n_cols),
            True, pnls[k], np.empty((5, 0)),
        )  # fmt: skip
        _set_stats(returns[k], equity[k], drawdown[k], rf_p, stats[k])


#: parameter sets advanced together bar by bar in `_sets_one`: independent accounts whose
#: dependency chains (each bar's fill needs the cash of the bar before) the CPU overlaps.
_LANES = 4


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sets_one(
    sides: np.ndarray,
    lag: int,
    every: int,
    size: float,
    close: np.ndarray,
    fill_px: np.ndarray,
    capital: float,
    growth: float,
    rate: float,
    fees: float,
    slippage: float,
    min_fee: float,
    returns: np.ndarray,
    equity: np.ndarray,
    drawdown: np.ndarray,
    pnls: np.ndarray,
    n_pnls: np.ndarray,
    rf_p: float,
    stats: np.ndarray,
    finite: np.ndarray,
) -> None:
    """`_sets` for one symbol without stops: `_account`'s operations, `_LANES` sets per pass over the bars.

    Each set's numbers are `_account`'s for a panel of one column, operation
    for operation (so the same bits), and its statistics `_set_stats`'s; the
    sets of a group share the bar loop, its prices and its schedule, and
    their accounts advance side by side. `equity` and `drawdown` are written
    when they have rows.
    """
    n_sets, n_bars = sides.shape
    curves = equity.shape[0] > 0
    n_groups = (n_sets + _LANES - 1) // _LANES
    for g in numba.prange(n_groups):
        k0 = g * _LANES
        nl = min(_LANES, n_sets - k0)
        cash = np.full(_LANES, capital)
        shares = np.zeros(_LANES)
        prev = np.full(_LANES, capital)
        peak = np.full(_LANES, capital)
        tr = np.zeros((7, _LANES))
        n_pnl = np.zeros(_LANES, dtype=np.int64)
        # the first pass of `_set_stats`, per set
        acc = np.zeros((9, _LANES))  # total, high, low, downside, dd low, dd high, run, best, equity high
        acc[1] = -np.inf
        acc[2] = np.inf
        acc[4] = np.inf
        acc[5] = -np.inf
        acc[8] = -np.inf
        ok = np.ones(_LANES, dtype=np.bool_)
        dd = np.zeros(_LANES)
        mark = np.nan
        next_fill = lag
        for s in range(n_bars):
            fill = s == next_fill
            if fill:
                next_fill += every
            p = fill_px[s]
            p_ok = math.isfinite(p)
            c = close[s]
            for lane in range(nl):
                k = k0 + lane
                cash_l = cash[lane]
                if growth != 1.0:
                    cash_l *= growth
                before = shares[lane]
                if fill:
                    t = sides[k, s - lag] * size
                    if math.isnan(t):
                        t = 0.0
                    value = cash_l
                    if p_ok:
                        value += before * p
                    else:
                        value += before * (mark if math.isfinite(mark) else 0.0)
                    if value > 0.0:
                        flow = 0.0
                        notional = 0.0
                        cost = 0.0
                        if p_ok:
                            q = (value if t == 1.0 else t * value) / p
                            d = q - before
                            if d != 0.0:
                                flow += d * p
                                ad = abs(d) * p
                                notional += ad
                                if min_fee > 0.0:
                                    cost += max(ad * rate, min_fee)
                                n_pnl[lane] = _close_trade(
                                    tr,
                                    lane,
                                    before,
                                    q,
                                    p,
                                    rate,
                                    fees,
                                    slippage,
                                    min_fee,
                                    pnls[k],
                                    n_pnl[lane],
                                )
                                shares[lane] = q
                        if min_fee == 0.0:
                            cost = rate * notional
                        cash_l = cash_l - flow - cost
                cash[lane] = cash_l
                m = c if not math.isnan(c) else mark
                eq = cash_l + shares[lane] * (m if not math.isnan(m) else 0.0)
                x = eq / prev[lane] - 1.0
                returns[k, s] = x
                prev[lane] = eq
                pk = max(peak[lane], eq)
                peak[lane] = pk
                y = eq / pk - 1.0
                dd[lane] = y
                if curves:
                    equity[k, s] = eq
                    drawdown[k, s] = y
                ok[lane] = ok[lane] and math.isfinite(x)
                acc[0, lane] += x
                acc[1, lane] = max(acc[1, lane], x)
                acc[2, lane] = min(acc[2, lane], x)
                v = min(x - rf_p, 0.0)
                acc[3, lane] += v * v
                acc[4, lane] = min(acc[4, lane], y)
                acc[5, lane] = max(acc[5, lane], y)
                if y < 0.0:
                    acc[6, lane] += 1.0
                    acc[7, lane] = max(acc[7, lane], acc[6, lane])
                else:
                    acc[6, lane] = 0.0
                acc[8, lane] = max(acc[8, lane], eq)
            if not math.isnan(c):
                mark = c
        for lane in range(nl):
            k = k0 + lane
            n_pnls[k] = n_pnl[lane]
            finite[k] = ok[lane]
            _put_stats(
                stats[k],
                returns[k],
                n_bars,
                acc[0, lane],
                acc[1, lane] == acc[2, lane],
                acc[3, lane],
                acc[4, lane],
                acc[5, lane],
                acc[7, lane],
                dd[lane] if n_bars else 0.0,
                acc[8, lane],
                prev[lane] if n_bars else np.nan,
            )


@_jit
def _scan(flat: np.ndarray) -> tuple[bool, bool]:
    inf = False
    non_positive = False
    for v in flat:
        if math.isinf(v):
            inf = True
        elif v <= 0.0:
            non_positive = True
    return inf, non_positive


_NAT = np.iinfo(np.int64).min


@_jit
def _date_order(stamps: np.ndarray) -> tuple[bool, bool]:
    """`(has a NaT, strictly increasing)` of int64 nanosecond stamps, in one pass."""
    nat = False
    increasing = True
    for i in range(stamps.size):
        v = stamps[i]
        if v == _NAT:
            nat = True
        elif i > 0 and v <= stamps[i - 1]:
            increasing = False
    return nat, increasing


# ============================================================================= Python entry points


def date_order(stamps: np.ndarray) -> tuple[bool, bool]:
    """`(has a NaT, strictly increasing)` of a `datetime64[ns]` array (a NaT makes the order meaningless)."""
    return _date_order(np.ascontiguousarray(stamps).view(np.int64))


def scan_values(arr: np.ndarray) -> tuple[bool, bool]:
    """`(has ±inf, has a value <= 0)` of a float array, in one pass (NaN is neither)."""
    return _scan(np.ascontiguousarray(arr, dtype=np.float64).reshape(-1))


def decision_schedule(n_bars: int, execution_lag: int, rebalance_every: int) -> tuple[np.ndarray, np.ndarray]:
    """`(decision_bars, fill_bars)`: decisions at `0, k, 2k, ...` whose fill `t + lag` is inside the window."""
    decisions = np.arange(0, n_bars, rebalance_every, dtype=np.int64)
    decisions = decisions[decisions + execution_lag < n_bars]
    return decisions, decisions + execution_lag


def ffill_rows(block: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-fill NaN down the rows of `block`, starting from `carry` (the last value before it).

    Returns `(filled, new_carry)`; `filled` is `block` itself (not a copy) when it has no NaN.
    """
    valid = ~np.isnan(block)
    if valid.all():
        return block, block[-1].copy()
    rows = block.shape[0]
    idx = np.where(valid, np.arange(rows)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = np.take_along_axis(block, np.maximum(idx, 0), axis=0)
    np.copyto(filled, np.broadcast_to(carry, filled.shape), where=idx < 0)
    return filled, filled[-1].copy()


def _targets_in_force(
    target_weights: np.ndarray,
    decisions: np.ndarray,
    fills: np.ndarray,
    max_gross: float | None,
    orders: np.ndarray | None = None,
) -> np.ndarray:
    """`(T, N)` target in force at each bar: the last filled decision row, NaN -> 0, leverage-capped.

    With `orders` (`(len(fills), N)` bool, the symbols each fill orders), a
    symbol's target in force is that of its last order.
    """
    n_bars, n_cols = target_weights.shape
    if orders is None:
        src = np.full(n_bars, -1, dtype=np.int64)
        src[fills] = decisions
        np.maximum.accumulate(src, out=src)
        out = np.take(target_weights, np.maximum(src, 0), axis=0)
        out[src < 0] = 0.0
    else:
        cells = np.full((n_bars, n_cols), -1, dtype=np.int64)
        cells[fills] = np.where(orders, decisions[:, None], -1)
        np.maximum.accumulate(cells, axis=0, out=cells)
        out = np.take_along_axis(target_weights, np.maximum(cells, 0), axis=0)
        out[cells < 0] = 0.0
    np.copyto(out, 0.0, where=np.isnan(out))
    if max_gross is not None:
        gross = np.abs(out).sum(axis=1)
        over = gross > max_gross
        if over.any():
            out[over] *= (max_gross / gross[over])[:, None]
    return out


_NONE2 = np.empty((0, 0))
_NO_ORDERS = np.empty((0, 0), dtype=np.bool_)
_NO_PNLS = np.empty((2, 0))


def _plain(arr: np.ndarray | None) -> np.ndarray:
    """A C-contiguous float64 array flagged writable: the kernels' signature, compiled once
    (`warmup`); `None` is the empty "not given" matrix.

    The kernels only read what goes through here, so a read-only input (a pandas column
    under copy-on-write) is passed as a writable view of the same memory, not copied; a
    copy is made only when `arr` is not C-contiguous float64 or its memory cannot be
    flagged writable.
    """
    if arr is None:
        return _NONE2
    out = np.require(arr, np.float64, ["C"])
    if out.flags.writeable:
        return out
    view = out.view()
    try:
        view.flags.writeable = True
    except ValueError:
        return out.copy()
    return view


def _level(value: float | None) -> float:
    return math.nan if value is None else float(value)


def weights_held(
    positions: np.ndarray, equity: np.ndarray, close: np.ndarray, *, in_place: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`(weights_held, turnover)` of end-of-bar share counts and the account's equity, marked at the last known close.

    With `in_place=True` the weights are written over `positions` (which then
    holds weights, not shares): the backtest needs one `(T, N)` buffer less.
    """
    out = positions if in_place else positions.copy()
    turnover = np.empty(positions.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        _weights(out, _plain(equity), _plain(close), turnover)
    return out, turnover


def simulate(
    target_weights: np.ndarray,
    close: np.ndarray,
    *,
    config: EngineConfig,
    periods_per_year: float,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    order_mask: np.ndarray | None = None,
) -> Simulation:
    """Run the account on validated `(T, N)` float64 arrays (see the module docstring).

    `target_weights[t]` is the decision formed at the close of t (before the
    execution lag); `periods_per_year` converts the annual `rf` to a per-bar rate.
    `order_mask` (`(T, N)` bool, or None for all True) says which symbols
    decision row t orders (see "Order masks"). Inputs are not modified; the
    result's `weights_target()` reads `target_weights` when called.
    """
    n_bars, n_cols = close.shape
    lag, every = config.execution_lag, config.rebalance_every
    decisions, fills = decision_schedule(n_bars, lag, every)
    orders = None
    capped = None
    tgt = target_weights
    if order_mask is not None:
        orders = np.ascontiguousarray(order_mask[decisions])
        placed = orders.any(axis=1)
        decisions, fills = decisions[placed], fills[placed]
    if orders is not None or config.max_gross_leverage is not None:
        # the targets in force (a symbol's last order, capped row by row) are read at the fill bars
        capped = _targets_in_force(
            target_weights, decisions, fills, config.max_gross_leverage,
            None if orders is None else orders[orders.any(axis=1)],
        )  # fmt: skip
        tgt = capped
    fill_px = close if config.fill_price == "close" else open
    if fill_px is None:
        raise ValueError("fill_price='open' needs open prices")
    has_stops = config.stop_loss is not None or config.take_profit is not None
    # a stop closes a position a fill opened: at most one per fill and symbol
    room = min(fills.size * n_cols, max(4096, n_bars)) if has_stops else 0
    last_mark = np.empty(n_cols)
    counts = np.empty(n_cols, dtype=np.int64)
    while True:
        positions = np.empty((n_bars, n_cols))
        cash, equity, returns = np.empty(n_bars), np.empty(n_bars), np.empty(n_bars)
        traded, costs, drawdown = np.empty(n_bars), np.empty(n_bars), np.empty(n_bars)
        events = np.empty((5, room))
        with np.errstate(divide="ignore", invalid="ignore"):
            n_ev, _, finite, clean = _account(
                _plain(tgt), capped is not None, lag, every, 1.0, _plain(close), _plain(fill_px),
                _plain(open), _plain(high), _plain(low), _NO_ORDERS if orders is None else orders,
                float(config.initial_capital), 1.0 + config.rf / periods_per_year, float(config.cost_rate),
                float(config.fees), float(config.slippage), float(config.min_fee), config.fill_price == "open",
                _level(config.stop_loss), _level(config.take_profit),
                positions, cash, equity, returns, traded, costs, drawdown, counts, last_mark,
                False, _NO_PNLS, events,
            )  # fmt: skip
        if n_ev <= room:
            break
        room = n_ev  # more stop exits than the buffer held: once more, with room for all
    stops = StopEvents.empty()
    if n_ev:
        stops = StopEvents(
            bar=events[0, :n_ev].astype(np.int64),
            symbol=events[1, :n_ev].astype(np.int64),
            shares=events[2, :n_ev].copy(),
            price=events[3, :n_ev].copy(),
            reason=events[4, :n_ev].astype(np.int8),
        )
    return Simulation(
        positions=positions,
        cash=cash,
        equity=equity,
        returns=returns,
        traded=traded,
        costs=costs,
        drawdown=drawdown,
        finite=bool(finite),
        trade_counts=counts,
        last_mark=last_mark,
        stops=stops,
        fill_prices_clean=bool(clean),
        schedule=_Schedule(target_weights, decisions, fills, config.max_gross_leverage, orders, capped),
    )


def account_sets(
    sides: np.ndarray,
    close: np.ndarray,
    *,
    config: EngineConfig,
    periods_per_year: float,
    size: float,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    curves: bool = True,
) -> SetAccounts:
    """The accounts of K target sequences `size * sides[k]` (`(K, T, N)`, decided at t) on one panel.

    Each set runs `simulate`'s account exactly (the same compiled loop, so the
    same returns and equity bit for bit); the sets run in parallel.
    """
    n_sets, n_bars, n_cols = sides.shape
    lag, every = config.execution_lag, config.rebalance_every
    fills = decision_schedule(n_bars, lag, every)[1]
    fill_px = close if config.fill_price == "close" else open
    if fill_px is None:
        raise ValueError("fill_price='open' needs open prices")
    one = n_cols == 1 and config.stop_loss is None and config.take_profit is None
    keep = curves or not one  # the panel kernel forms every curve anyway
    returns = np.empty((n_sets, n_bars))
    equity = np.empty((n_sets if keep else 0, n_bars))
    drawdown = np.empty((n_sets if keep else 0, n_bars))
    finite = np.ones(n_sets, dtype=np.bool_)
    n_pnls = np.zeros(n_sets, dtype=np.int64)
    stats = np.empty((n_sets, len(SET_STATS)))
    rf_p = config.rf / periods_per_year
    # a trade opens on a fill: at most one closed trade per fill and symbol (stops close, never open)
    most = fills.size * n_cols
    cap = min(most, 4096)
    pnls = np.empty((n_sets, 2, cap))
    args = (
        lag, every, float(size), _plain(close), _plain(fill_px), _plain(open), _plain(high), _plain(low),
        float(config.initial_capital), 1.0 + rf_p, float(config.cost_rate), float(config.fees),
        float(config.slippage), float(config.min_fee),
        config.fill_price == "open", _level(config.stop_loss), _level(config.take_profit),
    )  # fmt: skip
    sides = np.require(sides, np.int8, ["C", "W"])

    def run(sides: np.ndarray, *out: Any) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            if one:
                _sets_one(
                    np.ascontiguousarray(sides[:, :, 0]), lag, every, float(size),
                    _plain(close[:, 0]), _plain(fill_px[:, 0]), *args[8:14], *out,
                )  # fmt: skip
            else:
                _sets(sides, *args, *out)

    run(sides, returns, equity, drawdown, pnls, n_pnls, rf_p, stats, finite)
    pnl_list = [pnls[k, 0, : min(int(n_pnls[k]), cap)] for k in range(n_sets)]
    over = np.flatnonzero(n_pnls > cap)
    if over.size:  # more closed trades than the buffer held: those sets again, with room for all
        room = np.empty((over.size, 2, int(n_pnls[over].max())))
        again = np.zeros(over.size, dtype=np.int64)
        run(
            sides[over], returns[over].copy(), equity[over].copy() if keep else equity,
            drawdown[over].copy() if keep else drawdown, room, again, rf_p, stats[over].copy(),
            finite[over].copy(),
        )  # fmt: skip
        for j, redone in enumerate(over.tolist()):
            pnl_list[redone] = room[j, 0, : again[j]]
            if n_cols > 1:
                pnl_list[redone] = pnl_list[redone][np.argsort(room[j, 1, : again[j]], kind="stable")]
    if n_cols > 1:  # the ledger's order: by symbol, then in time
        for k in range(n_sets):
            if n_pnls[k] <= cap:
                order = np.argsort(pnls[k, 1, : n_pnls[k]], kind="stable")
                pnl_list[k] = pnl_list[k][order]
    return SetAccounts(
        returns=returns,
        equity=equity if curves else None,
        drawdown=drawdown if curves else None,
        finite=finite,
        pnls=[np.ascontiguousarray(p) for p in pnl_list],
        stats=stats,
    )
