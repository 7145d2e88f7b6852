"""Serving the predictions of a deployed model (`DeployedModelAlpha`).

Pure computation (NumPy and `alphaswarm_common`'s pure modules): no MLflow, no
gRPC. The registry loads and verifies the model, this module turns the
deployment's dataset into predictions.

Timing: features are computed over the deployment's whole panel, so the
first dates of a window have their full look-back, and every feature at date
t uses bars at dates <= t only (`alphaswarm_common.features`). The
prediction at t therefore uses data through the close of t; it is the signal
of the decision formed at t (filled at t + execution_lag, `docs/metrics.md`).
`latest=True` serves only the last date of the panel (the last date any
symbol has a close), computed exactly as that date's row of a window, so the
latest prediction equals the window's prediction for the same date.

No fallback: the alpha is the model or nothing. Whenever the model cannot
produce its predictions the call fails with `FailedPrecondition` and a stable
reason, never with another signal, zeros or an all-NaN matrix:

* `MODEL_FEATURES_UNKNOWN`: the version does not say which features it was trained on;
* `FEATURES_MISMATCH`: the deployment's feature spec yields other columns
  (names or order), or the estimator expects another number of inputs;
* `DEPLOYMENT_DATA_UNUSABLE`: the deployment's dataset cannot be loaded or
  its features cannot be computed (the original error is in the details);
* `MODEL_PREDICT_FAILED`: `predict` raised, returned another shape, or
  returned a non-finite value for a row whose features are all finite;
* `NO_PREDICTIONS`: no (date, symbol) of the window has every feature.

A row (date, symbol) with a missing feature (warm-up, missing bar) is NaN,
as in training; the window itself must be inside the data (`start_date`
after the last date is `InvalidArgument` naming `start_date`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import AlphaSwarmError, DataError, FailedPrecondition, InvalidArgument
from alphaswarm_common.features import compute_features, feature_names
from alphaswarm_common.modeling import Predictor, WindowPredictions

__all__ = ["FEATURES_FIELD", "check_features", "predict_deployment"]

#: The field that names the deployment's feature spec in errors.
FEATURES_FIELD = "deployment.dataset_cfg.features"


def _preview(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def check_features(
    dataset_cfg: DatasetConfig,
    expected: Sequence[str] | None,
    *,
    model: Any = None,
    field: str = FEATURES_FIELD,
) -> list[str]:
    """The deployment's feature names, checked against those the model was trained on.

    Cheap (no data is read). Raises `FailedPrecondition` with reason
    `MODEL_FEATURES_UNKNOWN` when `expected` is empty or None, and
    `FEATURES_MISMATCH` when the names (in order) differ or when `model`
    declares another number of inputs (`n_features_in_`).
    """
    if not expected:
        raise FailedPrecondition(
            "the model version does not record the features it was trained on (tag alphaswarm.feature_names); "
            "it cannot be served",
            reason="MODEL_FEATURES_UNKNOWN",
        )
    try:
        names = feature_names(dataset_cfg.features, field=field)
    except AlphaSwarmError as exc:
        raise FailedPrecondition(
            f"the deployment's feature spec is not valid: {exc}",
            reason="DEPLOYMENT_DATA_UNUSABLE",
            details={"field": exc.field or field, "cause": exc.reason},
        ) from exc
    if names != list(expected):
        raise FailedPrecondition(
            f"the deployment's features {_preview(names)} are not the features the model was trained on "
            f"{_preview(list(expected))}",
            reason="FEATURES_MISMATCH",
            details={"field": field},
        )
    n_in = getattr(model, "n_features_in_", None)
    if n_in is not None and int(n_in) != len(names):
        raise FailedPrecondition(
            f"the estimator expects {int(n_in)} inputs, the deployment computes {len(names)} features",
            reason="FEATURES_MISMATCH",
            details={"field": field},
        )
    return names


def _window_rows(
    dates: np.ndarray, start: dt.date | None, end: dt.date | None, latest: bool
) -> tuple[int, int]:
    if latest:
        return len(dates) - 1, len(dates)
    if start is not None and end is not None and end < start:
        raise InvalidArgument(f"end_date {end} is before start_date {start}", field="end_date")
    lo = 0 if start is None else int(np.searchsorted(dates, np.datetime64(start, "D"), side="left"))
    hi = len(dates) if end is None else int(np.searchsorted(dates, np.datetime64(end, "D"), side="right"))
    if hi <= lo:
        first, last = str(dates[0]), str(dates[-1])
        raise DataError(
            f"no date of the deployment's dataset ({first}..{last}) falls in the window "
            f"{start or first}..{end or last}",
            field="end_date" if start is None else "start_date",
        )
    return lo, hi


def _predict(model: Predictor, block: np.ndarray) -> np.ndarray:
    """Predictions of an (R, N, F) block; NaN where a feature is missing; loud on any model failure."""
    ok = np.isfinite(block).all(axis=2)
    out = np.full(ok.shape, np.nan)
    n = int(ok.sum())
    if n == 0:
        return out
    x = block[ok].astype(np.float64, copy=False)
    try:
        raw = model.predict(x)
    except Exception as exc:
        raise FailedPrecondition(
            f"the model failed to predict {n} rows: {type(exc).__name__}: {exc}",
            reason="MODEL_PREDICT_FAILED",
        ) from exc
    try:
        y = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FailedPrecondition(
            f"the model returned non-numeric predictions ({type(raw).__name__})",
            reason="MODEL_PREDICT_FAILED",
        ) from exc
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise FailedPrecondition(
            f"the model returned predictions of shape {y.shape} for {n} rows; expected ({n},)",
            reason="MODEL_PREDICT_FAILED",
        )
    bad = ~np.isfinite(y)
    if bad.any():
        raise FailedPrecondition(
            f"the model returned {int(bad.sum())} non-finite predictions for rows whose features are all finite",
            reason="MODEL_PREDICT_FAILED",
        )
    out[ok] = y
    return out


def predict_deployment(
    model: Predictor,
    dataset_cfg: DatasetConfig,
    expected_features: Sequence[str] | None,
    *,
    start: dt.date | None = None,
    end: dt.date | None = None,
    latest: bool = False,
) -> WindowPredictions:
    """Predictions (dates x symbols) of `model` on the deployment's dataset.

    The window is `[start, end]` (inclusive, None = open), or only the last
    date of the panel when `latest` (then `start` and `end` are ignored).
    See the module docstring for the timing and the errors.
    """
    names = check_features(dataset_cfg, expected_features, model=model)
    try:
        panel = load_panel(dataset_cfg)
        fs = compute_features(panel, dataset_cfg.features, field=FEATURES_FIELD)
    except AlphaSwarmError as exc:
        raise FailedPrecondition(
            f"the deployment's dataset cannot be served: {exc}",
            reason="DEPLOYMENT_DATA_UNUSABLE",
            details={"field": exc.field or "deployment.dataset_cfg", "cause": exc.reason},
        ) from exc
    lo, hi = _window_rows(panel.dates, start, end, latest)
    values = _predict(model, fs.values[lo:hi])
    dates = panel.dates[lo:hi]
    if not np.isfinite(values).any():
        when = f"on {dates[0]}" if latest else f"in {dates[0]}..{dates[-1]}"
        raise FailedPrecondition(
            f"no (date, symbol) {when} has every feature the model needs, so the model has no prediction "
            "there (the window ends inside the features' look-back, or the symbols have no bars)",
            reason="NO_PREDICTIONS",
        )
    return WindowPredictions(values, dates, list(panel.symbols), names, panel.fingerprint)
