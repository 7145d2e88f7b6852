"""Property-based requests over the whole OpenAPI document of the running gateway: no 5xx.

An embedded stack of its own (five real gRPC servers on loopback, a SQLite catalog, the
in-process bus) behind uvicorn on a real socket; Schemathesis generates valid and invalid
requests for every operation of `/openapi.json` (a bounded number each) and checks that none
answers a server error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from alphaswarm_common.settings import Settings
from tests.uvicorn_server import serve_in_thread

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from alphaswarm.embedded import start_services
    from alphaswarm_gateway.core import bootstrap
    from alphaswarm_gateway.rest import create_app

    base = Settings(
        home=tmp_path_factory.mktemp("schemathesis"),
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
        grpc_port=0,
    )
    stack_settings, servers, tracker = start_services(base)
    app = create_app(stack_settings, gateway=bootstrap(stack_settings, tracker=tracker), serve_grpc=False)
    try:
        with serve_in_thread(app) as url:
            yield url
    finally:
        for grpc_server in servers:
            grpc_server.stop(0)


def _operations(url: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_no_operation_answers_a_server_error(gateway_url: str, mode: schemathesis.GenerationMode) -> None:
    """20 generated requests per operation (valid ones, then invalid ones), every answer below 500."""
    failures: list[str] = []
    operations = _operations(gateway_url)
    assert len(operations) >= 20

    for operation in operations:

        @settings(
            max_examples=20,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            try:
                case.call_and_validate(base_url=gateway_url, checks=[not_a_server_error], timeout=60)
            except AssertionError as exc:
                failures.append(f"{case.method} {case.formatted_path}: {str(exc).splitlines()[0:3]}")
                raise

        try:
            run()
        except Unsatisfiable:  # nothing of this operation can be made invalid (free-form strings)
            continue
        except Exception as exc:  # reported below with every other operation's
            failures.append(f"{operation.label}: {type(exc).__name__}")
    assert not failures, "\n".join(failures)
