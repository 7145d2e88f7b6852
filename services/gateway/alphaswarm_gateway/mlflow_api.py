"""What users need of MLflow, through the gateway and its roles (docs/security.md, "MLflow").

The MLflow tracking server is internal: only services reach it. These routes
serve what it holds for a user's runs and models:

* `GET /ml/alpha-backtest-runs/{run_id}/mlflow`: the parent, train and
  backtest MLflow runs of an alpha-backtest run (status, params, metrics, tags)
  and the artifacts of each;
* `GET /ml/alpha-backtest-runs/{run_id}/artifacts/{mlflow_run_id}/{path}`: one
  artifact file of one of those three runs, and of no other run;
* `GET /models`, `GET /models/{name}/versions`: the registered models and their
  versions, read through the registry service.

Artifacts are downloaded through the gateway's `Tracker` into a temporary folder
off the event loop, streamed, and the folder removed once the response is sent.
"""

from __future__ import annotations

import asyncio
import mimetypes
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from alphaswarm.registry.v1 import registry_service_pb2 as rpb
from alphaswarm_common.errors import InvalidArgument, NotFound, RequestTooLarge
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.tracking import ArtifactEntry, RunDetails
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.deps import GatewayDep, PageSize

__all__ = ["MAX_LISTED_ARTIFACTS", "models", "runs", "safe_artifact_path"]

MAX_LISTED_ARTIFACTS = 1000
"""At most this many artifacts are listed per MLflow run (`artifacts_truncated` says when more exist)."""

runs = APIRouter(prefix="/ml/alpha-backtest-runs", tags=["alpha-backtest-runs"])
models = APIRouter(prefix="/models", tags=["models"])


def safe_artifact_path(path: str) -> str:
    """`path` as a relative artifact path inside a run, or `InvalidArgument` naming `path`."""
    if not path or not path.strip("/"):
        raise InvalidArgument("an artifact path is required", field="path")
    if "\x00" in path or "\\" in path:
        raise InvalidArgument("must not contain NUL or backslash characters", field="path")
    if path.startswith("/") or PurePosixPath(path).is_absolute() or (len(path) > 1 and path[1] == ":"):
        raise InvalidArgument("must be a path relative to the run's artifacts, not absolute", field="path")
    parts = path.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidArgument("must not contain '.' or '..' segments", field="path")
    return "/".join(p for p in parts if p)


async def _mlflow_runs(gw: Gateway, run_id: str) -> dict[str, str]:
    """role (`parent`, `train`, `backtest`) -> MLflow run id of an alpha-backtest run (404 for an unknown run)."""
    run = await gw.get_run(run_id=run_id)
    ids = {
        "parent": run.mlflow_parent_run_id,
        "train": run.mlflow_train_run_id,
        "backtest": run.mlflow_backtest_run_id,
    }
    return {role: mlflow_id for role, mlflow_id in ids.items() if mlflow_id}


def _run_view(
    role: str, details: RunDetails, artifacts: list[ArtifactEntry], truncated: bool
) -> dict[str, Any]:
    return {
        "role": role,
        "run_id": details.run_id,
        "run_name": details.run_name,
        "experiment_id": details.experiment_id,
        "status": details.status,
        "start_time_ms": details.start_time_ms,
        "end_time_ms": details.end_time_ms,
        "params": details.params,
        "metrics": details.metrics,
        "tags": details.tags,
        "artifacts": [{"path": a.path, "size": a.size, "is_dir": a.is_dir} for a in artifacts],
        "artifacts_truncated": truncated,
    }


@runs.get(
    "/{run_id}/mlflow",
    operation_id="get_alpha_backtest_run_mlflow",
    summary="The MLflow runs of a run (parent, train, backtest) with their params, metrics, tags and artifacts",
)
async def get_run_mlflow(run_id: str, gw: GatewayDep) -> dict[str, Any]:
    ids = await _mlflow_runs(gw, run_id)
    tracker = gw.tracker

    def read(role: str, mlflow_id: str) -> dict[str, Any]:
        details = tracker.run_details(mlflow_id, field=f"mlflow_{role}_run_id")
        artifacts, truncated = tracker.list_run_artifacts(mlflow_id, max_entries=MAX_LISTED_ARTIFACTS)
        return _run_view(role, details, artifacts, truncated)

    views = await asyncio.gather(*(asyncio.to_thread(read, role, i) for role, i in ids.items()))
    by_role = dict(zip(ids, views, strict=True))
    return {
        "run_id": run_id,
        "parent": by_role.get("parent"),
        "train": by_role.get("train"),
        "backtest": by_role.get("backtest"),
    }


def _content_type(path: str) -> str:
    guessed, encoding = mimetypes.guess_type(path, strict=False)
    if encoding or not guessed:
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/json", "application/x-yaml"):
        return f"{guessed}; charset=utf-8"
    return guessed


@runs.get(
    "/{run_id}/artifacts/{mlflow_run_id}/{path:path}",
    operation_id="get_alpha_backtest_run_artifact",
    summary="Download one artifact file of one of the run's MLflow runs",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes."},
        413: {"description": "The artifact is larger than `ALPHASWARM_ARTIFACT_DOWNLOAD_MAX_BYTES`."},
    },
)
async def get_run_artifact(run_id: str, mlflow_run_id: str, path: str, gw: GatewayDep) -> FileResponse:
    """The bytes of `path` in the MLflow run `mlflow_run_id`, which must be the parent, train or
    backtest run of `run_id` (404 for any other MLflow run)."""
    rel = safe_artifact_path(path)
    ids = await _mlflow_runs(gw, run_id)
    if mlflow_run_id not in ids.values():
        raise NotFound(f"{mlflow_run_id} is not an MLflow run of run {run_id}", field="mlflow_run_id")
    tracker = gw.tracker
    cap = gw.settings.artifact_download_max_bytes

    def check(size: int | None) -> None:
        if size is not None and size > cap:
            raise RequestTooLarge(
                f"the artifact is {size} bytes, more than the limit of {cap} bytes "
                "(ALPHASWARM_ARTIFACT_DOWNLOAD_MAX_BYTES)",
                field="path",
                reason="ARTIFACT_TOO_LARGE",
            )

    def fetch() -> tuple[str, str]:
        entry = tracker.artifact_entry(mlflow_run_id, rel)
        if entry.is_dir:
            raise InvalidArgument(f"{rel!r} is a folder; download its files one by one", field="path")
        check(entry.size)
        tmp = tempfile.mkdtemp(prefix="alphaswarm-artifact-")
        try:
            local = Path(tracker.download_run_artifact(mlflow_run_id, rel, tmp))
            if not local.is_file():
                raise InvalidArgument(f"{rel!r} is a folder; download its files one by one", field="path")
            check(local.stat().st_size)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp, str(local)

    tmp, local = await asyncio.to_thread(fetch)
    return FileResponse(
        local,
        media_type=_content_type(rel),
        filename=PurePosixPath(rel).name,
        # An artifact is data, never a page of the gateway's origin (an HTML report included).
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True),
    )


def _model_view(m: rpb.RegisteredModel) -> dict[str, Any]:
    return {
        "name": m.name,
        "description": m.description,
        "aliases": dict(m.aliases),
        "latest_version": m.latest_version or None,
        "tags": dict(m.tags),
        "created_at_ms": m.created_at_ms,
        "updated_at_ms": m.updated_at_ms,
    }


def _version_view(v: rpb.ModelVersion) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "aliases": list(v.aliases),
        "run_id": v.run_id,
        "source": v.source,
        "tags": dict(v.tags),
        "status": v.status,
        "created_at_ms": v.created_at_ms,
    }


@models.get("", operation_id="list_registered_models", summary="Registered models by name")
async def list_models(gw: GatewayDep, page_size: PageSize = 50, page_token: str = "") -> dict[str, Any]:
    page = await aio_call(
        gw.clients.registry.ListRegisteredModels,
        rpb.ListRegisteredModelsRequest(page_size=page_size, page_token=page_token),
        timeout=gw.settings.deadline_default_seconds,
        target="registry",
    )
    return {"items": [_model_view(m) for m in page.models], "next_page_token": page.next_page_token or None}


@models.get(
    "/{name}/versions", operation_id="list_model_versions", summary="Versions of a model, newest first"
)
async def list_versions(
    name: str, gw: GatewayDep, page_size: PageSize = 50, page_token: str = ""
) -> dict[str, Any]:
    page = await aio_call(
        gw.clients.registry.ListModelVersions,
        rpb.ListModelVersionsRequest(name=name, page_size=page_size, page_token=page_token),
        timeout=gw.settings.deadline_default_seconds,
        target="registry",
    )
    return {
        "items": [_version_view(v) for v in page.versions],
        "next_page_token": page.next_page_token or None,
    }
