"""The client's watch survives a dropped stream: it resumes after the last event it received."""

from __future__ import annotations

import grpc
import pytest

from alphaswarm.client import GatewayClient
from alphaswarm.common.v1 import resources_pb2
from alphaswarm.gateway.v1 import gateway_service_pb2 as pb
from alphaswarm_common.errors import InvalidArgument

pytestmark = pytest.mark.unit


class _Dropped(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "connection reset"


def _event(seq: int, status: str = "running") -> pb.WatchAlphaBacktestRunResponse:
    return pb.WatchAlphaBacktestRunResponse(
        event=resources_pb2.ProgressEvent(task_id="t", seq=seq, stage="train", status=status)
    )


class _Stub:
    """Serves events 1..5; the first stream drops after event 2."""

    def __init__(self, fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.requests: list[int] = []
        self.fail_code = fail_code

    def WatchAlphaBacktestRun(self, request, timeout):  # type: ignore[no-untyped-def]
        self.requests.append(request.after_seq)
        first = len(self.requests) == 1

        def stream():  # type: ignore[no-untyped-def]
            for seq in range(request.after_seq + 1, 6):
                if first and seq == 3:
                    raise _Dropped(self.fail_code)
                yield _event(seq, "succeeded" if seq == 5 else "running")

        return stream()


def _client(stub: _Stub) -> GatewayClient:
    client = GatewayClient("127.0.0.1:1")
    client.stub = stub  # type: ignore[assignment]
    return client


def test_watch_resumes_after_the_last_event() -> None:
    stub = _Stub()
    client = _client(stub)
    seqs = [e.seq for e in client.watch("t", timeout=30)]
    client.close()
    assert seqs == [1, 2, 3, 4, 5]
    assert stub.requests == [0, 2]


def test_watch_raises_other_errors() -> None:
    client = _client(_Stub(grpc.StatusCode.INVALID_ARGUMENT))
    with pytest.raises(InvalidArgument):
        list(client.watch("t", timeout=30))
    client.close()
