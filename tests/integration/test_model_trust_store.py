"""`model_artifact_trust` through the persistence service's real gRPC server, on SQLite and
PostgreSQL (migrated to the head): records round-trip, are written once (the same record again
replays, another is ALREADY_EXISTS), bad fields are INVALID_ARGUMENT naming them, an unknown
version is NOT_FOUND; lengths are enforced on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import call, channel, remote_field
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.settings import Settings
from alphaswarm_persistence import server as persistence_server

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def stub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pb_grpc.PersistenceServiceStub]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
        url = factory()
    server, port = serve(persistence_server.build(Settings(database_url=url)), port=0)
    ch = channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.PersistenceServiceStub(ch)
    finally:
        ch.close()
        server.stop(None)


def _record(**kw: str) -> pb.ModelArtifactTrust:
    base = {
        "model_name": "ridge-alpha",
        "version": "3",
        "artifact_uri": "models:/m-0123456789abcdef",
        "sha256": "a" * 64,
        "hmac": "b" * 64,
        "serialization_format": "skops",
        "registered_by": "registry.internal",
    }
    return pb.ModelArtifactTrust(**{**base, **kw})


def _put(stub: pb_grpc.PersistenceServiceStub, record: pb.ModelArtifactTrust) -> pb.ModelArtifactTrust:
    return call(
        stub.RecordModelArtifactTrust,
        pb.RecordModelArtifactTrustRequest(record=record),
        timeout=30,
        target="persistence",
    ).record


def _get(stub: pb_grpc.PersistenceServiceStub, name: str, version: str) -> pb.ModelArtifactTrust:
    return call(
        stub.GetModelArtifactTrust,
        pb.GetModelArtifactTrustRequest(model_name=name, version=version),
        timeout=30,
        target="persistence",
    ).record


def test_records_round_trip_and_are_written_once(stub: pb_grpc.PersistenceServiceStub) -> None:
    stored = _put(stub, _record())
    assert stored.registered_at.seconds > 0
    expected = _record()
    expected.registered_at.CopyFrom(stored.registered_at)
    assert stored == expected
    assert _get(stub, "ridge-alpha", "3") == stored
    assert _put(stub, _record()) == stored  # a retried registration replays
    for change in ({"sha256": "c" * 64}, {"hmac": "d" * 64}, {"artifact_uri": "models:/m-other"}):
        with pytest.raises(AlreadyExists):
            _put(stub, _record(**change))
    assert _get(stub, "ridge-alpha", "3") == stored
    other = _put(stub, _record(version="4", sha256="e" * 64))
    assert _get(stub, "ridge-alpha", "4") == other


def test_unknown_versions_are_not_found(stub: pb_grpc.PersistenceServiceStub) -> None:
    with pytest.raises(NotFound) as err:
        _get(stub, "nobody", "1")
    assert remote_field(err.value) == "version"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_name": ""}, "record.model_name"),
        ({"model_name": "x" * 256}, "record.model_name"),
        ({"version": "0"}, "record.version"),
        ({"version": "v1"}, "record.version"),
        ({"sha256": "A" * 64}, "record.sha256"),
        ({"hmac": "ab"}, "record.hmac"),
        ({"artifact_uri": ""}, "record.artifact_uri"),
        ({"artifact_uri": "u" * 1001}, "record.artifact_uri"),
        ({"serialization_format": "s" * 21}, "record.serialization_format"),
        ({"registered_by": "r" * 201}, "record.registered_by"),
    ],
)
def test_bad_records_name_the_field(
    stub: pb_grpc.PersistenceServiceStub, change: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        _put(stub, _record(**change))
    assert remote_field(err.value) == field
    with pytest.raises((NotFound, InvalidArgument)):
        _get(stub, change.get("model_name", "ridge-alpha"), change.get("version", "3"))
