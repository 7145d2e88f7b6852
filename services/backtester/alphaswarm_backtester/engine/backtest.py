"""`run_backtest`: target weights + prices -> equity, weights, trades and trading metrics.

The orchestration of the engine: validate the panel, run the accounting
(`alphaswarm_backtester.engine.kernels`, whose docstring states every
timing and cost convention), build the trade ledger
(`alphaswarm_backtester.engine.trades`), then compute the metrics with one
call to `alphaswarm_common.metrics.trading_metrics` on the per-bar returns,
turnover, traded notional and the closed trades' PnL.

Input validation raises `DataError` / `InvalidArgument` whose `field` names
the argument (`close`, `dates`, ...). The engine never modifies its inputs,
and every array of a `BacktestOutput` is read-only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.kernels import (
    StopEvents,
    date_order,
    ffill_rows,
    scan_values,
    simulate,
    weights_held,
)
from alphaswarm_backtester.engine.trades import build_trades, closed_trade_stats
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics import MetricSet, infer_periods_per_year, trading_metrics

__all__ = ["EQUITY_WIPED_OUT", "BacktestOutput", "Extras", "check_prices", "run_backtest"]

EQUITY_WIPED_OUT = (
    "the account's equity reached 0: returns are undefined (the targets ask for more "
    "leverage than the prices allow)"
)


class Extras:
    """`cash`, `weights_target`, `costs` and `fill_bars` of a backtest: stored, or derived on first use.

    `run_backtest` derives them on first use: the account loop keeps the
    cash and costs as it goes, and the targets in force (a `(T, N)` matrix)
    and the fill bars come from the decision schedule (they are not needed
    for the returns, the ledger or the metrics), so a caller that never
    reads them never pays for them. Either way they are read-only arrays,
    computed at most once.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray] | None = None,
        derive: Callable[[], dict[str, np.ndarray]] | None = None,
    ) -> None:
        if (arrays is None) == (derive is None):
            raise ValueError("give the arrays or a way to derive them, not both")
        if arrays is not None:
            _readonly(*arrays.values())
        self._arrays = arrays
        self._derive = derive
        self._lock = threading.Lock()

    def get(self, name: str) -> np.ndarray:
        if self._arrays is None:
            with self._lock:
                if self._arrays is None:
                    assert self._derive is not None
                    arrays = self._derive()
                    _readonly(*arrays.values())
                    self._arrays, self._derive = arrays, None
        return self._arrays[name]


@dataclass(frozen=True, eq=False)
class BacktestOutput:
    """Everything one backtest produced; arrays are read-only.

    Per bar `s` (`(T,)`), at the close of s: `returns` (simple, net of
    costs), `equity` (currency), `drawdown` (`equity / running peak - 1`,
    the initial capital counting as a peak), `cash` (currency), `traded`
    (notional traded on s / `equity[s-1]`), `costs` (costs paid on s /
    `equity[s-1]`), `turnover` (`sum_i |weights_held[s] - weights_held[s-1]|`).

    Per bar and symbol (`(T, N)`): `weights_target` (the target in force,
    after the execution lag: the decision row of the last fill at or before
    s, NaN read as 0, leverage-capped; 0 before the first fill),
    `weights_held` (end-of-bar weights after trading, stops and drift).
    Share counts are not kept (a third `(T, N)` matrix): `shares(close)`
    rebuilds them from `weights_held * equity / last known close`.

    `trades` is the ledger (`alphaswarm_backtester.engine.trades`),
    `metrics` the `MetricSet` of `trading_metrics`, `periods_per_year` the
    value used, `fill_bars` the bars with a rebalance fill, `stops` the stop
    exits, `config` the conventions used. `cash`, `weights_target`, `costs`
    and `fill_bars` live in `extras` (see `Extras`) and read like the other
    fields.
    """

    dates: np.ndarray
    symbols: tuple[str, ...]
    returns: np.ndarray
    equity: np.ndarray
    drawdown: np.ndarray
    weights_held: np.ndarray
    traded: np.ndarray
    turnover: np.ndarray
    trades: pd.DataFrame
    stops: StopEvents
    metrics: MetricSet
    periods_per_year: float
    config: EngineConfig
    extras: Extras = field(repr=False)

    @property
    def cash(self) -> np.ndarray:
        return self.extras.get("cash")

    @property
    def weights_target(self) -> np.ndarray:
        return self.extras.get("weights_target")

    @property
    def costs(self) -> np.ndarray:
        return self.extras.get("costs")

    @property
    def fill_bars(self) -> np.ndarray:
        return self.extras.get("fill_bars")

    def shares(self, close: ArrayLike) -> np.ndarray:
        """Signed shares held at the end of each bar, `(T, N)`, from the `close` the backtest used.

        `weights_held * equity / mark`, the mark being the last known close;
        exact up to rounding (exact zeros stay zero).
        """
        px = np.asarray(close, dtype=np.float64).reshape(self.weights_held.shape)
        marks, _ = ffill_rows(px, np.full(self.weights_held.shape[1], np.nan))
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.weights_held * self.equity[:, None] / marks
        out[self.weights_held == 0] = 0.0
        return out

    def to_summary(self) -> dict[str, Any]:
        """A strict-JSON summary: window, final and peak equity, totals, trade counts, metrics, config."""
        n_open = int(self.trades["is_open"].sum()) if len(self.trades) else 0
        equity_prev = np.concatenate(([self.config.initial_capital], self.equity[:-1]))

        def num(value: float) -> float | None:
            value = float(value)
            return value if math.isfinite(value) else None

        return {
            "start_date": str(np.datetime_as_string(self.dates[0], unit="D")) if self.dates.size else None,
            "end_date": str(np.datetime_as_string(self.dates[-1], unit="D")) if self.dates.size else None,
            "n_bars": int(self.returns.size),
            "n_symbols": len(self.symbols),
            "initial_capital": self.config.initial_capital,
            "final_equity": num(self.equity[-1]) if self.equity.size else None,
            "peak_equity": num(max(self.config.initial_capital, float(self.equity.max())))
            if self.equity.size
            else None,
            "total_traded": num(float((self.traded * equity_prev).sum())),
            "total_costs": num(float((self.costs * equity_prev).sum())),
            "n_fills": int(self.fill_bars.size),
            "n_trades": len(self.trades),
            "n_closed_trades": len(self.trades) - n_open,
            "n_open_trades": n_open,
            "n_stop_exits": len(self.stops),
            "periods_per_year": self.periods_per_year,
            "metrics": self.metrics.to_dict(),
            "config": self.config.to_dict(),
        }


def _matrix(data: ArrayLike, field: str, shape: tuple[int, int] | None) -> np.ndarray:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as a float matrix: {exc}", field=field) from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"must be a (dates, symbols) matrix, got {arr.ndim} dimensions", field=field)
    if shape is not None and arr.shape != shape:
        raise DataError(f"has shape {arr.shape}, expected {shape} (as target_weights)", field=field)
    return np.ascontiguousarray(arr)


def _check_values(arr: np.ndarray, field: str, *, prices: bool) -> None:
    """No ±inf; prices positive where present."""
    inf, non_positive = scan_values(arr)
    if inf:
        raise DataError("contains ±inf", field=field)
    if prices and non_positive:
        raise DataError("prices must be > 0 where present (NaN marks a missing price)", field=field)


def check_prices(arr: np.ndarray, field: str) -> None:
    """`run_backtest`'s check of a price matrix: no ±inf, > 0 where present (DataError naming `field`)."""
    _check_values(arr, field, prices=True)


def _dates(dates: Any, n_bars: int) -> np.ndarray:
    try:
        index = pd.DatetimeIndex(dates)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as dates: {exc}", field="dates") from None
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    try:
        out = index.as_unit("ns").to_numpy()  # raises where to_numpy(dtype=...) would wrap around
    except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
        raise DataError(
            "a date is outside the nanosecond range (1677-09-21 to 2262-04-11)", field="dates"
        ) from None
    if out.size != n_bars:
        raise DataError(f"has {out.size} dates, target_weights has {n_bars} rows", field="dates")
    nat, increasing = date_order(out)
    if nat:
        raise DataError("contains a missing date", field="dates")
    if not increasing:
        raise DataError("dates must be strictly increasing", field="dates")
    return out


def _symbols(symbols: Sequence[str], n_syms: int) -> tuple[str, ...]:
    out = tuple(str(s) for s in symbols)
    if len(out) != n_syms:
        raise DataError(f"has {len(out)} symbols, target_weights has {n_syms} columns", field="symbols")
    if len(set(out)) != len(out):
        raise DataError("symbols must be unique", field="symbols")
    return out


def _readonly(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.flags.writeable = False


def run_backtest(
    target_weights: ArrayLike,
    close: ArrayLike,
    *,
    dates: Any,
    symbols: Sequence[str],
    config: EngineConfig | None = None,
    open: ArrayLike | None = None,
    high: ArrayLike | None = None,
    low: ArrayLike | None = None,
    benchmark: ArrayLike | None = None,
    order_mask: ArrayLike | None = None,
) -> BacktestOutput:
    """Backtest `(T, N)` target weights on `(T, N)` prices (see the `kernels` module for conventions).

    `target_weights[t]` is formed from data through the close of t and is
    traded at the fill of bar `t + execution_lag` on decision bars only
    (`t % rebalance_every == 0`); NaN = no opinion = weight 0. Prices are
    NaN where a symbol has no bar. `open` is required with
    `fill_price="open"`; `high`/`low` refine stops and MAE/MFE. `benchmark`
    is a `(T,)` per-bar return series for `beta`/`alpha`. `order_mask`
    (`(T, N)` bool) restricts the orders of decision row t to the symbols
    where it is True (the others keep their shares; see the `kernels`
    module, "Order masks"). A 1-D weight or price array is one symbol.
    """
    cfg = config if config is not None else EngineConfig()
    if not isinstance(cfg, EngineConfig):
        raise InvalidArgument("config must be an EngineConfig", field="config")
    w = _matrix(target_weights, "target_weights", None)
    n_bars, n_syms = w.shape
    if n_bars == 0 or n_syms == 0:
        raise DataError(
            f"needs at least one date and one symbol, got shape {w.shape}", field="target_weights"
        )
    _check_values(w, "target_weights", prices=False)
    px_close = _matrix(close, "close", w.shape)
    _check_values(px_close, "close", prices=True)
    extra: dict[str, np.ndarray | None] = {}
    for name, data in (("open", open), ("high", high), ("low", low)):
        if data is None:
            extra[name] = None
            continue
        arr = _matrix(data, name, w.shape)
        _check_values(arr, name, prices=True)
        extra[name] = arr
    px_open = extra["open"]
    if cfg.fill_price == "open" and px_open is None:
        raise InvalidArgument("fill_price='open' needs open prices", field="open")
    if px_open is not None and (np.isfinite(px_open) & np.isnan(px_close)).any():
        raise DataError("a bar with an open must have a close", field="open")
    stamps = _dates(dates, n_bars)
    names = _symbols(symbols, n_syms)
    bench = None
    if benchmark is not None:
        bench = np.asarray(benchmark, dtype=np.float64)
        if bench.shape != (n_bars,) or not np.isfinite(bench).all():
            raise DataError(f"must be {n_bars} finite per-bar returns", field="benchmark")

    mask = None
    if order_mask is not None:
        mask = np.asarray(order_mask)
        if mask.ndim == 1:
            mask = mask[:, None]
        if mask.shape != w.shape or mask.dtype != np.bool_:
            raise DataError(
                f"must be a boolean matrix of shape {w.shape} (as target_weights), got {mask.dtype} "
                f"{mask.shape}",
                field="order_mask",
            )
    ppy = cfg.periods_per_year
    if ppy is None:
        ppy = infer_periods_per_year(stamps)
    if isinstance(target_weights, np.ndarray) and np.may_share_memory(w, target_weights):
        w = w.copy()  # the targets in force are derived from it on request, after the caller regains it
    sim = simulate(
        w,
        px_close,
        config=cfg,
        periods_per_year=ppy,
        open=px_open,
        high=extra["high"],
        low=extra["low"],
        order_mask=mask,
    )
    trades = build_trades(
        sim,
        close=px_close,
        dates=stamps,
        symbols=names,
        config=cfg,
        open=px_open,
        high=extra["high"],
        low=extra["low"],
    )

    if not sim.finite:
        raise DataError(EQUITY_WIPED_OUT, field="target_weights")
    # the ledger has read the share counts: their buffer becomes the end-of-bar weights.
    held, turnover = weights_held(sim.positions, sim.equity, px_close, in_place=True)
    returns, equity, traded, costs, drawdown = sim.returns, sim.equity, sim.traded, sim.costs, sim.drawdown
    closed_pnl, closed_ret = closed_trade_stats(trades)
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
        initial_capital=cfg.initial_capital,
        drawdown=drawdown,
        account_equity=equity,
    )
    _readonly(stamps, returns, equity, drawdown, held, traded, turnover)
    schedule = sim.schedule

    def derive() -> dict[str, np.ndarray]:
        return {
            "cash": sim.cash,
            "weights_target": schedule.targets(),
            "costs": costs,
            "fill_bars": schedule.fills,
        }

    return BacktestOutput(
        dates=stamps,
        symbols=names,
        returns=returns,
        equity=equity,
        drawdown=drawdown,
        weights_held=held,
        traded=traded,
        turnover=turnover,
        trades=trades,
        stops=sim.stops,
        metrics=metrics,
        periods_per_year=float(ppy),
        config=cfg,
        extras=Extras(derive=derive),
    )
