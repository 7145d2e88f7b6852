"""The trainer's gRPC servicer against a real MLflow store (SQLite in a temporary folder): the run
`train` has params, metrics, the model, evaluation artifacts and plots, and rolling metrics when asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alphaswarm.trainer.v1 import trainer_service_pb2 as pb
from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.modeling import predict_window
from alphaswarm_common.protoconv import config_to_proto, metricset_from_proto
from alphaswarm_common.tracking import MODEL_SHA_TAG, Tracker
from alphaswarm_trainer.servicer import TrainerServicer

pytestmark = pytest.mark.integration

DATASET: dict[str, Any] = {
    "source": "synthetic",
    "synthetic": {"n_dates": 700, "n_symbols": 30, "ic": 0.08, "seed": 3},
    "segments": {
        "train": ["2010-01-01", "2011-03-31"],
        "valid": ["2011-04-01", "2011-09-30"],
        "test": ["2011-10-01", "2012-09-30"],
    },
    "features": [{"name": "ret", "windows": [1, 5], "cs_rank": True}, {"name": "vol", "windows": [20]}],
    "label": {"horizon": 1, "execution_lag": 1},
}

PLOTS = {"cumulative_ic.png", "ic_histogram.png", "quantile_returns.png", "long_short_equity.png"}


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    folder = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))


def _train(tracker: Tracker, model: dict[str, Any]) -> tuple[pb.TrainResponse, Any]:
    dataset_cfg = DatasetConfig.model_validate(DATASET)
    model_cfg = ModelConfig.model_validate(model)
    request = pb.TrainRequest(dataset_cfg=config_to_proto(dataset_cfg), model_cfg=config_to_proto(model_cfg))
    response = TrainerServicer(tracker).Train(request, None)
    return response, tracker.get_run(response.run_id)


def _artifacts(tracker: Tracker, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in tracker.client.list_artifacts(run_id, path)}


def test_train_run_has_params_metrics_model_evaluation_and_plots(tracker: Tracker, tmp_path: Path) -> None:
    response, run = _train(tracker, {"type": "ridge", "params": {"alpha": 5.0}, "seed": 4})
    assert run.info.status == "FINISHED" and run.info.run_name == "train"
    params = run.data.params
    assert params["model_type"] == "ridge" and params["model.alpha"] == "5.0"
    assert (
        params["dataset_source"] == "synthetic"
        and params["dataset_fingerprint"] == response.dataset_fingerprint
    )
    assert json.loads(params["synthetic"])["ic"] == 0.08
    assert json.loads(params["missing"]) == {
        "min_history": 0,
        "ffill_limit": 0,
        "drop_incomplete_symbols": False,
    }
    metrics = run.data.metrics
    for name in (
        "train_ic_spearman",
        "valid_icir",
        "test_rmse",
        "test_ic_decay_1",
        "test_ic_decay_5",
        "test_ic_decay_10",
        "test_ic_decay_20",
        "test_top_minus_bottom",
        "test_ls_sharpe",
        "test_q10_mean_return",
    ):
        assert name in metrics, name
    values, _, conventions = metricset_from_proto(response.metrics["test"])
    assert metrics["test_ic_spearman"] == pytest.approx(values["ic_spearman"])
    assert conventions["ic_mode"] == "cross_sectional"
    assert set(response.metrics) == {"train", "valid", "test"}

    root = _artifacts(tracker, run.info.run_id)
    assert {"features.json", "evaluation.json", "feature_importance.json", "plots"} <= root
    assert _artifacts(tracker, run.info.run_id, "plots") == {f"plots/{p}" for p in PLOTS}
    local = Path(tracker.client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    evaluation = json.loads((local / "evaluation.json").read_text())
    assert evaluation["test"]["ic_decay"]["5"]["rank_ic"] == pytest.approx(metrics["test_ic_decay_5"])
    assert evaluation["metrics"]["test"]["values"]["ic_spearman"] == pytest.approx(values["ic_spearman"])
    importance = json.loads((local / "feature_importance.json").read_text())
    assert importance["method"] == "coef" and set(importance["importances"]) == set(response.feature_names)
    for name in PLOTS:
        assert (local / "plots" / name).read_bytes().startswith(b"\x89PNG")

    import mlflow.sklearn

    model = mlflow.sklearn.load_model(response.model_uri)
    assert run.data.tags[MODEL_SHA_TAG] == response.model_sha256
    window = predict_window(model, DatasetConfig.model_validate(DATASET), "2011-10-01", "2012-09-30")
    assert np.isfinite(window.values).any()


def test_rolling_metrics_are_logged_and_returned(tracker: Tracker) -> None:
    response, run = _train(
        tracker,
        {
            "type": "hist_gradient_boosting",
            "params": {"max_iter": 30},
            "rolling": {"step": 63, "window": 250},
        },
    )
    assert set(response.metrics) == {"train", "valid", "test", "rolling"}
    values, _, _ = metricset_from_proto(response.metrics["rolling"])
    assert run.data.metrics["rolling_ic_spearman"] == pytest.approx(values["ic_spearman"])
    params = run.data.params
    assert params["rolling.step"] == "63" and params["rolling.window"] == "250"
    assert int(params["rolling.n_fits"]) >= 5 and params["fit.early_stopping"] == "valid"
    assert (
        params["trained_through"] < params["rolling.last_train_end"]
    )  # the logged model is the fit on train
    assert "rolling.json" in _artifacts(tracker, run.info.run_id)
    importance = tracker.client.download_artifacts(run.info.run_id, "feature_importance.json")
    assert json.loads(Path(importance).read_text())["method"] == "permutation"
