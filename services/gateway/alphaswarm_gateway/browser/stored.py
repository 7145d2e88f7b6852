"""The run page's audit statistics, computed once by the run when it saves its prediction audit and
stored with it, so that any gateway opens the page without streaming the audit.

The run computes them with the same function the gateway uses over a streamed audit
(`series.audit_stats`), from the audit as the store gives it back (`analytics.audit_from_arrays`),
and logs them as one artifact of its MLflow parent run, `browser/run_page.npz`: the full-length
series (IC and Rank IC per date, buy-and-hold, benchmark, exposure, top weights) as float64 arrays
and the rest (IC decay, deciles, notes, the audit's dates and symbols) as JSON, with the audit rows
of the last date (the audit table's first view). Writing it again replaces it with the same statistics.
A run made before it existed has no such artifact: the gateway computes the statistics then.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np

from alphaswarm_gateway.browser.analytics import Audit, audit_from_arrays

__all__ = ["ARTIFACT", "FORMAT", "build", "from_bytes", "last_date_rows", "to_bytes"]

ARTIFACT = "browser/run_page.npz"
FORMAT = 1
_EXPOSURE = ("gross", "net", "long", "short", "n_positions")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def build(
    dates: list[str], symbols: list[str], fields: dict[str, np.ndarray], config: dict[str, Any]
) -> bytes:
    """The artifact of a run whose audit is `fields` (`Audit.FIELDS` -> (dates x symbols) matrices,
    as saved) under its configuration `config` (JSON form)."""
    from alphaswarm_gateway.browser.series import audit_stats

    audit = audit_from_arrays(dates, symbols, fields)
    return to_bytes(audit_stats(audit, dates, config), last_date_rows(audit))


def last_date_rows(audit: Audit) -> dict[str, Any]:
    """The audit on its last date (every symbol), float32 values as float64 (NaN when absent)."""
    if not audit.dates:
        return {}
    t = len(audit.dates) - 1
    return {
        "date": audit.dates[t],
        **{f: np.asarray(getattr(audit, f)[t], dtype=np.float64) for f in Audit.FIELDS},
    }


def to_bytes(doc: dict[str, Any], last: dict[str, Any]) -> bytes:
    """`doc` (the output of `series.audit_stats`) and the last date's rows as one `.npz`."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"format": FORMAT}
    for key in ("ic_decay", "deciles", "notes", "benchmark_symbol", "audit_dates", "audit_symbols"):
        if key in doc:
            meta[key] = doc[key]
    if "ic" in doc:
        arrays["ic"] = np.asarray(doc["ic"]["ic"], dtype=np.float64)
        arrays["rank_ic"] = np.asarray(doc["ic"]["rank_ic"], dtype=np.float64)
    for key in ("buy_and_hold", "benchmark"):
        if key in doc:
            arrays[key] = np.asarray(doc[key], dtype=np.float64)
    if "exposure" in doc:
        for key in _EXPOSURE:
            arrays[f"exposure_{key}"] = np.asarray(doc["exposure"][key], dtype=np.float64)
    if "weights" in doc:
        meta["weights_symbols"] = [sym for sym, _ in doc["weights"]]
        n = len(doc.get("audit_dates") or [])
        arrays["weights"] = (
            np.vstack([np.asarray(v, dtype=np.float64) for _, v in doc["weights"]])
            if doc["weights"]
            else np.zeros((0, n))
        )
    if last:
        meta["last_date"] = last["date"]
        for f in Audit.FIELDS:
            arrays[f"last_{f}"] = np.asarray(last[f], dtype=np.float64)
    arrays["meta"] = np.frombuffer(json.dumps(_json_safe(meta)).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def from_bytes(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`series.audit_stats` document, last date's rows) of a stored artifact; `ValueError` when it
    is not one of a format this gateway reads."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    if meta.get("format") != FORMAT:
        raise ValueError(f"run page statistics of format {meta.get('format')!r}, not {FORMAT}")
    doc: dict[str, Any] = {}
    for key in ("ic_decay", "deciles", "notes", "benchmark_symbol", "audit_dates", "audit_symbols"):
        if key in meta:
            doc[key] = meta[key]
    if "ic" in arrays:
        doc["ic"] = {"ic": arrays["ic"], "rank_ic": arrays["rank_ic"]}
    for key in ("buy_and_hold", "benchmark"):
        if key in arrays:
            doc[key] = arrays[key]
    if "exposure_gross" in arrays:
        doc["exposure"] = {key: arrays[f"exposure_{key}"] for key in _EXPOSURE}
    if "weights" in arrays:
        doc["weights"] = list(zip(meta["weights_symbols"], list(arrays["weights"]), strict=True))
    last: dict[str, Any] = {}
    if "last_date" in meta:
        last = {"date": meta["last_date"], **{f: arrays[f"last_{f}"] for f in Audit.FIELDS}}
    return doc, last
