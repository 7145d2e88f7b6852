"""Portfolio backtests: several legs (a symbol and a strategy each) in one account with shared cash.

`run_portfolio_backtest(legs, close, dates=..., symbols=..., ...)` is pure
(NumPy, no I/O). It turns the legs into one `(T, symbols)` matrix of target
weights and runs the engine once (`alphaswarm_backtester.engine.run_backtest`,
whose accounting and cost conventions apply unchanged).

Pipeline
--------
1. **Leg positions.** Leg i's strategy turns the bars of its symbol into a
   position `p_i[t]` in [-1, 1]: the signed fraction of the capital allocated
   to the leg that it wants invested, formed from data through the close of t
   (`leg_weights(strategy_cfg, bars)`, by default
   `alphaswarm_backtester.engine.rules.rule_weights`; values within 1e-9 of
   the bounds are clipped, anything else outside is an error). Positions are
   computed on every bar given, so bars before `start` warm indicators up;
   NaN = flat.
2. **Rebalance dates** (decision dates inside the window `[start, end]`): the
   first bar of the window, then the first bar of every new calendar period
   of `rebalance_frequency`: `daily` (every bar), `weekly` (Monday-to-Sunday
   weeks, pandas' `W` period), `monthly`, `quarterly` (calendar quarters), or
   `none` (the first bar only: buy at the start and let drift).
3. **Allocations** `a_i` (the fraction of equity a leg manages) are computed on
   rebalance dates only, from data through that date, by
   `position_sizing_method`:
   - `equal`: `1 / n` for each of the n eligible legs;
   - `fixed`: the legs' `weight`s (>= 0) *as given* when they sum to <= 1 (the
     rest stays in cash), otherwise divided by their sum (normalised to 1);
   - `inverse_volatility`: `(1 / sigma_i) / sum_j (1 / sigma_j)` with `sigma_i`
     the standard deviation (`ddof=1`) of the trailing `volatility_window`
     (default 63) close-to-close simple returns of the leg's symbol ending at
     the rebalance date (pandas' `close.pct_change().rolling(63).std()`):
     causal, history before `start` included. A leg whose sigma is undefined
     (fewer than `volatility_window` returns, a missing close in the window,
     or a constant price) gets 0 until a rebalance date where it is defined;
     a rebalance date where no leg has a sigma is a DataError.
   With `max_positions = K` (fewer than the legs), the legs are ranked at each
   rebalance date by `|a_i * p_i[t]|` (allocations over all legs), ties by leg
   order; only the top K legs are eligible until the next rebalance date,
   and the sizing rule above is applied again over those K legs (equal gives
   `1 / K`; the capital of the dropped legs is not left idle). A leg that is
   flat at the rebalance date can rank in the top K (after every non-flat
   leg), so at most K legs hold positions at any time.
4. **Execution.** A decision (positions, and the allocations of a rebalance
   date) formed at the close of t is executed at bar `f = t + execution_lag`,
   at the close of f (`fill_price="close"`) or its open (`"open"`): METRICS.md's
   timing. Nothing is held before the first execution (bar `execution_lag`).
5. **Drift: sleeves.** Each leg's allocation is a sleeve of capital that, from
   the bar its rebalance is executed until the next one, grows with the leg's
   own return: over bar u it earns `q_i[u-1] * R_i[u] + (1 - q_i[u-1]) * rf_p`
   with `q_i[u] = p_i[u - execution_lag]` the position executed at u (held
   over bar u+1), `R_i[u]` the return of the leg's symbol between the fill
   prices of u-1 and u (closes, or opens with open fills; last known price,
   so a gap's move is earned when the price reappears) and `rf_p = rf /
   periods_per_year`; the unallocated rest earns `rf_p`. A sleeve that loses
   all its capital stays at 0 until the next rebalance. Its share of the
   portfolio at the fill of bar f is `s_i[f] = V_i[f] / (sum_j V_j[f] +
   V_cash[f])`, with `V_i = a_i` on the bar a rebalance is executed.
6. **Targets and orders.** `w[f, j] = sum_{i on symbol j} s_i[f] * q_i[f]`
   is the target of symbol j at the fill of bar f; legs on the same symbol
   add up. The account orders only (a) every symbol on the bars a rebalance
   is executed (`s_i = a_i` there) and (b) a leg's symbol on the bars its
   executed position changes (`q_i[f] != q_i[f-1]`, a signal change, while
   its allocation is not 0). On every other bar, and for every other symbol
   of a (b) bar, the share counts stay as they are (METRICS.md: fixed between
   rebalance dates) and the weights drift with the prices. The engine
   receives the targets and this order mask aligned to the fill (with
   `execution_lag` 0 for close fills, 1 for open fills, `rebalance_every` 1,
   and `order_mask`: see `alphaswarm_backtester.engine.kernels`, "Order
   masks").

The sleeves are the decision model only: the account is the engine's share
and cash book. Costs are paid from cash when an order fills (cash goes
below the sleeves' cash by the costs paid, a small loan when the legs are
fully invested) and are never traded back: `none` is a true buy-and-hold
that orders once per symbol, `monthly` orders once a month plus on signal
changes, whatever the costs or `min_fee`. An order of a signal change is
sized from the sleeve share `s_i`, which does not see the costs paid since
the last rebalance, so between rebalances the account holds slightly more
than the sleeves (by the costs paid, a fraction of equity) and the next
rebalance resets it. Stop exits are the engine's (the stopped symbol stays
flat until an order for it targets 0 or the other side; the other symbols
are not re-traded); `backtest_cfg.rebalance_every` must be 1 (the
calendar `rebalance_frequency` is the portfolio's rebalance schedule).

The fill-aligned arrays (`leg_targets`, `leg_shares`, `target_weights`)
are indexed by the bar they are held at; the decision content of row f is
from data through `f - execution_lag`, only the drift uses the fill price
of f itself, which is what holding shares means, so they are causal as such.

Portfolio metrics (added to the engine's `MetricSet`)
-----------------------------------------------------
With `h` the engine's `weights_held` (end-of-bar, `(n, N)`), `w_bar_j =
mean_s h[s, j]` over the window's bars, `X` the close-to-close simple returns
of the held symbols (`w_bar_j != 0`) between consecutive bars of the window,
on the bars where all of them have one, `sigma_j = std(X_j, ddof=1) * sqrt(periods_per_year)` and `Sigma =
cov(X, ddof=1) * periods_per_year`:

- `diversification_ratio = sum_j |w_bar_j| sigma_j / sqrt(w_bar' Sigma w_bar)`
  (Choueifaty & Coignard 2008 on the time-averaged held weights: the weighted
  average volatility of the holdings over the volatility of the portfolio
  they form; 1 for one asset, > 1 when they diversify). Legs on one symbol
  are one asset here.
- `concentration_index = mean_s sum_j (|h[s, j]| / sum_k |h[s, k]|) ** 2`, the
  Herfindahl index of the normalised absolute held weights, averaged over the
  bars that hold a position (1 / N for N equal positions, 1 for one).
- `turnover_rate = mean_s traded[s] * periods_per_year`: the notional traded
  per bar as a fraction of the equity at the start of the bar (the engine's
  `traded`, buys and sells both counted), annualised; 2.0 means the book was
  sold and bought back once a year. This is portfolio turnover as pyfolio and
  Qlib measure it (from the trades). METRICS.md's `turnover` (also in the
  metric set) is the change of the end-of-bar held weights, drift included:
  on a portfolio it counts price drift as turnover and nets a rebalance
  against the drift it undoes (a daily-rebalanced book that trades every bar
  shows almost none), so it is not annualised into `turnover_rate`.

Each is None with a reason when undefined (no position held, fewer than 2
return rows, zero portfolio variance). The conventions record the legs, the
sizing, the rebalance dates' rule and these formulas.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from alphaswarm_backtester.engine.backtest import BacktestOutput, run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.kernels import ffill_rows
from alphaswarm_common.config import StrategyConfig
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics import MetricSet, infer_periods_per_year

__all__ = [
    "DEFAULT_PORTFOLIO_CAPITAL",
    "DEFAULT_VOLATILITY_WINDOW",
    "POSITION_SIZING_METHODS",
    "REBALANCE_FREQUENCIES",
    "LegWeights",
    "PortfolioBacktest",
    "PortfolioLeg",
    "concentration_index",
    "diversification_ratio",
    "rebalance_bars",
    "rule_leg_weights",
    "run_portfolio_backtest",
    "trailing_volatility",
    "turnover_rate",
]

REBALANCE_FREQUENCIES: tuple[str, ...] = ("daily", "weekly", "monthly", "quarterly", "none")
POSITION_SIZING_METHODS: tuple[str, ...] = ("equal", "fixed", "inverse_volatility")
DEFAULT_PORTFOLIO_CAPITAL = 100_000.0
DEFAULT_VOLATILITY_WINDOW = 63
_POSITION_TOLERANCE = 1e-9
_VOL_CHUNK_CELLS = 1 << 20

#: `leg_weights(strategy_cfg, bars) -> (T,)` positions in [-1, 1]; `bars` maps
#: `close` (and `open`, `high`, `low`, `volume` when present) to read-only `(T,)` arrays.
LegWeights = Callable[[StrategyConfig, Mapping[str, np.ndarray]], ArrayLike]

Metric = tuple[float | None, str | None]


@dataclass(frozen=True)
class PortfolioLeg:
    """One leg: a symbol traded by a strategy; `weight` is its allocation under `fixed` sizing."""

    symbol: str
    strategy_cfg: StrategyConfig
    weight: float | None = None


def rule_leg_weights(strategy_cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    """The default `LegWeights`: `alphaswarm_backtester.engine.rules.rule_weights` on one symbol."""
    from alphaswarm_backtester.engine.rules import rule_weights  # imported on use (rules are optional here)

    def column(name: str) -> np.ndarray | None:
        arr = bars.get(name)
        return None if arr is None else arr.reshape(-1, 1)

    close = column("close")
    assert close is not None
    out = rule_weights(
        strategy_cfg.type,
        strategy_cfg.params,
        close=close,
        open=column("open"),
        high=column("high"),
        low=column("low"),
        volume=column("volume"),
    )
    return np.asarray(out, dtype=np.float64).reshape(-1)


# ----------------------------------------------------------------------------- output


@dataclass(frozen=True, eq=False)
class PortfolioBacktest:
    """A portfolio backtest over the window's `n` bars; arrays are read-only.

    - `backtest`: the engine's output (equity, returns, weights, trades, ...),
      its symbols being the legs' symbols in order of first appearance. Its
      `config` is the one the engine ran the fill-aligned targets with
      (`execution_lag` 0, or 1 for open fills); `config` here is the caller's.
    - `metrics`: the engine's metrics plus `diversification_ratio`,
      `concentration_index` and `turnover_rate`; conventions include the legs.
    - `rebalance_bars`: window rows of the rebalance dates (decision dates).
    - Per bar and leg (`(n, L)`), as decided at the close of the bar:
      `leg_positions` (`p`, NaN read as 0) and `allocations` (set on the last
      rebalance date).
    - Per bar and leg, as held after the fill of the bar: `held_positions`
      (`q`, the positions decided `execution_lag` bars earlier), `leg_shares`
      (the drifted sleeve share `s`) and `leg_targets` (`s * q`).
    - `volatility`: `(len(rebalance_bars), L)` trailing sigma per leg on the
      rebalance dates (NaN where undefined; all NaN unless
      `inverse_volatility`).
    - `target_weights`: `(n, N)`, the target of each symbol's last order at
      or before the bar (the engine's `weights_target`, 0 before its first).
    """

    backtest: BacktestOutput
    metrics: MetricSet
    config: EngineConfig
    legs: tuple[PortfolioLeg, ...]
    dates: np.ndarray
    symbols: tuple[str, ...]
    rebalance_bars: np.ndarray
    leg_positions: np.ndarray
    allocations: np.ndarray
    held_positions: np.ndarray
    leg_shares: np.ndarray
    leg_targets: np.ndarray
    volatility: np.ndarray
    target_weights: np.ndarray

    def allocation_by_symbol(self) -> dict[str, float]:
        """Mean over the window's bars of the decided allocations, summed per symbol."""
        mean = self.allocations.mean(axis=0) if self.allocations.size else np.zeros(len(self.legs))
        out = dict.fromkeys(self.symbols, 0.0)
        for leg, value in zip(self.legs, mean, strict=True):
            out[leg.symbol] += float(value)
        return out


# ----------------------------------------------------------------------------- calendar


def _as_dates(dates: Any, n_bars: int | None = None, field: str = "dates") -> np.ndarray:
    try:
        index = pd.DatetimeIndex(dates)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as dates: {exc}", field=field) from None
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    out = index.to_numpy(dtype="datetime64[ns]")
    if n_bars is not None and out.size != n_bars:
        raise DataError(f"has {out.size} dates, close has {n_bars} rows", field=field)
    if np.isnat(out).any():
        raise DataError("contains a missing date", field=field)
    if out.size > 1 and not (np.diff(out.astype(np.int64)) > 0).all():
        raise DataError("dates must be strictly increasing", field=field)
    return out


def rebalance_bars(dates: Any, frequency: str) -> np.ndarray:
    """Rows of `dates` that are rebalance dates: row 0, then the first row of each new calendar period.

    `daily` every row, `weekly` Monday-to-Sunday weeks, `monthly`, `quarterly`
    (Jan-Mar, ...), `none` row 0 only. Periods are those of the calendar date
    (pandas' `to_period("W" | "M" | "Q")`).
    """
    if frequency not in REBALANCE_FREQUENCIES:
        raise InvalidArgument(
            f"must be one of {', '.join(REBALANCE_FREQUENCIES)}, got {frequency!r}",
            field="rebalance_frequency",
        )
    days = _as_dates(dates).astype("datetime64[D]")
    n = days.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    if frequency == "daily":
        return np.arange(n, dtype=np.int64)
    if frequency == "none":
        return np.zeros(1, dtype=np.int64)
    if frequency == "weekly":
        key = (days.astype(np.int64) + 3) // 7  # 1970-01-01 was a Thursday: weeks start on Mondays
    else:
        key = days.astype("datetime64[M]").astype(np.int64)  # months since 1970-01
        if frequency == "quarterly":
            key = key // 3
    first = np.empty(n, dtype=bool)
    first[0] = True
    first[1:] = key[1:] != key[:-1]
    return np.flatnonzero(first).astype(np.int64)


# ----------------------------------------------------------------------------- sizing


def _simple_returns(close: np.ndarray) -> np.ndarray:
    """`close[t] / close[t-1] - 1`, NaN on row 0 and next to a missing close (no filling)."""
    out = np.full(close.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = close[1:] / close[:-1] - 1.0
    return out


def trailing_volatility(
    close: ArrayLike, rows: ArrayLike, window: int = DEFAULT_VOLATILITY_WINDOW
) -> np.ndarray:
    """`(len(rows), N)`: std (`ddof=1`) of the `window` simple returns ending at each row of `close`.

    Per-bar (not annualised). NaN when fewer than `window` returns precede the
    row or one of them is missing: `close.pct_change(fill_method=None)
    .rolling(window).std()` in pandas, read at `rows`.
    """
    px = np.asarray(close, dtype=np.float64)
    if px.ndim == 1:
        px = px[:, None]
    at = np.asarray(rows, dtype=np.int64).reshape(-1)
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 2:
        raise InvalidArgument(f"must be an integer >= 2, got {window!r}", field="volatility_window")
    rets = _simple_returns(px)
    out = np.full((at.size, px.shape[1]), np.nan)
    lags = np.arange(window - 1, -1, -1, dtype=np.int64)
    step = max(1, _VOL_CHUNK_CELLS // max(window * px.shape[1], 1))
    for r0 in range(0, at.size, step):
        block = at[r0 : r0 + step]
        idx = block[:, None] - lags[None, :]
        enough = idx[:, 0] >= 1
        if not enough.any():
            continue
        win = rets[idx[enough]]  # (rows, window, N)
        out[r0 : r0 + step][enough] = win.std(axis=1, ddof=1)
    return out


def _size(method: str, base: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Allocations `(R, L)` over the legs where `keep` (see the module docstring)."""
    raw = np.where(keep, base, 0.0)
    if method == "equal":
        count = keep.sum(axis=1, keepdims=True)
        return np.divide(raw, count, out=np.zeros_like(raw), where=count > 0)
    total = raw.sum(axis=1, keepdims=True)
    if method == "fixed":
        return np.divide(raw, total, out=raw.copy(), where=total > 1.0)
    return np.divide(raw, total, out=np.zeros_like(raw), where=total > 0.0)


# ----------------------------------------------------------------------------- metrics


def diversification_ratio(
    weights_held: ArrayLike, asset_returns: ArrayLike, *, periods_per_year: float
) -> Metric:
    """`sum_j |w_bar_j| sigma_j / sqrt(w_bar' Sigma w_bar)` on the time-averaged held weights (module docstring).

    `weights_held` is `(n, N)`; `asset_returns` is `(m, N)` (the returns
    between the window's bars, NaN where a symbol has none). Returns `(value, None)` or `(None, reason)`.
    """
    h = np.asarray(weights_held, dtype=np.float64)
    x = np.asarray(asset_returns, dtype=np.float64)
    if h.size == 0:
        return None, "no bars"
    w_bar = h.mean(axis=0)
    held = np.flatnonzero(w_bar != 0.0)
    if held.size == 0:
        return None, "no position was held"
    w = w_bar[held]
    rows = x[:, held]
    rows = rows[np.isfinite(rows).all(axis=1)]
    if rows.shape[0] < 2:
        return None, "fewer than 2 bars with a return for every held symbol"
    cov = np.atleast_2d(np.cov(rows, rowvar=False, ddof=1)) * periods_per_year
    sigma = np.sqrt(np.diag(cov))
    variance = float(w @ cov @ w)
    if not variance > 0.0:
        return None, "zero portfolio variance"
    return float(np.abs(w) @ sigma) / math.sqrt(variance), None


def concentration_index(weights_held: ArrayLike) -> Metric:
    """Mean over the bars holding a position of the Herfindahl index of `|h| / sum |h|`."""
    a = np.abs(np.asarray(weights_held, dtype=np.float64))
    if a.ndim != 2:
        raise InvalidArgument(f"must be a (bars, symbols) matrix, got shape {a.shape}", field="weights_held")
    gross = a.sum(axis=1)
    live = gross > 0.0
    if not live.any():
        return None, "no position was held"
    shares = a[live] / gross[live, None]
    return float(np.mean(np.sum(shares * shares, axis=1))), None


def turnover_rate(traded: ArrayLike, *, periods_per_year: float) -> Metric:
    """`mean(traded) * periods_per_year`: the engine's per-bar traded notional / equity, annualised."""
    t = np.asarray(traded, dtype=np.float64)
    if t.size == 0:
        return None, "no bars"
    return float(t.mean() * periods_per_year), None


# ----------------------------------------------------------------------------- validation


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> str:
    if value not in choices:
        raise InvalidArgument(f"must be one of {', '.join(choices)}, got {value!r}", field=field)
    return value


def _check_legs(
    legs: Sequence[PortfolioLeg], symbols: tuple[str, ...], method: str
) -> tuple[tuple[PortfolioLeg, ...], np.ndarray]:
    out = tuple(legs)
    if not out:
        raise InvalidArgument("a portfolio needs at least one leg", field="legs")
    weights = np.zeros(len(out))
    for i, leg in enumerate(out):
        if not isinstance(leg, PortfolioLeg):
            raise InvalidArgument(f"must be a PortfolioLeg, got {type(leg).__name__}", field=f"legs[{i}]")
        if leg.symbol not in symbols:
            raise InvalidArgument(f"{leg.symbol!r} is not a symbol of the data", field=f"legs[{i}].symbol")
        if not isinstance(leg.strategy_cfg, StrategyConfig):
            raise InvalidArgument("must be a StrategyConfig", field=f"legs[{i}].strategy_cfg")
        if method == "fixed":
            w = leg.weight
            if w is None:
                raise InvalidArgument(
                    "position_sizing_method 'fixed' needs a weight on every leg", field=f"legs[{i}].weight"
                )
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise InvalidArgument(f"must be a finite number >= 0, got {w!r}", field=f"legs[{i}].weight")
            weights[i] = float(w)
        elif leg.weight is not None:
            raise InvalidArgument(
                f"a leg weight is only used by position_sizing_method 'fixed' (got {method!r})",
                field=f"legs[{i}].weight",
            )
    if method == "fixed" and not weights.sum() > 0:
        raise InvalidArgument("the fixed weights must not all be 0", field="legs")
    return out, weights


def _refield(exc: InvalidArgument, i: int) -> InvalidArgument:
    """The strategy's own error, its field placed under `legs[i]`."""
    name = exc.field or ""
    if not name:
        path = f"legs[{i}].strategy_cfg"
    elif name.startswith("strategy_cfg"):
        path = f"legs[{i}].{name}"
    elif name.split(".")[0] in ("type", "params"):
        path = f"legs[{i}].strategy_cfg.{name}"
    else:
        path = f"legs[{i}].{name}"
    return type(exc)(exc.message, field=path, reason=exc.reason, details=exc.details)


def _leg_positions(
    legs: tuple[PortfolioLeg, ...],
    columns: np.ndarray,
    fields: Mapping[str, np.ndarray],
    leg_weights: LegWeights,
) -> np.ndarray:
    n_bars = fields["close"].shape[0]
    out = np.zeros((n_bars, len(legs)))
    for i, leg in enumerate(legs):  # a loop over legs: each strategy is its own vectorised function
        bars: dict[str, np.ndarray] = {}
        for name, arr in fields.items():
            col = np.ascontiguousarray(arr[:, columns[i]])
            col.flags.writeable = False
            bars[name] = col
        try:
            raw = leg_weights(leg.strategy_cfg, bars)
        except InvalidArgument as exc:
            raise _refield(exc, i) from exc
        try:
            pos = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"positions are not numbers: {exc}", field=f"legs[{i}].strategy_cfg"
            ) from None
        if pos.size != n_bars or pos.ndim > 2:
            raise InvalidArgument(
                f"the strategy gave positions of shape {pos.shape}, expected ({n_bars},)",
                field=f"legs[{i}].strategy_cfg",
            )
        pos = pos.reshape(-1)
        if np.isinf(pos).any() or (np.abs(pos) > 1.0 + _POSITION_TOLERANCE).any():
            bad = int(np.flatnonzero(~(np.abs(pos) <= 1.0 + _POSITION_TOLERANCE) & ~np.isnan(pos))[0])
            raise InvalidArgument(
                f"the strategy gave position {pos[bad]!r} at row {bad}; positions must be in [-1, 1]",
                field=f"legs[{i}].strategy_cfg",
            )
        out[:, i] = np.clip(np.nan_to_num(pos, nan=0.0), -1.0, 1.0)
    return out


def _window(dates: np.ndarray, start: Any, end: Any) -> tuple[int, int]:
    lo, hi = 0, dates.size
    if start is not None:
        lo = int(np.searchsorted(dates, _as_dates([start], field="start")[0], side="left"))
    if end is not None:
        hi = int(np.searchsorted(dates, _as_dates([end], field="end")[0], side="right"))
    if hi <= lo:
        raise DataError(f"no bar between start {start} and end {end}", field="start" if start else "end")
    return lo, hi


# ----------------------------------------------------------------------------- the backtest


def _sleeve_shares(
    alloc: np.ndarray, epoch: np.ndarray, held: np.ndarray, leg_returns: np.ndarray, rf_p: float
) -> np.ndarray:
    """Drifted sleeve shares `s` `(n, L)` at each fill (module docstring, step 5).

    `alloc` `(n, L)` is the allocation executed (0 before the first
    execution), `epoch` `(n,)` the rebalance it belongs to (a change starts a
    new sleeve), `held` `(n, L)` the positions executed at each bar,
    `leg_returns` `(n, L)` the fill-to-fill returns of the legs' symbols.
    """
    n = held.shape[0]
    starts = np.ones(n, dtype=bool)
    starts[1:] = epoch[1:] != epoch[:-1]
    anchor = np.maximum.accumulate(np.where(starts, np.arange(n), 0))  # the bar each sleeve started on
    growth = np.ones_like(held)
    growth[1:] = 1.0 + held[:-1] * leg_returns[1:] + (1.0 - held[:-1]) * rf_p
    wiped = growth <= 0.0
    with np.errstate(divide="ignore"):
        log_growth = np.log(np.where(wiped, 1.0, growth))
    cum = np.cumsum(log_growth, axis=0)
    dead_count = np.cumsum(wiped, axis=0)
    value = alloc * np.exp(cum - cum[anchor])
    value[(dead_count - dead_count[anchor]) > 0] = 0.0
    cash = (1.0 - alloc.sum(axis=1)) * np.power(1.0 + rf_p, np.arange(n) - anchor)
    total = value.sum(axis=1) + cash
    return np.divide(value, total[:, None], out=np.zeros_like(value), where=total[:, None] > 0.0)


def _order_mask(
    n: int, executions: np.ndarray, held: np.ndarray, alloc_held: np.ndarray, leg_col: np.ndarray, n_cols: int
) -> np.ndarray:
    """`(n, n_cols)` bool: the symbols the account orders at each fill (module docstring, step 6).

    Every symbol on the bars a rebalance is executed (`executions`, bars of
    the window or beyond it); a leg's symbol on the bars its executed
    position changes while its allocation is not 0. Nothing else trades.
    """
    out = np.zeros((n, n_cols), dtype=bool)
    out[executions[executions < n]] = True
    changed = np.zeros(held.shape, dtype=bool)
    changed[1:] = held[1:] != held[:-1]
    changed &= alloc_held != 0.0
    rows, legs = np.nonzero(changed)
    out[rows, leg_col[legs]] = True
    return out


def _readonly(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.flags.writeable = False


def run_portfolio_backtest(
    legs: Sequence[PortfolioLeg],
    close: ArrayLike,
    *,
    dates: Any,
    symbols: Sequence[str],
    open: ArrayLike | None = None,
    high: ArrayLike | None = None,
    low: ArrayLike | None = None,
    volume: ArrayLike | None = None,
    rebalance_frequency: str = "monthly",
    position_sizing_method: str = "equal",
    max_positions: int | None = None,
    config: EngineConfig | None = None,
    start: Any = None,
    end: Any = None,
    volatility_window: int = DEFAULT_VOLATILITY_WINDOW,
    benchmark: ArrayLike | None = None,
    leg_weights: LegWeights | None = None,
) -> PortfolioBacktest:
    """Backtest `legs` in one account (see the module docstring for every convention).

    `close` (and the optional `open`, `high`, `low`, `volume`) are `(T, N)`
    over `dates` x `symbols` (NaN where a symbol has no bar); the backtest
    window is `[start, end]` (default: every bar), the bars before `start`
    warm up the strategies and the volatility estimate. `config` defaults to
    `EngineConfig(initial_capital=100000)`. `benchmark` is a `(T,)` per-bar
    return series over `dates` (for beta/alpha; finite on the window).
    `leg_weights` defaults to `rule_leg_weights`.
    """
    cfg = config if config is not None else EngineConfig(initial_capital=DEFAULT_PORTFOLIO_CAPITAL)
    if not isinstance(cfg, EngineConfig):
        raise InvalidArgument("config must be an EngineConfig", field="config")
    freq = _check_choice(rebalance_frequency, REBALANCE_FREQUENCIES, "rebalance_frequency")
    method = _check_choice(position_sizing_method, POSITION_SIZING_METHODS, "position_sizing_method")
    if max_positions is not None and (
        isinstance(max_positions, bool)
        or not isinstance(max_positions, int | np.integer)
        or max_positions < 1
    ):
        raise InvalidArgument(f"must be an integer >= 1, got {max_positions!r}", field="max_positions")
    if isinstance(volatility_window, bool) or not isinstance(volatility_window, int) or volatility_window < 2:
        raise InvalidArgument(
            f"must be an integer >= 2, got {volatility_window!r}", field="volatility_window"
        )

    if cfg.rebalance_every != 1:
        raise InvalidArgument(
            f"must be 1 for a portfolio, got {cfg.rebalance_every}: rebalance_frequency is its "
            "rebalance schedule and positions are read on every bar",
            field="backtest_cfg.rebalance_every",
        )
    if cfg.fill_price == "open" and open is None:
        raise InvalidArgument("fill_price='open' needs open prices", field="open")

    try:
        px = np.asarray(close, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as a float matrix: {exc}", field="close") from None
    if px.ndim != 2 or px.shape[0] == 0 or px.shape[1] == 0:
        raise DataError(f"must be a non-empty (dates, symbols) matrix, got shape {px.shape}", field="close")
    stamps = _as_dates(dates, px.shape[0])
    names = tuple(str(s) for s in symbols)
    if len(names) != px.shape[1] or len(set(names)) != len(names):
        raise DataError(f"must be {px.shape[1]} unique symbols (the columns of close)", field="symbols")
    legs_t, fixed = _check_legs(legs, names, method)

    fields: dict[str, np.ndarray] = {"close": px}
    for name, data in (("open", open), ("high", high), ("low", low), ("volume", volume)):
        if data is None:
            continue
        arr = np.asarray(data, dtype=np.float64)
        if arr.shape != px.shape:
            raise DataError(f"has shape {arr.shape}, expected {px.shape} (as close)", field=name)
        fields[name] = arr

    # The engine trades the legs' symbols only, in order of first appearance.
    traded = tuple(dict.fromkeys(leg.symbol for leg in legs_t))
    column_of = {s: j for j, s in enumerate(names)}
    data_cols = np.array([column_of[s] for s in traded], dtype=np.int64)
    leg_data_col = np.array([column_of[leg.symbol] for leg in legs_t], dtype=np.int64)
    leg_col = np.array([traded.index(leg.symbol) for leg in legs_t], dtype=np.int64)

    lo, hi = _window(stamps, start, end)
    n = hi - lo
    positions_all = _leg_positions(legs_t, leg_data_col, fields, leg_weights or rule_leg_weights)
    positions = positions_all[lo:hi]
    reb_local = rebalance_bars(stamps[lo:hi], freq)
    reb_global = reb_local + lo

    # -- allocations on rebalance dates
    n_legs = len(legs_t)
    volatility = np.full((reb_local.size, n_legs), np.nan)
    if method == "equal":
        base = np.ones((reb_local.size, n_legs))
    elif method == "fixed":
        base = np.broadcast_to(fixed, (reb_local.size, n_legs)).copy()
    else:
        sym_vol = trailing_volatility(px[:, data_cols], reb_global, volatility_window)
        volatility = sym_vol[:, leg_col]
        usable = np.isfinite(volatility) & (volatility > 0.0)
        missing = ~usable.any(axis=1)
        if missing.any():
            day = np.datetime_as_string(stamps[reb_global[int(np.flatnonzero(missing)[0])]], unit="D")
            raise DataError(
                f"inverse_volatility needs {volatility_window} returns of every leg's symbol before a "
                f"rebalance date; no leg has them on {day} (load earlier data or start later)",
                field="position_sizing_method",
            )
        base = np.divide(1.0, volatility, out=np.zeros_like(volatility), where=usable)
    every = np.ones(base.shape, dtype=bool)
    alloc = _size(method, base, every)
    if max_positions is not None and max_positions < n_legs:
        score = np.abs(alloc * positions[reb_local])
        order = np.argsort(-score, axis=1, kind="stable")
        keep = np.zeros(base.shape, dtype=bool)
        np.put_along_axis(keep, order[:, :max_positions], True, axis=1)
        alloc = _size(method, base, keep)

    # -- execution (decisions of t at bar t + lag), drift, targets
    lag = cfg.execution_lag
    seg = np.cumsum(np.isin(np.arange(n), reb_local)) - 1  # the rebalance each bar's decision belongs to
    alloc_decided = alloc[seg]
    held = np.zeros_like(positions)
    epoch = np.full(n, -1, dtype=np.int64)
    alloc_held = np.zeros_like(positions)
    if lag < n:
        held[lag:] = positions[: n - lag]
        epoch[lag:] = seg[: n - lag]
        alloc_held[lag:] = alloc_decided[: n - lag]
    ppy_rf = cfg.periods_per_year
    if ppy_rf is None:  # as run_backtest infers it (a 1-bar window fails there with a clear message)
        ppy_rf = infer_periods_per_year(stamps[lo:hi]) if n > 1 else 252.0
    fill_px = fields["open"] if cfg.fill_price == "open" else px
    marks, _ = ffill_rows(fill_px[:, data_cols], np.full(data_cols.size, np.nan))
    leg_returns = np.nan_to_num(_simple_returns(marks)[lo:hi][:, leg_col], nan=0.0)
    shares = _sleeve_shares(alloc_held, epoch, held, leg_returns, cfg.rf / ppy_rf)
    leg_targets = shares * held
    incidence = np.zeros((n_legs, len(traded)))
    incidence[np.arange(n_legs), leg_col] = 1.0
    targets = leg_targets @ incidence
    orders = _order_mask(n, reb_local + lag, held, alloc_held, leg_col, len(traded))
    if cfg.fill_price == "open":  # the engine fills a row at the next bar's open
        engine_cfg = dataclasses.replace(cfg, execution_lag=1, rebalance_every=1)
        engine_targets = np.concatenate((targets[1:], targets[-1:]), axis=0)
        engine_orders = np.concatenate((orders[1:], np.zeros_like(orders[:1])), axis=0)
    else:
        engine_cfg = dataclasses.replace(cfg, execution_lag=0, rebalance_every=1)
        engine_targets, engine_orders = targets, orders

    bench = None
    if benchmark is not None:
        b = np.asarray(benchmark, dtype=np.float64)
        if b.shape != (px.shape[0],):
            raise DataError(f"must be {px.shape[0]} per-bar returns over dates", field="benchmark")
        bench = b[lo:hi]

    window_fields = {name: arr[lo:hi][:, data_cols] for name, arr in fields.items()}
    out = run_backtest(
        engine_targets,
        window_fields["close"],
        dates=stamps[lo:hi],
        symbols=traded,
        config=engine_cfg,
        open=window_fields.get("open"),
        high=window_fields.get("high"),
        low=window_fields.get("low"),
        benchmark=bench,
        order_mask=engine_orders,
    )

    # -- portfolio metrics
    ppy = out.periods_per_year
    extra: dict[str, Metric] = {
        "diversification_ratio": diversification_ratio(
            out.weights_held, _simple_returns(px[lo:hi][:, data_cols])[1:], periods_per_year=ppy
        ),
        "concentration_index": concentration_index(out.weights_held),
        "turnover_rate": turnover_rate(out.traded, periods_per_year=ppy),
    }
    values = dict(out.metrics.values)
    reasons = dict(out.metrics.reasons)
    for name, (value, reason) in extra.items():
        values[name] = value
        if value is None:
            reasons[name] = reason or "undefined"
    conventions = dict(out.metrics.conventions)
    conventions["portfolio"] = {
        "legs": [
            {
                "symbol": leg.symbol,
                "strategy": leg.strategy_cfg.model_dump(mode="json"),
                "weight": leg.weight,
            }
            for leg in legs_t
        ],
        "rebalance_frequency": freq,
        "rebalance_dates": "first bar of the window and of each new calendar period",
        "position_sizing_method": method,
        "fixed_weights": "as given when they sum to <= 1, else normalised to sum 1",
        "max_positions": None if max_positions is None else int(max_positions),
        "max_positions_rank": "|allocation * position| on the rebalance date, ties by leg order",
        "volatility_window": volatility_window,
        "volatility": "std(close-to-close simple returns, ddof=1) over the trailing window",
        "execution": "decisions of t executed at t + execution_lag; targets aligned to the fill bar",
        "execution_lag": cfg.execution_lag,
        "fill_price": cfg.fill_price,
        "drift": "sleeves earn q[u-1] * R[u] + (1 - q[u-1]) * rf_p between executed rebalances",
        "orders": "every symbol on rebalance fills, a leg's symbol when its executed position changes; "
        "share counts fixed otherwise, costs paid from cash",
        "window_start": str(np.datetime_as_string(stamps[lo], unit="D")),
        "window_end": str(np.datetime_as_string(stamps[hi - 1], unit="D")),
        "diversification_ratio": "sum |w_bar| sigma / sqrt(w_bar' Sigma w_bar), w_bar = mean weights_held",
        "concentration_index": "mean over bars with a position of sum (|h| / sum |h|)^2",
        "turnover_rate": "mean(traded) * periods_per_year (traded notional / equity[s-1])",
    }
    metrics = MetricSet(values=values, reasons=reasons, conventions=conventions)

    volatility = np.ascontiguousarray(volatility)
    _readonly(positions, alloc_decided, held, shares, leg_targets, reb_local, volatility)
    return PortfolioBacktest(
        backtest=out,
        metrics=metrics,
        config=cfg,
        legs=legs_t,
        dates=out.dates,
        symbols=traded,
        rebalance_bars=reb_local,
        leg_positions=positions,
        allocations=alloc_decided,
        held_positions=held,
        leg_shares=shares,
        leg_targets=leg_targets,
        volatility=volatility,
        target_weights=out.weights_target,
    )
