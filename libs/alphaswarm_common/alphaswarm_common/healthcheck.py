"""`python -m alphaswarm_common.healthcheck HOST:PORT [SERVICE]`: exit 0 when the
gRPC health service answers SERVING (container health checks, scripts).

With `ALPHASWARM_TLS_CA/CERT/KEY` set the check speaks mutual TLS with this
container's own certificate, as the services' other callers do."""

from __future__ import annotations

import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0, credentials: Any = None) -> bool:
    from alphaswarm_common.grpc_client import channel

    with channel(address, credentials=credentials) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    from alphaswarm_common.settings import Settings
    from alphaswarm_common.tls import client_credentials

    credentials = client_credentials(Settings())
    ok = check(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "", credentials=credentials)
    print("SERVING" if ok else "NOT_SERVING")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
