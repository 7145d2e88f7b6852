"""The model factory: every type builds and fits, hyperparameter errors name the field, early stopping
on the valid segment matches scikit-learn's own, and the same config gives identical results."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_trainer.models import MODEL_TYPES, build_model, fit_model, refit_overrides
from alphaswarm_trainer.training import train

pytestmark = [
    pytest.mark.unit,
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads spin on a busy CI box; results do not depend on the count."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


BASE_TYPES = {
    "ridge",
    "lasso",
    "elastic_net",
    "linear",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "mlp",
}

# small capacities keep the fits fast; the factory's defaults are exercised by the benchmarks
FAST: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 12, "min_samples_leaf": 20, "n_jobs": 2},
    "extra_trees": {"n_estimators": 12, "min_samples_leaf": 20, "n_jobs": 2},
    "hist_gradient_boosting": {"max_iter": 40, "learning_rate": 0.1},
    "mlp": {"hidden_layer_sizes": [8], "max_iter": 30},
    "lightgbm": {"n_estimators": 40},
}

DATA = {
    "source": "synthetic",
    "synthetic": {"n_dates": 420, "n_symbols": 25, "ic": 0.1, "seed": 8},
    "segments": {
        "train": ["2010-01-01", "2010-09-30"],
        "valid": ["2010-10-01", "2010-12-31"],
        "test": ["2011-01-01", "2011-08-31"],
    },
    "features": [{"name": "ret", "windows": [1, 5]}, {"name": "vol", "windows": [10]}],
}


def _xy(seed: int = 0, n: int = 3000, f: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) * [1.0, 5.0, 0.1, 2.0][:f]
    y = 0.3 * x[:, 0] - 0.02 * x[:, 1] + rng.normal(size=n)
    return x, y


def test_factory_lists_every_type() -> None:
    assert set(MODEL_TYPES) - {"lightgbm"} == BASE_TYPES
    assert ("lightgbm" in MODEL_TYPES) == (importlib.util.find_spec("lightgbm") is not None)
    for name in MODEL_TYPES:
        pipe = build_model(ModelConfig(type=name, params=FAST.get(name, {})))
        assert [step for step, _ in pipe.steps] == ["scaler", "model"]


def test_bad_hyperparameters_name_the_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        build_model(ModelConfig(type="ridge", params={"alphaa": 1.0}))
    assert err.value.field == "model_cfg.params.alphaa"
    with pytest.raises(InvalidArgument) as err:
        build_model(ModelConfig(type="random_forest", params={"n_estimators": -3}))
    assert err.value.field == "model_cfg.params.n_estimators"
    with pytest.raises(InvalidArgument) as err:
        build_model(ModelConfig(type="xgboost"))
    assert err.value.field == "model_cfg.type"


def test_seed_reaches_seeded_estimators() -> None:
    pipe = build_model(ModelConfig(type="extra_trees", seed=42))
    assert pipe.named_steps["model"].random_state == 42
    pipe = build_model(ModelConfig(type="extra_trees", seed=42, params={"random_state": 3}))
    assert pipe.named_steps["model"].random_state == 3


def test_hgb_early_stops_on_the_valid_rows_like_sklearn() -> None:
    x, y = _xy(0, n=1500)
    xv, yv = _xy(1, n=500)
    cfg = ModelConfig(type="hist_gradient_boosting", params={"max_iter": 60, "learning_rate": 0.3}, seed=3)
    pipe = build_model(cfg)
    info = fit_model(pipe, cfg, x, y, xv, yv)
    scaler = StandardScaler().fit(x)
    ref = HistGradientBoostingRegressor(max_iter=60, learning_rate=0.3, early_stopping=True, random_state=3)
    ref.fit(scaler.transform(x), y, X_val=scaler.transform(xv), y_val=yv)
    assert info == {"early_stopping": "valid", "n_iter": ref.n_iter_}
    assert ref.n_iter_ < 60
    np.testing.assert_array_equal(pipe.predict(xv), ref.predict(scaler.transform(xv)))
    # other valid rows stop elsewhere: the valid segment drives the stopping
    other = build_model(cfg)
    xv2, yv2 = _xy(2, n=500)
    fit_model(other, cfg, x, y, xv2, -yv2)
    assert other.named_steps["model"].n_iter_ != pipe.named_steps["model"].n_iter_
    # without valid rows: no early stopping (no random split of the training rows)
    plain = build_model(cfg)
    assert fit_model(plain, cfg, x, y) == {"early_stopping": "none", "n_iter": 60}
    assert refit_overrides(pipe) == {"max_iter": ref.n_iter_, "early_stopping": False}
    off = ModelConfig(type="hist_gradient_boosting", params={"max_iter": 10, "early_stopping": False})
    assert fit_model(build_model(off), off, x, y, xv, yv)["early_stopping"] == "none"


def test_forests_fit_in_parallel_and_predict_in_a_fixed_order() -> None:
    x, y = _xy(4)
    cfg = ModelConfig(type="random_forest", params=FAST["random_forest"], seed=5)
    a, b = build_model(cfg), build_model(cfg)
    fit_model(a, cfg, x, y)
    fit_model(b, cfg.model_copy(update={"params": {**FAST["random_forest"], "n_jobs": 1}}), x, y)
    assert a.named_steps["model"].n_jobs == 1
    np.testing.assert_array_equal(a.predict(x), b.predict(x))  # the thread count does not change the fit


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_same_config_gives_identical_predictions_and_metrics(model_type: str) -> None:
    dataset = DatasetConfig.model_validate(DATA)
    cfg = ModelConfig(type=model_type, params=FAST.get(model_type, {}), seed=13)
    a = train(dataset, cfg, evaluate=False)
    b = train(dataset, cfg, evaluate=False)
    for seg in ("train", "valid", "test"):
        np.testing.assert_array_equal(a.predictions[seg], b.predictions[seg])
        assert a.metrics[seg].to_dict() == b.metrics[seg].to_dict()
    if model_type in ("random_forest", "extra_trees", "mlp"):  # (HGB's seed only draws its unused split)
        c = train(dataset, cfg.model_copy(update={"seed": 14}), evaluate=False)
        assert not np.array_equal(a.predictions["test"], c.predictions["test"])  # the seed is used


def test_lightgbm_when_installed() -> None:
    pytest.importorskip("lightgbm")
    x, y = _xy(0)
    xv, yv = _xy(1, n=800)
    cfg = ModelConfig(type="lightgbm", params={"n_estimators": 300})
    pipe = build_model(cfg)
    info = fit_model(pipe, cfg, x, y, xv, yv)
    assert info["early_stopping"] == "valid" and info["n_iter"] <= 300
