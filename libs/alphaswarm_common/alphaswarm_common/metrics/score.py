"""The combined score of a model's ML and trading metrics (METRICS.md, "Combined score").

`score = sum_k w_k * tanh(m_k / s_k) / sum_k w_k` over the components k whose
metric is present, so the score lies in [-1, 1] and metrics of different
scales can be weighed: `s_k` is the value at which a component reaches
tanh(1) ≈ 0.76 of its full weight. Defaults:

| k           | weight | scale | m_k              | read from        |
|-------------|--------|-------|------------------|------------------|
| sharpe      | 0.45   | 1.0   | sharpe           | trading metrics  |
| icir        | 0.20   | 0.5   | icir             | ML metrics       |
| ic_spearman | 0.15   | 0.05  | ic_spearman      | ML metrics       |
| hit_rate    | 0.10   | 0.05  | hit_rate - 0.5   | ML metrics       |
| calmar      | 0.10   | 1.0   | calmar           | trading metrics  |

Rules:

- `weights` given replace the defaults key by key; an unknown key, a
  negative or a non-finite weight is an InvalidArgument naming
  `weights.<key>`. `scales` works the same way (positive, finite).
- A component whose metric is absent, None or not finite drops out, as does
  one with weight 0; the remaining weights renormalise. `dropped` records
  each dropped component with the reason (a None metric carries the reason
  its metric set gave).
- When nothing is left the score is None with a reason.
- `components[k]` = `{"value": m_k as reported (hit_rate itself, not
  hit_rate - 0.5), "scale": s_k, "weight": w_k / sum of the used weights,
  "contribution": that weight * tanh((m_k - centre_k) / s_k)}`; the
  contributions sum to the score. `weights_used` is the full weight table in
  force (defaults merged with the caller's), before renormalisation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.metrics._types import MetricSet, json_value

__all__ = [
    "DEFAULT_SCORE_SCALES",
    "DEFAULT_SCORE_WEIGHTS",
    "SCORE_CENTERS",
    "SCORE_SOURCES",
    "ScoreResult",
    "combined_score",
]

DEFAULT_SCORE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"sharpe": 0.45, "icir": 0.20, "ic_spearman": 0.15, "hit_rate": 0.10, "calmar": 0.10}
)
DEFAULT_SCORE_SCALES: Mapping[str, float] = MappingProxyType(
    {"sharpe": 1.0, "icir": 0.5, "ic_spearman": 0.05, "hit_rate": 0.05, "calmar": 1.0}
)
# m_k = metric - centre: a hit rate of 0.5 is a coin flip and scores 0.
SCORE_CENTERS: Mapping[str, float] = MappingProxyType(
    {"sharpe": 0.0, "icir": 0.0, "ic_spearman": 0.0, "hit_rate": 0.5, "calmar": 0.0}
)
# Which metric set each component is read from.
SCORE_SOURCES: Mapping[str, str] = MappingProxyType(
    {"sharpe": "trading", "icir": "ml", "ic_spearman": "ml", "hit_rate": "ml", "calmar": "trading"}
)

MetricsLike = MetricSet | Mapping[str, float | int | None]


@dataclass(frozen=True)
class ScoreResult:
    """A combined score with the components it was built from.

    `score` is in [-1, 1], or None (with `reason`) when no component was
    usable. `components` maps each used name to `{"value", "scale", "weight",
    "contribution"}` (weight renormalised over the used components);
    `weights_used` is the weight table in force before renormalisation;
    `dropped` maps each unused component to why.
    """

    score: float | None
    components: Mapping[str, Mapping[str, float]]
    weights_used: Mapping[str, float]
    dropped: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None
    scales_used: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        freeze = MappingProxyType
        object.__setattr__(
            self, "components", freeze({k: freeze(dict(v)) for k, v in self.components.items()})
        )
        object.__setattr__(self, "weights_used", freeze(dict(self.weights_used)))
        object.__setattr__(self, "dropped", freeze(dict(self.dropped)))
        object.__setattr__(self, "scales_used", freeze(dict(self.scales_used)))

    def to_dict(self) -> dict[str, Any]:
        """Plain, strict-JSON-safe dict of every field."""
        out: dict[str, Any] = json_value(
            {
                "score": self.score,
                "components": {k: dict(v) for k, v in self.components.items()},
                "weights_used": dict(self.weights_used),
                "dropped": dict(self.dropped),
                "reason": self.reason,
                "scales_used": dict(self.scales_used),
            },
            "score_result",
        )
        return out


def _merge(
    overrides: Mapping[str, float] | None, defaults: Mapping[str, float], name: str, *, positive: bool
) -> dict[str, float]:
    merged = dict(defaults)
    if overrides is None:
        return merged
    if not isinstance(overrides, Mapping):
        raise InvalidArgument(f"must be a mapping of component name to number, got {overrides!r}", field=name)
    for key, raw in overrides.items():
        path = f"{name}.{key}"
        if key not in defaults:
            raise InvalidArgument(f"unknown score component {key!r}; known: {sorted(defaults)}", field=path)
        if isinstance(raw, bool) or not isinstance(raw, numbers.Real):
            raise InvalidArgument(f"must be a number, got {raw!r}", field=path)
        value = float(raw)
        if not math.isfinite(value) or value < 0.0 or (positive and value == 0.0):
            bound = "> 0" if positive else ">= 0"
            raise InvalidArgument(f"must be a finite number {bound}, got {raw!r}", field=path)
        merged[key] = value
    return merged


def _lookup(metrics: MetricsLike | None, name: str) -> tuple[float | None, str | None]:
    """(value, reason-if-unusable) of `name` in a MetricSet or a plain mapping."""
    if metrics is None:
        return None, "metric set not given"
    values = metrics.values if isinstance(metrics, MetricSet) else metrics
    if name not in values:
        return None, "metric absent"
    raw = values[name]
    if raw is None:
        why = metrics.reason(name) if isinstance(metrics, MetricSet) else None
        return None, f"metric undefined: {why}" if why else "metric undefined"
    if isinstance(raw, bool):
        return None, "metric is not a number"
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None, "metric is not a number"
    if not math.isfinite(value):
        return None, "metric is not finite"
    return value, None


def combined_score(
    ml_metrics: MetricsLike | None,
    trading_metrics: MetricsLike | None,
    weights: Mapping[str, float] | None = None,
    *,
    scales: Mapping[str, float] | None = None,
) -> ScoreResult:
    """`sum_k w_k tanh((m_k - c_k) / s_k) / sum_k w_k` over the usable components (see module docstring)."""
    weights_used = _merge(weights, DEFAULT_SCORE_WEIGHTS, "weights", positive=False)
    scales_used = _merge(scales, DEFAULT_SCORE_SCALES, "scales", positive=True)
    sources = {"ml": ml_metrics, "trading": trading_metrics}

    present: dict[str, float] = {}
    dropped: dict[str, str] = {}
    for name, weight in weights_used.items():
        value, why = _lookup(sources[SCORE_SOURCES[name]], name)
        if value is None:
            dropped[name] = why or "metric undefined"
        elif weight == 0.0:
            dropped[name] = "weight 0"
        else:
            present[name] = value

    total = sum(weights_used[name] for name in present)
    if not present or total <= 0.0:
        return ScoreResult(
            score=None,
            components={},
            weights_used=weights_used,
            dropped=dropped,
            reason="no component has both a defined metric and a positive weight",
            scales_used=scales_used,
        )

    components: dict[str, dict[str, float]] = {}
    score = 0.0
    for name, value in present.items():
        weight = weights_used[name] / total
        contribution = weight * math.tanh((value - SCORE_CENTERS[name]) / scales_used[name])
        components[name] = {
            "value": value,
            "scale": scales_used[name],
            "weight": weight,
            "contribution": contribution,
        }
        score += contribution
    return ScoreResult(
        score=max(-1.0, min(1.0, score)),
        components=components,
        weights_used=weights_used,
        dropped=dropped,
        scales_used=scales_used,
    )
