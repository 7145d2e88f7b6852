"""Process entry of the registry service: `python -m alphaswarm_registry.server`."""

from __future__ import annotations

from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import ServiceRegistration
from alphaswarm_common.service import run_service
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials
from alphaswarm_common.tracking import Tracker
from alphaswarm_registry.servicer import SERVICE_NAME, RegistryServicer
from alphaswarm_registry.trust import load_signing_key


def build(settings: Settings, *, tracker: Tracker | None = None) -> list[ServiceRegistration]:
    if not settings.persistence_addr:
        raise InvalidArgument("ALPHASWARM_PERSISTENCE_ADDR is required", field="persistence_addr")
    tracker = tracker or Tracker(settings.tracking_uri(), artifact_root=settings.artifact_root())
    persistence = ppb_grpc.PersistenceServiceStub(
        channel(
            settings.persistence_addr,
            tuning=settings.grpc_tuning(),
            credentials=client_credentials(settings),
            service="persistence",
        )
    )
    servicer = RegistryServicer(
        tracker,
        persistence,
        signing_key=load_signing_key(settings),
        deadline=settings.deadline_default_seconds,
    )
    return [ServiceRegistration(pb_grpc.add_RegistryServiceServicer_to_server, servicer, SERVICE_NAME)]


def main() -> None:
    run_service("registry", build)


if __name__ == "__main__":
    main()
