"""Shared checks of the observability tests: the metric names a `/metrics` exposition exports and
the metric names the Grafana dashboard's queries use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "alphaswarm-dashboard.json"
_METRIC = re.compile(r"\b(alphaswarm_[a-z0-9_]+)\b")


def exported_names(exposition: str) -> set[str]:
    """Every sample name of a Prometheus text exposition (`x_bucket`, `x_count`, `x_total`, ...)."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels") or []))
    return out


def dashboard_queries() -> dict[str, list[str]]:
    """{panel title: [PromQL expression, ...]} of every panel that is not a row."""
    doc = json.loads(DASHBOARD.read_text())
    return {
        panel["title"]: [t.get("expr", "") for t in panel.get("targets") or []]
        for panel in _panels(doc["panels"])
        if panel.get("type") != "row"
    }


def dashboard_metric_names() -> set[str]:
    """The metric names the dashboard's queries select (every panel must have one)."""
    names: set[str] = set()
    for title, exprs in dashboard_queries().items():
        found = {m for e in exprs for m in _METRIC.findall(e)}
        assert exprs and found, f"panel {title!r} queries no alphaswarm metric"
        names |= found
    return names
