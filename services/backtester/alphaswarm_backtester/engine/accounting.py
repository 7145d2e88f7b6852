"""Share-and-cash accounting of a target-weight backtest (METRICS.md, "Backtest accounting").

The account is self-financing with one shared cash balance. Arrays are
`(T, N)`, bars by symbols, float64.

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
open/high/low for realistic fills). The exit pays the usual costs. When both levels are
inside one bar's range the stop loss wins (the intrabar order is unknown;
assume the worst). Stops are checked on every bar the position is held
through: with close fills from the bar after the entry, with open fills from
the entry bar itself (after the open fill). After a stop the symbol stays
flat: targets of the same sign are ignored until a decision's target for it
is zero or of the opposite sign, so a daily rebalance does not buy back what
the stop just sold. Stops make the simulation loop over every bar (still
vectorised across symbols); without them it loops over fill bars only.

Cost and memory
---------------
The only Python loop is over fill bars (every bar with stops), each step a
handful of NumPy calls on one row; everything else is vectorised in row
chunks of about 2**18 cells, so temporaries stay small. The backtest keeps
two `(T, N)` float matrices (targets in force, and one buffer that holds the
share counts, then the end-of-bar weights: see `mark_to_market`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alphaswarm_backtester.engine.config import EngineConfig

__all__ = [
    "REASON_STOP_LOSS",
    "REASON_TAKE_PROFIT",
    "Simulation",
    "StopEvents",
    "decision_schedule",
    "ffill_rows",
    "last_marks",
    "mark_to_market",
    "simulate",
]

REASON_STOP_LOSS = 1
REASON_TAKE_PROFIT = 2

_CHUNK_CELLS = 1 << 18


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
    """Raw result of `simulate` (currency amounts; fractions are derived in `run_backtest`).

    - `positions[s]`: signed shares held at the end of bar s (after its fill
      and stops). `mark_to_market(..., in_place=True)` turns this buffer into
      the end-of-bar weights.
    - `cash[s]`: at the close of bar s.
    - `weights_target[s]`: the target in force at bar s (the decision row of
      the last fill at or before s, NaN read as 0, leverage-capped; 0 before
      the first fill).
    - `traded_notional[s]`, `cost[s]`: currency traded and paid on bar s.
    - `fill_bars`: the bars with a rebalance fill; `last_mark`: the last known
      close of every symbol at the final bar (NaN if it never had one);
      `fill_prices_clean`: no NaN fill price from the first fill on;
      `close_clean`: no NaN close at all.
    """

    positions: np.ndarray
    cash: np.ndarray
    weights_target: np.ndarray
    traded_notional: np.ndarray
    cost: np.ndarray
    fill_bars: np.ndarray
    last_mark: np.ndarray
    stops: StopEvents
    fill_prices_clean: bool = False
    close_clean: bool = False


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


def _row_chunk(n_cols: int) -> int:
    return max(1, _CHUNK_CELLS // max(n_cols, 1))


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
    step = _row_chunk(n_cols)
    for r0 in range(0, n_bars, step):
        blk = out[r0 : r0 + step]
        np.copyto(blk, 0.0, where=np.isnan(blk))
        if max_gross is not None:
            gross = np.abs(blk).sum(axis=1)
            over = gross > max_gross
            if over.any():
                blk[over] *= (max_gross / gross[over])[:, None]
    return out


def _order_costs(abs_d: np.ndarray, price0: np.ndarray, rate: float, min_fee: float) -> tuple[float, float]:
    """`(traded notional, cost)` of a vector of orders (|shares|, price with NaN -> 0)."""
    notional = abs_d * price0
    traded = float(notional.sum())
    if min_fee > 0.0:
        per_order = np.maximum(notional * rate, min_fee)
        return traded, float(per_order[abs_d > 0].sum())
    return traded, rate * traded


def _rebalance(
    shares: np.ndarray,
    cash: float,
    target: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    cfg: EngineConfig,
    out: np.ndarray,
    ordered: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """General fill of one row: NaN prices, min_fee, order masks. Writes new shares into `out`.

    `price` is the fill price row (NaN = untradable), `mark` the valuation
    price of untradable holdings (NaN only where nothing is held), `ordered`
    the symbols this fill orders (None: all; the others keep their shares and
    are valued at the fill price). Returns `(cash, traded notional, cost)`.
    """
    priced = np.isfinite(price)
    tradable = priced if ordered is None else priced & ordered
    price0 = np.where(tradable, price, 0.0)
    held_val = np.where(priced, price, np.nan_to_num(mark))
    value = cash + float(shares @ held_val)
    out[:] = shares
    if value <= 0.0:
        return cash, 0.0, 0.0
    np.divide(target * value, price, out=out, where=tradable)
    d = out - shares
    flow = float(d @ price0)
    traded, cost = _order_costs(np.abs(d), price0, cfg.cost_rate, cfg.min_fee)
    return cash - flow - cost, traded, cost


def _advance_marks(mark: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Last known value per column after the rows of `block` (NaN rows keep `mark`)."""
    if block.shape[0] == 0:
        return mark
    if block.shape[0] == 1:
        row = block[0]
        return np.where(np.isnan(row), mark, row)
    valid = ~np.isnan(block)
    last = block.shape[0] - 1 - np.argmax(valid[::-1], axis=0)
    vals = block[last, np.arange(block.shape[1])]
    return np.where(valid.any(axis=0), vals, mark)


def _close_has_nan(close: np.ndarray) -> bool:
    return not bool(_rows_all_finite(close).all())


def _rows_all_finite(arr: np.ndarray) -> np.ndarray:
    n_bars, n_cols = arr.shape
    out = np.empty(n_bars, dtype=bool)
    step = _row_chunk(n_cols)
    for r0 in range(0, n_bars, step):
        out[r0 : r0 + step] = np.isfinite(arr[r0 : r0 + step]).all(axis=1)
    return out


def _outputs(n_bars: int, n_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The simulation's `(positions, cash, traded, cost)` buffers (traded and cost zeroed)."""
    return np.empty((n_bars, n_cols)), np.empty(n_bars), np.zeros(n_bars), np.zeros(n_bars)


def _simulate_fills(
    wt: np.ndarray,
    close: np.ndarray,
    fill_px: np.ndarray,
    fills: np.ndarray,
    cfg: EngineConfig,
    rf_p: float,
    close_has_nan: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Loop over fill bars only (no stops). Returns `(positions, cash, traded, cost, fill_px_clean)`.

    Fill bars form the progression `lag, lag + k, ...`, so their rows are
    strided views. `w / price` is computed for all fill rows at once into the
    position rows; the loop then only scales each row by the pre-trade value
    and prices the order. The cash after a fill is `V * (1 - sum_i w_i) -
    cost` (the orders' cash flow `sum_i d_i * p_i` equals `V * sum_i w_i -
    sum_i shares_i * p_i`). Rows with an untradable symbol, and every row
    when `min_fee > 0`, take the general `_rebalance`.
    """
    n_bars, n_cols = close.shape
    positions, cash_end, traded, costs = _outputs(n_bars, n_cols)
    growth = 1.0 + rf_p
    rate = cfg.cost_rate
    by_open = cfg.fill_price == "open"
    n_fills = fills.size
    if n_fills == 0:
        positions[:] = 0.0
        cash_end[:] = cfg.initial_capital * growth ** np.arange(1, n_bars + 1)
        return positions, cash_end, traded, costs, True
    first, step = int(fills[0]), cfg.rebalance_every
    last = int(fills[-1])
    sl = slice(first, last + 1, step)
    pos_f, px_f, wt_f = positions[sl], fill_px[sl], wt[sl]
    ok = _rows_all_finite(px_f)
    # positions are held on every bar from the first fill on, so "clean" must cover those rows.
    clean = bool(ok.all()) if step == 1 else bool(_rows_all_finite(fill_px[first:]).all())
    wsum = np.empty(n_fills)
    chunk = _row_chunk(n_cols)
    with np.errstate(divide="ignore", invalid="ignore"):
        for r0 in range(0, n_fills, chunk):
            r1 = min(n_fills, r0 + chunk)
            np.divide(wt_f[r0:r1], px_f[r0:r1], out=pos_f[r0:r1])
            wsum[r0:r1] = wt_f[r0:r1].sum(axis=1)
    fast = ok.tolist() if cfg.min_fee == 0.0 else [False] * n_fills
    wsum_l = wsum.tolist()
    positions[:first] = 0.0
    cash_l = [0.0] * n_fills
    traded_l = [0.0] * n_fills
    cost_l = [0.0] * n_fills
    shares = np.zeros(n_cols)
    cash = cfg.initial_capital * growth**first
    step_growth = growth**step
    mark = np.full(n_cols, np.nan)
    marked_to = -1  # `mark` holds the last known close through this bar
    d = np.empty(n_cols)
    dot, multiply, subtract, absolute = np.dot, np.multiply, np.subtract, np.abs
    for j, (row, price) in enumerate(zip(pos_f, px_f, strict=True)):
        cash *= step_growth if j else growth
        if fast[j]:
            value = cash + float(dot(shares, price))
            if value > 0.0:
                multiply(row, value, out=row)
                subtract(row, shares, out=d)
                absolute(d, out=d)
                notional = float(dot(d, price))
                cost = rate * notional
                cash = value * (1.0 - wsum_l[j]) - cost
                traded_l[j] = notional
                cost_l[j] = cost
            else:
                row[:] = shares
        else:
            f = first + j * step
            upto = f if not by_open else f - 1
            # valuation of untradable holdings: their last known close before the fill
            mark = _advance_marks(mark, close[marked_to + 1 : upto + 1]) if close_has_nan else close[upto]
            marked_to = upto
            cash, traded_l[j], cost_l[j] = _rebalance(shares, cash, wt_f[j], price, mark, cfg, row)
        cash_l[j] = cash
        shares = row
    cash_f = np.array(cash_l)
    traded[sl] = traded_l
    costs[sl] = cost_l
    # bars between fills keep the last fill's shares; cash earns rf on every bar.
    cash_end[:first] = cfg.initial_capital * growth ** np.arange(1, first + 1)
    cash_end[sl] = cash_f
    for r in range(1, step):
        rows = slice(first + r, last + 1, step)
        n_r = len(range(first + r, last + 1, step))
        positions[rows] = pos_f[:n_r]
        cash_end[rows] = cash_f[:n_r] * growth**r
    if last < n_bars - 1:
        positions[last + 1 :] = positions[last]
        cash_end[last + 1 :] = cash_end[last] * growth ** np.arange(1, n_bars - last)
    return positions, cash_end, traded, costs, clean


def _simulate_ordered_fills(
    wt: np.ndarray,
    close: np.ndarray,
    fill_px: np.ndarray,
    fills: np.ndarray,
    orders: np.ndarray,
    cfg: EngineConfig,
    rf_p: float,
    close_has_nan: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Loop over the fill bars of an order mask (no stops). Returns `(positions, cash, traded, cost)`.

    `orders` (`(len(fills), N)` bool) are the symbols each fill orders; the
    fill bars are any increasing bars. Bars between fills keep the shares of
    the fill before; cash earns rf on every bar.
    """
    n_bars, n_cols = close.shape
    positions, cash_end, traded, costs = _outputs(n_bars, n_cols)
    growth = 1.0 + rf_p
    by_open = cfg.fill_price == "open"
    shares = np.zeros(n_cols)
    cash = cfg.initial_capital
    mark = np.full(n_cols, np.nan)
    marked_to = -1  # `mark` holds the last known close through this bar
    done = 0  # bars [0, done) are written
    for j, f in enumerate(fills.tolist()):
        if f > done:  # the bars before the fill hold the shares
            positions[done:f] = shares
            cash_end[done:f] = cash * growth ** np.arange(1, f - done + 1)
            cash = float(cash_end[f - 1])
        cash *= growth
        upto = f if not by_open else f - 1
        mark = _advance_marks(mark, close[marked_to + 1 : upto + 1]) if close_has_nan else close[upto]
        marked_to = upto
        row = positions[f]
        cash, traded[f], costs[f] = _rebalance(shares, cash, wt[f], fill_px[f], mark, cfg, row, orders[j])
        cash_end[f] = cash
        shares = row
        done = f + 1
    if done < n_bars:
        positions[done:] = shares
        cash_end[done:] = cash * growth ** np.arange(1, n_bars - done + 1)
    return positions, cash_end, traded, costs


def _update_entry(
    ent_size: np.ndarray, ent_value: np.ndarray, before: np.ndarray, after: np.ndarray, price: np.ndarray
) -> None:
    """Running entry size / notional of each symbol's open trade (in place) after a fill."""
    cont = (np.sign(before) == np.sign(after)) & (after != 0)
    inc = np.where(cont, np.maximum(np.abs(after) - np.abs(before), 0.0), 0.0)
    price0 = np.nan_to_num(price)
    opened = (after != 0) & ~cont
    np.copyto(ent_size, np.where(opened, np.abs(after), ent_size + inc))
    np.copyto(ent_value, np.where(opened, np.abs(after) * price0, ent_value + inc * price0))


def _simulate_bars(
    wt: np.ndarray,
    close: np.ndarray,
    open_: np.ndarray | None,
    high: np.ndarray | None,
    low: np.ndarray | None,
    fills: np.ndarray,
    cfg: EngineConfig,
    rf_p: float,
    orders: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, StopEvents]:
    """Loop over every bar (stops enabled). Returns `(positions, cash, traded, cost, stops)`.

    `orders` (`(len(fills), N)` bool) are the symbols each fill orders (None: all).
    """
    n_bars, n_cols = close.shape
    positions, cash_end, traded, costs = _outputs(n_bars, n_cols)
    is_fill = np.zeros(n_bars, dtype=bool)
    is_fill[fills] = True
    fill_row = np.zeros(n_bars, dtype=np.int64)
    fill_row[fills] = np.arange(fills.size)
    growth = 1.0 + rf_p
    by_open = cfg.fill_price == "open"
    sl, tp = cfg.stop_loss, cfg.take_profit
    rate, min_fee = cfg.cost_rate, cfg.min_fee

    shares = np.zeros(n_cols)
    cash = cfg.initial_capital
    mark = np.full(n_cols, np.nan)
    blocked = np.zeros(n_cols)  # sign of the last stopped-out position, 0 = free
    ent_size = np.zeros(n_cols)
    ent_value = np.zeros(n_cols)
    ev_bar: list[np.ndarray] = []
    ev_sym: list[np.ndarray] = []
    ev_sh: list[np.ndarray] = []
    ev_px: list[np.ndarray] = []
    ev_rs: list[np.ndarray] = []

    def fill(s: int, price: np.ndarray) -> None:
        nonlocal shares, cash
        target = wt[s].copy()
        ordered = None if orders is None else orders[fill_row[s]]
        tsign = np.sign(target)
        active = blocked != 0
        if ordered is not None:
            active &= ordered  # a symbol without an order keeps its stop block
        keep_out = active & (tsign == blocked)
        target[keep_out] = 0.0
        blocked[active & ~keep_out] = 0.0
        new = np.empty(n_cols)
        cash, t_not, t_cost = _rebalance(shares, cash, target, price, mark, cfg, new, ordered)
        traded[s] += t_not
        costs[s] += t_cost
        _update_entry(ent_size, ent_value, shares, new, price)
        shares = new

    for s in range(n_bars):
        cash *= growth
        if by_open and is_fill[s]:
            fill(s, open_[s])  # type: ignore[index]
        held = shares != 0
        if cfg.has_stops and held.any():
            c = close[s]
            op = open_[s] if open_ is not None else None
            # the bar's observed range: high / low, else the open and the close
            hi = c if op is None else np.fmax(c, op)
            lo = c if op is None else np.fmin(c, op)
            if high is not None:
                hi = np.where(np.isnan(high[s]), hi, high[s])
            if low is not None:
                lo = np.where(np.isnan(low[s]), lo, low[s])
            ok = held & np.isfinite(c)
            with np.errstate(invalid="ignore", divide="ignore"):
                entry = ent_value / ent_size
            long_, short_ = ok & (shares > 0), ok & (shares < 0)
            hit = np.zeros(n_cols, dtype=bool)
            px = np.full(n_cols, np.nan)
            reason = np.zeros(n_cols, dtype=np.int8)
            if tp is not None:
                lvl_l, lvl_s = entry * (1.0 + tp), entry * (1.0 - tp)
                tl, ts = long_ & (hi >= lvl_l), short_ & (lo <= lvl_s)
                gap_l = lvl_l if op is None else np.fmax(lvl_l, op)
                gap_s = lvl_s if op is None else np.fmin(lvl_s, op)
                px = np.where(tl, gap_l, np.where(ts, gap_s, px))
                reason[tl | ts] = REASON_TAKE_PROFIT
                hit |= tl | ts
            if sl is not None:
                lvl_l, lvl_s = entry * (1.0 - sl), entry * (1.0 + sl)
                sl_l, sl_s = long_ & (lo <= lvl_l), short_ & (hi >= lvl_s)
                gap_l = lvl_l if op is None else np.fmin(lvl_l, op)
                gap_s = lvl_s if op is None else np.fmax(lvl_s, op)
                px = np.where(sl_l, gap_l, np.where(sl_s, gap_s, px))
                reason[sl_l | sl_s] = REASON_STOP_LOSS
                hit |= sl_l | sl_s
            if hit.any():
                idx = np.flatnonzero(hit)
                q, p = shares[idx], px[idx]
                notional = np.abs(q) * p
                cost = notional * rate
                if min_fee > 0.0:
                    cost = np.maximum(cost, min_fee)
                cash += float(q @ p) - float(cost.sum())
                traded[s] += float(notional.sum())
                costs[s] += float(cost.sum())
                ev_bar.append(np.full(idx.size, s, dtype=np.int64))
                ev_sym.append(idx)
                ev_sh.append(q.copy())
                ev_px.append(p)
                ev_rs.append(reason[idx])
                blocked[idx] = np.sign(q)
                shares = shares.copy()
                shares[idx] = 0.0
        if not by_open:
            mark = np.where(np.isnan(close[s]), mark, close[s])
            if is_fill[s]:
                fill(s, close[s])
        else:
            mark = np.where(np.isnan(close[s]), mark, close[s])
        positions[s] = shares
        cash_end[s] = cash
    if ev_bar:
        stops = StopEvents(
            bar=np.concatenate(ev_bar),
            symbol=np.concatenate(ev_sym).astype(np.int64),
            shares=np.concatenate(ev_sh),
            price=np.concatenate(ev_px),
            reason=np.concatenate(ev_rs),
        )
    else:
        stops = StopEvents.empty()
    return positions, cash_end, traded, costs, stops


def last_marks(close: np.ndarray) -> np.ndarray:
    """The last non-NaN close of every symbol (NaN if it never had one)."""
    mark = close[-1].copy()
    missing = np.isnan(mark)
    step = _row_chunk(close.shape[1])
    r1 = close.shape[0] - 1
    while missing.any() and r1 > 0:
        r0 = max(0, r1 - step)
        cols = np.flatnonzero(missing)
        mark[cols] = _advance_marks(mark[cols], close[r0:r1, cols])
        missing = np.isnan(mark)
        r1 = r0
    return mark


def mark_to_market(
    positions: np.ndarray,
    cash: np.ndarray,
    close: np.ndarray,
    *,
    in_place: bool = False,
    close_clean: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(equity, weights_held, turnover)` of end-of-bar share counts, marked at the last known close.

    Row chunks keep temporaries small. With `in_place=True` the weights are
    written over `positions` (which then holds weights, not shares): the
    backtest needs one `(T, N)` buffer less. `close_clean=True` promises a
    close without NaN (no forward fill needed).
    """
    n_bars, n_cols = positions.shape
    weights_held = positions if in_place else np.empty_like(positions)
    equity = np.empty(n_bars)
    turnover = np.empty(n_bars)
    carry = np.full(n_cols, np.nan)
    prev_w = np.zeros(n_cols)
    step = _row_chunk(n_cols)
    diff = np.empty((min(step, n_bars), n_cols))
    for r0 in range(0, n_bars, step):
        r1 = min(n_bars, r0 + step)
        blk = close[r0:r1]
        if close_clean:
            marks = blk
        else:
            marks, carry = ffill_rows(blk, carry)
            if marks is not blk:
                np.nan_to_num(marks, copy=False, nan=0.0)
        wh = weights_held[r0:r1]
        np.multiply(positions[r0:r1], marks, out=wh)
        eq = cash[r0:r1] + wh.sum(axis=1)
        equity[r0:r1] = eq
        with np.errstate(divide="ignore", invalid="ignore"):
            wh /= eq[:, None]
        dd = diff[: r1 - r0]
        np.subtract(wh[0], prev_w, out=dd[0])
        np.subtract(wh[1:], wh[:-1], out=dd[1:])
        np.abs(dd, out=dd)
        turnover[r0:r1] = dd.sum(axis=1)
        prev_w = wh[-1].copy()
    return equity, weights_held, turnover


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
    """Run the accounting on validated `(T, N)` float64 arrays (see the module docstring).

    `target_weights[t]` is the decision formed at the close of t (before the
    execution lag); `periods_per_year` converts the annual `rf` to a per-bar rate.
    `order_mask` (`(T, N)` bool, or None for all True) says which symbols
    decision row t orders (see "Order masks"). Inputs are not modified.
    """
    n_bars = close.shape[0]
    decisions, fills = decision_schedule(n_bars, config.execution_lag, config.rebalance_every)
    orders = None
    if order_mask is not None:
        orders = order_mask[decisions]
        placed = orders.any(axis=1)
        decisions, fills, orders = decisions[placed], fills[placed], orders[placed]
    wt = _targets_in_force(target_weights, decisions, fills, config.max_gross_leverage, orders)
    rf_p = config.rf / periods_per_year
    close_has_nan = _close_has_nan(close)
    fill_px = close if config.fill_price == "close" else open
    if fill_px is None:
        raise ValueError("fill_price='open' needs open prices")
    if config.has_stops:
        positions, cash, traded, cost, stops = _simulate_bars(
            wt, close, open, high, low, fills, config, rf_p, orders
        )
        clean = bool(_rows_all_finite(fill_px).all())
    elif orders is not None:
        positions, cash, traded, cost = _simulate_ordered_fills(
            wt, close, fill_px, fills, orders, config, rf_p, close_has_nan
        )
        stops = StopEvents.empty()
        clean = bool(_rows_all_finite(fill_px).all())
    else:
        positions, cash, traded, cost, clean = _simulate_fills(
            wt, close, fill_px, fills, config, rf_p, close_has_nan
        )
        stops = StopEvents.empty()
    last_mark = last_marks(close)
    return Simulation(
        positions=positions,
        cash=cash,
        weights_target=wt,
        traded_notional=traded,
        cost=cost,
        fill_bars=fills,
        last_mark=last_mark,
        stops=stops,
        fill_prices_clean=clean,
        close_clean=not close_has_nan,
    )
