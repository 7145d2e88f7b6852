"""The life of a deployment (`DeployedModelAlpha`): which version it serves and what it served before.

Pure functions on `alphaswarm.common.v1.Deployment` messages (protobuf only;
no gRPC, no MLflow, no I/O); `alphaswarm_registry.core` reads and writes
deployments through the persistence service.

Conventions
-----------
* A deployment pins one registered version (`model_name`, `model_version`).
  It does not follow an alias by itself: moving `champion` changes what a
  *promotion by alias* picks, never what a deployment serves until someone
  promotes it.
* `history` lists the versions served before the current one, oldest first,
  one JSON object per change: `{model_name, version, from, to}` with ISO-8601
  UTC timestamps; `from` is when that version started serving (the previous
  entry's `to`, or the deployment's `created_at`), `to` when it stopped.
  The registry always writes the whole history, so the persistence service
  stores it as sent.
* A change of version appends exactly one entry; re-deploying or promoting
  to the version already served changes nothing in the history.
* Rollback returns to the version served immediately before the current one
  (the last history entry) and, being a change, appends the current version:
  two rollbacks in a row swap back, like `kubectl rollout undo`. Entries
  written without `model_name` (by other writers) mean the deployment's
  current model.
* `model_alias` records an alias that pointed at the served version when it
  was set (the alias asked for when it still points there, else `champion`,
  else the first in alphabetical order, else empty): informational only.
* States: ACTIVE serves; RETIRED is kept for history and refuses every
  change and every prediction. Retiring twice is a no-op.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

from google.protobuf import json_format, struct_pb2

from alphaswarm.common.v1 import resources_pb2

__all__ = [
    "DEFAULT_ALIAS",
    "alias_for",
    "history_of",
    "new_deployment",
    "previous_entry",
    "retired",
    "switched",
]

DEFAULT_ALIAS = "champion"


def history_of(dep: resources_pb2.Deployment) -> list[dict[str, Any]]:
    """The history entries of a deployment, oldest first, as plain dicts."""
    entries = cast("list[Any]", json_format.MessageToDict(dep.history)) if dep.HasField("history") else []
    return [e for e in entries if isinstance(e, dict)]


def _set_history(dep: resources_pb2.Deployment, entries: list[dict[str, Any]]) -> None:
    dep.ClearField("history")
    dep.history.SetInParent()  # present even when empty: the store keeps it as sent
    for entry in entries:
        s = struct_pb2.Struct()
        s.update(entry)
        dep.history.values.add().struct_value.CopyFrom(s)


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).isoformat()


def previous_entry(dep: resources_pb2.Deployment) -> dict[str, Any] | None:
    """The version served before the current one (`model_name` filled in), or None."""
    entries = history_of(dep)
    if not entries:
        return None
    last = dict(entries[-1])
    if not last.get("version"):
        return None
    last["version"] = str(last["version"])
    last["model_name"] = str(last.get("model_name") or dep.model_name)
    return last


def alias_for(version: str, aliases: Mapping[str, str], preferred: str = "") -> str:
    """An alias of `aliases` (alias -> version) that points at `version` (see the module docstring)."""
    pointing = sorted(a for a, v in aliases.items() if str(v) == str(version))
    if preferred and preferred in pointing:
        return preferred
    if DEFAULT_ALIAS in pointing:
        return DEFAULT_ALIAS
    return pointing[0] if pointing else ""


def new_deployment(
    *,
    model_name: str,
    model_version: str,
    model_alias: str,
    dataset_cfg: Any,
    strategy_cfg: Any,
) -> resources_pb2.Deployment:
    """An ACTIVE deployment with an empty history (the store assigns the id and timestamps)."""
    dep = resources_pb2.Deployment(
        model_name=model_name,
        model_version=model_version,
        model_alias=model_alias,
        model_uri=f"models:/{model_name}/{model_version}",
        state=resources_pb2.DEPLOYMENT_STATE_ACTIVE,
    )
    dep.dataset_cfg.CopyFrom(dataset_cfg)
    dep.strategy_cfg.CopyFrom(strategy_cfg)
    _set_history(dep, [])
    return dep


def switched(
    dep: resources_pb2.Deployment,
    *,
    model_name: str,
    model_version: str,
    model_alias: str,
    now: dt.datetime,
) -> resources_pb2.Deployment:
    """A copy of `dep` serving (`model_name`, `model_version`); the old version appended to the history.

    Serving the same version again only updates the alias.
    """
    out = resources_pb2.Deployment()
    out.CopyFrom(dep)
    entries = history_of(dep)
    if (dep.model_name, dep.model_version) != (model_name, model_version):
        since = entries[-1].get("to") if entries else None
        if not since and dep.HasField("created_at"):
            since = _iso(dep.created_at.ToDatetime(tzinfo=dt.UTC))
        entries.append(
            {
                "model_name": dep.model_name,
                "version": dep.model_version,
                "from": since or _iso(now),
                "to": _iso(now),
            }
        )
    _set_history(out, entries)
    out.model_name = model_name
    out.model_version = model_version
    out.model_alias = model_alias
    out.model_uri = f"models:/{model_name}/{model_version}"
    return out


def retired(dep: resources_pb2.Deployment) -> resources_pb2.Deployment:
    """A copy of `dep` in state RETIRED, history unchanged."""
    out = resources_pb2.Deployment()
    out.CopyFrom(dep)
    _set_history(out, history_of(dep))
    out.state = resources_pb2.DEPLOYMENT_STATE_RETIRED
    return out
