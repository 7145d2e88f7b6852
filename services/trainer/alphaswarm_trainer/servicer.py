"""gRPC adapter of the trainer: proto -> `training.train` -> MLflow child run -> proto."""

from __future__ import annotations

import json
from typing import Any

from alphaswarm.trainer.v1 import trainer_service_pb2 as pb
from alphaswarm.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.protoconv import config_from_proto, metricset_to_proto
from alphaswarm_common.tracking import (
    FEATURES_TAG,
    MODEL_SHA_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    PRODUCER_TAG,
    Tracker,
)
from alphaswarm_trainer.training import train, validate

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TrainerService"].full_name


class TrainerServicer(pb_grpc.TrainerServiceServicer):
    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def ValidateTraining(
        self, request: pb.ValidateTrainingRequest, context: Any
    ) -> pb.ValidateTrainingResponse:
        dataset_cfg = config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        model_cfg = config_from_proto(request.model_cfg, ModelConfig, prefix="model_cfg")
        panel = validate(dataset_cfg, model_cfg)
        return pb.ValidateTrainingResponse(
            dataset_fingerprint=panel.fingerprint, n_dates=len(panel.dates), n_symbols=len(panel.symbols)
        )

    def Train(self, request: pb.TrainRequest, context: Any) -> pb.TrainResponse:
        dataset_cfg = config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        model_cfg = config_from_proto(request.model_cfg, ModelConfig, prefix="model_cfg")
        result = train(dataset_cfg, model_cfg)  # every input error surfaces before a run exists

        experiment_id = request.experiment_id or self.tracker.ensure_experiment("alphaswarm")
        run_id = self.tracker.create_run(
            experiment_id,
            "train",
            parent_run_id=request.parent_run_id or None,
            tags={"alphaswarm.task_id": request.task_id, "alphaswarm.stage": "train"},
        )
        try:
            self.tracker.log_params(
                run_id,
                {
                    "model_type": model_cfg.type,
                    **{f"model.{k}": v for k, v in model_cfg.params.items()},
                    "seed": model_cfg.seed,
                    "dataset_source": dataset_cfg.source,
                    "dataset_fingerprint": result.dataset_fingerprint,
                    "label_horizon": dataset_cfg.label.horizon,
                    "execution_lag": dataset_cfg.label.execution_lag,
                    "label_transform": dataset_cfg.label.transform,
                    "embargo": dataset_cfg.embargo,
                    "segments": dataset_cfg.segments.model_dump_json(),
                    "n_features": len(result.feature_names),
                    "n_train_rows": result.n_train_rows,
                },
            )
            self.tracker.log_metrics(
                run_id,
                {
                    f"{segment}_{name}": value
                    for segment, ms in result.metrics.items()
                    for name, value in ms.values.items()
                },
            )
            self.tracker.log_dict(
                run_id,
                {
                    "feature_names": result.feature_names,
                    "features": [f.model_dump() for f in dataset_cfg.features],
                },
                "features.json",
            )
            model_uri, sha = self.tracker.log_sklearn_model(run_id, result.model, example_x=result.example)
            self.tracker.set_tags(
                run_id,
                {
                    MODEL_SHA_TAG: sha,
                    PRODUCER_TAG: PRODUCER,
                    MODEL_URI_TAG: model_uri,
                    FEATURES_TAG: json.dumps(result.feature_names),
                    "alphaswarm.dataset_fingerprint": result.dataset_fingerprint,
                },
            )
            self.tracker.end_run(run_id)
        except BaseException:
            self.tracker.end_run(run_id, failed=True)
            raise
        return pb.TrainResponse(
            model_uri=model_uri,
            run_id=run_id,
            dataset_fingerprint=result.dataset_fingerprint,
            feature_names=result.feature_names,
            metrics={
                seg: metricset_to_proto(ms.values, ms.reasons, ms.conventions)
                for seg, ms in result.metrics.items()
            },
            n_train_rows=result.n_train_rows,
            model_sha256=sha,
        )
