"""A backtest's series as data: one Parquet file and a small PNG for the tracking run.

`series_parquet(out)` is `series.parquet` (LZ4: for float series nearly as small
as zstd and about three times faster to write): one row per bar with the
columns `date` (date32; a timestamp when the bars are intraday), `equity`, `drawdown`, `returns` (float64, exactly
the engine's values) and `weight:<symbol>` for each symbol's end-of-bar
weight (`weights_held`). Read it back with `pandas.read_parquet` or
`pyarrow.parquet.read_table`.

`series_png(out)` is `equity.png`: equity over drawdown, drawn with
matplotlib's Agg backend from at most `PLOT_POINTS` points per curve (each
bucket of bars contributes its first, lowest and highest value, so peaks and
the deepest drawdown survive the thinning).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alphaswarm_common import chart_worker

if TYPE_CHECKING:
    from alphaswarm_backtester.engine import BacktestOutput
    from alphaswarm_common.chart_worker import Pending

__all__ = [
    "PLOT_FILE",
    "PLOT_POINTS",
    "SERIES_FILE",
    "draw_series_png",
    "equity_png",
    "series_artifacts",
    "series_parquet",
    "series_png",
]

SERIES_FILE = "series.parquet"
PLOT_FILE = "equity.png"
PLOT_POINTS = 3000


def _date_column(dates: np.ndarray) -> pa.Array:
    """Days as date32; bars within a day (intraday stamps) as timestamps, nothing rounded away."""
    days = dates.astype("datetime64[D]")
    if np.array_equal(days.astype(dates.dtype), dates):
        return pa.array(days, type=pa.date32())
    return pa.array(dates.astype("datetime64[ns]"), type=pa.timestamp("ns"))


def series_parquet(out: BacktestOutput) -> bytes:
    """The Parquet bytes of `series.parquet` (module docstring)."""
    columns: dict[str, pa.Array] = {
        "date": _date_column(np.asarray(out.dates)),
        "equity": pa.array(np.asarray(out.equity, dtype=np.float64)),
        "drawdown": pa.array(np.asarray(out.drawdown, dtype=np.float64)),
        "returns": pa.array(np.asarray(out.returns, dtype=np.float64)),
    }
    held = np.asarray(out.weights_held, dtype=np.float64).reshape(len(columns["date"]), -1)
    for j, symbol in enumerate(out.symbols):
        columns[f"weight:{symbol}"] = pa.array(held[:, j])
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="lz4", use_dictionary=False)
    return sink.getvalue()


def _thin(x: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Bar positions and values of `x` kept for a plot of about `points` points."""
    n = x.shape[0]
    if n <= points:
        return np.arange(n), x
    per = int(np.ceil(n / (points / 3)))
    m = n // per * per
    blocks = x[:m].reshape(-1, per)
    base = np.arange(0, m, per)
    lo, hi = base + blocks.argmin(axis=1), base + blocks.argmax(axis=1)
    tail = x[m:]
    ends = [m + int(tail.argmin()), m + int(tail.argmax())] if tail.size else []
    keep = np.unique(np.concatenate([base, lo, hi, np.asarray(ends, dtype=np.int64), [n - 1]]))
    return keep, x[keep]


def series_png(out: BacktestOutput, *, points: int = PLOT_POINTS) -> bytes:
    """The PNG bytes of `equity.png` (module docstring)."""
    return equity_png(out.dates, out.equity, out.drawdown, points=points)


def draw_series_png(out: BacktestOutput) -> Pending[bytes]:
    """`series_png(out)` handed to the chart worker (`alphaswarm_common.chart_worker`), drawn in place without one."""
    return chart_worker.submit(
        equity_png,
        np.asarray(out.dates),
        np.asarray(out.equity, dtype=np.float64),
        np.asarray(out.drawdown, dtype=np.float64),
    )


def equity_png(
    dates: np.ndarray, equity: np.ndarray, drawdown: np.ndarray, *, points: int = PLOT_POINTS
) -> bytes:
    """`equity.png` of the dates, the equity curve and the drawdown."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure  # the Agg canvas, no pyplot state, no display
    from matplotlib.ticker import MaxNLocator

    dates = np.asarray(dates).astype("datetime64[D]")
    fig = Figure(figsize=(7.0, 4.0), dpi=80)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.96, bottom=0.1, hspace=0.08)  # fixed: no layout pass
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    i, curve = _thin(np.asarray(equity, dtype=np.float64), points)
    top.plot(dates[i], curve, linewidth=0.8)
    top.set_ylabel("equity")
    j, under = _thin(np.asarray(drawdown, dtype=np.float64), points)
    bottom.fill_between(dates[j], under, 0.0, step="post", linewidth=0, alpha=0.6, color="tab:red")
    bottom.set_ylabel("drawdown")
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    for axis in (top.yaxis, bottom.yaxis):
        axis.set_major_locator(MaxNLocator(4))
    sink = io.BytesIO()
    fig.savefig(sink, format="png")
    return sink.getvalue()


def series_artifacts(out: BacktestOutput, png: Pending[bytes] | None = None) -> dict[str, bytes]:
    """`{SERIES_FILE: parquet bytes, PLOT_FILE: png bytes}` for the tracking run (`png`: `draw_series_png(out)`)."""
    png = png or draw_series_png(out)
    parquet = series_parquet(out)
    return {SERIES_FILE: parquet, PLOT_FILE: png.result()}
