"""The run page's audit statistics are computed by the run when it saves its audit and stored on
its MLflow parent run: a gateway that never saw the run (a fresh RunCache) draws the page from
them without streaming the audit, and they equal the statistics computed from the streamed audit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import numpy as np
import pytest

from alphaswarm.embedded import EmbeddedStack
from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment
from alphaswarm_gateway.browser import stored
from alphaswarm_gateway.browser.data import RunCache, RunData, _audit
from alphaswarm_gateway.browser.series import audit_stats, series_view
from tests.e2e.conftest import small_run

pytestmark = pytest.mark.e2e


class _Counting:
    """A stand-in for one attribute level of the gateway that counts StreamPredictionAudit calls."""

    def __init__(self, inner: Any, counts: dict[str, int]) -> None:
        self._inner = inner
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == "StreamPredictionAudit":
            self._counts["stream"] += 1
        if name in ("clients", "persistence"):
            return _Counting(value, self._counts)
        return value


def _on_loop(stack: EmbeddedStack, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, stack._loop).result(timeout=300)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def finished(stack: EmbeddedStack) -> Any:
    doc = small_run(run_name="e2e-run-page-stored", capture_predictions=True)
    result = AlphaBacktestExperiment.from_config(
        doc, settings=stack.settings, gateway_addr=stack.gateway_addr
    ).run()
    assert result.status == "succeeded", result.error
    gw = stack._gateway
    return gw, _on_loop(stack, gw.get_run(run_id=result.run_id))


def _same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple) and not isinstance(b, np.ndarray):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        assert x.shape == y.shape, path
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-12, equal_nan=True, err_msg=path)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-12, path
    else:
        assert a == b, path


def test_a_fresh_gateway_cache_serves_the_page_without_streaming_the_audit(
    stack: EmbeddedStack, finished: Any
) -> None:
    gw, run = finished
    counts = {"stream": 0}
    data: RunData = _on_loop(stack, RunCache().get(_Counting(gw, counts), run))
    assert data.stored is not None and data.audit is None
    assert counts["stream"] == 0
    doc = series_view(data, 800)
    assert doc["ic"] is not None and doc["ic"]["n_dates"] > 0
    assert doc["deciles"] is not None and len(doc["deciles"]["gross"]) == 10
    assert doc["audit"]["symbols"] == sorted(doc["audit"]["symbols"])
    assert counts["stream"] == 0


def test_the_stored_statistics_equal_those_of_the_streamed_audit(stack: EmbeddedStack, finished: Any) -> None:
    gw, run = finished
    fast: RunData = _on_loop(stack, RunCache().get(gw, run))
    assert fast.stored is not None and fast.last_rows is not None
    audit = _on_loop(stack, _audit(gw, run.run_id))
    # the statistics themselves
    _same(fast.stored, audit_stats(audit, fast.dates, fast.config))
    # the page built from the stream (as for a run made before they were stored) is the same
    slow = dataclasses.replace(
        fast, stored=None, last_rows=None, audit=audit, cache={}, lock=threading.Lock()
    )
    _same(series_view(fast, 800), series_view(slow, 800))
    _same(series_view(fast, 60), series_view(slow, 60))
    # the audit table's first view (the last date) comes from the stored rows
    assert fast.last_rows["date"] == audit.dates[-1]
    for f in audit.FIELDS:
        np.testing.assert_array_equal(fast.last_rows[f], getattr(audit, f)[-1].astype(np.float64))


def test_the_artifact_is_compact_and_round_trips(stack: EmbeddedStack, finished: Any) -> None:
    gw, run = finished
    audit = _on_loop(stack, _audit(gw, run.run_id))
    fast: RunData = _on_loop(stack, RunCache().get(gw, run))
    doc = audit_stats(audit, fast.dates, fast.config)
    blob = stored.to_bytes(doc, stored.last_date_rows(audit))
    back, last = stored.from_bytes(blob)
    _same(back, doc)
    assert last["date"] == audit.dates[-1]
    infos = gw.tracker.client.list_artifacts(run.mlflow_parent_run_id, "browser")
    assert [i.path for i in infos] == [stored.ARTIFACT]


def test_the_audit_table_reads_a_symbol_or_another_date_from_the_catalog(
    stack: EmbeddedStack, finished: Any
) -> None:
    from alphaswarm_gateway.browser.api import _audit_row, _date_rows
    from alphaswarm_gateway.browser.data import date_audit, symbol_audit_rows

    gw, run = finished
    counts = {"stream": 0}
    counting = _Counting(gw, counts)
    audit = _on_loop(stack, _audit(gw, run.run_id))
    symbol = audit.symbols[1]
    rows = _on_loop(stack, symbol_audit_rows(counting, run.run_id, symbol))
    col = audit.symbols.index(symbol)
    expected = [
        _audit_row(audit, t, col) for t in range(len(audit.dates)) if np.isfinite(audit.prediction[t, col])
    ]
    assert rows == expected and rows
    assert counts["stream"] == 0
    # another date: the catalog sends that date alone, its rows equal the whole audit's
    at = len(audit.dates) // 2
    one = _on_loop(stack, date_audit(counting, run.run_id, audit.dates[at]))
    assert counts["stream"] == 1
    assert one.dates == [audit.dates[at]]
    assert _date_rows(one, 0) == _date_rows(audit, at) and _date_rows(one, 0)
    # a date the audit does not hold: nothing
    none = _on_loop(stack, date_audit(counting, run.run_id, "1990-01-02"))
    assert none.dates == []
