"""`model_cfg.time_budget_seconds`: models that grow step by step stop once their fit has run
that long, keep what they grew, and say so; the others are refused with the field named; without
a budget nothing changes."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from alphaswarm_common.config import ModelConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.protoconv import config_from_proto, config_to_proto
from alphaswarm_trainer.models import build_model, fit_model

pytestmark = [pytest.mark.unit]


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _data(n: int = 6000, f: int = 8, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = x @ rng.normal(size=f) * 0.1 + rng.normal(size=n)
    return x, y


def _fit(cfg: ModelConfig, x: np.ndarray, y: np.ndarray, **kw: Any) -> tuple[Any, dict[str, Any], float]:
    model = build_model(cfg)
    t0 = time.monotonic()
    info = fit_model(model, cfg, x, y, **kw)
    return model, info, time.monotonic() - t0


def test_boosting_stops_on_its_budget_and_keeps_the_rounds_it_grew() -> None:
    x, y = _data()
    params = {"max_iter": 1_000_000, "early_stopping": False, "learning_rate": 0.01}
    cfg = ModelConfig(type="hist_gradient_boosting", params=params, time_budget_seconds=1.5)
    reports: list[float] = []
    model, info, took = _fit(cfg, x, y, on_progress=lambda done, _m: reports.append(done))
    est = model.named_steps["model"]
    assert info["stopped_by"] == "time_budget"
    assert 0 < info["n_iter"] == est.n_iter_ < 1_000_000
    assert took >= 1.5
    assert est.get_params()["max_iter"] == 1_000_000 and est.get_params()["warm_start"] is False
    assert len(reports) >= 2 and reports == sorted(reports)  # progress moves within the fit
    assert np.isfinite(model.predict(x[:10])).all()


def test_boosting_that_ends_within_its_budget_equals_the_one_shot_fit() -> None:
    x, y = _data(n=3000)
    params = {"max_iter": 60, "early_stopping": False, "learning_rate": 0.1}
    plain, plain_info, _ = _fit(ModelConfig(type="hist_gradient_boosting", params=params), x, y)
    budgeted, info, _ = _fit(
        ModelConfig(type="hist_gradient_boosting", params=params, time_budget_seconds=600), x, y
    )
    assert "stopped_by" not in info and info["n_iter"] == plain_info["n_iter"] == 60
    np.testing.assert_allclose(budgeted.predict(x), plain.predict(x), rtol=0, atol=1e-12)


def test_boosting_early_stopping_on_the_valid_rows_still_ends_the_fit() -> None:
    x, y = _data(n=4000)
    xv, yv = _data(n=1000, seed=4)
    params = {"max_iter": 100_000, "learning_rate": 0.3, "n_iter_no_change": 3}
    cfg = ModelConfig(type="hist_gradient_boosting", params=params, time_budget_seconds=120)
    _, info, took = _fit(cfg, x, y, x_valid=xv, y_valid=yv)
    assert info["early_stopping"] == "valid" and "stopped_by" not in info
    assert info["n_iter"] < 100_000 and took < 120


def test_forest_stops_after_the_tenth_that_spends_its_budget() -> None:
    x, y = _data(n=4000)
    params = {"n_estimators": 5000, "min_samples_leaf": 20, "n_jobs": 1}
    cfg = ModelConfig(type="random_forest", params=params, time_budget_seconds=0.5)
    model, info, _ = _fit(cfg, x, y)
    est = model.named_steps["model"]
    assert info["stopped_by"] == "time_budget"
    assert info["n_estimators"] == len(est.estimators_) == est.n_estimators < 5000
    assert len(est.estimators_) % 500 == 0  # whole tenths


@pytest.mark.skipif(importlib.util.find_spec("lightgbm") is None, reason="lightgbm not installed")
def test_lightgbm_stops_on_its_budget() -> None:
    # a signal strong enough that the valid loss improves at every one of the rounds a second allows
    rng = np.random.default_rng(5)
    beta = rng.normal(size=8)
    x, xv = rng.normal(size=(6000, 8)), rng.normal(size=(1000, 8))
    y, yv = x @ beta + 0.01 * rng.normal(size=6000), xv @ beta + 0.01 * rng.normal(size=1000)
    params = {"n_estimators": 1_000_000, "learning_rate": 0.001, "num_leaves": 63}
    cfg = ModelConfig(type="lightgbm", params=params, time_budget_seconds=1.0)
    _, info, _ = _fit(cfg, x, y, x_valid=xv, y_valid=yv)
    assert info["stopped_by"] == "time_budget" and 0 < info["n_iter"] < 1_000_000


def test_mlp_trains_epochs_until_its_budget() -> None:
    x, y = _data(n=3000)
    params = {
        "hidden_layer_sizes": [16],
        "max_iter": 10_000_000,
        "early_stopping": False,
        "tol": 0.0,
        "n_iter_no_change": 10_000_000,
    }
    cfg = ModelConfig(type="mlp", params=params, time_budget_seconds=1.5)
    reports: list[float] = []
    model, info, took = _fit(cfg, x, y, on_progress=lambda done, _m: reports.append(done))
    est = model.named_steps["model"]
    assert info["stopped_by"] == "time_budget" and 0 < info["n_iter"] < 10_000_000
    assert est.t_ == info["n_iter"] * 3000  # samples seen: every epoch of every chunk
    assert took >= 1.5 and len(reports) >= 2
    assert est.get_params()["max_iter"] == 10_000_000 and est.get_params()["warm_start"] is False


def test_mlp_that_converges_within_its_budget_stops_on_its_own_rule() -> None:
    x, y = _data(n=2000)
    params = {"hidden_layer_sizes": [8], "max_iter": 100_000, "early_stopping": True, "n_iter_no_change": 3}
    _, info, took = _fit(ModelConfig(type="mlp", params=params, time_budget_seconds=300), x, y)
    assert "stopped_by" not in info and info["n_iter"] < 100_000 and took < 300


@pytest.mark.parametrize("model_type", ["ridge", "lasso", "linear"])
def test_models_fitted_in_one_step_refuse_a_budget_naming_the_field(model_type: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        build_model(ModelConfig(type=model_type, time_budget_seconds=10))
    assert err.value.field == "model_cfg.time_budget_seconds"


def test_budget_must_be_positive_and_travels_in_the_proto() -> None:
    with pytest.raises(ValueError, match="time_budget_seconds"):
        ModelConfig(type="random_forest", time_budget_seconds=0)
    cfg = ModelConfig(type="random_forest", time_budget_seconds=42.5)
    assert config_from_proto(config_to_proto(cfg), ModelConfig) == cfg
