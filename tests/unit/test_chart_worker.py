"""The chart worker: the same bytes drawn in a worker process as in place, and in place when it dies."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from alphaswarm_backtester.series import equity_png
from alphaswarm_common import chart_worker


def _series() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dates = np.arange("2020-01-01", "2021-01-01", dtype="datetime64[D]")
    equity = 100.0 * np.cumprod(1.0 + 0.01 * np.sin(np.arange(dates.size) / 7.0))
    drawdown = equity / np.maximum.accumulate(equity) - 1.0
    return dates, equity, drawdown


def _pid() -> int:
    return os.getpid()


@pytest.fixture
def worker() -> Iterator[None]:
    chart_worker.start()
    try:
        yield
    finally:
        chart_worker.stop()


def test_without_a_worker_the_chart_is_drawn_in_place() -> None:
    assert not chart_worker.running()
    assert chart_worker.submit(_pid).result() == os.getpid()
    with pytest.raises(ZeroDivisionError):
        chart_worker.submit(divmod, 1, 0).result()


def test_the_worker_draws_the_same_png_in_another_process(worker: None) -> None:
    assert chart_worker.running()
    assert chart_worker.submit(_pid).result() != os.getpid()
    png = chart_worker.submit(equity_png, *_series()).result()
    assert png.startswith(b"\x89PNG")
    assert png == equity_png(*_series())
    with pytest.raises(ZeroDivisionError):  # the function's own error reaches the caller
        chart_worker.submit(divmod, 1, 0).result()


def test_a_dead_worker_leaves_the_charts_to_the_caller(worker: None) -> None:
    pid = chart_worker.submit(_pid).result()
    os.kill(pid, signal.SIGKILL)
    assert chart_worker.submit(_pid).result() == os.getpid()
    assert chart_worker.submit(equity_png, *_series()).result() == equity_png(*_series())


def test_stop_returns_to_drawing_in_place(worker: None) -> None:
    chart_worker.stop()
    assert not chart_worker.running()
    assert chart_worker.submit(_pid).result() == os.getpid()


def test_a_metric_set_crosses_to_the_worker_intact() -> None:
    import pickle

    from alphaswarm_common.metrics import MetricSet

    metrics = MetricSet({"sharpe": 1.5, "sortino": None}, {"sortino": "no losing bars"}, {"rf": 0.0})
    copy = pickle.loads(pickle.dumps(metrics))
    assert copy == metrics
    assert copy.reason("sortino") == "no losing bars"
    with pytest.raises(TypeError):  # still read-only
        copy.values["sharpe"] = 2.0  # type: ignore[index]
