"""Fits and predictions that read the feature panel in blocks of dates, never the whole design matrix at once.

A training's rows are (date, symbol) pairs of a `(T, N, F)` feature array
(float32, possibly file-backed: `alphaswarm_common.features.store`). Rather
than flattening a whole segment into one float64 design matrix (8.7 M rows x
51 features = 3.5 GB on a 5040 x 3000 panel, plus sklearn's centred copy),
the functions here walk the segment's rows in blocks of `block_dates(...)`
dates (about `BLOCK_BYTES` of float32 features each); each block is read,
reduced to its finite rows exactly as `modeling.design_matrix` does, used,
and dropped.

Linear models from sufficient statistics (`LinearStats`, `fit_linear`)
----------------------------------------------------------------------
For `ridge` (solver `auto`/`cholesky`) and `linear` the blocks are reduced
to the count, the means and the centred co-moments `Σ(x-x̄)(x-x̄)ᵀ`,
`Σ(x-x̄)(y-ȳ)`, merged block by block with the pairwise update of Chan,
Golub & LeVeque (no `XᵀX - n x̄x̄ᵀ` cancellation). From them the fit sets,
on the same `Pipeline(StandardScaler, estimator)` `build_model` returns,
exactly what the in-memory `Pipeline.fit` computes:

- the scaler: `mean_ = x̄`, `var_ = diag(M)/n`, `scale_ = sqrt(var_)` with
  sklearn's own near-constant rule (scale 1), `n_samples_seen_ = n`;
- the scaled design `Xs = (X - x̄)/s` has mean 0, so sklearn's centring is
  the identity and its Gram matrix and right-hand side are `D⁻¹MD⁻¹` and
  `D⁻¹Mxy` (`D = diag(s)`); ridge solves `(D⁻¹MD⁻¹ + αI) w = D⁻¹Mxy`
  with the same `scipy.linalg.solve(assume_a="pos")` sklearn's `cholesky`
  solver calls, ordinary least squares with `scipy.linalg.lstsq` (sklearn
  runs it on the centred rows; on the Gram matrix the minimum-norm solution
  is the same); `intercept_ = ȳ` (0 without `fit_intercept`).

The result is a normal fitted pipeline (skops artifacts, registry and
serving unchanged) whose predictions equal the in-memory fit to rounding
(`tests/unit/test_model_streaming.py` checks 1e-8); memory is one block
plus `F x F` matrices, whatever the number of rows.

`lasso` and `elastic_net` are fitted from the same statistics: their
objective `‖y - Xw‖²/(2n) + α·pen(w)` depends on the rows only through
`XᵀX`, `Xᵀy`, `yᵀy` and `n`, so sklearn's own coordinate descent runs on a
design of at most `F + 1` rows with those statistics (`surrogate_design`,
`alpha` rescaled by `n / (F + 1)`).

Other models (`gather`) still need their rows in memory (forests, boosting,
the MLP); they receive the same
float64 design matrix as before, built block by block (without a whole-
segment float32 copy of the features next to it). LightGBM is the
exception: `fit_lightgbm` builds its `Dataset` from the blocks through
`lightgbm.Sequence`, so only LightGBM's binned copy (one byte per value)
is held.

Predictions (`predict_rows`) are made block by block as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_common.features import store
from alphaswarm_common.modeling import design_matrix
from alphaswarm_common.modeling import predict_rows as predict_block

__all__ = [
    "BLOCK_BYTES",
    "LinearStats",
    "accumulate",
    "block_dates",
    "can_stream",
    "fit_linear",
    "gather",
    "iter_blocks",
    "predict_rows",
]

BLOCK_BYTES = 64 << 20
"""Target size of one block of float32 features read at a time (64 MiB; the float64 design rows double it)."""


def block_dates(features: np.ndarray, block_bytes: int = BLOCK_BYTES) -> int:
    """How many dates of `features` (T, N, F) make a block of about `block_bytes`."""
    row = max(1, features[0].nbytes if features.shape[0] else 1)
    return max(1, block_bytes // row)


def _as_rows(rows: np.ndarray | slice, t_rows: int) -> np.ndarray:
    if isinstance(rows, slice):
        return np.arange(t_rows)[rows]
    return np.asarray(rows, dtype=np.intp)


def _read(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`features[rows]` in memory; pages of a file-backed array are dropped after the copy."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo == rows.size and np.all(np.diff(rows) == 1):
        return store.read_rows(features, lo, hi)
    out = features[rows]
    store.release(features, lo, hi)
    return out


def iter_blocks(
    features: np.ndarray, rows: np.ndarray | slice, *, dates_per_block: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(block_rows, features[block_rows])` over `rows` (panel row indices, ascending) in blocks of dates."""
    idx = _as_rows(rows, features.shape[0])
    step = dates_per_block or block_dates(features)
    for i in range(0, idx.size, step):
        part = idx[i : i + step]
        yield part, _read(features, part)


def iter_design(
    features: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | slice,
    *,
    dates_per_block: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the `(x, y)` design rows (finite features and label, float64) of each block of `rows`."""
    for part, block in iter_blocks(features, rows, dates_per_block=dates_per_block):
        x, y, _ = design_matrix(block, labels[part])
        if y.size:
            yield x, y


def gather(
    features: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | slice,
    *,
    dates_per_block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole `(x, y)` design of `rows`, as `design_matrix(features[rows], labels[rows])` gives it."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for x, y in iter_design(features, labels, rows, dates_per_block=dates_per_block):
        xs.append(x)
        ys.append(y)
    n_feat = features.shape[2]
    if not ys:
        return np.empty((0, n_feat)), np.empty(0)
    if len(ys) == 1:
        return xs[0], ys[0]
    return np.concatenate(xs), np.concatenate(ys)


def predict_rows(
    model: Any, features: np.ndarray, rows: np.ndarray | slice, *, dates_per_block: int | None = None
) -> np.ndarray:
    """`modeling.predict_rows(model, features[rows])`, computed block by block: `(len(rows), N)`."""
    idx = _as_rows(rows, features.shape[0])
    out = np.full((idx.size, features.shape[1]), np.nan)
    pos = 0
    for part, block in iter_blocks(features, idx, dates_per_block=dates_per_block):
        out[pos : pos + part.size] = predict_block(model, block)
        pos += part.size
    return out


# --------------------------------------------------------------------------- sufficient statistics


def _gram(xc: np.ndarray) -> np.ndarray:
    """`xc.T @ xc` with BLAS `dsyrk` (half the flops of a general product), symmetrised."""
    from scipy.linalg.blas import dsyrk

    if xc.dtype != np.float64 or not xc.flags.c_contiguous:
        return np.asarray(xc.T @ xc)
    upper = dsyrk(1.0, xc.T, trans=0, lower=0)  # xc.T is Fortran-ordered: no copy
    return np.triu(upper) + np.triu(upper, 1).T


@dataclass
class LinearStats:
    """Count, means and centred co-moments of the rows seen so far (`add` merges a block)."""

    n: int
    mean_x: np.ndarray  # (F,)
    mean_y: float
    m_xx: np.ndarray  # (F, F)  Σ (x - x̄)(x - x̄)ᵀ
    m_xy: np.ndarray  # (F,)    Σ (x - x̄)(y - ȳ)
    m_yy: float

    @classmethod
    def empty(cls, n_features: int) -> LinearStats:
        return cls(
            0, np.zeros(n_features), 0.0, np.zeros((n_features, n_features)), np.zeros(n_features), 0.0
        )

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> LinearStats:
        mean_x = x.mean(axis=0)
        mean_y = float(y.mean())
        xc = x - mean_x
        yc = y - mean_y
        return cls(x.shape[0], mean_x, mean_y, _gram(xc), xc.T @ yc, float(yc @ yc))

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Merge the rows `(x, y)` into the statistics (pairwise update)."""
        if y.size == 0:
            return
        other = LinearStats.of(x, y)
        if self.n == 0:
            self.n, self.mean_x, self.mean_y = other.n, other.mean_x, other.mean_y
            self.m_xx, self.m_xy, self.m_yy = other.m_xx, other.m_xy, other.m_yy
            return
        n_a, n_b = self.n, other.n
        n = n_a + n_b
        dx = other.mean_x - self.mean_x
        dy = other.mean_y - self.mean_y
        w = n_a * n_b / n
        self.m_xx = self.m_xx + other.m_xx + np.outer(dx, dx) * w
        self.m_xy = self.m_xy + other.m_xy + dx * dy * w
        self.m_yy = self.m_yy + other.m_yy + dy * dy * w
        self.mean_x = self.mean_x + dx * (n_b / n)
        self.mean_y = self.mean_y + dy * (n_b / n)
        self.n = n


def accumulate(
    features: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | slice,
    *,
    dates_per_block: int | None = None,
    head: int = 5,
) -> tuple[LinearStats, np.ndarray]:
    """`LinearStats` of the design rows of `rows`, and the first `head` design rows (an input example)."""
    stats = LinearStats.empty(features.shape[2])
    example: np.ndarray | None = None
    for x, y in iter_design(features, labels, rows, dates_per_block=dates_per_block):
        if example is None:
            example = x[:head].copy()
        stats.add(x, y)
    if example is None:
        example = np.empty((0, features.shape[2]))
    return stats, example


# --------------------------------------------------------------------------- linear fits


def _parts(model: Any) -> tuple[Any, Any]:
    steps = dict(model.steps)
    return steps["scaler"], steps["model"]


def can_stream(model: Any) -> bool:
    """True when `fit_linear` reproduces `model.fit` from `LinearStats` (ridge with the cholesky
    solver, ordinary least squares; no positivity constraint; a standard scaler)."""
    scaler, est = _parts(model)
    if type(scaler).__name__ != "StandardScaler" or not (scaler.with_mean and scaler.with_std):
        return False
    name = type(est).__name__
    if name == "Ridge":
        return est.solver in ("auto", "cholesky") and not est.positive and np.ndim(est.alpha) == 0
    if name == "LinearRegression":
        return not est.positive
    if name in _COORDINATE_DESCENT:
        return np.ndim(est.alpha) == 0 and not est.warm_start
    return False


def set_scaler(scaler: Any, stats: LinearStats) -> None:
    """Set a `StandardScaler`'s fitted state to what `scaler.fit` computes on the rows of `stats`."""
    try:
        from sklearn.preprocessing._data import _handle_zeros_in_scale, _is_constant_feature
    except ImportError:  # pragma: no cover - sklearn moved its helpers

        def _is_constant_feature(var: Any, mean: Any, n_samples: Any) -> Any:
            eps = np.finfo(np.float64).eps
            upper = n_samples * eps * var + (n_samples * mean * eps) ** 2
            return var <= upper

        def _handle_zeros_in_scale(scale: Any, copy: bool = True, constant_mask: Any = None) -> Any:
            scale[constant_mask] = 1.0
            return scale

    n = stats.n
    if n == 0:
        raise ValueError("no rows to fit")
    var = np.diag(stats.m_xx) / n
    scaler.mean_ = stats.mean_x.copy()
    scaler.var_ = var
    scaler.n_samples_seen_ = n
    scaler.n_features_in_ = stats.mean_x.size
    scaler.scale_ = _handle_zeros_in_scale(
        np.sqrt(var), copy=False, constant_mask=_is_constant_feature(var, stats.mean_x, n)
    )


def needs_qr(model: Any) -> bool:
    """True for ordinary least squares, which `fit_linear` solves from the R factor (`qr_factor`)."""
    return type(_parts(model)[1]).__name__ == "LinearRegression"


def qr_factor(
    features: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray | slice,
    stats: LinearStats,
    *,
    dates_per_block: int | None = None,
) -> np.ndarray:
    """The `(F+1, F+1)` R factor of the centred, scaled rows `[(x - x̄)/s | y - ȳ]` (a second pass).

    Folded block by block (`qr([R; block])`, tall-skinny QR): `R[:F, :F]` and
    `R[:F, F]` are the triangular factor of the scaled design and `Qᵀy`, so
    `lstsq(R, Qᵀy)` is the least-squares solution with the conditioning of
    the rows themselves (the normal equations would square it)."""
    scale = np.sqrt(np.diag(stats.m_xx) / max(1, stats.n))
    scale[scale == 0] = 1.0
    n_feat = stats.mean_x.size
    r = np.zeros((0, n_feat + 1))
    for x, y in iter_design(features, labels, rows, dates_per_block=dates_per_block):
        block = np.empty((x.shape[0], n_feat + 1))
        np.divide(x - stats.mean_x, scale, out=block[:, :n_feat])
        block[:, n_feat] = y - stats.mean_y
        r = np.asarray(np.linalg.qr(np.vstack([r, block]), mode="r"))
    return r


def fit_linear(model: Any, stats: LinearStats, r_factor: np.ndarray | None = None) -> None:
    """Set the fitted state of a `can_stream` pipeline from the statistics of its training rows
    (and, for ordinary least squares, the `qr_factor` of those rows)."""
    from scipy import linalg

    scaler, est = _parts(model)
    n_feat = stats.mean_x.size
    set_scaler(scaler, stats)
    inv = 1.0 / scaler.scale_
    gram = stats.m_xx * np.outer(inv, inv)
    rhs = stats.m_xy * inv
    name = type(est).__name__
    if name == "Ridge":
        gram.flat[:: n_feat + 1] += float(est.alpha)
        coef = linalg.solve(gram, rhs[:, None], assume_a="pos", overwrite_a=True).T
        est.coef_ = coef.ravel()
        est.n_iter_ = None
        est.solver_ = "cholesky"
    elif name in _COORDINATE_DESCENT:
        yy = stats.m_yy if est.fit_intercept else stats.m_yy + stats.n * stats.mean_y**2
        _fit_coordinate_descent(est, gram, rhs, yy, stats.n)
    else:
        if r_factor is None:
            raise ValueError("ordinary least squares needs the R factor of the scaled rows (`qr_factor`)")
        r, qty = r_factor[:n_feat, :n_feat], r_factor[:n_feat, n_feat]
        coef_, _, rank, singular = linalg.lstsq(r, qty, cond=est.tol)  # sklearn: lstsq(X, y, cond=tol)
        est.coef_ = np.asarray(coef_, dtype=np.float64)
        est.rank_ = int(rank)
        est.singular_ = np.asarray(singular, dtype=np.float64)
    est.intercept_ = stats.mean_y if est.fit_intercept else 0.0
    est.n_features_in_ = n_feat


_COORDINATE_DESCENT = ("Lasso", "ElasticNet")


def surrogate_design(gram: np.ndarray, rhs: np.ndarray, yy: float) -> tuple[np.ndarray, np.ndarray]:
    """A small design `(x̃, ỹ)` with the sufficient statistics of the rows: `x̃ᵀx̃ = gram`, `x̃ᵀỹ = rhs`,
    `ỹᵀỹ = yy`, at most `F + 1` rows.

    From `gram = V Λ Vᵀ`: `x̃ = Λ^½ Vᵀ` (directions with a numerically zero eigenvalue dropped: a
    constant or exactly collinear column), `ỹ = Λ^-½ Vᵀ rhs`, and one row `(0, √(yy - ỹᵀỹ))` that
    carries the part of `y` no column explains. Any objective of the form `f(‖y - Xw‖², w)` has the
    same value on `(x̃, ỹ)` as on the rows, for every `w`."""
    evals, evecs = np.linalg.eigh(gram)
    keep = evals > max(float(evals[-1]), 0.0) * gram.shape[0] * np.finfo(np.float64).eps
    root = np.sqrt(evals[keep])
    n_keep = int(keep.sum())
    x = np.zeros((n_keep + 1, gram.shape[0]))
    y = np.zeros(n_keep + 1)
    x[:n_keep] = (evecs[:, keep] * root).T
    y[:n_keep] = (evecs[:, keep].T @ rhs) / root
    y[n_keep] = np.sqrt(max(yy - float(y[:n_keep] @ y[:n_keep]), 0.0))
    return x, y


def _fit_coordinate_descent(est: Any, gram: np.ndarray, rhs: np.ndarray, yy: float, n: int) -> None:
    """Fit a `Lasso` / `ElasticNet` on the scaled, centred rows summarised by `gram`, `rhs`, `yy`, `n`.

    sklearn minimises `‖y - Xw‖² / (2n) + α·pen(w)`; on the `m`-row `surrogate_design` the same
    objective times `n / m` is `‖ỹ - x̃w‖² / (2m) + (α n / m)·pen(w)`, so sklearn's own coordinate
    descent runs on `(x̃, ỹ)` with `alpha · n / m` and no intercept (the rows are centred). Its
    stopping rule compares the duality gap with `tol · ỹᵀỹ`, and `ỹᵀỹ = yᵀy`, so it stops where the
    fit on the rows would (up to rounding); `dual_gap_` is rescaled to the rows' `1/n`."""
    x, y = surrogate_design(gram, rhs, yy)
    m = x.shape[0]
    alpha, fit_intercept, precompute = est.alpha, est.fit_intercept, est.precompute
    est.set_params(alpha=float(alpha) * n / m, fit_intercept=False, precompute=False)
    try:
        est.fit(x, y)
    finally:
        est.set_params(alpha=alpha, fit_intercept=fit_intercept, precompute=precompute)
    est.dual_gap_ = est.dual_gap_ * m / n


# --------------------------------------------------------------------------- lightgbm


def is_lightgbm(model: Any) -> bool:
    return type(_parts(model)[1]).__name__ == "LGBMRegressor"


class _Blocks:
    """The design rows of `rows` as a sequence of blocks of dates, with their row counts known
    (one pass), the scaler applied, and the last block read kept (LightGBM reads in order)."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        rows: np.ndarray,
        scaler: Any,
        dates_per_block: int | None,
    ) -> None:
        self.features, self.labels, self.scaler = features, labels, scaler
        idx = _as_rows(rows, features.shape[0])
        step = dates_per_block or block_dates(features)
        self.parts = [idx[i : i + step] for i in range(0, idx.size, step)]
        counts, ys = [], []
        for part in self.parts:
            finite = np.isfinite(labels[part])
            block = _read(features, part)
            ok = np.isfinite(block).all(axis=2) & finite
            counts.append(int(ok.sum()))
            ys.append(labels[part][ok].astype(np.float64))
            del block
        self.y = np.concatenate(ys) if ys else np.empty(0)
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def block(self, b: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != b:
            self._cached = None
            part = self.parts[b]
            x, _, _ = design_matrix(_read(self.features, part), self.labels[part])
            self._cached = (b, self.scaler.transform(x))
        return self._cached[1]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        out = []
        b = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            x = self.block(b)
            a = lo - int(self.starts[b])
            take = min(hi - lo, x.shape[0] - a)
            out.append(x[a : a + take])
            lo += take
            b += 1
        return out[0] if len(out) == 1 else np.concatenate(out)


def _sequence(blocks: _Blocks) -> Any:
    import lightgbm

    class DesignSequence(lightgbm.Sequence):  # type: ignore[misc]
        batch_size = 1 << 16

        def __len__(self) -> int:
            return len(blocks)

        def __getitem__(self, idx: Any) -> np.ndarray:
            if isinstance(idx, slice):
                lo, hi, _ = idx.indices(len(blocks))
                return blocks.rows(lo, hi)
            if isinstance(idx, (int, np.integer)):
                return blocks.rows(int(idx), int(idx) + 1)[0]
            return np.stack([blocks.rows(int(i), int(i) + 1)[0] for i in idx])

    return DesignSequence()


def fit_lightgbm(
    model: Any,
    features: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    valid_rows: np.ndarray | None,
    stats: LinearStats,
    *,
    stopping_rounds: int,
    report_every: int,
    on_progress: Callable[[float, str], None] | None = None,
    dates_per_block: int | None = None,
    time_budget_seconds: float | None = None,
) -> dict[str, Any]:
    """Fit a lightgbm pipeline with its `Dataset` built from blocks of dates (`lightgbm.Sequence`).

    What `LGBMRegressor.fit(scaled X, y, eval_X=scaled valid X, callbacks=[early_stopping])` does,
    without the design matrix in memory: one pass gathers the scaler's statistics and the row
    counts, LightGBM samples its bin boundaries from the sequence and then pushes the rows block by
    block into its binned dataset. The fitted `LGBMRegressor` has the state `fit` gives it.
    `stats` are the `accumulate` statistics of `rows` (they give the scaler).
    `time_budget_seconds` stops the boosting after the round that spends it, as
    `models.fit_model` does (only with a valid segment to early-stop on).
    """
    import lightgbm

    from alphaswarm_common.errors import InvalidArgument
    from alphaswarm_trainer.models import _Budget

    budget = _Budget(time_budget_seconds)
    report = on_progress or (lambda _fraction, _message: None)
    scaler, est = _parts(model)
    set_scaler(scaler, stats)
    train_blocks = _Blocks(features, labels, rows, scaler, dates_per_block)
    params = est._process_params(stage="fit")
    metric = params.get("metric")
    metric = [metric] if isinstance(metric, (str, type(None))) else list(metric)
    params["metric"] = [m for m in metric if m is not None]
    train_set = lightgbm.Dataset([_sequence(train_blocks)], label=train_blocks.y, params=params)
    valid_sets = []
    has_valid = False
    if valid_rows is not None and len(valid_rows):
        valid_blocks = _Blocks(features, labels, valid_rows, scaler, dates_per_block)
        if len(valid_blocks):
            has_valid = True
            valid_sets.append(
                lightgbm.Dataset(
                    [_sequence(valid_blocks)], label=valid_blocks.y, params=params, reference=train_set
                )
            )
    if not has_valid and budget.seconds is not None:
        raise InvalidArgument(
            "lightgbm stops on a time budget only with a valid segment to early-stop on",
            field="model_cfg.time_budget_seconds",
        )
    every = max(1, report_every)

    def rounds(env: Any) -> None:
        done = env.iteration + 1
        if done % every == 0:
            report(done / env.end_iteration, f"boosting round {done}/{env.end_iteration}")
        if budget.spent():
            budget.stopped = True
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])

    evals_result: dict[str, Any] = {}
    callbacks: list[Any] = [rounds, lightgbm.record_evaluation(evals_result)]
    if has_valid:
        callbacks.insert(0, lightgbm.early_stopping(stopping_rounds, verbose=False))
    booster = lightgbm.train(
        params=params,
        train_set=train_set,
        num_boost_round=int(est.n_estimators),
        valid_sets=valid_sets,
        callbacks=callbacks,
    )
    est._Booster = booster
    est.n_features_in_ = stats.mean_x.size
    est._n_features = booster.num_feature()
    est._fitted_with_feature_names = False
    est._evals_result = evals_result
    est._best_iteration = booster.best_iteration
    est._best_score = booster.best_score
    est.fitted_ = True
    booster.free_dataset()
    info: dict[str, Any] = {"early_stopping": "valid" if has_valid else "none"}
    if has_valid:
        info["n_iter"] = int(est.best_iteration_ or est.n_estimators)
        report(1.0, f"boosting stopped after {info['n_iter']} rounds")
    else:
        report(1.0, "fitted LGBMRegressor")
    return info | budget.info()
