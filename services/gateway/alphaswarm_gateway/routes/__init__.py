"""The gateway's REST routes, one module per resource, with their schemas beside them.

Each route module exposes `ROUTERS` (a tuple of `APIRouter`; or one `router`)
and may set `ORDER` (an int, default 100) to place its routes in the app and the
OpenAPI document; `routers()` finds every module of this package, so a new
resource is a new module here and nothing else. `rest.create_app` includes
them. Schemas and JSON views live beside their routes (`<resource>.py`, or
`<resource>_schemas.py` when they are many); what the routes share is in
`common`.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter

__all__ = ["routers"]

DEFAULT_ORDER = 100


def routers() -> list[APIRouter]:
    """Every router of the route modules of this package, by (`ORDER`, module name)."""
    found: list[tuple[int, str, tuple[APIRouter, ...]]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg or info.name == "common" or info.name.endswith("_schemas"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module_routers = getattr(module, "ROUTERS", None)
        if module_routers is None:
            router = getattr(module, "router", None)
            module_routers = (router,) if isinstance(router, APIRouter) else ()
        if module_routers:
            found.append((int(getattr(module, "ORDER", DEFAULT_ORDER)), info.name, tuple(module_routers)))
    return [router for _, _, group in sorted(found, key=lambda f: (f[0], f[1])) for router in group]
