"""The research loop of one training: dataset -> features -> labels -> purged
segments -> fit on train (early-stopping on valid) -> evaluate every segment
-> optional rolling retraining -> evaluation of the test predictions.

Pure computation (NumPy, scikit-learn, matplotlib's Agg canvas); no MLflow,
no gRPC. The servicer logs what `train()` returns.

Rows are (date, symbol) pairs; a row enters training when all its features and
its label are finite. The label is `close[t+lag+h] / close[t+lag] - 1`
(`docs/metrics.md`), and the segments are purged so that no training label
overlaps a later segment. Features come from the process-wide feature cache
(`alphaswarm_common.features.cache`): a second training on the same data, or
the registry serving the model in the same process, does not recompute them.

Rolling retraining (`model_cfg.rolling`, Qlib's rolling mode)
-------------------------------------------------------------
The valid and test rows are cut into blocks of `step` panel bars, starting at
the first valid row (the first test row without a valid segment). Before
each block starting at row `b`, the model is refitted on the rows
`[lo, b - (lag + h + embargo))`: the last `lag + h` rows before the block
(plus `embargo`) are purged, so every training label is realised strictly
before the block's first decision (the same purge as between segments).
`lo` is the first train row (expanding window, `window: null`) or
`max(first train row, b - purge - window)` (rolling window of `window`
bars). The block's rows are predicted by that fit; stitched together they
are one out-of-sample prediction matrix over valid + test, whose ML metrics
are the segment `"rolling"`. Refits have no valid segment to early-stop on:
they reuse the capacity found by the main fit (`models.refit_overrides`).

The model returned (and logged, registered and served) is **the fit on the
train segment**, with or without rolling: the alpha-backtest trades the test
window with it, so it must not have seen that window. The last rolling refit
(trained on most of valid and test) is kept on `TrainingResult.rolling.model`;
the out-of-sample record of periodic retraining is the `"rolling"` metric set.
`TrainingResult.trained_through` is the date of the last row the returned model
was fitted on (its label is realised `lag + h` bars later).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alphaswarm_common import chart_worker
from alphaswarm_common.chart_worker import Pending
from alphaswarm_common.config import DatasetConfig, ModelConfig, RollingConfig
from alphaswarm_common.data import Panel, load_panel, validate_segments
from alphaswarm_common.errors import DataError
from alphaswarm_common.evaluation import (
    EvaluationReport,
    evaluate_predictions,
    feature_importance,
    render_plots,
)
from alphaswarm_common.features import compute_features
from alphaswarm_common.features.cache import cached_features
from alphaswarm_common.labels import make_labels, segment_rows
from alphaswarm_common.metrics import MetricSet, ml_metrics
from alphaswarm_trainer import streaming
from alphaswarm_trainer.models import (
    FIT_CHUNKS,
    LIGHTGBM_STOPPING_ROUNDS,
    build_model,
    fit_model,
    refit_overrides,
)

__all__ = [
    "MIN_TRAIN_ROWS",
    "Prepared",
    "ProgressCallback",
    "RollingBlock",
    "RollingResult",
    "TrainingResult",
    "prepare",
    "rolling_predictions",
    "train",
    "validate",
]

MIN_TRAIN_ROWS = 50
"""Fewest (date, symbol) rows with every feature and a label that a fit accepts."""


ProgressCallback = Callable[[str, float, str], None]
"""`on_progress(step, pct, message)`: a milestone of a training, `pct` (0-100) never decreasing."""

# Completion (percent) of a training when each milestone is reached; the fit spans FIT_START..FIT_END.
_PCT = {"dataset_loaded": 5.0, "features_built": 15.0, "labels_built": 20.0}
FIT_START, FIT_END, EVALUATED = 20.0, 75.0, 85.0
ROLLING_START, ROLLING_END = 90.0, 95.0


def _quiet(_step: str, _pct: float, _message: str) -> None:
    return None


@dataclass
class Prepared:
    panel: Panel
    feature_names: list[str]
    features: np.ndarray  # (T, N, F), read-only, shared through the feature cache
    labels: np.ndarray  # (T, N)
    rows: dict[str, np.ndarray]


@dataclass(frozen=True)
class RollingBlock:
    """One refit of a rolling retraining: the panel rows it trained on and the rows it predicted."""

    train_start: int
    train_end: int  # exclusive
    predict_start: int
    predict_end: int  # exclusive
    n_train_rows: int
    dates: tuple[str, str, str, str]  # first / last training date, first / last predicted date

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_start": self.dates[0],
            "train_end": self.dates[1],
            "predict_start": self.dates[2],
            "predict_end": self.dates[3],
            "n_train_rows": self.n_train_rows,
        }


@dataclass
class RollingResult:
    rows: np.ndarray  # (R,) panel rows of valid + test, ascending
    predictions: np.ndarray  # (R, N) stitched out-of-sample predictions
    blocks: list[RollingBlock]
    model: Any  # the last refit
    metrics: MetricSet


@dataclass
class TrainingResult:
    model: Any
    feature_names: list[str]
    dataset_fingerprint: str
    metrics: dict[str, MetricSet]
    n_train_rows: int
    example: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationReport | None = None
    importance: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)
    pending_plots: Pending[dict[str, bytes]] | None = None  # being drawn (`chart_worker`): see `drawn_plots`
    rolling: RollingResult | None = None
    trained_through: dt.date | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # segment -> (R, N), by the fit on train
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # segment -> panel rows (purged)

    def drawn_plots(self) -> dict[str, bytes]:
        """The evaluation plots, waiting for them if they are still being drawn."""
        if self.pending_plots is not None:
            self.plots, self.pending_plots = self.pending_plots.result(), None
        return self.plots


def prepare(cfg: DatasetConfig, on_progress: ProgressCallback | None = None) -> Prepared:
    report = on_progress or _quiet
    panel = load_panel(cfg)
    validate_segments(panel, cfg)
    report(
        "dataset_loaded",
        _PCT["dataset_loaded"],
        f"loaded {len(panel.dates)} dates x {len(panel.symbols)} symbols",
    )
    fs = cached_features(panel, cfg.features)
    report("features_built", _PCT["features_built"], f"built {len(fs.names)} features")
    labels = make_labels(panel.close, cfg.label.horizon, cfg.label.execution_lag, cfg.label.transform)
    assert cfg.segments is not None  # validate_segments requires them
    rows = segment_rows(
        panel.dates,
        cfg.segments,
        execution_lag=cfg.label.execution_lag,
        horizon=cfg.label.horizon,
        embargo=cfg.embargo,
    )
    report(
        "labels_built",
        _PCT["labels_built"],
        "labels and segments: " + ", ".join(f"{k} {len(v)} dates" for k, v in rows.items()),
    )
    return Prepared(panel, list(fs.names), fs.values, labels, rows)


def validate(dataset_cfg: DatasetConfig, model_cfg: ModelConfig) -> Panel:
    """Check everything `train` would reject, without fitting: the model type and its
    hyperparameters, the data source and symbols, the segments, and the feature specs
    (computed on the panel's last bars only, so the check is cheap)."""
    build_model(model_cfg)
    panel = load_panel(dataset_cfg)
    validate_segments(panel, dataset_cfg)
    longest = max((w for spec in dataset_cfg.features for w in spec.windows), default=1)
    tail = panel.dates[max(0, len(panel.dates) - (2 * longest + 2))]
    compute_features(panel.slice(tail, None), dataset_cfg.features)
    return panel


@dataclass
class _Fit:
    info: dict[str, Any]
    n_rows: int
    example: np.ndarray
    x: np.ndarray | None = None  # the design rows, when the model needed them in memory
    y: np.ndarray | None = None
    x_valid: np.ndarray | None = None
    y_valid: np.ndarray | None = None


def _fit_rows(
    model: Any,
    model_cfg: ModelConfig,
    prep: Prepared,
    rows: np.ndarray,
    valid_rows: np.ndarray | None,
    *,
    too_few: tuple[str, str],
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> _Fit:
    """Fit `model` on the panel rows `rows` (early-stopping on `valid_rows` where the model can).

    Linear models that `streaming.can_stream` are fitted from sufficient
    statistics accumulated block by block (no design matrix in memory);
    lightgbm builds its Dataset from the blocks; other models get the
    design matrix gathered block by block (`streaming` module docstring).
    Raises `DataError(too_few[0].format(n=n), field=too_few[1])` when fewer than
    `MIN_TRAIN_ROWS` rows are usable.
    """
    start = on_start or (lambda _n: None)
    if streaming.can_stream(model):
        stats, example = streaming.accumulate(prep.features, prep.labels, rows)
        if stats.n < MIN_TRAIN_ROWS:
            raise DataError(too_few[0].format(n=stats.n), field=too_few[1])
        start(stats.n)
        r = (
            streaming.qr_factor(prep.features, prep.labels, rows, stats)
            if streaming.needs_qr(model)
            else None
        )
        streaming.fit_linear(model, stats, r)
        if on_progress is not None:
            on_progress(1.0, f"fitted {type(model.steps[-1][1]).__name__}")
        return _Fit({"early_stopping": "none"}, stats.n, example)
    if streaming.is_lightgbm(model):
        stats, example = streaming.accumulate(prep.features, prep.labels, rows)
        if stats.n < MIN_TRAIN_ROWS:
            raise DataError(too_few[0].format(n=stats.n), field=too_few[1])
        start(stats.n)
        info = streaming.fit_lightgbm(
            model,
            prep.features,
            prep.labels,
            rows,
            valid_rows,
            stats,
            stopping_rounds=LIGHTGBM_STOPPING_ROUNDS,
            report_every=int(model.steps[-1][1].n_estimators) // FIT_CHUNKS,
            on_progress=on_progress,
            time_budget_seconds=model_cfg.time_budget_seconds,
        )
        return _Fit(info, stats.n, example)
    x, y = streaming.gather(prep.features, prep.labels, rows)
    if len(y) < MIN_TRAIN_ROWS:
        raise DataError(too_few[0].format(n=len(y)), field=too_few[1])
    x_valid, y_valid = (
        streaming.gather(prep.features, prep.labels, valid_rows) if valid_rows is not None else (None, None)
    )
    start(len(y))
    info = fit_model(model, model_cfg, x, y, x_valid, y_valid, on_progress=on_progress)
    return _Fit(info, len(y), x[:5], x, y, x_valid, y_valid)


def _day(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


def train(
    dataset_cfg: DatasetConfig,
    model_cfg: ModelConfig,
    *,
    evaluate: bool = True,
    plots: bool = True,
    on_progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Fit the model on the train segment, evaluate every segment, and (when configured) retrain rolling.

    `evaluate` adds the test-segment evaluation (IC decay, quantile returns,
    long-short curve) and the feature importances; `plots` renders its PNGs.
    `on_progress(step, pct, message)` is called at each milestone (dataset
    loaded, features, labels, chunks of the fit, each segment evaluated, the
    test evaluation, rolling refits) with `pct` never decreasing; an exception
    it raises aborts the training.
    """
    on_step = on_progress or _quiet
    model = build_model(model_cfg)  # validate the model config before any data work
    prep = prepare(dataset_cfg, on_step)
    fit = _fit_rows(
        model,
        model_cfg,
        prep,
        prep.rows["train"],
        prep.rows.get("valid"),
        on_start=lambda n: on_step("fitting", FIT_START, f"fitting {model_cfg.type} on {n} rows"),
        on_progress=lambda done, message: on_step(
            "fitting", FIT_START + (FIT_END - FIT_START) * min(1.0, max(0.0, done)), message
        ),
        too_few=(
            "only {n} (date, symbol) rows have every feature and a label in the train segment; "
            "move the segment later or shorten the feature windows",
            "dataset_cfg.segments.train",
        ),
    )
    fit_info = fit.info
    on_step("fitted", FIT_END, f"fitted {model_cfg.type}")

    metrics: dict[str, MetricSet] = {}
    predictions: dict[str, np.ndarray] = {}
    for i, (name, rows) in enumerate(prep.rows.items(), start=1):
        predictions[name] = streaming.predict_rows(model, prep.features, rows)
        metrics[name] = ml_metrics(predictions[name], prep.labels[rows])
        ic = metrics[name].values.get("ic_spearman")
        on_step(
            "evaluated_segment",
            FIT_END + (EVALUATED - FIT_END) * i / len(prep.rows),
            f"{name}: IC {ic:.4f}" if isinstance(ic, float) and np.isfinite(ic) else f"{name} evaluated",
        )
    train_rows = prep.rows["train"]
    trained_through = _day(prep.panel.dates[train_rows[-1]])

    result = TrainingResult(
        model=model,
        feature_names=prep.feature_names,
        dataset_fingerprint=prep.panel.fingerprint,
        metrics=metrics,
        n_train_rows=fit.n_rows,
        example=fit.example,
        params={f"fit.{k}": v for k, v in fit_info.items()},
        trained_through=trained_through,
        predictions=predictions,
        rows=prep.rows,
    )

    if evaluate:
        label = dataset_cfg.label
        test_rows = prep.rows["test"]
        report = evaluate_predictions(
            predictions["test"],
            prep.panel.close,
            rows=test_rows,
            dates=prep.panel.dates,
            execution_lag=label.execution_lag,
            horizon=label.horizon,
        )
        result.evaluation = report
        has_valid = "valid" in prep.rows
        imp_rows = "valid" if has_valid else "train"
        # rows matter only for permutation importances (models fitted in memory have them)
        imp_x, imp_y = (fit.x_valid, fit.y_valid) if has_valid else (fit.x, fit.y)
        result.importance = feature_importance(
            model, prep.feature_names, imp_x, imp_y, seed=model_cfg.seed
        ) | {"rows": imp_rows}
        if plots:
            # drawn beside the rest of the call (a worker process in the embedded stack)
            result.pending_plots = chart_worker.submit(render_plots, report, title=f"{model_cfg.type} test")
        on_step("evaluated_test", ROLLING_START, "test evaluation and feature importances done")

    if model_cfg.rolling is not None:
        rolling = rolling_predictions(
            prep,
            dataset_cfg,
            model_cfg,
            model_cfg.rolling,
            refit_overrides(model),
            on_refit=lambda done, total, message: on_step(
                "rolling_refit", ROLLING_START + (ROLLING_END - ROLLING_START) * done / total, message
            ),
        )
        result.rolling = rolling
        result.metrics["rolling"] = rolling.metrics
        # The logged (and deployable) model stays the fit on the train segment: the last rolling
        # refit has seen most of valid and test, so backtesting it over the test window would leak.
        # The rolling metrics are the out-of-sample record of periodic retraining.
        last = rolling.blocks[-1]
        result.params.update(
            {
                "rolling.n_fits": len(rolling.blocks),
                "rolling.last_train_start": last.dates[0],
                "rolling.last_train_end": last.dates[1],
            }
        )
        on_step("rolling_done", ROLLING_END, f"rolling retraining: {len(rolling.blocks)} refits")
    return result


def rolling_predictions(
    prep: Prepared,
    dataset_cfg: DatasetConfig,
    model_cfg: ModelConfig,
    rolling: RollingConfig,
    overrides: dict[str, Any] | None = None,
    *,
    on_refit: Callable[[int, int, str], None] | None = None,
) -> RollingResult:
    """Refit every `rolling.step` bars over valid + test and stitch the out-of-sample predictions.

    See the module docstring for the blocks, the purge and the windows.
    `overrides` are hyperparameters applied to every refit (e.g. the
    iteration count early stopping found). `on_refit(done, total, message)` is called
    after each refit.
    """
    eval_rows = np.concatenate([prep.rows[s] for s in ("valid", "test") if s in prep.rows])
    eval_rows = np.unique(eval_rows)
    label = dataset_cfg.label
    purge = label.execution_lag + label.horizon + dataset_cfg.embargo
    first_train = int(prep.rows["train"][0])
    refit_cfg = model_cfg.model_copy(update={"params": {**model_cfg.params, **(overrides or {})}})
    n_sym = prep.labels.shape[1]
    stitched = np.full((eval_rows.size, n_sym), np.nan)
    blocks: list[RollingBlock] = []
    model: Any = None
    start, stop = int(eval_rows[0]), int(eval_rows[-1]) + 1
    starts = range(start, stop, rolling.step)
    for i, b0 in enumerate(starts, start=1):
        b1 = min(stop, b0 + rolling.step)
        lo_pos, hi_pos = np.searchsorted(eval_rows, [b0, b1])
        if hi_pos == lo_pos:
            continue  # the block falls in the purge gap between valid and test
        train_end = b0 - purge
        train_start = first_train if rolling.window is None else max(first_train, train_end - rolling.window)
        if train_end <= train_start:
            raise DataError(
                f"the rolling refit for {prep.panel.dates[b0]} has no training bars before its purge",
                field="model_cfg.rolling",
            )
        model = build_model(refit_cfg)
        d = prep.panel.dates
        fitted = _fit_rows(
            model,
            refit_cfg,
            prep,
            np.arange(train_start, train_end),
            None,
            too_few=(
                f"the rolling refit for {d[b0]} has only {{n}} training rows "
                f"(bars {d[train_start]}..{d[train_end - 1]}); widen model_cfg.rolling.window",
                "model_cfg.rolling.window",
            ),
        )
        block_rows = eval_rows[lo_pos:hi_pos]
        stitched[lo_pos:hi_pos] = streaming.predict_rows(model, prep.features, block_rows)
        blocks.append(
            RollingBlock(
                train_start,
                train_end,
                int(block_rows[0]),
                int(block_rows[-1]) + 1,
                fitted.n_rows,
                (str(d[train_start]), str(d[train_end - 1]), str(d[block_rows[0]]), str(d[block_rows[-1]])),
            )
        )
        if on_refit is not None:
            on_refit(i, len(starts), f"rolling refit {len(blocks)} through {d[train_end - 1]}")
    metrics = ml_metrics(stitched, prep.labels[eval_rows])
    return RollingResult(eval_rows, stitched, blocks, model, metrics)
