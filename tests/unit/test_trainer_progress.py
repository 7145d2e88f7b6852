"""Training progress: `train(..., on_progress=)` reports its milestones in order with a non-decreasing
percentage, forests grown in warm-started chunks equal a one-shot fit, and the trainer's
TrainWithProgress stream yields the milestones then the result."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.errors import Timeout
from alphaswarm_trainer.models import FIT_CHUNKS, FOREST_DEFAULTS, build_model, fit_model
from alphaswarm_trainer.training import train
from tests.unit.test_trainer_models import DATA

pytestmark = [pytest.mark.unit]


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _xy(seed: int = 0, n: int = 2000, f: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f))
    y = 0.3 * x[:, 0] - 0.1 * x[:, 1] + rng.normal(size=n)
    return x, y


def _collect() -> tuple[list[tuple[str, float, str]], Any]:
    seen: list[tuple[str, float, str]] = []
    return seen, lambda step, pct, message: seen.append((step, pct, message))


def _steps(seen: list[tuple[str, float, str]]) -> list[str]:
    """The steps in order, consecutive repeats folded."""
    out: list[str] = []
    for step, _, _ in seen:
        if not out or out[-1] != step:
            out.append(step)
    return out


def test_milestones_in_order_with_non_decreasing_pct() -> None:
    seen, cb = _collect()
    cfg = ModelConfig(type="random_forest", params={"n_estimators": 20, "min_samples_leaf": 20}, seed=3)
    result = train(DatasetConfig.model_validate(DATA), cfg, plots=False, on_progress=cb)
    assert _steps(seen) == [
        "dataset_loaded",
        "features_built",
        "labels_built",
        "fitting",
        "fitted",
        "evaluated_segment",
        "evaluated_test",
    ]
    pcts = [pct for _, pct, _ in seen]
    assert pcts == sorted(pcts) and pcts[0] > 0 and pcts[-1] <= 100
    fitting = [m for s, _, m in seen if s == "fitting"]
    assert len(fitting) == 1 + FIT_CHUNKS  # "fitting ..." then one report per chunk of trees
    assert fitting[-1] == "grew 20/20 trees"
    assert [m.split(":")[0] for s, _, m in seen if s == "evaluated_segment"] == ["train", "valid", "test"]
    # the reported fit is the returned model: all 20 trees, no warm start left on
    est = result.model.named_steps["model"]
    assert len(est.estimators_) == 20 and est.n_estimators == 20 and est.warm_start is False


def test_rolling_and_models_without_inner_progress_report_before_and_after() -> None:
    seen, cb = _collect()
    cfg = ModelConfig(type="ridge", rolling={"step": 40})
    train(DatasetConfig.model_validate(DATA), cfg, evaluate=False, on_progress=cb)
    steps = _steps(seen)
    assert steps[:5] == ["dataset_loaded", "features_built", "labels_built", "fitting", "fitted"]
    assert steps[-2:] == ["rolling_refit", "rolling_done"] and "evaluated_test" not in steps
    refits = [m for s, _, m in seen if s == "rolling_refit"]
    assert len(refits) > 1 and refits[0].startswith("rolling refit 1 through ")
    assert [m for s, _, m in seen if s == "fitting"][-1] == "fitted Ridge"
    pcts = [pct for _, pct, _ in seen]
    assert pcts == sorted(pcts)


def test_a_failing_callback_aborts_the_training() -> None:
    def stop(step: str, pct: float, message: str) -> None:
        if step == "fitting":
            raise Timeout("the caller is gone")

    with pytest.raises(Timeout):
        train(DatasetConfig.model_validate(DATA), ModelConfig(type="ridge"), on_progress=stop)


@pytest.mark.parametrize(
    ("model_type", "cls", "n_estimators"),
    [("random_forest", RandomForestRegressor, 23), ("extra_trees", ExtraTreesRegressor, 30)],
)
def test_forest_grown_in_chunks_equals_a_one_shot_fit(model_type: str, cls: type, n_estimators: int) -> None:
    x, y = _xy(1)
    params = {"n_estimators": n_estimators, "min_samples_leaf": 10, "n_jobs": 2}
    cfg = ModelConfig(type=model_type, params=params, seed=11)
    reports: list[tuple[float, str]] = []
    pipe = build_model(cfg)
    fit_model(pipe, cfg, x, y, on_progress=lambda done, message: reports.append((done, message)))
    fractions = [done for done, _ in reports]
    assert (
        len(reports) == min(FIT_CHUNKS, n_estimators)
        and fractions == sorted(fractions)
        and fractions[-1] == 1.0
    )

    scaler = StandardScaler().fit(x)
    defaults = {**FOREST_DEFAULTS, "min_samples_leaf": 10, "n_jobs": 1}
    one_shot = cls(**{**defaults, "n_estimators": n_estimators, "random_state": 11})
    one_shot.fit(scaler.transform(x), y)
    x_new, _ = _xy(2, n=500)
    chunked = pipe.predict(x_new)
    assert np.array_equal(chunked, one_shot.predict(scaler.transform(x_new)))
    # the seed matters: another seed grows another forest (the comparison above can fail)
    other = cls(**{**defaults, "n_estimators": n_estimators, "random_state": 12})
    other.fit(scaler.transform(x), y)
    assert not np.array_equal(chunked, other.predict(scaler.transform(x_new)))


@pytest.mark.skipif(importlib.util.find_spec("lightgbm") is None, reason="lightgbm not installed")
def test_lightgbm_reports_every_tenth_of_its_rounds() -> None:
    x, y = _xy(0)
    xv, yv = _xy(1, n=600)
    cfg = ModelConfig(type="lightgbm", params={"n_estimators": 100, "learning_rate": 0.01})
    reports: list[tuple[float, str]] = []
    info = fit_model(build_model(cfg), cfg, x, y, xv, yv, on_progress=lambda d, m: reports.append((d, m)))
    assert len(reports) >= 2 and reports[0][1] == "boosting round 10/100"
    assert reports[-1] == (1.0, f"boosting stopped after {info['n_iter']} rounds")
    fractions = [d for d, _ in reports]
    assert fractions == sorted(fractions)


class _Context:
    """A servicer context whose caller goes away after `active` checks."""

    def __init__(self, active: int) -> None:
        self.active = active

    def is_active(self) -> bool:
        self.active -= 1
        return self.active >= 0

    def time_remaining(self) -> float:
        return 60.0


class _RecordingTracker:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.calls.append(name)
        raise AssertionError(f"nothing may be logged once the caller is gone (called {name})")


def test_stream_stops_when_the_caller_goes_and_nothing_is_logged() -> None:
    import threading

    from alphaswarm.trainer.v1 import trainer_service_pb2 as pb
    from alphaswarm_common.protoconv import config_to_proto
    from alphaswarm_trainer.servicer import TrainerServicer

    request = pb.TrainRequest(
        dataset_cfg=config_to_proto(DatasetConfig.model_validate(DATA)),
        model_cfg=config_to_proto(
            ModelConfig(type="random_forest", params={"n_estimators": 20, "min_samples_leaf": 20})
        ),
    )
    tracker = _RecordingTracker()
    items = list(TrainerServicer(tracker).TrainWithProgress(request, _Context(active=2)))  # type: ignore[arg-type]
    assert 1 <= len(items) <= 2 and all(i.WhichOneof("item") == "progress" for i in items)
    assert items[0].progress.step == "dataset_loaded"
    workers = [t for t in threading.enumerate() if t.name == "train-with-progress"]
    for worker in workers:  # the training aborts at its next milestone
        worker.join(timeout=60)
        assert not worker.is_alive()
    assert tracker.calls == []
