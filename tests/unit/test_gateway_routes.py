"""The gateway's route package: every resource module is found, in its declared order, and every
route it declares has an access rule."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from fastapi.routing import APIRoute

from alphaswarm_gateway import auth, routes

pytestmark = pytest.mark.unit


def _route_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.iter_modules(routes.__path__)
        if m.name != "common" and not m.name.endswith("_schemas")
    ]


def _declared(module: object) -> tuple[object, ...]:
    """A route module's routers: its `ROUTERS`, or its one `router`."""
    return tuple(getattr(module, "ROUTERS", None) or (getattr(module, "router", None),))


def test_every_route_module_is_found_in_order() -> None:
    found = routes.routers()
    for name in _route_modules():
        module = importlib.import_module(f"alphaswarm_gateway.routes.{name}")
        declared = _declared(module)
        assert all(any(r is f for f in found) for r in declared), name
    orders = []
    for router in found:
        owner = next(
            importlib.import_module(f"alphaswarm_gateway.routes.{n}")
            for n in _route_modules()
            if router in _declared(importlib.import_module(f"alphaswarm_gateway.routes.{n}"))
        )
        orders.append(getattr(owner, "ORDER", routes.DEFAULT_ORDER))
    assert orders == sorted(orders)
    assert found[0].prefix == "/ml/alpha-backtest-runs"


def test_every_route_has_an_access_rule() -> None:
    ops = [r.operation_id for router in routes.routers() for r in router.routes if isinstance(r, APIRoute)]
    assert len(ops) == len(set(ops)) > 20
    assert [op for op in ops if op not in auth.ROUTE_ROLES] == []
