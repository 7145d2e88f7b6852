"""Registry replicas change one deployment without losing a change: the catalog's
SaveDeployment is a compare-and-set on `updated_at`, and the registry decides again on a
fresh read when another replica wrote in between."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import Aborted
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.servicer import PersistenceServicer
from alphaswarm_registry.core import Registry

pytestmark = pytest.mark.unit


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    path = tmp_path / "catalog.db"
    migrations.upgrade(f"sqlite:///{path}")
    db = Database(f"sqlite:///{path}")
    yield PersistenceServicer(CatalogRepository(db))
    db.dispose()
    shutil.rmtree(tmp_path, ignore_errors=True)


def _deployment(svc: PersistenceServicer) -> resources_pb2.Deployment:
    dep = resources_pb2.Deployment(
        model_name="ridge-alpha",
        model_version="1",
        model_uri="models:/ridge-alpha/1",
        strategy_cfg=config_pb2.StrategyConfig(type="long_only_topk"),
    )
    return svc.SaveDeployment(pb.SaveDeploymentRequest(deployment=dep), None).deployment


def _roll(dep: resources_pb2.Deployment, version: str) -> resources_pb2.Deployment:
    out = resources_pb2.Deployment()
    out.CopyFrom(dep)
    out.model_version = version
    out.ClearField("history")
    return out


def test_save_with_a_stale_read_is_refused_and_changes_nothing(svc: PersistenceServicer) -> None:
    read = _deployment(svc)  # both replicas read this
    first = svc.SaveDeployment(
        pb.SaveDeploymentRequest(deployment=_roll(read, "2"), expected_updated_at=read.updated_at), None
    ).deployment
    with pytest.raises(Aborted) as err:
        svc.SaveDeployment(
            pb.SaveDeploymentRequest(deployment=_roll(read, "3"), expected_updated_at=read.updated_at), None
        )
    assert err.value.reason == "DEPLOYMENT_CHANGED" and err.value.grpc_code == "ABORTED"
    assert err.value.field == "expected_updated_at"
    stored = svc.GetDeployment(pb.GetDeploymentRequest(deployment_id=read.deployment_id), None).deployment
    assert stored == first and stored.model_version == "2"
    # On a fresh read the change goes through and the history keeps both versions.
    third = svc.SaveDeployment(
        pb.SaveDeploymentRequest(deployment=_roll(stored, "3"), expected_updated_at=stored.updated_at), None
    ).deployment
    assert third.model_version == "3"
    assert [h["version"] for h in third.history] == ["1", "2"]


class _Store:
    """The persistence servicer as a registry's DeploymentStore; `interleave` runs once, between
    the registry's read and its write (another replica writing in between)."""

    def __init__(self, svc: PersistenceServicer) -> None:
        self.svc = svc
        self.interleave: Any = None
        self.reads = 0

    def get(self, deployment_id: str) -> resources_pb2.Deployment:
        self.reads += 1
        return self.svc.GetDeployment(pb.GetDeploymentRequest(deployment_id=deployment_id), None).deployment

    def save(
        self, deployment: resources_pb2.Deployment, *, request_id: str = "", expected_updated_at: Any = None
    ) -> resources_pb2.Deployment:
        if self.interleave is not None:
            other, self.interleave = self.interleave, None
            other()
        request = pb.SaveDeploymentRequest(
            deployment=deployment, request_id=request_id, expected_updated_at=expected_updated_at
        )
        return self.svc.SaveDeployment(request, None).deployment

    def list(self, page_size: int, page_token: str) -> tuple[list[resources_pb2.Deployment], str]:
        raise NotImplementedError


def test_a_registry_decides_again_when_another_replica_wrote_in_between(svc: PersistenceServicer) -> None:
    dep = _deployment(svc)
    store = _Store(svc)
    registry = Registry(tracker=None, store=store, trust=None)  # type: ignore[arg-type]

    def other_replica_rolls_to_v2() -> None:
        current = store.get(dep.deployment_id)
        store.save(_roll(current, "2"), expected_updated_at=current.updated_at)

    store.interleave = other_replica_rolls_to_v2
    reads_before = store.reads
    retired = registry.retire(dep.deployment_id)
    # The first attempt lost (the other replica wrote v2); the second read saw v2 and retired it.
    assert store.reads - reads_before == 3  # first read, the other replica's read, the fresh read
    assert retired.state == resources_pb2.DEPLOYMENT_STATE_RETIRED
    assert retired.model_version == "2"
    assert [h["version"] for h in retired.history] == ["1"]
