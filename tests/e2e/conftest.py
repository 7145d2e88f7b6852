"""One embedded stack per test session: five real gRPC servers on loopback, a SQLite
catalog and an MLflow SQLite store in a temporary folder, the in-process bus."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.settings import Settings
from tests.uvicorn_server import serve_in_thread

SMALL_RUN: dict[str, Any] = {
    "dataset_cfg": {
        "source": "sp500",
        "start_date": "2009-01-01",
        "end_date": "2019-06-28",
        "segments": {
            "train": ["2010-01-01", "2015-12-31"],
            "valid": ["2016-01-01", "2016-12-30"],
            "test": ["2017-01-03", "2018-12-31"],
        },
        "features": [
            {"name": "ret", "windows": [1, 5, 20], "cs_rank": True},
            {"name": "vol", "windows": [20]},
            {"name": "ma_ratio", "windows": [10, 50]},
        ],
        "label": {"horizon": 1, "execution_lag": 1},
    },
    "model_cfg": {"type": "ridge", "params": {"alpha": 10.0}, "name": "e2e-ridge-alpha"},
    "strategy_cfg": {"type": "long_short_topk", "params": {"top_k": 3}},
    "backtest_cfg": {"fees": 0.001, "slippage": 0.001},
}

STAGES = [
    "accepted",
    "training",
    "registering",
    "deploying",
    "predicting",
    "backtesting",
    "persisting",
    "completed",
]


def small_run(**overrides: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SMALL_RUN)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    home = tmp_path_factory.mktemp("alphaswarm-home")
    settings = Settings(
        home=home,
        ml_prediction_audit_enabled=True,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
        data_roots=[tmp_path_factory.getbasetemp()],
    )
    with EmbeddedStack(settings) as s:
        yield s


def _stub(addr: str | None, stub: Any) -> Iterator[Any]:
    assert addr
    ch = channel(addr)
    yield stub(ch)
    ch.close()


@pytest.fixture(scope="session")
def backtester(stack: EmbeddedStack) -> Iterator[bpb_grpc.BacktesterServiceStub]:
    """A client of the session's backtester over its real socket."""
    yield from _stub(stack.settings.backtester_addr, bpb_grpc.BacktesterServiceStub)


@pytest.fixture(scope="session")
def persistence(stack: EmbeddedStack) -> Iterator[ppb_grpc.PersistenceServiceStub]:
    """A client of the session's persistence service over its real socket."""
    yield from _stub(stack.settings.persistence_addr, ppb_grpc.PersistenceServiceStub)


@pytest.fixture(scope="session")
def registry(stack: EmbeddedStack) -> Iterator[rpb_grpc.RegistryServiceStub]:
    """A client of the session's registry over its real socket."""
    yield from _stub(stack.settings.registry_addr, rpb_grpc.RegistryServiceStub)


def sse_events(
    url: str, *, headers: dict[str, str] | None = None, timeout: float = 300
) -> list[dict[str, Any]]:
    """Read a server-sent-events progress stream to its end; the JSON `data` of every event."""
    import json

    import httpx

    events: list[dict[str, Any]] = []
    with httpx.stream("GET", url, headers=headers or {}, timeout=timeout) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        data: list[str] = []
        for line in resp.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
    return events


@contextlib.contextmanager
def serving(
    settings: Settings, stack: EmbeddedStack, *, serve_grpc: bool = False
) -> Iterator[tuple[Any, str]]:
    """A REST gateway app for `settings` over the stack's services, served by uvicorn on a real
    socket: (app, base URL)."""
    from alphaswarm_gateway.core import bootstrap
    from alphaswarm_gateway.rest import create_app

    app = create_app(settings, gateway=bootstrap(settings, tracker=stack.tracker), serve_grpc=serve_grpc)
    with serve_in_thread(app, lifespan="on") as url:
        yield app, url


@pytest.fixture(scope="session")
def rest_url(stack: EmbeddedStack) -> Iterator[str]:
    """The REST gateway (uvicorn on a real socket) over the session's services."""
    with serving(stack.settings.model_copy(update={"grpc_port": 0}), stack, serve_grpc=False) as (_, url):
        yield url
