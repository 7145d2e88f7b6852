"""`BackgroundTearsheets`: a signal backtest's tearsheet logged after `RunBacktest` has returned.

The tearsheet (`alphaswarm_common.reporting.log_backtest_tearsheet`: the
comparisons and the page) is a view of a backtest, never part of it: the
backtest's own MLflow artifacts (metrics, `series.parquet`, `equity.png`)
are logged and the run ended before the tearsheet logger is called, and the
catalog row is written by the call itself. On a large panel the comparisons
take longer than the backtest, so they are drawn on one worker thread:

- a panel of at most `inline_cells` (dates x symbols) cells is logged in the
  call, as before (milliseconds; a reader right after the call finds it);
- a larger one is queued and the call returns; at most `max_pending`
  tearsheets wait (each holds its closes and signal), beyond that the call
  logs in place (back-pressure: nothing is dropped);
- a failure is logged, never raised (as `log_backtest_tearsheet` does);
- `drain()` waits for the queue (tests, shutdown); the worker is a
  `ThreadPoolExecutor` thread, which the interpreter joins at exit after
  the queued work, so a graceful stop of the service logs what was queued.

Until a queued tearsheet is logged, `tearsheet/comparisons.json` is absent
from the run and a catalog tearsheet of that backtest says that no
comparisons are recorded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

__all__ = ["INLINE_CELLS", "BackgroundTearsheets"]

log = logging.getLogger(__name__)

INLINE_CELLS = 1 << 21
"""Panels up to this many (dates x symbols) cells (2,097,152: 8 years x 1,000 symbols) are logged in the call."""


class BackgroundTearsheets:
    """A `TearsheetLogger` (core.py) that logs large panels' tearsheets on a worker thread (module docstring)."""

    def __init__(
        self, log_tearsheet: Callable[..., None], *, inline_cells: int = INLINE_CELLS, max_pending: int = 2
    ) -> None:
        self._log = log_tearsheet
        self.inline_cells = int(inline_cells)
        self.max_pending = int(max_pending)
        self._lock = threading.Lock()
        self._pending: set[Future[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tearsheet")

    def __call__(self, run_id: str, out: Any, *, close: Any, signal: Any, **kwargs: Any) -> None:
        cells = int(np.size(signal))
        future: Future[None] | None = None
        with self._lock:
            if cells > self.inline_cells and len(self._pending) < self.max_pending:
                future = self._executor.submit(self._safe, run_id, out, close=close, signal=signal, **kwargs)
                self._pending.add(future)
        if future is None:
            self._safe(run_id, out, close=close, signal=signal, **kwargs)
        else:
            future.add_done_callback(self._done)

    @property
    def pending(self) -> int:
        """Tearsheets queued or being drawn."""
        with self._lock:
            return sum(1 for f in self._pending if not f.done())

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the queued tearsheets; True when none is left."""
        with self._lock:
            futures = list(self._pending)
        _, not_done = wait(futures, timeout=timeout)
        return not not_done

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _safe(self, run_id: str, out: Any, **kwargs: Any) -> None:
        try:
            self._log(run_id, out, **kwargs)
        except Exception:  # a view of the result: its failure never reaches the backtest
            log.exception("could not log the tearsheet of MLflow run %s", run_id)
