"""gRPC adapter of the trainer: proto -> `training.train` -> MLflow child run `train` -> proto."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from alphaswarm.trainer.v1 import trainer_service_pb2 as pb
from alphaswarm.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.errors import Timeout
from alphaswarm_common.grpc_server import ensure_caller_waiting
from alphaswarm_common.protoconv import config_from_proto, metricset_to_proto
from alphaswarm_common.tracking import Tracker
from alphaswarm_trainer.recording import log_training
from alphaswarm_trainer.training import ProgressCallback, train, validate

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
        return self._train(request, context, None)

    def TrainWithProgress(
        self, request: pb.TrainRequest, context: Any
    ) -> Iterator[pb.TrainWithProgressResponse]:
        """`Train` in a worker thread; its milestones are yielded as they come, then the result.

        When the caller goes away the stream stops, and the training aborts at its next milestone
        (nothing is logged)."""
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        gone = threading.Event()

        def on_progress(step: str, pct: float, message: str) -> None:
            if gone.is_set():
                raise Timeout("the caller is gone (cancelled or past its deadline); training aborted")
            items.put(("progress", pb.TrainProgress(step=step, pct=pct, message=message)))

        def work() -> None:
            try:
                items.put(("result", self._train(request, context, on_progress)))
            except BaseException as exc:  # handed to the stream, which raises it
                items.put(("error", exc))

        worker = threading.Thread(target=work, name="train-with-progress", daemon=True)
        worker.start()
        try:
            while True:
                try:
                    kind, item = items.get(timeout=0.5)
                except queue.Empty:
                    if not context.is_active():
                        return
                    continue
                if kind == "error":
                    raise item
                if not context.is_active():
                    return
                if kind == "result":
                    yield pb.TrainWithProgressResponse(result=item)
                    return
                yield pb.TrainWithProgressResponse(progress=item)
        finally:
            gone.set()

    def _train(
        self, request: pb.TrainRequest, context: Any, on_progress: ProgressCallback | None
    ) -> pb.TrainResponse:
        dataset_cfg = config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        model_cfg = config_from_proto(request.model_cfg, ModelConfig, prefix="model_cfg")
        # every input error surfaces before a run exists
        result = train(dataset_cfg, model_cfg, on_progress=on_progress)
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
            # A caller gone while the model was being logged: the run ends FAILED, not FINISHED.
            ensure_caller_waiting(context, "the trained model")
            self.tracker.end_run(run_id)
        except BaseException:
            self.tracker.end_run(run_id, failed=True)
            raise
        if on_progress is not None:
            on_progress("model_logged", 100.0, f"model logged as {model_uri}")
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
