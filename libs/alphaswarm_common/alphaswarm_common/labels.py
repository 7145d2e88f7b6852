"""Labels (forward returns) and purged train / valid / test rows.

Timing (docs/metrics.md, "Time and causality"): a decision formed from data
through the close of date `t` is filled at bar `t + lag` and its label is the
return it then earns over `h` bars,

    label[t] = close[t + lag + h] / close[t + lag] - 1,

so the IC of a prediction and the PnL it drives are measured on the same
return. Indices are rows of the panel (trading dates), not calendar days.

Segments: `segment_rows` turns the date ranges of `Segments` into rows and
purges the end of every segment that is followed by another one. The label
of row `t` is only known at row `t + lag + h`; so between consecutive
segments the last `lag + h` rows of the earlier segment are dropped (after
which the label of its last kept row is realised on or before its last
date), plus `embargo` more rows. Hence every label of a segment is realised
strictly before the first date of the next segment: no training label
overlaps validation or test data. The last segment is not purged; its final
`lag + h` rows have NaN labels because the future bars do not exist.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from alphaswarm_common.config import Segments
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.features._kernels import cs_rank

__all__ = ["LABEL_TRANSFORMS", "SEGMENT_NAMES", "make_labels", "segment_rows"]

LABEL_TRANSFORMS: tuple[str, ...] = ("raw", "demean", "rank")
SEGMENT_NAMES: tuple[str, ...] = ("train", "valid", "test")


def make_labels(
    close: np.ndarray,
    horizon: int,
    execution_lag: int,
    transform: Literal["raw", "demean", "rank"] | str = "raw",
) -> np.ndarray:
    """Forward returns `close[t+lag+h] / close[t+lag] - 1` for every row `t`, float64.

    `close` is `(T, N)` (or `(T,)`, giving `(T,)`). The last `lag + h` rows
    are NaN (their future is not in the data), as is any cell whose two
    closes are not both present. `transform`:

    - `"raw"`: the simple return itself;
    - `"demean"`: minus the cross-sectional mean of the date (over the
      symbols with a label);
    - `"rank"`: the cross-sectional percentile rank of the date, average
      ranks for ties scaled to `[0, 1]` by `(rank - 1) / (n - 1)` (0.5 for a
      lone symbol), as `cs_rank` features.

    The transforms act per date across symbols, so on a single symbol
    `demean` gives 0 and `rank` 0.5 wherever the raw label exists.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise InvalidArgument(
            f"horizon must be an integer >= 1, got {horizon!r}", field="dataset_cfg.label.horizon"
        )
    if (
        isinstance(execution_lag, bool)
        or not isinstance(execution_lag, int | np.integer)
        or execution_lag < 0
    ):
        raise InvalidArgument(
            f"execution_lag must be an integer >= 0, got {execution_lag!r}",
            field="dataset_cfg.label.execution_lag",
        )
    if transform not in LABEL_TRANSFORMS:
        raise InvalidArgument(
            f"unknown label transform {transform!r}; use one of {', '.join(LABEL_TRANSFORMS)}",
            field="dataset_cfg.label.transform",
        )
    prices = np.asarray(close, dtype=np.float64)
    if prices.ndim not in (1, 2):
        raise InvalidArgument(f"close must be (T, N) or (T,), got shape {prices.shape}")
    one_d = prices.ndim == 1
    if one_d:
        prices = prices[:, None]
    t_rows = prices.shape[0]
    start, end = int(execution_lag), int(execution_lag) + int(horizon)
    labels = np.full(prices.shape, np.nan, dtype=np.float64)
    if end < t_rows:
        with np.errstate(divide="ignore", invalid="ignore"):
            labels[: t_rows - end] = prices[end:] / prices[start : t_rows - end + start] - 1.0
    labels[~np.isfinite(labels)] = np.nan
    if transform == "demean":
        count = np.sum(~np.isnan(labels), axis=1, keepdims=True)
        total = np.nansum(labels, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            labels = labels - np.where(count > 0, total / np.maximum(count, 1), np.nan)
    elif transform == "rank":
        labels = cs_rank(labels)
    return labels[:, 0] if one_d else labels


def segment_rows(
    dates: np.ndarray,
    segments: Segments,
    *,
    execution_lag: int,
    horizon: int,
    embargo: int = 0,
) -> dict[str, np.ndarray]:
    """Row indices of each present segment (`train`, `valid`, `test`, in that order) after purging.

    `dates` are the panel's dates (sorted, unique). A segment's rows are the
    dates `start <= d <= end`; every segment followed by another loses its
    last `execution_lag + horizon + embargo` rows (see the module docstring).
    Raises `DataError(field="dataset_cfg.segments.<name>")` when a segment has
    no date in the data, or none left after purging.
    """
    if embargo < 0:
        raise InvalidArgument(f"embargo must be >= 0, got {embargo}", field="dataset_cfg.embargo")
    if execution_lag < 0:
        raise InvalidArgument(
            f"execution_lag must be >= 0, got {execution_lag}", field="dataset_cfg.label.execution_lag"
        )
    if horizon < 1:
        raise InvalidArgument(f"horizon must be >= 1, got {horizon}", field="dataset_cfg.label.horizon")
    days = np.asarray(dates).astype("datetime64[D]")
    if days.ndim != 1:
        raise InvalidArgument(f"dates must be 1-D, got shape {days.shape}")
    if days.size > 1 and not (np.diff(days.astype(np.int64)) > 0).all():
        raise InvalidArgument("dates must be sorted and unique")
    purge = int(execution_lag) + int(horizon) + int(embargo)
    present = [
        (name, getattr(segments, name)) for name in SEGMENT_NAMES if getattr(segments, name) is not None
    ]
    first, last = (days[0], days[-1]) if days.size else (None, None)
    out: dict[str, np.ndarray] = {}
    for k, (name, seg) in enumerate(present):
        lo = int(np.searchsorted(days, np.datetime64(seg.start, "D"), side="left"))
        hi = int(np.searchsorted(days, np.datetime64(seg.end, "D"), side="right"))
        if hi <= lo:
            raise DataError(
                f"segment {name} ({seg.start}..{seg.end}) has no date in the data ({first}..{last})",
                field=f"dataset_cfg.segments.{name}",
            )
        followed = k + 1 < len(present)
        kept_hi = hi - purge if followed else hi
        if kept_hi <= lo:
            raise DataError(
                f"segment {name} ({seg.start}..{seg.end}) has {hi - lo} date(s) in the data and all are purged: "
                f"the last execution_lag + horizon + embargo = {purge} dates before the next segment are dropped",
                field=f"dataset_cfg.segments.{name}",
            )
        out[name] = np.arange(lo, kept_hi, dtype=np.intp)
    return out
