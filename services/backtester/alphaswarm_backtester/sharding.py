"""A parameter search split into chunks of sets, evaluated anywhere, merged once.

A large optimization is cut into chunks of parameter-set indices `[first,
last)` (the numbering of `engine.optimize`: grid order, or the seeded random
draws). `evaluate_parameter_sets` evaluates one chunk: it rebuilds the whole
search (cheap: validation only), keeps the valid sets whose index lies in
the chunk, and returns their trial metrics (or the error that made a set's
backtest fail) without ranking and without persisting anything. Any replica
can evaluate any chunk: the result depends only on the request.

`merge_evaluations` takes the evaluations of every chunk and builds the
`OptimizationResult` of the whole search: ranks by the objective over all
sets and the Deflated-Sharpe p-values with the number of trials and the
variance of the per-period Sharpe across ALL trials, with the engine's own
`rank_values` and `deflated_p_values`, in the same order and arithmetic as
`engine.optimize` (tests assert equality to the one-process result for any
chunking). The ranking and the DSR are therefore never computed per chunk.

Per-set evaluation is independent of the other sets of the batch (the batch
kernel advances every set with elementwise operations; a set it cannot
certify falls back to `run_backtest` alone), so a set's metrics are the same
whichever chunk it is evaluated in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.optimize import (
    OptimizationResult,
    ParameterSet,
    SkippedSet,
    build_search,
    evaluate_sides,
    rank_trials,
)
from alphaswarm_backtester.engine.rules import RuleInputs, rule_sides
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics import MetricSet, infer_periods_per_year

__all__ = [
    "ChunkEvaluation",
    "SetEvaluation",
    "build_search",
    "chunk_bounds",
    "evaluate_parameter_sets",
    "merge_evaluations",
    "search_size",
]


@dataclass(frozen=True)
class SetEvaluation:
    """One valid set of a chunk: its metrics, or why its backtest failed (`metrics is None`)."""

    parameter_set: int
    params: dict[str, Any]
    metrics: MetricSet | None
    error_field: str | None = None
    error: str = ""


@dataclass(frozen=True)
class ChunkEvaluation:
    """The evaluated sets of the chunk `[first, last)` of a search, and the window's shape."""

    first: int
    last: int
    sets: tuple[SetEvaluation, ...]
    n_bars: int
    periods_per_year: float
    evaluation: str
    #: for the in-sample search of a walk-forward window: the window's index and the test's windows.
    window_index: int = 0
    n_windows: int = 0


def search_size(method: str, grid: Mapping[str, Sequence[Any]] | None, n_samples: int) -> int:
    """How many parameter sets (valid or not) a search numbers: the grid's combinations or `n_samples`."""
    if method == "random":
        return int(n_samples)
    return math.prod(len(v) for v in (grid or {}).values()) if grid else 0


def chunk_bounds(n_sets: int, chunk_sets: int) -> list[tuple[int, int]]:
    """`[first, last)` index ranges of at most `chunk_sets` sets covering `0..n_sets`."""
    if chunk_sets < 1:
        raise InvalidArgument(f"must be >= 1, got {chunk_sets}", field="chunk_sets")
    return [(lo, min(lo + chunk_sets, n_sets)) for lo in range(0, n_sets, chunk_sets)]


def evaluate_parameter_sets(
    strategy_type: str,
    *,
    close: Any,
    dates: Any,
    symbols: Sequence[str],
    first: int,
    last: int,
    grid: Mapping[str, Sequence[Any]] | None = None,
    space: Mapping[str, Any] | None = None,
    method: str = "grid",
    n_samples: int = 50,
    seed: int = 0,
    config: EngineConfig | None = None,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
    start: int = 0,
    stop: int | None = None,
) -> ChunkEvaluation:
    """Trial metrics of the valid sets numbered in `[first, last)` on the rows `[start, stop)`.

    The same positions and accounting as `engine.optimize` (indicators warm up on
    the rows before `start`). A chunk may hold no valid set (all skipped).
    """
    cfg = config if config is not None else EngineConfig()
    sets, _skipped, _where = build_search(
        strategy_type, grid=grid, space=space, method=method, n_samples=n_samples, seed=seed
    )
    if first < 0 or last < first:
        raise InvalidArgument(f"the chunk [{first}, {last}) is not a range of set indices", field="first")
    chunk = [ps for ps in sets if first <= ps.index < last]
    inputs = RuleInputs(close, open=open, high=high, low=low, volume=volume)
    n_total = inputs.shape[0]
    stop = n_total if stop is None else stop
    if not 0 <= start < stop <= n_total:
        raise InvalidArgument(f"window [{start}, {stop}) is outside the {n_total} bars", field="start")
    if stop < n_total:
        inputs = RuleInputs(
            inputs.close_raw[:stop],
            open=None if inputs.open is None else inputs.open[:stop],
            high=None if inputs.high is None else inputs.high[:stop],
            low=None if inputs.low is None else inputs.low[:stop],
            volume=None if inputs.volume is None else inputs.volume[:stop],
        )
    rows = slice(start, stop)
    stamps = np.asarray(dates)[rows]
    n_bars = stop - start
    ppy = cfg.periods_per_year or (infer_periods_per_year(stamps) if n_bars >= 2 else 252.0)
    if not chunk:
        return ChunkEvaluation(first, last, (), n_bars, float(ppy), "no valid set in the chunk")
    sides = np.empty((len(chunk), n_bars, inputs.shape[1]), dtype=np.int8)
    for i, ps in enumerate(chunk):
        sides[i] = rule_sides(strategy_type, ps.params, inputs)[rows]
    results, path = evaluate_sides(
        sides,
        inputs.close_raw[rows],
        dates=stamps,
        symbols=symbols,
        config=cfg,
        open=None if inputs.open is None else inputs.open[rows],
        high=None if inputs.high is None else inputs.high[rows],
        low=None if inputs.low is None else inputs.low[rows],
    )
    out = tuple(
        SetEvaluation(ps.index, ps.values, res)
        if isinstance(res, MetricSet)
        else SetEvaluation(ps.index, ps.values, None, res.field, res.message)
        for ps, res in zip(chunk, results, strict=True)
    )
    return ChunkEvaluation(first, last, out, n_bars, float(ppy), path)


def _evaluation_note(paths: Sequence[str], n_chunks: int) -> str:
    distinct = sorted(set(paths))
    if len(distinct) == 1:
        return f"{distinct[0]} ({n_chunks} chunk(s))"
    return f"{n_chunks} chunks: " + "; ".join(distinct)


def merge_evaluations(
    strategy_type: str,
    chunks: Iterable[ChunkEvaluation],
    *,
    skipped: Sequence[SkippedSet],
    n_sets: int,
    objective: str,
    method: str,
    where: str = "grid",
    sets: Sequence[ParameterSet] | None = None,
    started: float | None = None,
) -> OptimizationResult:
    """The whole search's result from its chunks (module docstring): ranks and p-values over all sets.

    `skipped` are the sets the search itself skipped (invalid, duplicates);
    the chunks must cover `[0, n_sets)` exactly once (`InvalidArgument` naming
    `chunks` otherwise). With `sets` (the search's valid sets, `build_search`),
    each set's parameters are taken from the search, not from the chunk (a
    chunk that travelled as JSON has its integers as floats), and a chunk set
    that is not a valid set of the search is refused.
    """
    began = time.perf_counter() if started is None else started
    parts = sorted(chunks, key=lambda c: c.first)
    cursor = 0
    for c in parts:
        if c.first != cursor or c.last < c.first:
            raise InvalidArgument(
                f"the chunks do not tile [0, {n_sets}): expected a chunk from {cursor}, got [{c.first}, {c.last})",
                field="chunks",
            )
        cursor = c.last
    if cursor != n_sets or not parts:
        raise InvalidArgument(f"the chunks cover [0, {cursor}), not [0, {n_sets})", field="chunks")
    shapes = {(c.n_bars, c.periods_per_year) for c in parts}
    if len(shapes) != 1:
        raise InvalidArgument(
            f"the chunks were evaluated on different windows: {sorted(shapes)}", field="chunks"
        )
    n_bars, ppy = next(iter(shapes))
    evaluated: list[tuple[SetEvaluation, MetricSet]] = []
    skipped_all = list(skipped)
    known = None if sets is None else {ps.index: ps for ps in sets}
    for c in parts:
        for s in c.sets:
            if known is not None:
                ps = known.get(s.parameter_set)
                if ps is None or not c.first <= s.parameter_set < c.last:
                    raise InvalidArgument(
                        f"set {s.parameter_set} is not a valid set of the chunk [{c.first}, {c.last})",
                        field="chunks",
                    )
                s = SetEvaluation(ps.index, ps.values, s.metrics, s.error_field, s.error)
            if s.metrics is not None:
                evaluated.append((s, s.metrics))
            else:
                skipped_all.append(
                    SkippedSet(s.parameter_set, s.params, s.error_field, f"backtest failed: {s.error}")
                )
    evaluated.sort(key=lambda pair: pair[0].parameter_set)
    skipped_all.sort(key=lambda s: s.index)
    # The ranking and p-values of engine.optimize, over every set of the search.
    trials, variance, n_trials = rank_trials(
        [(s.parameter_set, s.params, ms) for s, ms in evaluated], objective, ppy, n_bars
    )
    if not trials:
        first = skipped_all[0]
        raise DataError(f"no parameter set could be backtested: {first.message}", field=first.field or where)
    return OptimizationResult(
        strategy_type=strategy_type,
        objective=objective,
        method=method,
        trials=trials,
        skipped=tuple(skipped_all),
        n_trials=n_trials,
        sharpe_variance=variance,
        periods_per_year=float(ppy),
        n_bars=int(n_bars),
        evaluation=_evaluation_note([c.evaluation for c in parts if c.sets], len(parts)),
        seconds=time.perf_counter() - began,
    )
