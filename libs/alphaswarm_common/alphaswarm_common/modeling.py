"""Feature matrices in and predictions out, shared by training and serving.

A model is anything with `predict(X) -> y` over rows of the feature matrix
(a fitted scikit-learn pipeline). Rows are (date, symbol) pairs; a row is
predicted only when all its features are finite, otherwise its prediction is
NaN. Pure NumPy: no MLflow, no gRPC.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import DataError
from alphaswarm_common.features.cache import cached_features

__all__ = [
    "PREDICT_BLOCK_BYTES",
    "Predictor",
    "WindowPredictions",
    "design_matrix",
    "predict_rows",
    "predict_window",
]


PREDICT_BLOCK_BYTES = 64 << 20
"""`predict_window` predicts blocks of dates of about this many bytes of features at a time."""


class Predictor(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray: ...


def design_matrix(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten (R, N, F) features and (R, N) labels into (X, y, mask) over the finite rows."""
    mask = np.isfinite(features).all(axis=2) & np.isfinite(labels)
    return features[mask].astype(np.float64, copy=False), labels[mask].astype(np.float64, copy=False), mask


def predict_rows(model: Predictor, features: np.ndarray) -> np.ndarray:
    """Predict every (date, symbol) of an (R, N, F) block; NaN where a feature is missing."""
    ok = np.isfinite(features).all(axis=2)
    out = np.full(ok.shape, np.nan)
    if ok.any():
        out[ok] = model.predict(features[ok].astype(np.float64, copy=False))
    return out


class WindowPredictions:
    __slots__ = ("dates", "feature_names", "fingerprint", "symbols", "values")

    def __init__(
        self,
        values: np.ndarray,
        dates: np.ndarray,
        symbols: list[str],
        feature_names: list[str],
        fingerprint: str,
    ) -> None:
        self.values = values
        self.dates = dates
        self.symbols = symbols
        self.feature_names = feature_names
        self.fingerprint = fingerprint


def predict_window(
    model: Predictor,
    dataset_cfg: DatasetConfig,
    start: Any = None,
    end: Any = None,
    *,
    expected_features: list[str] | None = None,
) -> WindowPredictions:
    """Predictions over [start, end] (inclusive dates; None = open).

    Predictions are made in blocks of dates (`PREDICT_BLOCK_BYTES` of
    features each), so memory does not grow with the window.
    Features are computed over the whole panel, so the window's first dates
    have their full look-back; each prediction at t uses bars through t only.
    They come from the process-wide feature cache
    (`alphaswarm_common.features.cache`), so serving a model trained in the
    same process, or predicting several windows of one dataset, computes them
    once.
    `expected_features` (the names the model was trained on) must match the
    computed names exactly, or the call fails: a model never silently
    receives other inputs than it was trained with.
    """
    panel = load_panel(dataset_cfg)
    fs = cached_features(panel, dataset_cfg.features)
    names = list(fs.names)
    if expected_features is not None and names != list(expected_features):
        raise DataError(
            f"the deployment's feature spec yields {len(names)} features {names[:5]}..., the model was "
            f"trained on {len(expected_features)} {list(expected_features)[:5]}...",
            field="dataset_cfg.features",
        )
    lo = 0 if start is None else int(np.searchsorted(panel.dates, np.datetime64(start, "D"), side="left"))
    hi = (
        len(panel.dates)
        if end is None
        else int(np.searchsorted(panel.dates, np.datetime64(end, "D"), side="right"))
    )
    if hi <= lo:
        raise DataError(f"no date of the dataset falls in the window {start}..{end}", field="start_date")
    values = np.full((hi - lo, len(panel.symbols)), np.nan)
    step = max(1, PREDICT_BLOCK_BYTES // max(1, fs.values[0].nbytes))
    for a in range(lo, hi, step):  # in blocks of dates: a file-backed feature array is never mapped whole
        b = min(hi, a + step)
        values[a - lo : b - lo] = predict_rows(model, fs.rows(a, b))
    return WindowPredictions(values, panel.dates[lo:hi], list(panel.symbols), names, panel.fingerprint)
