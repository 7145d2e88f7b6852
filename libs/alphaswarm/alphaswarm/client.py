"""A synchronous client of the gateway's gRPC API (`AlphaBacktestService`).

Without an address it starts the embedded stack once per process (stopped at
exit), so `AlphaBacktestExperiment(...).run()` and `alphaswarm run` need no
server; with `ALPHASWARM_GATEWAY_ADDR` (or `gateway_addr=`) it talks to a
running gateway.
"""

from __future__ import annotations

import atexit
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.gateway.v1 import gateway_service_pb2 as pb
from alphaswarm.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.errors import AlphaSwarmError, error_from_code
from alphaswarm_common.events import ProgressEvent
from alphaswarm_common.grpc_client import call, channel, error_from_rpc
from alphaswarm_common.protoconv import (
    RUN_STATE_NAMES,
    config_to_proto,
    struct_to_dict,
    timestamp_to_datetime,
)
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials

__all__ = ["AlphaBacktestResult", "GatewayClient", "RunFailed", "gateway_client"]

_embedded_lock = threading.Lock()
_embedded: Any = None


class RunFailed(AlphaSwarmError):
    """A run ended FAILED; `.result` holds the run, `.stage` the failing stage."""

    def __init__(self, result: AlphaBacktestResult) -> None:
        err = result.error or {}
        cause = error_from_code(err.get("code", "INTERNAL"), err.get("message", "failed"))
        super().__init__(
            f"run {result.run_id} failed at {err.get('stage')}: {err.get('message')}",
            field=err.get("field") or None,
            reason=cause.reason,
        )
        self.grpc_code = cause.grpc_code  # type: ignore[misc]
        self.http_status = cause.http_status  # type: ignore[misc]
        self.result = result
        self.stage = err.get("stage")


@dataclass
class AlphaBacktestResult:
    """What a finished run produced and the ids that link it everywhere."""

    run_id: str
    task_id: str
    run_name: str
    status: str
    combined_metrics: dict[str, Any] | None
    model_name: str | None
    model_version: str | None
    deployment_id: str | None
    mlflow_parent_run_id: str | None
    mlflow_train_run_id: str | None
    mlflow_backtest_run_id: str | None
    backtest_id: str | None
    error: dict[str, Any] | None
    duration_seconds: float | None
    predictions_captured: bool
    events: list[ProgressEvent] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        return (self.combined_metrics or {}).get("score")

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.__dict__.items() if k != "events"}
        doc["events"] = [e.model_dump(mode="json") for e in self.events]
        return doc


_STATES = RUN_STATE_NAMES


def result_from_run(run: resources_pb2.AlphaBacktestRun, events: list[ProgressEvent]) -> AlphaBacktestResult:
    error = None
    if run.HasField("error") and run.error.code:
        error = {
            "stage": run.error.stage,
            "code": run.error.code,
            "message": run.error.message,
            "field": run.error.field or None,
        }
    return AlphaBacktestResult(
        run_id=run.run_id,
        task_id=run.task_id,
        run_name=run.run_name,
        status=_STATES.get(run.state, "unspecified"),
        combined_metrics=struct_to_dict(run.combined_metrics) if run.HasField("combined_metrics") else None,
        model_name=run.model_name or None,
        model_version=run.model_version or None,
        deployment_id=run.deployment_id or None,
        mlflow_parent_run_id=run.mlflow_parent_run_id or None,
        mlflow_train_run_id=run.mlflow_train_run_id or None,
        mlflow_backtest_run_id=run.mlflow_backtest_run_id or None,
        backtest_id=run.backtest_id or None,
        error=error,
        duration_seconds=run.duration_seconds or None,
        predictions_captured=run.predictions_captured,
        events=events,
    )


def _event_from_proto(e: Any) -> ProgressEvent:
    return ProgressEvent(
        task_id=e.task_id,
        seq=e.seq,
        ts=timestamp_to_datetime(e.ts) or dt.datetime.now(dt.UTC),
        stage=e.stage,
        status=e.status,
        pct=e.pct,
        message=e.message,
        data=struct_to_dict(e.data),
    )


class GatewayClient:
    def __init__(self, address: str, *, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.address = address
        self._channel = channel(
            address, tuning=self.settings.grpc_tuning(), credentials=client_credentials(self.settings)
        )
        self.stub = pb_grpc.AlphaBacktestServiceStub(self._channel)

    def start(self, cfg: AlphaBacktestConfig, *, request_id: str = "") -> pb.StartAlphaBacktestRunResponse:
        return call(
            self.stub.StartAlphaBacktestRun,
            pb.StartAlphaBacktestRunRequest(config=config_to_proto(cfg), request_id=request_id),
            timeout=self.settings.deadline_default_seconds,
            target="gateway",
        )

    def get(self, *, run_id: str = "", task_id: str = "") -> resources_pb2.AlphaBacktestRun:
        return call(
            self.stub.GetAlphaBacktestRun,
            pb.GetAlphaBacktestRunRequest(run_id=run_id, task_id=task_id),
            timeout=self.settings.deadline_default_seconds,
            target="gateway",
        ).run

    def list(self, *, page_size: int = 50, page_token: str = "") -> pb.ListAlphaBacktestRunsResponse:
        return call(
            self.stub.ListAlphaBacktestRuns,
            pb.ListAlphaBacktestRunsRequest(page_size=page_size, page_token=page_token),
            timeout=self.settings.deadline_default_seconds,
            target="gateway",
        )

    def watch(self, task_id: str, *, timeout: float | None = None) -> Iterator[ProgressEvent]:
        """The run's events until its terminal one.

        A stream the network drops (UNAVAILABLE: a gateway restarting, a connection reset) is
        opened again after the last event received, so no event is lost or repeated; the
        overall `timeout` bounds the whole watch.
        """
        import time

        import grpc

        total = timeout or (
            self.settings.deadline_train_seconds
            + self.settings.deadline_predict_seconds
            + self.settings.deadline_backtest_seconds
        )
        deadline = time.monotonic() + total
        last_seq = 0
        backoff = 0.5
        while True:
            try:
                for msg in self.stub.WatchAlphaBacktestRun(
                    pb.WatchAlphaBacktestRunRequest(task_id=task_id, after_seq=last_seq),
                    timeout=max(deadline - time.monotonic(), 0.001),
                ):
                    event = _event_from_proto(msg.event)
                    last_seq = max(last_seq, event.seq)
                    backoff = 0.5
                    yield event
                return
            except grpc.RpcError as exc:
                remaining = deadline - time.monotonic()
                if exc.code() != grpc.StatusCode.UNAVAILABLE or remaining <= backoff:
                    raise error_from_rpc(exc, target="gateway") from None
                time.sleep(backoff)
                backoff = min(backoff * 2, 8.0)

    def run(
        self,
        cfg: AlphaBacktestConfig,
        *,
        on_event: Callable[[ProgressEvent], None] | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> AlphaBacktestResult:
        accepted = self.start(cfg, request_id=request_id)
        events = []
        for event in self.watch(accepted.task_id, timeout=timeout):
            events.append(event)
            if on_event is not None:
                on_event(event)
        return result_from_run(self.get(run_id=accepted.run_id), events)

    def close(self) -> None:
        self._channel.close()


def embedded_stack(settings: Settings) -> Any:
    """The embedded stack of this process, started on first use and stopped at exit."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            from alphaswarm.embedded import EmbeddedStack

            _embedded = EmbeddedStack(settings).start()
            atexit.register(_embedded.stop)
        return _embedded


def gateway_client(settings: Settings | None = None, *, gateway_addr: str | None = None) -> GatewayClient:
    """A client of the configured gateway, or of the embedded stack (started once per process)."""
    settings = settings or Settings()
    address = gateway_addr or settings.gateway_addr or embedded_stack(settings).gateway_addr
    return GatewayClient(address, settings=settings)
