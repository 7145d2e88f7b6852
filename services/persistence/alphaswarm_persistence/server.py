"""Process entry of the persistence service: `python -m alphaswarm_persistence.server`.

The only process that opens the catalog database (`ALPHASWARM_DATABASE_URL`,
SQLite under `ALPHASWARM_HOME` by default). It upgrades the schema at start
unless `ALPHASWARM_MIGRATE_ON_START=false` (the compose topology migrates once
in its own container). Its health check runs `SELECT 1` on the catalog (the
health service `database`, and "" with it), and no error it answers carries
database text (the shared error interceptor of `alphaswarm_common.grpc_server`
answers any unexpected exception INTERNAL with only an error id).
"""

from __future__ import annotations

from pathlib import Path

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ServiceRegistration
from alphaswarm_common.service import run_service
from alphaswarm_common.settings import Settings
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.migrations import upgrade
from alphaswarm_persistence.observe import observe
from alphaswarm_persistence.repo_tokens import AccessStore
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.servicer import PersistenceServicer
from alphaswarm_persistence.servicer_leases import LeaseServicerMixin
from alphaswarm_persistence.servicer_model_trust import ModelTrustServicerMixin
from alphaswarm_persistence.servicer_tokens import AccessServicerMixin
from alphaswarm_persistence.tasks import TaskServicerMixin

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PersistenceService"].full_name


class Servicer(
    ModelTrustServicerMixin, AccessServicerMixin, LeaseServicerMixin, TaskServicerMixin, PersistenceServicer
):
    """The catalog's RPCs plus the task, lease, token, audit and model-trust RPCs."""


def build(settings: Settings) -> list[ServiceRegistration]:
    url = settings.catalog_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if settings.migrate_on_start:
        upgrade(url)
    db = Database(url)
    servicer = Servicer(CatalogRepository(db))
    servicer.catalog_counts = observe(db)  # type: ignore[attr-defined]  # held: the registry keeps a weak reference
    if settings.bootstrap_admin_token_file is not None:
        token = settings.bootstrap_admin_token_file.read_text().strip()
        if not token:
            raise InvalidArgument(
                "the bootstrap admin token file is empty", field="bootstrap_admin_token_file"
            )
        AccessStore(servicer.repository).ensure_token("bootstrap-admin", "admin", token)
    return [
        ServiceRegistration(
            pb_grpc.add_PersistenceServiceServicer_to_server,
            servicer,
            SERVICE_NAME,
            probes={"database": db.ping},
        )
    ]


def main() -> None:
    run_service("persistence", build)


if __name__ == "__main__":
    main()
