"""`MetricSet`: metric values, why the undefined ones are undefined, and the conventions used.

Invariants, checked on construction (so a `MetricSet` read back with
`from_dict` is as trustworthy as one just computed):

- every value is a finite float, an int (counts such as `n_dates`) or None;
  NaN and ±inf never appear, so `json.dumps(ms.to_dict(), allow_nan=False)`
  always works;
- every None value has a reason, and reasons exist only for None values;
- conventions are JSON values (str, bool, int, finite float, None, lists and
  string-keyed dicts of those); NumPy scalars are converted to Python ones.

The three mappings are read-only views (`types.MappingProxyType`): a metric
set is a record of what was computed, not a scratch pad.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from alphaswarm_common.errors import InvalidArgument

__all__ = ["MetricSet"]

MetricValue = float | int | None


def _metric_value(name: str, value: Any) -> MetricValue:
    """A finite Python float/int or None; anything else is an InvalidArgument naming `values.<name>`."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        raise InvalidArgument(f"metric {name!r} is a boolean, expected a number", field=f"values.{name}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        out = float(value)
        if not math.isfinite(out):
            raise InvalidArgument(
                f"metric {name!r} is {out!r}; an undefined metric is None with a reason",
                field=f"values.{name}",
            )
        return out
    raise InvalidArgument(
        f"metric {name!r} has type {type(value).__name__}, expected a number or None", field=f"values.{name}"
    )


def json_value(value: Any, path: str = "conventions") -> Any:
    """A deep copy of `value` made of strict-JSON types (NumPy scalars and arrays converted)."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        out = float(value)
        if not math.isfinite(out):
            raise InvalidArgument(f"{out!r} is not valid JSON", field=path)
        return out
    if isinstance(value, np.ndarray):
        return [json_value(v, f"{path}[{i}]") for i, v in enumerate(value.tolist())]
    if isinstance(value, Mapping):
        out_map: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidArgument(f"key {k!r} is not a string", field=path)
            out_map[k] = json_value(v, f"{path}.{k}")
        return out_map
    if isinstance(value, list | tuple):
        return [json_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise InvalidArgument(f"{type(value).__name__} is not a JSON value", field=path)


@dataclass(frozen=True)
class MetricSet:
    """Named metric values with the reason for each undefined one and the conventions used.

    `values[name]` is a finite number or None; `reasons[name]` says why a value
    is None ("zero variance", "no losing trades", ...); `conventions` records
    every convention the numbers depend on (`periods_per_year`, `rf`, `ddof`,
    `ic_mode`, ...), so two metric sets can be compared knowingly.
    """

    values: Mapping[str, MetricValue]
    reasons: Mapping[str, str] = field(default_factory=dict)
    conventions: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {str(k): _metric_value(str(k), v) for k, v in self.values.items()}
        reasons = {str(k): str(v) for k, v in self.reasons.items()}
        for name, value in values.items():
            if value is None and not reasons.get(name):
                raise InvalidArgument(f"metric {name!r} is None without a reason", field=f"reasons.{name}")
        for name in reasons:
            if name not in values or values[name] is not None:
                raise InvalidArgument(
                    f"reason given for {name!r}, which is not an undefined metric", field=f"reasons.{name}"
                )
        conventions = json_value(dict(self.conventions))
        object.__setattr__(self, "values", MappingProxyType(values))
        object.__setattr__(self, "reasons", MappingProxyType(reasons))
        object.__setattr__(self, "conventions", MappingProxyType(conventions))

    def __reduce__(self) -> tuple[Any, ...]:
        # the read-only views do not pickle; a copy is rebuilt (and checked) from plain dicts
        return (type(self), (dict(self.values), dict(self.reasons), dict(self.conventions)))

    def get(self, name: str, default: MetricValue = None) -> MetricValue:
        """The value of `name`, or `default` when the metric is absent (an undefined metric is None)."""
        return self.values.get(name, default)

    def reason(self, name: str) -> str | None:
        """Why `name` is None (None when it is defined or absent)."""
        return self.reasons.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def __getitem__(self, name: str) -> MetricValue:
        return self.values[name]

    def to_dict(self) -> dict[str, Any]:
        """`{"values", "reasons", "conventions"}` as fresh plain dicts; strict-JSON safe."""
        return {
            "values": dict(self.values),
            "reasons": dict(self.reasons),
            "conventions": json_value(dict(self.conventions)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricSet:
        """Inverse of `to_dict`; malformed input raises InvalidArgument naming the field."""
        if not isinstance(data, Mapping):
            raise InvalidArgument("a metric set must be a mapping", field="metric_set")
        unknown = set(data) - {"values", "reasons", "conventions"}
        if unknown:
            raise InvalidArgument(f"unknown keys {sorted(unknown)}", field=sorted(unknown)[0])
        parts: dict[str, Mapping[str, Any]] = {}
        for key in ("values", "reasons", "conventions"):
            part = data.get(key) or {}
            if not isinstance(part, Mapping):
                raise InvalidArgument(f"{key} must be a mapping", field=key)
            parts[key] = part
        return cls(values=parts["values"], reasons=parts["reasons"], conventions=parts["conventions"])


class _Builder:
    """Collects metrics for a `MetricSet`; a non-finite value becomes None with a reason."""

    def __init__(self) -> None:
        self.values: dict[str, MetricValue] = {}
        self.reasons: dict[str, str] = {}

    def put(self, name: str, value: float | int | None, reason: str | None = None) -> None:
        """Record `value`; None needs `reason`; NaN/inf become None "not finite (numerical overflow)"."""
        if value is not None and not isinstance(value, int | np.integer):
            value = float(value)
            if not math.isfinite(value):
                reason = "not finite (numerical overflow)"
                value = None
        if value is None:
            if not reason:
                raise ValueError(f"metric {name!r} is undefined without a reason")
            self.values[name] = None
            self.reasons[name] = reason
        else:
            self.values[name] = value
            self.reasons.pop(name, None)

    def get(self, name: str) -> MetricValue:
        return self.values.get(name)

    def reason(self, name: str) -> str | None:
        return self.reasons.get(name)

    def build(self, conventions: Mapping[str, Any]) -> MetricSet:
        return MetricSet(values=self.values, reasons=self.reasons, conventions=conventions)
