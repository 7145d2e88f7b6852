"""Evaluation: IC decay against scipy, quantile returns against a pandas/alphalens reference, the
long-short curve against empyrical, feature importances against scikit-learn, and the plots."""

from __future__ import annotations

import json

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.inspection import permutation_importance
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from alphaswarm_common.evaluation import (
    evaluate_predictions,
    feature_importance,
    forward_returns,
    ic_decay,
    long_short_curve,
    qcut_buckets,
    quantile_returns,
    render_plots,
)
from alphaswarm_common.labels import make_labels

pytestmark = pytest.mark.unit


def _market(t: int = 160, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Closes with gaps and predictions that carry some information about the next returns."""
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0, 0.02, (t, n))
    close = 50 * np.exp(np.cumsum(r, axis=0))
    close[rng.random((t, n)) < 0.05] = np.nan
    close[:20, 3] = np.nan
    pred = np.full((t, n), np.nan)
    pred[:-2] = 0.3 * r[2:] / 0.02 + rng.normal(size=(t - 2, n))  # predicts close[t+2]/close[t+1]
    pred[rng.random((t, n)) < 0.05] = np.nan
    return close, pred


def test_forward_returns_follow_the_label_timing() -> None:
    close, _ = _market()
    for lag, h in [(1, 1), (0, 5), (2, 10)]:
        np.testing.assert_array_equal(forward_returns(close, h, lag), make_labels(close, h, lag))
        t = 50
        with np.errstate(invalid="ignore"):
            ref = close[t + lag + h] / close[t + lag] - 1
        np.testing.assert_allclose(forward_returns(close, h, lag)[t], ref, equal_nan=True)


def test_ic_decay_against_scipy() -> None:
    close, pred = _market()
    rows = np.arange(30, 130)
    decay = ic_decay(pred[rows], close, rows=rows, execution_lag=1, horizons=(1, 5, 10, 20))
    for h in (1, 5, 20):
        fwd = close[rows + 1 + h] / close[rows + 1] - 1
        ics = []
        for i in range(rows.size):
            ok = np.isfinite(pred[rows[i]]) & np.isfinite(fwd[i])
            if ok.sum() >= 2:
                ics.append(stats.spearmanr(pred[rows[i], ok], fwd[i, ok])[0])
        assert decay[h][0] == pytest.approx(np.mean(ics), abs=1e-12)
        assert decay[h][1] == len(ics)
    one, five = decay[1][0], decay[5][0]
    assert one is not None and five is not None
    assert one > five > 0  # information about one bar decays with the horizon


def _alphalens_reference(pred: np.ndarray, fwd: np.ndarray, q: int, demeaned: bool) -> pd.DataFrame:
    """alphalens' steps with pandas: clean rows, per-date qcut, demean by date, pooled bucket means."""
    t, n = pred.shape
    frame = pd.DataFrame(
        {"date": np.repeat(np.arange(t), n), "factor": pred.ravel(), "fwd": fwd.ravel()}
    ).dropna()

    def quantize(x: pd.Series) -> pd.Series:
        try:
            return pd.qcut(x, q, labels=False) + 1
        except ValueError:  # non-unique edges: alphalens drops the date
            return pd.Series(np.nan, index=x.index)

    frame["quantile"] = frame.groupby("date")["factor"].transform(quantize)
    if demeaned:
        frame["fwd"] = frame["fwd"] - frame.groupby("date")["fwd"].transform("mean")
    frame = frame.dropna(subset=["quantile"])
    return frame.groupby("quantile")["fwd"].agg(["mean", "count"]).reindex(range(1, q + 1))


@pytest.mark.parametrize("demeaned", [True, False])
@pytest.mark.parametrize("q", [10, 5, 3])
def test_quantile_returns_match_the_pandas_alphalens_reference(q: int, demeaned: bool) -> None:
    close, pred = _market(seed=1)
    pred[7, :] = np.round(pred[7, :])  # heavy ties: qcut raises on this date
    pred[8, :] = 1.0
    fwd = forward_returns(close, 1, 1)
    got = quantile_returns(pred, fwd, quantiles=q, demeaned=demeaned)
    ref = _alphalens_reference(pred, fwd, q, demeaned)
    np.testing.assert_allclose(got.mean, ref["mean"].to_numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(got.count, ref["count"].to_numpy())
    assert got.top_minus_bottom == pytest.approx(ref["mean"][q] - ref["mean"][1], rel=1e-12)
    assert got.n_dates_skipped == 2


def test_qcut_buckets_equal_pandas_per_row() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 31))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[5] = np.round(x[5] * 2)
    x[9, 4:] = np.nan
    buckets, skipped = qcut_buckets(x, 10)
    for r in range(x.shape[0]):
        row = pd.Series(x[r]).dropna()
        try:
            ref = pd.qcut(row, 10, labels=False) + 1
        except ValueError:
            assert skipped[r] and np.isnan(buckets[r]).all()
            continue
        assert not skipped[r]
        np.testing.assert_array_equal(buckets[r, row.index], ref.to_numpy(dtype=float))
        assert np.isnan(np.delete(buckets[r], row.index)).all()


def test_long_short_curve_against_numpy_and_empyrical() -> None:
    close, pred = _market(seed=3)
    fwd = forward_returns(close, 1, 1)
    dates = np.arange(close.shape[0])
    curve = long_short_curve(pred, fwd, dates, quantiles=5)
    buckets, _ = qcut_buckets(pred, 5, mask=np.isfinite(pred) & np.isfinite(fwd))
    expected = np.zeros(close.shape[0])
    for t in range(close.shape[0]):
        top, bottom = buckets[t] == 5, buckets[t] == 1
        if top.any() and bottom.any():
            expected[t] = 0.5 * (fwd[t, top].mean() - fwd[t, bottom].mean())
    np.testing.assert_allclose(curve.returns, expected, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(curve.equity, np.cumprod(1 + expected), rtol=1e-12)
    assert curve.metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(expected), rel=1e-9)
    assert curve.metrics["max_drawdown"] == pytest.approx(empyrical.max_drawdown(expected), rel=1e-9)
    assert curve.drawdown.min() == pytest.approx(empyrical.max_drawdown(expected), rel=1e-9)
    sharpe = curve.metrics["sharpe"]
    assert sharpe is not None and sharpe > 1  # the predictions know the return


def _regression(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 3.0, 0.5, 2.0]
    y = 2.0 * x[:, 0] + 0.5 * x[:, 3] + rng.normal(size=n) * 0.5
    return x, y


def test_feature_importance_linear_trees_and_permutation() -> None:
    x, y = _regression()
    names = ["a", "b", "c", "d"]
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(x, y)
    imp = feature_importance(ridge, names)
    assert imp["method"] == "coef"
    coef = ridge.steps[-1][1].coef_
    assert imp["importances"] == {n: pytest.approx(float(c)) for n, c in zip(names, coef, strict=True)}
    assert list(imp["importances"]) == ["a", "d", "b", "c"]  # by |value|: 2 * 1.0 > 0.5 * 2.0 > noise

    trees = make_pipeline(StandardScaler(), ExtraTreesRegressor(n_estimators=20, random_state=0)).fit(x, y)
    imp = feature_importance(trees, names)
    assert imp["method"] == "impurity"
    np.testing.assert_allclose(
        [imp["importances"][n] for n in names], trees.steps[-1][1].feature_importances_, rtol=1e-12
    )

    knn = make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=15)).fit(x, y)
    xv, yv = _regression(1, n=1500)
    imp = feature_importance(knn, names, xv, yv, seed=4, n_repeats=5, max_rows=1000)
    assert imp["method"] == "permutation" and imp["conventions"]["n_rows"] == 1000
    assert imp == feature_importance(knn, names, xv, yv, seed=4, n_repeats=5, max_rows=1000)  # seeded
    ref = permutation_importance(
        knn, xv, yv, scoring="neg_mean_squared_error", n_repeats=20, random_state=0
    ).importances_mean
    assert list(imp["importances"])[:2] == [names[i] for i in np.argsort(-ref)[:2]]
    for i, name in enumerate(names):  # same estimator of the MSE increase, different shuffles
        assert imp["importances"][name] == pytest.approx(ref[i], rel=0.25, abs=0.05)
    assert feature_importance(knn, names)["method"] == "none"


def test_report_metrics_json_and_plots() -> None:
    close, pred = _market(seed=4)
    rows = np.arange(20, 140)
    dates = np.busday_offset(np.datetime64("2020-01-01"), np.arange(close.shape[0])).astype("datetime64[D]")
    report = evaluate_predictions(pred[rows], close, rows=rows, dates=dates, execution_lag=1, horizon=1)
    metrics = report.metrics()
    assert {"ic_decay_1", "ic_decay_5", "ic_decay_10", "ic_decay_20", "top_minus_bottom", "ls_sharpe"} <= set(
        metrics
    )
    assert metrics["ic_decay_1"] == report.ic_decay[1][0]
    spread = metrics["top_minus_bottom"]
    assert spread is not None and spread > 0
    doc = report.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["first_date"] == str(dates[20]) and doc["rank_ic"]["n_dates"] > 100
    plots = render_plots(report, title="unit")
    assert set(plots) == {
        "cumulative_ic.png",
        "ic_histogram.png",
        "quantile_returns.png",
        "long_short_equity.png",
    }
    for png in plots.values():
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    # The return charts say on their face that they are gross of costs (titles in the PNG's Title chunk).
    import io

    from PIL import Image

    for name in ("quantile_returns.png", "long_short_equity.png"):
        title = Image.open(io.BytesIO(plots[name])).text["Title"]
        assert title.startswith("unit: ") and "gross of costs" in title, (name, title)
