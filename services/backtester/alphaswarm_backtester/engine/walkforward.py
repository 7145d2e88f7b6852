"""Walk-forward analysis of a rule strategy: optimize in sample, test the optimum out of sample, roll.

`walk_forward(strategy_type, close=..., dates=..., symbols=..., grid=..., in_sample_bars=...,
out_of_sample_bars=...)` cuts the bars into windows, runs `optimize` on each
in-sample (IS) window, backtests the optimum on the following out-of-sample
(OOS) window, and runs one continuous account over all the OOS bars.

Windows (counted in bars, half-open row ranges `[start, stop)`)
--------------------------------------------------------------
- Rolling: window i trains on `[i * step, i * step + IS)` and tests on
  `[i * step + IS, i * step + IS + OOS)`.
- Anchored: window i trains on `[0, IS + i * step)` (expanding), tests as
  above.
- With `start` / `stop`, the windows tile the rows `[start, stop)` (the
  offsets above count from `start`); earlier rows only warm up indicators.
- `step` defaults to `OOS`. Only whole OOS windows are tested: windows are
  added while the test window ends within the data. `step > OOS` would leave
  untested bars between OOS windows and is refused (`step_bars`); `step <
  OOS` makes the OOS windows overlap: each is still reported on its own,
  and in the stitched account a bar follows the most recent window's
  optimum (window i governs `[test_start_i, test_start_{i+1})`).

Warm-up and causality
---------------------
Positions are computed from all the bars up to the window's end (`[0,
stop)`) and only the window's rows are kept: the indicators of an OOS
window are warm from its first bar (an SMA(50) has its value on the first
OOS bar, and a position entered before the window is still held by the
rule's state), while nothing after the window is read. Each window's
backtest starts flat in cash; its first decision fills at `test_start +
execution_lag`.

Per window
----------
- the IS optimum (`OptimizationResult.best`: rank 1 under the objective)
  and the full IS and OOS backtests of it (`run_rule_backtest`);
- `performance_ratio = OOS annualized_return / IS annualized_return`;
- `degradation_factor = 1 - OOS sharpe / IS sharpe`;
  each None with the reason when an input is undefined or the denominator
  is 0.
- A window whose in-sample search has no defined objective (e.g.
  `win_rate` without a closed trade) has no optimum: it takes no position
  (cash) out of sample, and says why.

Stitched out-of-sample account
------------------------------
One `run_backtest` over `[first test_start, last test_stop)` whose target
on each bar is that of the governing window's optimum (0 for a window
without one): the strategy as it would have been run live, re-optimized at
each window boundary, keeping a position the new parameters agree with and
paying only for the difference. Its returns give the walk-forward's OOS
metrics and its ledger the OOS trades.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_backtester.engine.backtest import BacktestOutput, run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.optimize import OptimizationResult, Trial, optimize
from alphaswarm_backtester.engine.rules import RuleInputs, rule_sides, run_rule_backtest
from alphaswarm_common.errors import InvalidArgument

__all__ = [
    "WalkForwardResult",
    "WalkForwardWindow",
    "evaluate_window",
    "walk_forward",
    "walk_forward_windows",
    "window_bounds",
]


def _positive_int(value: Any, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgument(f"must be an integer >= {minimum}, got {value!r}", field=field)
    return int(value)


def walk_forward_windows(
    n_bars: int,
    in_sample_bars: int,
    out_of_sample_bars: int,
    step_bars: int | None = None,
    anchored: bool = False,
) -> list[tuple[int, int, int, int]]:
    """`(train_start, train_stop, test_start, test_stop)` of every window, half-open row ranges."""
    is_bars = _positive_int(in_sample_bars, "in_sample_bars", 2)
    oos_bars = _positive_int(out_of_sample_bars, "out_of_sample_bars", 2)
    step = oos_bars if step_bars is None or step_bars == 0 else _positive_int(step_bars, "step_bars", 1)
    if step > oos_bars:
        raise InvalidArgument(
            f"step_bars ({step}) exceeds out_of_sample_bars ({oos_bars}): the bars between "
            "out-of-sample windows would go untested and the out-of-sample account cannot be stitched",
            field="step_bars",
        )
    windows = []
    i = 0
    while True:
        test_start = is_bars + i * step
        test_stop = test_start + oos_bars
        if test_stop > n_bars:
            break
        train_start = 0 if anchored else i * step
        windows.append((train_start, test_start, test_start, test_stop))
        i += 1
    if not windows:
        raise InvalidArgument(
            f"one window needs in_sample_bars + out_of_sample_bars = {is_bars + oos_bars} bars, "
            f"the data has {n_bars}",
            field="in_sample_bars",
        )
    return windows


@dataclass(frozen=True)
class WalkForwardWindow:
    """One window: its rows, the in-sample search and the optimum's IS and OOS backtests."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int
    optimization: OptimizationResult
    best: Trial | None
    best_reason: str | None
    in_sample: BacktestOutput | None
    out_of_sample: BacktestOutput | None
    performance_ratio: float | None
    performance_ratio_reason: str | None
    degradation_factor: float | None
    degradation_factor_reason: str | None

    @property
    def best_params(self) -> dict[str, Any] | None:
        return None if self.best is None else dict(self.best.params)


@dataclass(frozen=True)
class WalkForwardResult:
    """The windows in time order and the stitched out-of-sample account."""

    strategy_type: str
    objective: str
    anchored: bool
    in_sample_bars: int
    out_of_sample_bars: int
    step_bars: int
    windows: tuple[WalkForwardWindow, ...]
    stitched: BacktestOutput
    stitched_start: int
    stitched_stop: int


def _ratio(
    numerator: float | int | None, denominator: float | int | None, what: str
) -> tuple[float | None, str | None]:
    if numerator is None:
        return None, f"out-of-sample {what} is undefined"
    if denominator is None:
        return None, f"in-sample {what} is undefined"
    if denominator == 0:
        return None, f"in-sample {what} is 0"
    value = float(numerator) / float(denominator)
    return (value, None) if math.isfinite(value) else (None, "not finite")


def window_bounds(
    n_total: int,
    in_sample_bars: int,
    out_of_sample_bars: int,
    step_bars: int | None = None,
    anchored: bool = False,
    *,
    start: int = 0,
    stop: int | None = None,
) -> list[tuple[int, int, int, int]]:
    """The windows of a walk-forward over the rows `[start, stop)` of `n_total` bars, as absolute
    row ranges `(train_start, train_stop, test_start, test_stop)`."""
    stop = n_total if stop is None else stop
    if not 0 <= start < stop <= n_total:
        raise InvalidArgument(f"window [{start}, {stop}) is outside the {n_total} bars", field="start")
    return [
        (a + start, b + start, c + start, d + start)
        for a, b, c, d in walk_forward_windows(
            stop - start, in_sample_bars, out_of_sample_bars, step_bars, anchored
        )
    ]


def _cut(inputs: RuleInputs, stop: int, *, keep_indicators: bool = True) -> RuleInputs:
    return RuleInputs(
        inputs.close_raw[:stop],
        open=None if inputs.open is None else inputs.open[:stop],
        high=None if inputs.high is None else inputs.high[:stop],
        low=None if inputs.low is None else inputs.low[:stop],
        volume=None if inputs.volume is None else inputs.volume[:stop],
        keep_indicators=keep_indicators,
    )


def evaluate_window(
    strategy_type: str,
    index: int,
    bounds: tuple[int, int, int, int],
    *,
    governs_to: int,
    inputs: RuleInputs,
    dates: np.ndarray,
    symbols: Sequence[str],
    grid: Mapping[str, Sequence[Any]],
    objective: str,
    config: EngineConfig,
    search: OptimizationResult | None = None,
) -> tuple[WalkForwardWindow, np.ndarray | None]:
    """One window: its in-sample search (run here, or `search` when it was evaluated elsewhere, e.g.
    merged from chunks), the optimum's in-sample and out-of-sample backtests, and the optimum's
    sides on the rows `[test_start, governs_to)` that the window governs in the stitched account
    (None without an optimum). `inputs` and `dates` hold the bars up to the walk-forward's stop."""
    tr0, tr1, te0, te1 = bounds
    prices: dict[str, Any] = {
        "open": inputs.open,
        "high": inputs.high,
        "low": inputs.low,
        "volume": inputs.volume,
    }
    if search is None:
        search = optimize(
            strategy_type,
            close=inputs.close_raw,
            dates=dates,
            symbols=symbols,
            grid=grid,
            objective=objective,
            config=config,
            start=tr0,
            stop=tr1,
            **prices,
        )
    elif search.n_bars != tr1 - tr0 or search.objective != objective:
        raise InvalidArgument(
            f"the in-sample search of window {index} covers {search.n_bars} bars by {search.objective!r}; "
            f"the window trains on {tr1 - tr0} bars by {objective!r}",
            field="window_searches",
        )
    best = search.best
    if best is None:
        reason = f"no parameter set has a defined in-sample {objective}"
        window = WalkForwardWindow(
            index=index,
            train_start=tr0,
            train_stop=tr1,
            test_start=te0,
            test_stop=te1,
            optimization=search,
            best=None,
            best_reason=reason,
            in_sample=None,
            out_of_sample=None,
            performance_ratio=None,
            performance_ratio_reason="no in-sample optimum",
            degradation_factor=None,
            degradation_factor_reason="no in-sample optimum",
        )
        return window, None
    common: dict[str, Any] = {
        "close": inputs.close_raw,
        "dates": dates,
        "symbols": symbols,
        "config": config,
        **prices,
    }
    in_sample = run_rule_backtest(strategy_type, best.params, start=tr0, stop=tr1, **common)
    out_sample = run_rule_backtest(strategy_type, best.params, start=te0, stop=te1, **common)
    perf, perf_reason = _ratio(
        out_sample.metrics.get("annualized_return"),
        in_sample.metrics.get("annualized_return"),
        "annualized return",
    )
    sharpe_ratio, sharpe_reason = _ratio(
        out_sample.metrics.get("sharpe"), in_sample.metrics.get("sharpe"), "Sharpe"
    )
    degradation = None if sharpe_ratio is None else 1.0 - sharpe_ratio
    window = WalkForwardWindow(
        index=index,
        train_start=tr0,
        train_stop=tr1,
        test_start=te0,
        test_stop=te1,
        optimization=search,
        best=best,
        best_reason=None,
        in_sample=in_sample,
        out_of_sample=out_sample,
        performance_ratio=perf,
        performance_ratio_reason=perf_reason,
        degradation_factor=degradation,
        degradation_factor_reason=sharpe_reason,
    )
    # the stitched account: this window's optimum on the rows it governs, from data up to te1 only.
    sides = rule_sides(strategy_type, best.params, _cut(inputs, te1, keep_indicators=False))  # one set
    return window, sides[te0:governs_to]


def walk_forward(
    strategy_type: str,
    *,
    close: Any,
    dates: Any,
    symbols: Sequence[str],
    grid: Mapping[str, Sequence[Any]],
    in_sample_bars: int,
    out_of_sample_bars: int,
    step_bars: int | None = None,
    anchored: bool = False,
    objective: str = "sharpe",
    config: EngineConfig | None = None,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
    start: int = 0,
    stop: int | None = None,
    searches: Mapping[int, OptimizationResult] | None = None,
) -> WalkForwardResult:
    """Walk-forward test of `strategy_type` over `grid` (module docstring).

    The windows tile the rows `[start, stop)` (default: every row); the rows
    before `start` only warm the indicators up, the rows from `stop` on are
    never read. `searches` maps a window's index to its in-sample search when
    it was evaluated elsewhere (the chunks of a split walk-forward, merged):
    those windows are not searched again (`evaluate_window`).
    """
    cfg = config if config is not None else EngineConfig()
    inputs = RuleInputs(close, open=open, high=high, low=low, volume=volume)
    n_total, n_syms = inputs.shape
    stamps = np.asarray(dates)
    if stamps.shape[0] != n_total:
        raise InvalidArgument(f"has {stamps.shape[0]} dates for {n_total} bars", field="dates")
    stop = n_total if stop is None else stop
    bounds = window_bounds(
        n_total, in_sample_bars, out_of_sample_bars, step_bars, anchored, start=start, stop=stop
    )
    if stop < n_total:
        inputs = _cut(inputs, stop)
        stamps = stamps[:stop]
    extra = sorted(set(searches or {}) - set(range(len(bounds))))
    if extra:
        raise InvalidArgument(
            f"window {extra[0]} has a search, the walk-forward has {len(bounds)} windows",
            field="window_searches",
        )
    step = bounds[1][2] - bounds[0][2] if len(bounds) > 1 else (step_bars or out_of_sample_bars)
    windows: list[WalkForwardWindow] = []
    first, last = bounds[0][2], bounds[-1][3]
    stitched = np.zeros((last - first, n_syms))
    for i, window_rows in enumerate(bounds):
        te0 = window_rows[2]
        governs_to = bounds[i + 1][2] if i + 1 < len(bounds) else window_rows[3]
        window, sides = evaluate_window(
            strategy_type,
            i,
            window_rows,
            governs_to=governs_to,
            inputs=inputs,
            dates=stamps,
            symbols=symbols,
            grid=grid,
            objective=objective,
            config=cfg,
            search=(searches or {}).get(i),
        )
        windows.append(window)
        if sides is not None:
            stitched[te0 - first : governs_to - first] = sides / n_syms

    def cut(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr[first:last]

    account = run_backtest(
        stitched,
        inputs.close_raw[first:last],
        dates=stamps[first:last],
        symbols=symbols,
        config=cfg,
        open=cut(inputs.open),
        high=cut(inputs.high),
        low=cut(inputs.low),
    )
    return WalkForwardResult(
        strategy_type=strategy_type,
        objective=objective,
        anchored=anchored,
        in_sample_bars=int(in_sample_bars),
        out_of_sample_bars=int(out_of_sample_bars),
        step_bars=int(step),
        windows=tuple(windows),
        stitched=account,
        stitched_start=first,
        stitched_stop=last,
    )
