"""Process entry of the trainer service: `python -m alphaswarm_trainer.server`."""

from __future__ import annotations

from alphaswarm.trainer.v1 import trainer_service_pb2_grpc as pb_grpc
from alphaswarm_common.grpc_server import ServiceRegistration
from alphaswarm_common.service import run_service
from alphaswarm_common.settings import Settings
from alphaswarm_common.tracking import Tracker
from alphaswarm_trainer.servicer import SERVICE_NAME, TrainerServicer


def build(settings: Settings, *, tracker: Tracker | None = None) -> list[ServiceRegistration]:
    tracker = tracker or Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
    return [
        ServiceRegistration(
            pb_grpc.add_TrainerServiceServicer_to_server, TrainerServicer(tracker), SERVICE_NAME
        )
    ]


def main() -> None:
    run_service("trainer", build)


if __name__ == "__main__":
    main()
