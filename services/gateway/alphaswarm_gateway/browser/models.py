"""Models and deployments over REST: what the Strategy Browser's models and deployments pages show and do.

* `GET /catalog-views/models`: every registered model with its aliases and
  versions; each version with its headline training metrics (the registry's
  version tags `alphaswarm.<segment>_<metric>`), its dataset fingerprint and
  the alpha-backtest runs that traded it (the latest run's Sharpe and score);
* `GET /deployments`, `GET /deployments/{id}`: deployments with their
  history (every version served, oldest first) and, for the caller, which
  actions its role allows (`actions`);
* `POST /deployments/{id}:roll` (researcher): serve another version of the
  model, keeping the deployment's dataset and strategy (registry `Deploy`);
* `POST /deployments/{id}:promote` (admin): serve a version or the version
  an alias points at (registry `PromoteDeployment`);
* `POST /deployments/{id}:rollback` (admin): back to the version served
  before the last change; `POST /deployments/{id}:retire` (admin);
* `PUT /models/{name}/aliases/{alias}` (admin): point an alias at a version.

Every action is written to the audit log (who, what, which deployment). The
roles are those of the registry's RPCs (docs/security.md): the gateway checks
them here, before it calls the registry with its own service identity.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm_common.auth import ADMIN, RESEARCHER, role_allows
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import struct_to_dict, timestamp_to_datetime
from alphaswarm_common.tracking import DATASET_FINGERPRINT_TAG, HEADLINE_METRICS, headline_metric_tag
from alphaswarm_gateway import auth
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.deps import GatewayDep

__all__ = ["ACTION_ROLES", "deployments", "models"]

deployments = APIRouter(prefix="/deployments", tags=["deployments"])
models = APIRouter(tags=["models"])

ACTION_ROLES: dict[str, str] = {"roll": RESEARCHER, "promote": ADMIN, "rollback": ADMIN, "retire": ADMIN}
"""The role each deployment action needs (the registry's `Deploy` and `*Deployment` RPCs)."""

_STATES = {
    resources_pb2.DEPLOYMENT_STATE_ACTIVE: "active",
    resources_pb2.DEPLOYMENT_STATE_RETIRED: "retired",
}
_PAGE = 500

_DeploymentId = Annotated[str, Path(min_length=1, max_length=64, description="The deployment id.")]


async def _registry(gw: Gateway, method: str, request: Message) -> Any:
    return await aio_call(
        getattr(gw.clients.registry, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="registry",
    )


def _ts(msg: Message, name: str) -> str | None:
    if not msg.HasField(name):
        return None
    value = timestamp_to_datetime(getattr(msg, name))
    return value.isoformat() if value else None


def _actions(state: str) -> dict[str, bool]:
    """The actions the caller's role allows on a deployment in `state`."""
    who = auth.caller()
    active = state == "active"
    return {name: active and role_allows(who.role, role) for name, role in ACTION_ROLES.items()}


def deployment_view(d: resources_pb2.Deployment) -> dict[str, Any]:
    state = _STATES.get(d.state, "unspecified")
    history = _history(d)
    return {
        "deployment_id": d.deployment_id,
        "model_name": d.model_name,
        "model_version": d.model_version,
        "model_alias": d.model_alias or None,
        "model_uri": d.model_uri or None,
        "state": state,
        "dataset_source": d.dataset_cfg.source if d.HasField("dataset_cfg") else None,
        "strategy_type": d.strategy_cfg.type if d.HasField("strategy_cfg") else None,
        "created_at": _ts(d, "created_at"),
        "updated_at": _ts(d, "updated_at"),
        "history": history,
        "actions": _actions(state),
    }


def _history(d: resources_pb2.Deployment) -> list[Any]:
    """The versions the deployment served before, oldest first ({model_name, version, from, to})."""
    return list(json_format.MessageToDict(d.history)) if d.HasField("history") else []


# --------------------------------------------------------------------------- deployments


@deployments.get("", operation_id="list_deployments", summary="Deployments, newest first, with history")
async def list_deployments(gw: GatewayDep, page_size: int = 50, page_token: str = "") -> dict[str, Any]:
    if not 1 <= page_size <= 500:
        raise InvalidArgument("must be in [1, 500]", field="page_size")
    reply = await _registry(
        gw, "ListDeployments", rpb.ListDeploymentsRequest(page_size=page_size, page_token=page_token)
    )
    return {
        "items": [deployment_view(d) for d in reply.deployments],
        "next_page_token": reply.next_page_token or None,
        "roles": {name: role for name, role in ACTION_ROLES.items()},
        "caller_role": auth.caller().role,
    }


@deployments.get("/{deployment_id}", operation_id="get_deployment", summary="One deployment with its history")
async def get_deployment(deployment_id: _DeploymentId, gw: GatewayDep) -> dict[str, Any]:
    reply = await _registry(gw, "GetDeployment", rpb.GetDeploymentRequest(deployment_id=deployment_id))
    return deployment_view(reply.deployment)


class RollBody(BaseModel):
    """The version to roll the deployment to."""

    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(
        min_length=1, max_length=50, description="A version of the deployment's model."
    )
    model_alias: str = Field(default="", max_length=100, description="The alias to record (optional).")


class PromoteBody(BaseModel):
    """A version, or an alias whose version to serve (exactly one)."""

    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(default="", max_length=50)
    model_alias: str = Field(default="", max_length=100)


async def _act(gw: Gateway, action: str, deployment_id: str, method: str, request: Message) -> dict[str, Any]:
    """One deployment action: call the registry's `method`, write the action to the audit log
    (who, what, which deployment, from which version to which) and answer the deployment as it is
    now (with the version it served before, except for a retirement)."""
    reply = await _registry(gw, method, request)
    now = reply.deployment.model_version
    out: dict[str, Any] = {"deployment": deployment_view(reply.deployment)}
    if action == "retire":
        detail: dict[str, Any] = {"version": now}
    else:
        detail = {"from": reply.previous_model_version, "to": now}
        out["previous_model_version"] = reply.previous_model_version or None
    if action == "roll":
        out["changed"] = reply.rolled
    await auth.record(gw, action, "deployment", deployment_id, detail=detail)
    return out


@deployments.post(
    "/{deployment_id}:roll",
    operation_id="roll_deployment",
    summary="Serve another version of the deployment's model (same dataset and strategy)",
)
async def roll_deployment(
    deployment_id: _DeploymentId, gw: GatewayDep, body: Annotated[RollBody, Body()]
) -> dict[str, Any]:
    current = (
        await _registry(gw, "GetDeployment", rpb.GetDeploymentRequest(deployment_id=deployment_id))
    ).deployment
    return await _act(
        gw,
        "roll",
        deployment_id,
        "Deploy",
        rpb.DeployRequest(
            deployment_id=deployment_id,
            model_name=current.model_name,
            model_version=body.model_version,
            model_alias=body.model_alias,
            dataset_cfg=current.dataset_cfg,
            strategy_cfg=current.strategy_cfg,
        ),
    )


@deployments.post(
    "/{deployment_id}:promote",
    operation_id="promote_deployment",
    summary="Serve a version (or the version an alias points at) of the deployment's model",
)
async def promote_deployment(
    deployment_id: _DeploymentId, gw: GatewayDep, body: Annotated[PromoteBody, Body()]
) -> dict[str, Any]:
    if bool(body.model_version) == bool(body.model_alias):
        raise InvalidArgument("give model_version or model_alias (exactly one)", field="model_version")
    return await _act(
        gw,
        "promote",
        deployment_id,
        "PromoteDeployment",
        rpb.PromoteDeploymentRequest(
            deployment_id=deployment_id, model_version=body.model_version, model_alias=body.model_alias
        ),
    )


@deployments.post(
    "/{deployment_id}:rollback",
    operation_id="rollback_deployment",
    summary="Serve the version the deployment served before its last change",
)
async def rollback_deployment(deployment_id: _DeploymentId, gw: GatewayDep) -> dict[str, Any]:
    return await _act(
        gw,
        "rollback",
        deployment_id,
        "RollbackDeployment",
        rpb.RollbackDeploymentRequest(deployment_id=deployment_id),
    )


@deployments.post(
    "/{deployment_id}:retire",
    operation_id="retire_deployment",
    summary="Retire a deployment: kept for history, no longer serving predictions",
)
async def retire_deployment(deployment_id: _DeploymentId, gw: GatewayDep) -> dict[str, Any]:
    return await _act(
        gw,
        "retire",
        deployment_id,
        "RetireDeployment",
        rpb.RetireDeploymentRequest(deployment_id=deployment_id),
    )


# --------------------------------------------------------------------------- models


class AliasBody(BaseModel):
    """The version an alias points at."""

    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=50)


@models.put(
    "/models/{name}/aliases/{alias}",
    operation_id="set_model_alias",
    summary="Point an alias of a registered model at a version",
)
async def set_model_alias(
    name: Annotated[str, Path(min_length=1, max_length=255)],
    alias: Annotated[str, Path(min_length=1, max_length=100)],
    gw: GatewayDep,
    body: Annotated[AliasBody, Body()],
) -> dict[str, Any]:
    reply = await _registry(
        gw, "SetModelAlias", rpb.SetModelAliasRequest(name=name, alias=alias, version=body.version)
    )
    await auth.record(
        gw, "set_alias", "registered_model", name, detail={"alias": alias, "version": body.version}
    )
    v = reply.version
    return {"name": v.name, "version": v.version, "aliases": list(v.aliases)}


def _float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


async def _pages(gw: Gateway, method: str, request: Any, field: str) -> list[Any]:
    out: list[Any] = []
    while True:
        reply = await _registry(gw, method, request)
        out.extend(getattr(reply, field))
        if not reply.next_page_token:
            return out
        request.page_token = reply.next_page_token


@models.get(
    "/catalog-views/models",
    operation_id="list_models_overview",
    summary="Registered models with aliases, versions, headline metrics and the runs that traded them",
)
async def models_overview(gw: GatewayDep) -> dict[str, Any]:
    registered = await _pages(
        gw, "ListRegisteredModels", rpb.ListRegisteredModelsRequest(page_size=_PAGE), "models"
    )
    versions = await asyncio.gather(
        *(
            _pages(
                gw,
                "ListModelVersions",
                rpb.ListModelVersionsRequest(name=m.name, page_size=_PAGE),
                "versions",
            )
            for m in registered
        )
    )
    runs: dict[tuple[str, str], list[Any]] = {}
    token = ""
    while True:
        page = await gw.list_runs(page_size=_PAGE, page_token=token, summary=True)
        for run in page.runs:
            if run.model_name:
                runs.setdefault((run.model_name, run.model_version), []).append(run)
        token = page.next_page_token
        if not token:
            break
    items = []
    for m, vs in zip(registered, versions, strict=True):
        out_versions = []
        for v in vs:
            traded = runs.get((v.name, v.version), [])
            done = [r for r in traded if r.HasField("combined_metrics")]
            latest = None
            if done:
                r = max(done, key=lambda r: r.created_at.ToDatetime() if r.HasField("created_at") else 0)
                combined = struct_to_dict(r.combined_metrics)
                trading = combined.get("trading") or {}
                ml = combined.get("ml") or {}
                latest = {
                    "run_id": r.run_id,
                    "sharpe": trading.get("sharpe"),
                    "max_drawdown": trading.get("max_drawdown"),
                    "ic_spearman": ml.get("ic_spearman"),
                    "icir": ml.get("icir"),
                    "score": combined.get("score"),
                }
            out_versions.append(
                {
                    "version": v.version,
                    "aliases": list(v.aliases),
                    "status": v.status,
                    "created_at_ms": v.created_at_ms,
                    "run_id": v.run_id,
                    "dataset_fingerprint": v.tags.get(DATASET_FINGERPRINT_TAG) or None,
                    "headline": {k: _float(v.tags.get(headline_metric_tag(k))) for k in HEADLINE_METRICS},
                    "n_runs": len(traded),
                    "latest_run": latest,
                }
            )
        items.append(
            {
                "name": m.name,
                "description": m.description or None,
                "aliases": dict(m.aliases),
                "latest_version": m.latest_version or None,
                "updated_at_ms": m.updated_at_ms,
                "versions": out_versions,
            }
        )
    return {"items": items, "headline_metrics": list(HEADLINE_METRICS)}
