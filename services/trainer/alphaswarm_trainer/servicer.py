"""gRPC adapter of the trainer: proto -> `training.train` -> MLflow child run `train` -> proto."""

from __future__ import annotations

from typing import Any

from alphaswarm.trainer.v1 import trainer_service_pb2 as pb
from alphaswarm.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.grpc_server import ensure_caller_waiting
from alphaswarm_common.protoconv import config_from_proto, metricset_to_proto
from alphaswarm_common.tracking import Tracker
from alphaswarm_trainer.recording import log_training
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
        ensure_caller_waiting(context, "the trained model")

        experiment_id = request.experiment_id or self.tracker.ensure_experiment("alphaswarm")
        run_id = self.tracker.create_run(
            experiment_id,
            "train",
            parent_run_id=request.parent_run_id or None,
            tags={"alphaswarm.task_id": request.task_id, "alphaswarm.stage": "train"},
        )
        try:
            model_uri, sha = log_training(self.tracker, run_id, dataset_cfg, model_cfg, result)
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
