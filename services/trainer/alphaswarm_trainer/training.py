"""The research loop of one training: dataset -> features -> labels -> purged
segments -> fit on train -> evaluate valid and test.

Pure computation (NumPy, pandas, scikit-learn); no MLflow, no gRPC. The
servicer logs what `train()` returns.

Rows are (date, symbol) pairs; a row enters training when all its features and
its label are finite. The label is `close[t+lag+h] / close[t+lag] - 1`
(`docs/metrics.md`), and the segments are purged so that no training label
overlaps a later segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.data import Panel, load_panel, validate_segments
from alphaswarm_common.errors import DataError
from alphaswarm_common.features import compute_features
from alphaswarm_common.labels import make_labels, segment_rows
from alphaswarm_common.metrics import MetricSet, ml_metrics
from alphaswarm_common.modeling import design_matrix, predict_rows
from alphaswarm_trainer.models import build_model

__all__ = ["TrainingResult", "prepare", "train"]


@dataclass
class Prepared:
    panel: Panel
    feature_names: list[str]
    features: np.ndarray  # (T, N, F)
    labels: np.ndarray  # (T, N)
    rows: dict[str, np.ndarray]


@dataclass
class TrainingResult:
    model: Any
    feature_names: list[str]
    dataset_fingerprint: str
    metrics: dict[str, MetricSet]
    n_train_rows: int
    example: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def prepare(cfg: DatasetConfig) -> Prepared:
    panel = load_panel(cfg)
    validate_segments(panel, cfg)
    fs = compute_features(panel, cfg.features)
    labels = make_labels(panel.close, cfg.label.horizon, cfg.label.execution_lag, cfg.label.transform)
    rows = segment_rows(
        panel.dates,
        cfg.segments,
        execution_lag=cfg.label.execution_lag,
        horizon=cfg.label.horizon,
        embargo=cfg.embargo,
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


def train(dataset_cfg: DatasetConfig, model_cfg: ModelConfig) -> TrainingResult:
    """Fit the model on the train segment and evaluate every segment."""
    model = build_model(model_cfg)  # validate the model config before any data work
    prep = prepare(dataset_cfg)
    train_rows = prep.rows["train"]
    x, y, _ = design_matrix(prep.features[train_rows], prep.labels[train_rows])
    if len(y) < 50:
        raise DataError(
            f"only {len(y)} (date, symbol) rows have every feature and a label in the train segment; "
            "move the segment later or shorten the feature windows",
            field="dataset_cfg.segments.train",
        )
    model.fit(x, y)
    metrics = {}
    for name, rows in prep.rows.items():
        pred = predict_rows(model, prep.features[rows])
        metrics[name] = ml_metrics(pred, prep.labels[rows])
    return TrainingResult(
        model=model,
        feature_names=prep.feature_names,
        dataset_fingerprint=prep.panel.fingerprint,
        metrics=metrics,
        n_train_rows=len(y),
        example=x[:5],
    )
