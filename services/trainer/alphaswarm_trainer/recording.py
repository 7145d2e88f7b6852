"""What the trainer writes on its MLflow run `train` (the adapter side of `training.train`).

On the run:

- params: the model type and hyperparameters, the seed, the dataset (source,
  fingerprint, label timing, segments, missing-data policy, generator
  settings for synthetic data), the rolling settings, what the fit found
  (`fit.early_stopping`, `fit.n_iter`), `trained_through`;
- metrics: `<segment>_<metric>` for every segment (`train`, `valid`, `test`
  and `rolling` when configured) and the test evaluation as
  `test_<name>` (`test_ic_decay_5`, `test_top_minus_bottom`,
  `test_q01_mean_return`, `test_ls_sharpe`, ...); undefined values are not
  logged (the response carries them as nulls with reasons);
- artifacts: `features.json`, `evaluation.json` (the evaluation summary and
  the metric sets with their conventions), `feature_importance.json`,
  `plots/*.png`, `rolling.json` (the refit blocks) and the model (`model/`,
  serialised with skops, `alphaswarm_common.model_artifacts`).

The model's sha256 is returned to the caller (`TrainResponse.model_sha256`),
which passes it to the registry; the registry checks the artifact against it
before signing the version. The run's tags carry it too, as lineage only.

The tracker (`alphaswarm_common.tracking.Tracker`) has no bytes-artifact
call, so PNGs are written to a temporary folder and uploaded with the MLflow
client's `log_artifacts`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.evaluation import json_safe
from alphaswarm_common.tracking import (
    FEATURES_TAG,
    MODEL_SHA_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    PRODUCER_TAG,
    Tracker,
)
from alphaswarm_trainer.training import TrainingResult

__all__ = ["log_training", "run_metrics", "run_params"]


def run_params(dataset_cfg: DatasetConfig, model_cfg: ModelConfig, result: TrainingResult) -> dict[str, Any]:
    """The params of the run `train` (strings once logged)."""
    params: dict[str, Any] = {
        "model_type": model_cfg.type,
        **{f"model.{k}": v for k, v in model_cfg.params.items()},
        "seed": model_cfg.seed,
        "dataset_source": dataset_cfg.source,
        "dataset_fingerprint": result.dataset_fingerprint,
        "label_horizon": dataset_cfg.label.horizon,
        "execution_lag": dataset_cfg.label.execution_lag,
        "label_transform": dataset_cfg.label.transform,
        "embargo": dataset_cfg.embargo,
        "segments": dataset_cfg.segments.model_dump_json() if dataset_cfg.segments else "null",
        "missing": dataset_cfg.missing.model_dump_json(),
        "n_features": len(result.feature_names),
        "n_train_rows": result.n_train_rows,
        "trained_through": str(result.trained_through),
        **result.params,
    }
    if dataset_cfg.synthetic is not None or dataset_cfg.source.strip().lower() == "synthetic":
        params["synthetic"] = (
            dataset_cfg.synthetic.model_dump_json() if dataset_cfg.synthetic is not None else "defaults"
        )
    if model_cfg.rolling is not None:
        params["rolling.step"] = model_cfg.rolling.step
        params["rolling.window"] = (
            model_cfg.rolling.window if model_cfg.rolling.window is not None else "expanding"
        )
    return params


def run_metrics(result: TrainingResult) -> dict[str, float | None]:
    """`<segment>_<metric>` for every metric set and `test_<name>` for the evaluation."""
    out: dict[str, float | None] = {
        f"{segment}_{name}": value
        for segment, ms in result.metrics.items()
        for name, value in ms.values.items()
    }
    if result.evaluation is not None:
        out.update({f"test_{k}": v for k, v in result.evaluation.metrics().items()})
    return out


def log_training(
    tracker: Tracker, run_id: str, dataset_cfg: DatasetConfig, model_cfg: ModelConfig, result: TrainingResult
) -> tuple[str, str]:
    """Log params, metrics, artifacts and the model on `run_id`; return `(model_uri, model sha256)`."""
    tracker.log_params(run_id, run_params(dataset_cfg, model_cfg, result))
    tracker.log_metrics(run_id, run_metrics(result))
    tracker.log_dict(
        run_id,
        {"feature_names": result.feature_names, "features": [f.model_dump() for f in dataset_cfg.features]},
        "features.json",
    )
    if result.evaluation is not None:
        tracker.log_dict(
            run_id,
            json_safe(
                {
                    "test": result.evaluation.to_dict(),
                    "metrics": {seg: ms.to_dict() for seg, ms in result.metrics.items()},
                }
            ),
            "evaluation.json",
        )
    if result.importance:
        tracker.log_dict(run_id, json_safe(result.importance), "feature_importance.json")
    if result.rolling is not None:
        tracker.log_dict(
            run_id,
            {
                "step": model_cfg.rolling.step if model_cfg.rolling else None,
                "window": model_cfg.rolling.window if model_cfg.rolling else None,
                "blocks": [b.to_dict() for b in result.rolling.blocks],
            },
            "rolling.json",
        )
    # the model first: the plots may still be drawn meanwhile (`TrainingResult.pending_plots`)
    model_uri, sha = tracker.log_sklearn_model(run_id, result.model, example_x=result.example)
    if plots := result.drawn_plots():
        with tempfile.TemporaryDirectory(prefix="alphaswarm-plots-") as tmp:
            for name, png in plots.items():
                (Path(tmp) / name).write_bytes(png)
            tracker.client.log_artifacts(run_id, tmp, artifact_path="plots")
    tracker.set_tags(
        run_id,
        {
            MODEL_SHA_TAG: sha,
            PRODUCER_TAG: PRODUCER,
            MODEL_URI_TAG: model_uri,
            FEATURES_TAG: json.dumps(result.feature_names),
            "alphaswarm.dataset_fingerprint": result.dataset_fingerprint,
            "alphaswarm.trained_through": str(result.trained_through),
        },
    )
    return model_uri, sha
