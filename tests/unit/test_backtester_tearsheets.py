"""A large signal backtest's tearsheet is logged after the call returns, never at the cost of the backtest:
its own artifacts and catalog row are there when the call returns, the tearsheet follows on the worker,
a failing tearsheet changes nothing, and a full queue logs in place instead of dropping."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from alphaswarm_backtester.core import Backtester, Recording, SignalBacktestInput
from alphaswarm_backtester.series import SERIES_FILE
from alphaswarm_backtester.servicer import tearsheet_logger
from alphaswarm_backtester.tearsheets import BackgroundTearsheets
from alphaswarm_common.config import BacktestConfig, StrategyConfig
from alphaswarm_common.reporting import COMPARISONS_ARTIFACT, TEARSHEET_ARTIFACT

pytestmark = pytest.mark.unit


@dataclass
class Tracker:
    """The tracking calls the backtester and `log_backtest_tearsheet` make, in memory (thread-safe)."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure_experiment(self, name: str) -> str:
        return f"exp-{name}"

    def create_run(self, experiment_id: str, run_name: str, **_: Any) -> str:
        with self.lock:
            run_id = f"run-{len(self.runs) + 1}"
            self.runs[run_id] = {"files": {}}
            return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.runs[run_id]["params"] = dict(params)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], *, step: int = 0) -> None:
        self.runs[run_id]["metrics"] = dict(metrics)

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        with self.lock:
            self.runs[run_id]["files"].update(files)

    def log_dict(self, run_id: str, doc: Any, path: str) -> None:
        with self.lock:
            self.runs[run_id]["files"][path] = json.dumps(doc).encode()

    def log_text(self, run_id: str, text: str, path: str) -> None:
        with self.lock:
            self.runs[run_id]["files"][path] = text.encode()

    def end_run(self, run_id: str, *, failed: bool = False) -> None:
        self.runs[run_id]["status"] = "FAILED" if failed else "FINISHED"


@dataclass
class Catalog:
    saved: list[Any] = field(default_factory=list)

    def save_backtest(self, entry: Any) -> str:
        self.saved.append(entry)
        return f"bt-{len(self.saved)}"


def _request(t: int, n: int) -> SignalBacktestInput:
    rng = np.random.default_rng(0)
    close = 30 * np.exp(np.cumsum(rng.normal(0, 0.01, (t, n)), axis=0))
    return SignalBacktestInput(
        signal=rng.normal(size=(t, n)),
        dates=np.datetime64("2020-01-01") + np.arange(t),
        symbols=[f"S{i}" for i in range(n)],
        prices={"close": close},
        strategy_cfg=StrategyConfig(type="long_short_topk", params={"top_k": 2}),
        backtest_cfg=BacktestConfig(execution_lag=1),
        recording=Recording(persist=True),
        experiment_id="exp-1",
        parent_run_id="parent",
    )


class Gate:
    """A tearsheet logger that waits for `open` (or fails when told to), then logs for real."""

    def __init__(self, real: Any, *, fail: bool = False) -> None:
        self.real, self.fail = real, fail
        self.started, self.open = threading.Event(), threading.Event()
        self.threads: list[str] = []

    def __call__(self, run_id: str, out: Any, **kwargs: Any) -> None:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.open.wait(60)
        if self.fail:
            raise RuntimeError("cannot draw")
        self.real(run_id, out, **kwargs)


def test_a_large_panel_returns_before_its_tearsheet_and_keeps_its_own_artifacts() -> None:
    tracker, catalog = Tracker(), Catalog()
    gate = Gate(tearsheet_logger(tracker))  # type: ignore[arg-type]
    background = BackgroundTearsheets(gate, inline_cells=100)
    backtester = Backtester(tracker, catalog, tearsheet=background)  # type: ignore[arg-type]

    run = backtester.run_backtest(_request(60, 8))  # 480 cells > 100: queued

    assert gate.started.wait(60) and background.pending == 1
    files = tracker.runs[run.run_id]["files"]
    assert SERIES_FILE in files and tracker.runs[run.run_id]["status"] == "FINISHED"
    assert run.backtest_id == "bt-1" and len(catalog.saved) == 1
    assert COMPARISONS_ARTIFACT not in files and TEARSHEET_ARTIFACT not in files
    gate.open.set()
    assert background.drain(60) and background.pending == 0
    assert gate.threads == ["tearsheet_0"]
    doc = json.loads(files[COMPARISONS_ARTIFACT])
    assert len(doc["dates"]) == 60 and doc["alpha"] is not None
    assert files[TEARSHEET_ARTIFACT].startswith(b"<!DOCTYPE html>")


def test_a_small_panel_is_logged_in_the_call() -> None:
    tracker = Tracker()
    background = BackgroundTearsheets(tearsheet_logger(tracker), inline_cells=1000)  # type: ignore[arg-type]
    run = Backtester(tracker, Catalog(), tearsheet=background).run_backtest(_request(60, 8))  # type: ignore[arg-type]
    assert background.pending == 0
    assert {COMPARISONS_ARTIFACT, TEARSHEET_ARTIFACT, SERIES_FILE} <= set(tracker.runs[run.run_id]["files"])


def test_a_failing_tearsheet_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    tracker, catalog = Tracker(), Catalog()
    gate = Gate(tearsheet_logger(tracker), fail=True)  # type: ignore[arg-type]
    gate.open.set()
    background = BackgroundTearsheets(gate, inline_cells=0)
    run = Backtester(tracker, catalog, tearsheet=background).run_backtest(_request(40, 5))  # type: ignore[arg-type]
    assert background.drain(60) and background.pending == 0
    files = tracker.runs[run.run_id]["files"]
    assert SERIES_FILE in files and TEARSHEET_ARTIFACT not in files and len(catalog.saved) == 1
    assert "could not log the tearsheet" in caplog.text


def test_a_full_queue_logs_in_place() -> None:
    calls: list[str] = []
    release = threading.Event()

    def slow(run_id: str, out: Any, **_: Any) -> None:
        calls.append(f"{run_id}@{threading.current_thread().name}")
        if run_id == "a":
            assert release.wait(60)

    background = BackgroundTearsheets(slow, inline_cells=0, max_pending=1)
    background("a", None, close=np.zeros((3, 3)), signal=np.zeros((3, 3)))
    background("b", None, close=np.zeros((3, 3)), signal=np.zeros((3, 3)))  # the queue is full: here
    assert calls[-1] == f"b@{threading.current_thread().name}"
    release.set()
    assert background.drain(60)
    assert sorted(c.split("@")[0] for c in calls) == ["a", "b"]
