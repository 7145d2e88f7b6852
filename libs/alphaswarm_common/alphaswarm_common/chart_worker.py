"""Charts drawn in a worker process beside an embedded stack.

The embedded stack runs every service in one process, under one GIL. Its
charts (the trainer's evaluation plots, the backtester's `equity.png`, the
tearsheet page) are matplotlib work that needs nothing of the services but
their numbers. `start()` spawns one worker process that imports matplotlib
and the chart modules (and draws one figure, which loads the fonts) while the
stack imports its services, on the other core; `submit(fn, *args)` hands the
worker a module-level function with its data and returns a `Pending`
whose `result()` waits for the result (PNG bytes, a page).

Without a started worker (a service in its own process, the tests), or after
the worker has died, `result()` calls the function in place: the result is
the same either way, only where it is drawn
differs. A caller that records a chart waits for its result before it
records it, so nothing a call promises is missing when it returns.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, TypeVar

__all__ = ["CHART_MODULES", "Pending", "running", "start", "stop", "submit"]

log = logging.getLogger(__name__)

T = TypeVar("T")

CHART_MODULES = ("alphaswarm_common.evaluation", "alphaswarm_common.reporting.html")
"""The chart modules of this package the worker imports at start."""

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None


def _warm(modules: Sequence[str]) -> None:
    """The worker's start: the chart modules imported, one figure drawn (fonts and the Agg canvas)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    for name in modules:
        importlib.import_module(name)
    fig = Figure(figsize=(1, 1), dpi=10)
    FigureCanvasAgg(fig)
    fig.subplots().plot([0, 1], [0, 1])
    fig.savefig(io.BytesIO(), format="png")


def start(modules: Sequence[str] = ()) -> None:
    """Spawn the worker (once per process); it imports `CHART_MODULES` and `modules` right away."""
    global _executor
    with _lock:
        if _executor is not None:
            return
        names = tuple(dict.fromkeys((*CHART_MODULES, *modules)))
        executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        executor.submit(_warm, names)  # a process pool spawns its worker on the first task
        _executor = executor


def running() -> bool:
    """Whether charts go to a worker process."""
    return _executor is not None


def stop() -> None:
    """Stop the worker (queued charts are drawn first); later charts are drawn in place."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True)


class Pending(Generic[T]):
    """A chart being drawn: `result()` waits for it (drawn in place if the worker died meanwhile)."""

    def __init__(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._call = (fn, args, kwargs)
        self._future: Future[T] | None = None
        executor = _executor
        if executor is not None:
            try:
                self._future = executor.submit(fn, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError):  # the worker died, or the pool is shutting down
                log.warning("the chart worker is gone; charts are drawn in place")

    def result(self) -> T:
        if self._future is not None:
            try:
                return self._future.result()
            except BrokenProcessPool:
                log.warning("the chart worker died; the chart is drawn in place")
                self._future = None
        fn, args, kwargs = self._call
        return fn(*args, **kwargs)


def submit(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Pending[T]:
    """`fn(*args, **kwargs)` handed to the worker (drawn in place by `result()` without one)."""
    return Pending(fn, args, kwargs)
