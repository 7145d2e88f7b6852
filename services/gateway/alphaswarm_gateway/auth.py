"""Who may use the gateway: the REST route table, the request guard, submission limits, the audit log.

Every REST route has a rule in `ROUTE_ROLES` (by operation id; the few
framework routes such as /openapi.json by path in `PUBLIC_PATHS`).
`secure_app(app)` installs the guard on every route and fails the start when a
route has no rule; the guard answers 401 (with `WWW-Authenticate: Bearer`)
without credentials and 403 for a role too weak. The gateway's gRPC API uses
the method table of alphaswarm_common.auth through the same `ServerAuth`.

Submissions (runs and jobs) pass `admit()`: a token bucket per caller
(`submit_rate_per_minute`, `submit_burst`; shared by every gateway replica
through NATS, `shared_limits.py`) and a cap on the caller's pending
or running tasks (`max_concurrent_runs_per_token`), both answering 429 /
RESOURCE_EXHAUSTED with a retry delay. `record()` writes the audit log: who
submitted, cancelled or deleted what.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.auth import (
    ADMIN,
    ANONYMOUS,
    PUBLIC,
    RESEARCHER,
    SERVICE,
    VIEWER,
    Principal,
    ServerAuth,
    bearer_from_header,
    check_exposure,
    current_principal,
    role_allows,
    set_current_principal,
)
from alphaswarm_common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import struct_from_dict
from alphaswarm_common.service import server_security
from alphaswarm_common.settings import Settings

__all__ = [
    "GUARD",
    "PUBLIC_PATHS",
    "ROUTE_ROLES",
    "admit",
    "caller",
    "ensure_owner",
    "record",
    "record_submission",
    "route_rules",
    "secure_app",
]

log = logging.getLogger(__name__)

ROUTE_ROLES: dict[str, str] = {
    # Alpha-backtest runs.
    "start_alpha_backtest_run": RESEARCHER,
    "list_alpha_backtest_runs": VIEWER,
    "get_alpha_backtest_run": VIEWER,
    "list_alpha_backtest_run_predictions": VIEWER,
    "cancel_alpha_backtest_run": RESEARCHER,
    "get_alpha_backtest_run_mlflow": VIEWER,
    "get_alpha_backtest_run_artifact": VIEWER,
    # Registered models (through the registry).
    "list_registered_models": VIEWER,
    "list_model_versions": VIEWER,
    # Progress and tasks.
    "stream_task_progress": VIEWER,
    "get_task": VIEWER,
    "cancel_task": RESEARCHER,
    # Backtester jobs.
    "submit_backtest": RESEARCHER,
    "submit_optimization": RESEARCHER,
    "submit_walk_forward": RESEARCHER,
    "submit_portfolio_backtest": RESEARCHER,
    "submit_monte_carlo": RESEARCHER,
    # The catalog.
    "list_backtests": VIEWER,
    "get_best_backtest": VIEWER,
    "compare_backtests": VIEWER,
    "get_backtest_performance_summary": VIEWER,
    "get_backtest": VIEWER,
    "list_backtest_trades": VIEWER,
    "get_backtest_tearsheet": VIEWER,
    "delete_backtest": ADMIN,
    "list_optimization_results": VIEWER,
    "get_optimization_result": VIEWER,
    "list_walk_forward_tests": VIEWER,
    "get_walk_forward_test": VIEWER,
    "list_portfolio_backtests": VIEWER,
    "get_portfolio_backtest": VIEWER,
    # The Strategy Browser's views (alphaswarm_gateway.browser.api).
    "get_browser_session": VIEWER,
    "list_browser_runs": VIEWER,
    "get_browser_run_series": VIEWER,
    "list_browser_run_trades": VIEWER,
    "get_browser_run_trade_scatter": VIEWER,
    "list_browser_run_audit": VIEWER,
    # Strategy Browser views of the catalog, models and deployments.
    "compare_backtest_series": VIEWER,
    "get_optimization_heatmap": VIEWER,
    "get_walk_forward_view": VIEWER,
    "get_monte_carlo_fan": VIEWER,
    "get_portfolio_view": VIEWER,
    "list_dataset_fingerprints": VIEWER,
    "get_dataset_leaderboard": VIEWER,
    "list_models_overview": VIEWER,
    "set_model_alias": ADMIN,
    "list_deployments": VIEWER,
    "get_deployment": VIEWER,
    "roll_deployment": RESEARCHER,
    "promote_deployment": ADMIN,
    "rollback_deployment": ADMIN,
    "retire_deployment": ADMIN,
    # Probes.
    "healthz": PUBLIC,
    "readyz": PUBLIC,
}
"""The role each REST operation needs; an operation missing here stops the gateway from starting."""

PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/docs-assets", "/", "/ui"}
)
"""Framework routes (the API description, its local Swagger UI / ReDoc assets, the Strategy
Browser's page and assets, which hold no data) anyone may read."""


def _rule(route: BaseRoute) -> str | None:
    if getattr(route, "path", None) in PUBLIC_PATHS:
        return PUBLIC
    if isinstance(route, APIRoute):
        return ROUTE_ROLES.get(route.operation_id or route.name)
    return None


def flat_routes(app: FastAPI) -> list[tuple[BaseRoute, str, list[str], Any]]:
    """(route, full path, methods, dependant) of every route of `app`, included routers flattened."""
    from fastapi import routing

    contexts = getattr(routing, "iter_route_contexts", None)
    out: list[tuple[BaseRoute, str, list[str], Any]] = []
    items: Any = contexts(app.routes) if contexts is not None else app.routes
    for item in items:
        original = getattr(item, "original_route", item)
        path = str(getattr(item, "path", None) or getattr(original, "path", "?"))
        methods = sorted(getattr(item, "methods", None) or {"GET"})
        out.append((original, path, methods, getattr(item, "dependant", None)))
    return out


def route_rules(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> role of every route of `app`; RuntimeError naming the routes without a rule."""
    rules: dict[tuple[str, str], str] = {}
    missing = []
    for route, path, methods, _ in flat_routes(app):
        role = _rule(route)
        if role is None:
            missing.append(
                f"{'/'.join(methods)} {path} ({getattr(route, 'operation_id', None) or 'no operation id'})"
            )
            continue
        for method in methods:  # the path as OpenAPI shows it: `{path:path}` is `{path}`
            rules[(method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path))] = role
    if missing:
        raise RuntimeError(
            "routes without an access rule (add them to alphaswarm_gateway.auth.ROUTE_ROLES): "
            + "; ".join(missing)
        )
    return rules


async def _guard(request: Request) -> Principal:
    """The app-wide dependency: authenticate the caller and check the route's role."""
    auth: ServerAuth = request.app.state.auth
    route = request.scope.get("route")
    need = _rule(route) if route is not None else None
    if need is None:  # a route added after start: denied rather than open
        raise PermissionDenied("this route has no access rule", reason="NO_ACCESS_RULE")
    if need == PUBLIC:  # probes and the API description: no credentials needed, none checked
        return ANONYMOUS
    bearer = bearer_from_header(request.headers.get("authorization"))
    if bearer and auth.enforcing:
        who = await asyncio.to_thread(auth.principal, bearer)
    else:
        who = auth.principal(bearer)
    if who is ANONYMOUS:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
    if not role_allows(who.role, need):
        raise PermissionDenied(f"role {who.role} may not {request.method} {request.url.path} (needs {need})")
    request.state.principal = who
    set_current_principal(who)
    return who


GUARD = Depends(_guard)
"""The app-wide dependency `create_app` passes to FastAPI: every route goes through `_guard`."""


def secure_app(app: FastAPI, settings: Settings) -> None:
    """Check that every route has a rule and is guarded (RuntimeError otherwise); load the policy."""
    route_rules(app)
    unguarded = [
        path
        for route, path, _, dependant in flat_routes(app)
        if isinstance(route, APIRoute)
        and not any(d.call is _guard for d in getattr(dependant, "dependencies", ()))
    ]
    if unguarded:
        raise RuntimeError(f"routes without the access guard: {', '.join(unguarded)}")
    log.info("gateway %s", check_exposure(settings, [settings.http_host, settings.grpc_host]))
    app.state.auth, _ = server_security(settings, require_client_auth=False)


def caller() -> Principal:
    """The caller of the request or RPC being handled (anonymous full access without authentication)."""
    return current_principal() or Principal("anonymous", SERVICE, "none")


# -- submission limits --------------------------------------------------------------------------
class _Buckets:
    """Token buckets per subject: `burst` submissions at once, refilled at `rate` per second."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, subject: str) -> float:
        """0 when a submission may go ahead (and is counted), else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(subject, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[subject] = (tokens - 1.0, now)
                return 0.0
            self._state[subject] = (tokens, now)
            return (1.0 - tokens) / self.rate


def _limited(who: Principal) -> bool:
    return who.via in ("token", "jwt")


def _buckets(gw: Any) -> _Buckets:
    buckets = getattr(gw, "_submission_buckets", None)
    if buckets is None:
        buckets = _Buckets(gw.settings.submit_rate_per_minute, gw.settings.submit_burst)
        gw._submission_buckets = buckets
    return buckets


async def admit(gw: Any, who: Principal | None = None) -> Principal:
    """Let a submission through the caller's rate limit and concurrency cap, or raise 429."""
    who = who or caller()
    if not _limited(who):
        return who
    shared = getattr(gw, "shared_buckets", None)
    wait = await shared.take(who.subject) if shared is not None else _buckets(gw).take(who.subject)
    if wait > 0:
        retry = max(1, math.ceil(wait))
        raise ResourceExhausted(
            f"too many submissions: at most {gw.settings.submit_burst} at once and "
            f"{gw.settings.submit_rate_per_minute:g} a minute per token; retry in {retry} s",
            details={"retry_after": retry},
        )
    active = (
        await aio_call(
            gw.clients.persistence.CountActiveTasks,
            ppb.CountActiveTasksRequest(subject=who.subject),
            timeout=gw.settings.deadline_default_seconds,
            target="persistence",
        )
    ).count
    cap = gw.settings.max_concurrent_runs_per_token
    if active >= cap:
        raise ResourceExhausted(
            f"{active} runs and jobs of this token are pending or running (at most {cap}); "
            "retry when one ends",
            reason="TOO_MANY_ACTIVE_RUNS",
            details={"retry_after": 10},
        )
    return who


async def record(
    gw: Any,
    action: str,
    target_kind: str,
    target_id: str,
    *,
    task_id: str = "",
    detail: dict[str, Any] | None = None,
    who: Principal | None = None,
) -> None:
    """Write an audit entry: who did `action` to the resource `target_kind` `target_id`."""
    who = who or caller()
    entry = ppb.AuditEntry(
        subject=who.subject,
        role=who.role,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        task_id=task_id,
    )
    if detail:
        entry.detail.CopyFrom(struct_from_dict(detail))
    await aio_call(
        gw.clients.persistence.AppendAuditLog,
        ppb.AppendAuditLogRequest(entry=entry),
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


async def record_submission(
    gw: Any, who: Principal, kind: str, task_id: str, *, run_id: str | None = None
) -> None:
    """Audit a submission; its task counts against the caller's concurrency cap while it runs."""
    await record(
        gw, "submit", kind, task_id, task_id=task_id, detail={"run_id": run_id} if run_id else None, who=who
    )


async def ensure_owner(gw: Any, task_id: str, who: Principal | None = None) -> Principal:
    """Admins and services act on any task; anyone else only on the tasks it submitted."""
    who = who or caller()
    if role_allows(who.role, ADMIN):
        return who
    page = await aio_call(
        gw.clients.persistence.ListAuditLog,
        ppb.ListAuditLogRequest(subject=who.subject, target_id=task_id, page_size=1),
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )
    if not page.entries:
        raise PermissionDenied(f"task {task_id} was submitted by another caller", field="task_id")
    return who
