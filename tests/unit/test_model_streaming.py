"""Streaming fits: ridge, OLS, lasso and elastic net from sufficient statistics equal the in-memory sklearn fit (predictions
to 1e-8), whatever the block size; the result is a normal fitted pipeline (skops round trip); blocks of
dates read the same design rows as the whole segment; predictions in blocks equal one-shot predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import skops.io as sio

from alphaswarm_common.config import DatasetConfig, FeatureSpec, ModelConfig, SyntheticConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.features import compute_features
from alphaswarm_common.labels import make_labels
from alphaswarm_common.modeling import design_matrix, predict_rows
from alphaswarm_trainer import streaming
from alphaswarm_trainer.models import build_model
from alphaswarm_trainer.training import prepare, train

pytestmark = pytest.mark.unit

# correlated and exactly collinear columns (ret / mom, the candle family) make the linear fits ill-conditioned
SPECS = [
    FeatureSpec(name="ret", windows=[1, 5, 20], cs_rank=True),
    FeatureSpec(name="mom", windows=[5, 20], cs_rank=True),
    FeatureSpec(name="vol", windows=[10]),
    FeatureSpec(name="ma_ratio", windows=[5, 20]),
    FeatureSpec(name="rsv", windows=[10], cs_rank=True),
    FeatureSpec(name="kmid"),
    FeatureSpec(name="klen"),
    FeatureSpec(name="kup"),
    FeatureSpec(name="klow"),
    FeatureSpec(name="ksft"),
]
TOL = 1e-8


@pytest.fixture(scope="module")
def panel_data() -> tuple[np.ndarray, np.ndarray]:
    cfg = DatasetConfig(
        source="synthetic",
        synthetic=SyntheticConfig(n_dates=360, n_symbols=60, ic=0.08, seed=3),
        features=SPECS,
    )
    panel = load_panel(cfg)
    fs = compute_features(panel, SPECS)
    return fs.values, make_labels(panel.close, 1, 1)


CASES: list[tuple[str, dict[str, Any]]] = [
    ("ridge", {}),
    ("ridge", {"alpha": 250.0}),
    ("ridge", {"fit_intercept": False}),
    ("ridge", {"solver": "cholesky"}),
    ("linear", {}),
    ("linear", {"fit_intercept": False}),
]


@pytest.mark.parametrize(("kind", "params"), CASES)
@pytest.mark.parametrize("dates_per_block", [1, 13, 1000])
def test_streamed_linear_fit_predicts_like_the_in_memory_fit(
    panel_data: tuple[np.ndarray, np.ndarray], kind: str, params: dict[str, Any], dates_per_block: int
) -> None:
    features, labels = panel_data
    train_rows = np.arange(30, 250)
    x, y, _ = design_matrix(features[train_rows], labels[train_rows])
    reference = build_model(ModelConfig(type=kind, params=params)).fit(x, y)

    model = build_model(ModelConfig(type=kind, params=params))
    assert streaming.can_stream(model)
    stats, example = streaming.accumulate(features, labels, train_rows, dates_per_block=dates_per_block)
    assert stats.n == len(y)
    np.testing.assert_array_equal(example, x[:5])
    r = (
        streaming.qr_factor(features, labels, train_rows, stats, dates_per_block=dates_per_block)
        if streaming.needs_qr(model)
        else None
    )
    streaming.fit_linear(model, stats, r)

    expected = predict_rows(reference, features[250:])
    got = streaming.predict_rows(model, features, np.arange(250, features.shape[0]), dates_per_block=7)
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    ok = np.isfinite(expected)
    assert ok.sum() > 1000
    np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=TOL)
    # the scaler is the one Pipeline.fit computes
    ref_scaler, scaler = reference.steps[0][1], model.steps[0][1]
    np.testing.assert_allclose(scaler.mean_, ref_scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, ref_scaler.scale_, rtol=1e-10)
    assert scaler.n_samples_seen_ == ref_scaler.n_samples_seen_
    if kind == "linear":
        assert model.steps[1][1].rank_ == reference.steps[1][1].rank_


def test_models_that_cannot_stream_say_so() -> None:
    for kind, params in [
        ("ridge", {"solver": "svd"}),
        ("ridge", {"positive": True, "solver": "lbfgs"}),
        ("linear", {"positive": True}),
        ("lasso", {"warm_start": True}),
        ("random_forest", {}),
    ]:
        assert not streaming.can_stream(build_model(ModelConfig(type=kind, params=params))), (kind, params)


# coordinate descent stops at `tol`: both fits run at a tight tol so that each is the optimum to ~1e-12
CD_TOL = 1e-10
CD_CASES: list[tuple[str, dict[str, Any]]] = [
    ("lasso", {"alpha": 1e-4}),
    ("lasso", {"alpha": 3e-4}),  # most coefficients exactly 0
    ("lasso", {"alpha": 1e-4, "fit_intercept": False}),
    ("lasso", {"alpha": 1e-4, "selection": "random"}),
    ("lasso", {"alpha": 1e-4, "positive": True}),
    ("elastic_net", {"alpha": 1e-3}),
    ("elastic_net", {"alpha": 2e-3, "l1_ratio": 0.2}),
]


@pytest.mark.parametrize(("kind", "params"), CD_CASES)
@pytest.mark.parametrize("dates_per_block", [1, 1000])
def test_lasso_and_elastic_net_from_statistics_predict_like_the_in_memory_fit(
    panel_data: tuple[np.ndarray, np.ndarray], kind: str, params: dict[str, Any], dates_per_block: int
) -> None:
    """The coordinate descent runs on an (F+1)-row design with the rows' XᵀX, Xᵀy, yᵀy: the same
    objective, so the same minimiser (predictions to 1e-8), the same zero pattern and the same stop."""
    features, labels = panel_data
    train_rows = np.arange(30, 250)
    x, y, _ = design_matrix(features[train_rows], labels[train_rows])
    cfg = ModelConfig(type=kind, params=params | {"tol": CD_TOL, "max_iter": 100_000}, seed=5)
    reference = build_model(cfg).fit(x, y)

    model = build_model(cfg)
    assert streaming.can_stream(model) and not streaming.needs_qr(model)
    stats, _ = streaming.accumulate(features, labels, train_rows, dates_per_block=dates_per_block)
    streaming.fit_linear(model, stats)

    expected = predict_rows(reference, features[250:])
    got = streaming.predict_rows(model, features, np.arange(250, features.shape[0]))
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    ok = np.isfinite(expected)
    assert ok.sum() > 1000
    np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=TOL)
    ref_est, est = reference.steps[1][1], model.steps[1][1]
    np.testing.assert_allclose(est.coef_, ref_est.coef_, rtol=0, atol=1e-8)
    # the same zero coefficients (up to a coordinate at the edge of the threshold, below 1e-10)
    assert np.all(np.abs(est.coef_[ref_est.coef_ == 0]) < 1e-10)
    assert np.all(np.abs(ref_est.coef_[est.coef_ == 0]) < 1e-10)
    assert est.intercept_ == pytest.approx(ref_est.intercept_, abs=1e-12)
    assert est.alpha == params["alpha"] and est.fit_intercept == params.get("fit_intercept", True)
    assert 0 < (ref_est.coef_ != 0).sum() <= len(ref_est.coef_)


def test_lasso_at_its_default_tol_stays_close_to_the_in_memory_fit(
    panel_data: tuple[np.ndarray, np.ndarray],
) -> None:
    """At the default tol (1e-4) both fits stop on the same duality-gap threshold (ỹᵀỹ = yᵀy): the
    predictions differ by what the stopping leaves, far below the spread of the predictions."""
    features, labels = panel_data
    train_rows = np.arange(30, 250)
    x, y, _ = design_matrix(features[train_rows], labels[train_rows])
    cfg = ModelConfig(type="lasso", seed=5)
    reference = build_model(cfg).fit(x, y)
    model = build_model(cfg)
    stats, _ = streaming.accumulate(features, labels, train_rows)
    streaming.fit_linear(model, stats)
    expected = predict_rows(reference, features[250:])
    got = predict_rows(model, features[250:])
    ok = np.isfinite(expected)
    assert np.max(np.abs(got[ok] - expected[ok])) < 1e-3 * np.std(expected[ok])


def test_surrogate_design_keeps_the_sufficient_statistics() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 5))
    x[:, 4] = x[:, 0] - x[:, 1]  # exactly collinear: a zero eigenvalue, dropped
    y = x @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.normal(size=400)
    sx, sy = streaming.surrogate_design(x.T @ x, x.T @ y, float(y @ y))
    assert sx.shape == (5, 5)  # 4 independent directions + the residual row
    np.testing.assert_allclose(sx.T @ sx, x.T @ x, rtol=0, atol=1e-10 * np.abs(x.T @ x).max())
    np.testing.assert_allclose(sx.T @ sy, x.T @ y, rtol=0, atol=1e-10 * np.abs(x.T @ y).max())
    assert float(sy @ sy) == pytest.approx(float(y @ y), rel=1e-12)
    w = rng.normal(size=5)
    assert float(np.sum((sy - sx @ w) ** 2)) == pytest.approx(float(np.sum((y - x @ w) ** 2)), rel=1e-10)


def test_merged_statistics_equal_the_one_shot_statistics() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, (5000, 6)) + np.linspace(0, 50, 5000)[:, None]
    y = x @ rng.normal(size=6) + rng.normal(size=5000)
    whole = streaming.LinearStats.of(x, y)
    merged = streaming.LinearStats.empty(6)
    for lo in range(0, 5000, 333):
        merged.add(x[lo : lo + 333], y[lo : lo + 333])
    merged.add(x[:0], y[:0])
    assert merged.n == whole.n
    np.testing.assert_allclose(merged.mean_x, whole.mean_x, rtol=1e-13)
    np.testing.assert_allclose(merged.m_xx, whole.m_xx, rtol=1e-11)
    np.testing.assert_allclose(merged.m_xy, whole.m_xy, rtol=1e-11)
    assert merged.m_yy == pytest.approx(whole.m_yy, rel=1e-11)


def test_gathered_design_equals_the_whole_segment_design(panel_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, labels = panel_data
    rows = np.concatenate([np.arange(40, 120), np.arange(130, 200)])  # a purge gap inside
    x, y, _ = design_matrix(features[rows], labels[rows])
    for step in (1, 9, 500):
        gx, gy = streaming.gather(features, labels, rows, dates_per_block=step)
        np.testing.assert_array_equal(gx, x)
        np.testing.assert_array_equal(gy, y)
        pred = streaming.predict_rows(_Sum(), features, rows, dates_per_block=step)
        np.testing.assert_array_equal(pred, predict_rows(_Sum(), features[rows]))


class _Sum:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x.sum(axis=1))


DATA = {
    "source": "synthetic",
    "synthetic": {"n_dates": 420, "n_symbols": 40, "ic": 0.1, "seed": 8},
    "segments": {
        "train": ["2010-01-01", "2010-09-30"],
        "valid": ["2010-10-01", "2010-12-31"],
        "test": ["2011-01-01", "2011-08-31"],
    },
    "features": [f.model_dump() for f in SPECS],
}


@pytest.mark.parametrize("kind", ["ridge", "linear", "lasso", "elastic_net"])
def test_training_a_linear_model_streams_and_matches_the_in_memory_fit(kind: str) -> None:
    cfg = DatasetConfig.model_validate(DATA)
    tight = {"tol": CD_TOL, "max_iter": 100_000} if kind in ("lasso", "elastic_net") else {}
    model_cfg = ModelConfig(type=kind, params=tight)
    result = train(cfg, model_cfg, evaluate=False, plots=False)
    prep = prepare(cfg)
    train_rows = prep.rows["train"]
    x, y, _ = design_matrix(prep.features[train_rows], prep.labels[train_rows])
    reference = build_model(model_cfg).fit(x, y)
    assert result.n_train_rows == len(y)
    np.testing.assert_array_equal(result.example, x[:5])
    for name, rows in prep.rows.items():
        expected = predict_rows(reference, prep.features[rows])
        got = result.predictions[name]
        assert np.array_equal(np.isnan(expected), np.isnan(got)), name
        ok = np.isfinite(expected)
        np.testing.assert_allclose(got[ok], expected[ok], rtol=0, atol=TOL, err_msg=name)
    # a normal fitted pipeline: the skops artifact round-trips and predicts the same
    blob = sio.dumps(result.model)
    loaded = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    test_rows = prep.rows["test"]
    np.testing.assert_array_equal(
        predict_rows(loaded, prep.features[test_rows]), predict_rows(result.model, prep.features[test_rows])
    )


def test_lightgbm_from_a_chunked_dataset_equals_the_in_memory_fit() -> None:
    """The Dataset is built from blocks of dates (`lightgbm.Sequence`); LightGBM samples the same bin
    boundaries and pushes the same rows, so early stopping and predictions are those of `fit(X, y)`."""
    pytest.importorskip("lightgbm")
    from alphaswarm_trainer.models import fit_model

    cfg = DatasetConfig.model_validate(DATA)
    model_cfg = ModelConfig(type="lightgbm", params={"n_estimators": 60, "learning_rate": 0.1}, seed=3)
    result = train(cfg, model_cfg, evaluate=True, plots=False)
    prep = prepare(cfg)
    x, y, _ = design_matrix(prep.features[prep.rows["train"]], prep.labels[prep.rows["train"]])
    xv, yv, _ = design_matrix(prep.features[prep.rows["valid"]], prep.labels[prep.rows["valid"]])
    reference = build_model(model_cfg)
    info = fit_model(reference, model_cfg, x, y, xv, yv)
    assert result.params["fit.early_stopping"] == "valid"
    assert result.params["fit.n_iter"] == info["n_iter"]
    assert result.importance["method"] == "impurity"
    test_rows = prep.rows["test"]
    expected = predict_rows(reference, prep.features[test_rows])
    np.testing.assert_allclose(result.predictions["test"], expected, rtol=0, atol=1e-12)
    blob = sio.dumps(result.model)
    loaded = sio.loads(blob, trusted=sio.get_untrusted_types(data=blob))
    np.testing.assert_array_equal(predict_rows(loaded, prep.features[test_rows]), result.predictions["test"])


def test_float32_features_leave_the_ml_metrics_within_tolerance() -> None:
    """Features are stored as float32 (7 significant digits); models fit in float64. Against float64
    features, ridge's test IC, Rank IC and ICIR move by < 1e-5 and RMSE by < 1e-8 (measured at 1260 x
    300 with the benchmark's 51 columns: 2e-7, 2e-7, 3e-6, 2e-10; docs/models.md)."""
    from alphaswarm_common.metrics import ml_metrics

    cfg = DatasetConfig(
        source="synthetic",
        synthetic=SyntheticConfig(n_dates=500, n_symbols=80, ic=0.08, seed=4),
        features=SPECS,
    )
    panel = load_panel(cfg)
    labels = make_labels(panel.close, 1, 1)
    metrics = {}
    for dtype in (np.float32, np.float64):
        fs = compute_features(panel, SPECS, dtype=dtype)
        x, y, _ = design_matrix(fs.values[30:350], labels[30:350])
        model = build_model(ModelConfig(type="ridge")).fit(x, y)
        metrics[dtype] = ml_metrics(predict_rows(model, fs.values[360:]), labels[360:]).values
    single, double = metrics[np.float32], metrics[np.float64]
    for key in ("ic_pearson", "ic_spearman", "icir"):
        assert abs(single[key] - double[key]) < 1e-5, key
    assert abs(single["rmse"] - double["rmse"]) < 1e-8
    assert abs(single["ic_spearman"]) > 0.02  # a real signal, not two zeros


def test_streamed_lightgbm_stops_on_its_time_budget() -> None:
    pytest.importorskip("lightgbm")
    cfg = DatasetConfig.model_validate(DATA)
    params = {"n_estimators": 1_000_000, "learning_rate": 0.0001, "num_leaves": 63}
    model_cfg = ModelConfig(type="lightgbm", params=params, time_budget_seconds=1.0)
    result = train(cfg, model_cfg, evaluate=False, plots=False)
    assert result.params["fit.stopped_by"] == "time_budget"
    assert 0 < result.params["fit.n_iter"] < 1_000_000
