"""What a tearsheet shows, gathered from a backtest: `TearsheetData` and the functions that fill it.

Two sources fill the same structure:

- the catalog (`from_catalog`): a `BacktestRecord` with its series and
  trades, as `GetBacktestResult(include_trades=True)` returns it; the
  metrics on the page are the catalog's, to the last digit;
- the comparisons the backtester computes while it still holds the prices
  and the signal (`compute_comparisons`): the benchmark, buy-and-hold of the
  universe and, for an alpha backtest, the per-date IC, the IC decay and the
  decile returns gross and net of costs. They are logged as
  `tearsheet/comparisons.json` on the MLflow `backtest` run and merged into a
  catalog tearsheet when that run is known (`TearsheetData.comparisons`).

Conventions (stated on the page too):

- per-bar portfolio return `r[s] = equity[s] / equity[s-1] - 1`, with
  `equity[-1]` the initial capital (docs/metrics.md, "Backtest accounting");
- buy-and-hold of the universe: equal weights at the close of the first
  date over the symbols priced on it, held without rebalancing (the weights
  drift), no costs; a symbol's missing close keeps its last value;
- benchmark: the close-to-close returns of `backtest_cfg.benchmark`
  compounded from the initial capital;
- per-date `IC_t` / `RankIC_t` (Pearson / Spearman across symbols) of the
  signal against the 1-bar return the decision earns
  (`close[t+lag+1] / close[t+lag] - 1`), the backtest's own return;
- IC decay: mean `RankIC_t` against the h-bar forward return,
  h in 1, 5, 10, 20;
- decile returns: per date, the symbols are cut into 10 equal-count buckets
  by signal (pandas `qcut`); each bucket is an equal-weight long portfolio
  rebalanced every bar. `gross` is its mean 1-bar return; `net` subtracts
  `(fees + slippage) * turnover` of that portfolio (turnover: the sum of
  absolute weight changes between consecutive dates, the first date counting
  as buying the whole bucket). Both in basis points per bar.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alphaswarm_common.evaluation import IC_DECAY_HORIZONS, forward_returns, qcut_buckets
from alphaswarm_common.reporting.signal import signal_ics

__all__ = [
    "DECILES",
    "AlphaDiagnostics",
    "TearsheetData",
    "alpha_diagnostics",
    "alpha_run_id_from_notes",
    "buy_and_hold_equity",
    "compute_comparisons",
    "from_catalog",
    "make_config",
    "trade_row",
]

DECILES = 10
_BLOCK_CELLS = 1 << 19  # cells of a block of rows in `buy_and_hold_equity`

_RUN_NOTE = re.compile(r"^alpha-backtest run ([0-9a-fA-F-]{36})\b")


def _floats(values: Any) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _json_list(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=np.float64)]


@dataclass(frozen=True)
class AlphaDiagnostics:
    """The signal's diagnostics on the traded window (see the module docstring)."""

    ic: np.ndarray  # (T,) IC_t, NaN on skipped dates
    rank_ic: np.ndarray  # (T,) RankIC_t
    decay: dict[int, float | None]  # h -> mean RankIC_t against the h-bar return
    decile_gross_bps: np.ndarray  # (10,) mean 1-bar return per decile, bp
    decile_net_bps: np.ndarray  # (10,) the same net of costs, bp
    decile_turnover: np.ndarray  # (10,) mean turnover per bar of each decile portfolio

    def to_dict(self) -> dict[str, Any]:
        return {
            "ic": _json_list(self.ic),
            "rank_ic": _json_list(self.rank_ic),
            "decay": {str(h): v for h, v in self.decay.items()},
            "decile_gross_bps": _json_list(self.decile_gross_bps),
            "decile_net_bps": _json_list(self.decile_net_bps),
            "decile_turnover": _json_list(self.decile_turnover),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> AlphaDiagnostics:
        return cls(
            ic=_floats(doc["ic"]),
            rank_ic=_floats(doc["rank_ic"]),
            decay={int(h): v for h, v in doc["decay"].items()},
            decile_gross_bps=_floats(doc["decile_gross_bps"]),
            decile_net_bps=_floats(doc["decile_net_bps"]),
            decile_turnover=_floats(doc["decile_turnover"]),
        )


@dataclass
class TearsheetData:
    """Everything one tearsheet shows; `render_tearsheet` turns it into a page."""

    backtest_id: str
    kind: str  # "alpha" (a model's signal) or "rule" (a rule strategy)
    title: str
    dates: np.ndarray  # datetime64[D], (T,)
    equity: np.ndarray  # (T,) currency
    drawdown: np.ndarray  # (T,) fraction <= 0
    initial_capital: float
    metrics: dict[str, float | None]
    metric_reasons: dict[str, str]
    conventions: dict[str, Any]
    config: dict[str, Any]  # universe, window, strategy, costs, benchmark (see `config_rows`)
    trades: list[dict[str, Any]]
    ml_metrics: dict[str, float | None] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    benchmark_equity: np.ndarray | None = None
    buy_and_hold_equity: np.ndarray | None = None
    alpha: AlphaDiagnostics | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def returns(self) -> np.ndarray:
        prev = np.concatenate(([self.initial_capital], self.equity[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.equity / prev - 1.0

    def merge_comparisons(self, doc: Mapping[str, Any]) -> None:
        """Add the comparisons the backtester logged (`compute_comparisons`) when they cover these dates."""
        dates = [str(d) for d in self.dates.astype("datetime64[D]")]
        if list(doc.get("dates", [])) != dates:
            self.notes.append("the logged comparisons cover other dates than the catalog's series; left out")
            return
        if doc.get("benchmark_equity") is not None:
            self.benchmark_equity = _floats(doc["benchmark_equity"])
        if doc.get("buy_and_hold_equity") is not None:
            self.buy_and_hold_equity = _floats(doc["buy_and_hold_equity"])
        if doc.get("alpha") is not None:
            self.alpha = AlphaDiagnostics.from_dict(doc["alpha"])


def trade_row(t: Any) -> dict[str, Any]:
    """A trade (a `Trade` message) as the dict the tearsheet reads."""
    is_open = not t.exit_date
    return {
        "trade_number": int(t.trade_number),
        "symbol": t.symbol or None,
        "direction": t.direction,
        "entry_date": t.entry_date,
        "exit_date": None if is_open else t.exit_date,
        "entry_price": float(t.entry_price),
        "exit_price": None if is_open else float(t.exit_price),
        "pnl": float(t.pnl),
        "pnl_percent": float(t.pnl_percent),
        "mae": float(t.mae),
        "mfe": float(t.mfe),
        "duration_bars": int(t.duration_bars),
        "exit_reason": t.exit_reason or None,
        "fees_paid": float(t.fees_paid),
        "slippage_cost": float(t.slippage_cost),
    }


def alpha_run_id_from_notes(notes: str) -> str | None:
    """The alpha-backtest run of a backtest the gateway saved (its notes start "alpha-backtest run ID")."""
    found = _RUN_NOTE.match(notes or "")
    return found.group(1) if found else None


def make_config(
    *,
    strategy_type: str,
    strategy_params: Mapping[str, Any],
    backtest: Mapping[str, Any],
    symbols: Sequence[str],
    dates: np.ndarray,
    fees: float,
    slippage: float,
    initial_capital: float,
    start: str = "",
    end: str = "",
) -> dict[str, Any]:
    """What was tested, as the tearsheet's "What was tested" table reads it (`html.config_rows`)."""
    day = np.asarray(dates).astype("datetime64[D]")
    return {
        "universe": [str(s) for s in symbols],
        "window": {
            "start": str(day[0]) if day.size else start,
            "end": str(day[-1]) if day.size else end,
            "n_bars": int(day.size),
        },
        "strategy": {"type": strategy_type, "params": dict(strategy_params)},
        "costs": {"fees": float(fees), "slippage": float(slippage), "min_fee": backtest.get("min_fee")},
        "benchmark": backtest.get("benchmark"),
        "initial_capital": float(initial_capital),
        "execution_lag": backtest.get("execution_lag"),
        "fill_price": backtest.get("fill_price"),
        "rebalance_every": backtest.get("rebalance_every"),
        "rf": backtest.get("rf"),
        "stop_loss": backtest.get("stop_loss"),
        "take_profit": backtest.get("take_profit"),
        "max_gross_leverage": backtest.get("max_gross_leverage"),
    }


def _config(parameters: Mapping[str, Any], record: Any, dates: np.ndarray) -> dict[str, Any]:
    strategy = dict(parameters.get("strategy") or {})
    return make_config(
        strategy_type=record.strategy_type,
        strategy_params=strategy.get("params") or {},
        backtest=dict(parameters.get("backtest") or {}),
        symbols=[str(s) for s in parameters.get("symbols") or []] or [record.symbol],
        dates=dates,
        fees=record.fees,
        slippage=record.slippage,
        initial_capital=record.initial_capital,
        start=record.start_date,
        end=record.end_date,
    )


def from_catalog(
    record: Any,
    trades: Sequence[Any],
    *,
    run: Any = None,
    comparisons: Mapping[str, Any] | None = None,
) -> TearsheetData:
    """The tearsheet of a catalog `BacktestRecord` (with its `Trade`s), optionally with its
    alpha-backtest run (`AlphaBacktestRun`: ML metrics and links) and the logged comparisons."""
    from alphaswarm_common.protoconv import array_from_proto, metricset_from_proto, struct_to_dict

    dates = np.asarray(list(record.dates), dtype="datetime64[D]")
    if record.HasField("equity_curve"):
        equity = array_from_proto(record.equity_curve, field="equity_curve").astype(np.float64).ravel()
    else:
        equity = np.full(dates.shape, np.nan)
    if record.HasField("drawdown_series"):
        drawdown = (
            array_from_proto(record.drawdown_series, field="drawdown_series").astype(np.float64).ravel()
        )
    else:
        peak = np.maximum.accumulate(np.maximum(equity, record.initial_capital))
        drawdown = equity / peak - 1.0
    values: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    conventions: dict[str, Any] = {}
    if record.HasField("metrics"):
        values, reasons, conventions = metricset_from_proto(record.metrics)
    parameters = struct_to_dict(record.parameters) if record.HasField("parameters") else {}
    kind = "alpha" if record.strategy_type.startswith("alpha:") else "rule"
    data = TearsheetData(
        backtest_id=record.backtest_id,
        kind=kind,
        title=f"{record.strategy_type} on {record.symbol}",
        dates=dates,
        equity=equity,
        drawdown=drawdown,
        initial_capital=float(record.initial_capital),
        metrics={k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()},
        metric_reasons=dict(reasons),
        conventions=dict(conventions),
        config=_config(parameters, record, dates),
        trades=[trade_row(t) for t in sorted(trades, key=lambda t: t.trade_number)],
    )
    data.links["backtest_id"] = record.backtest_id
    if run is not None:
        from alphaswarm_common.protoconv import struct_to_dict as _struct

        combined = _struct(run.combined_metrics) if run.HasField("combined_metrics") else {}
        data.ml_metrics = dict(combined.get("ml") or {})
        if "score" in combined:
            data.ml_metrics["score"] = combined["score"]
        for key in ("run_id", "mlflow_parent_run_id", "mlflow_backtest_run_id", "mlflow_train_run_id"):
            if getattr(run, key, ""):
                data.links[key] = getattr(run, key)
        if run.model_name:
            data.links["model"] = f"{run.model_name} v{run.model_version}"
        if run.deployment_id:
            data.links["deployment_id"] = run.deployment_id
    if comparisons is not None:
        data.merge_comparisons(comparisons)
    else:
        data.notes.append(
            "benchmark, buy-and-hold and signal diagnostics are drawn from what the backtester logged on "
            "the MLflow backtest run of an alpha-backtest run; none is recorded for this backtest"
        )
    return data


# --------------------------------------------------------------------------- comparisons


def buy_and_hold_equity(close: Any, initial_capital: float) -> np.ndarray | None:
    """Equal-weight buy-and-hold of the universe (module docstring); None when no symbol is priced on the
    first date."""
    px = np.asarray(close, dtype=np.float64)
    if px.ndim == 1:
        px = px[:, None]
    if px.shape[0] == 0:
        return None
    start = px[0]
    held = np.isfinite(start) & (start > 0)
    if not held.any():
        return None
    start = px[0, held]
    n_held = int(held.sum())
    out = np.empty(px.shape[0])
    carry = start  # the last close of each symbol before the block
    step = max(1, _BLOCK_CELLS // n_held)
    cols = np.arange(n_held)
    for a in range(0, px.shape[0], step):  # blocks of rows: temporaries stay small
        block = np.ascontiguousarray(px[a : a + step][:, held])
        # Forward-fill missing closes (a missing close keeps the last value): the row of each cell's
        # last close in the block (-1: before the block), then one flat gather (row * n + column).
        idx = np.where(np.isfinite(block), np.arange(block.shape[0])[:, None], -1)
        np.maximum.accumulate(idx, axis=0, out=idx)
        before = idx < 0
        idx[before] = 0
        idx *= n_held
        idx += cols
        growth = block.ravel()[idx]
        np.copyto(growth, carry, where=before)
        carry = growth[-1].copy()
        growth /= start
        out[a : a + step] = initial_capital * growth.mean(axis=1)
    return out


def _decile_returns(
    signal: np.ndarray,
    fwd1: Callable[[int, int], np.ndarray] | np.ndarray,
    cost_rate: float,
    members: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gross bp, net bp, mean turnover) per decile portfolio (module docstring), in a few passes.

    Per (date, decile): `n` members, `sum` of their returns; the turnover of
    the equal-weight decile portfolio between t-1 and t is, symbol by
    symbol: `|1/n_t - 1/n_{t-1}|` when it stays in the decile, `1/n_t` when
    it enters, `1/n_{t-1}` when it leaves (an empty previous row counts as
    holding nothing). `members`: the 0-based deciles (int8, -1 outside) when already known
    (`signal_ics(..., quantiles=DECILES).buckets`). `fwd1` is the 1-bar forward return matrix or
    `rows(a, b)` giving its rows a..b-1. Rows go in blocks (each block's bins are its own rows', so
    the sums are those of one pass over the whole matrix), the membership of the row before a
    block carried over.
    """
    t_len = signal.shape[0]
    rows_of = fwd1 if callable(fwd1) else (lambda a, c: fwd1[a:c])
    if members is None:
        f = rows_of(0, t_len)
        both = np.isfinite(signal) & np.isfinite(f)
        buckets, _ = qcut_buckets(signal, DECILES, mask=both)
        b = np.where(np.isnan(buckets), -1, buckets - 1).astype(np.int8)  # -1: not in any decile
        del buckets
    else:
        b = members
    size = t_len * DECILES
    n_cols = max(1, b.shape[1])
    step = max(1, _BLOCK_CELLS // n_cols)
    blocks = [(a, min(a + step, t_len)) for a in range(0, t_len, step)]
    n = np.zeros(size)
    total = np.zeros(size)
    for a, c in blocks:
        bb = b[a:c]
        member = bb >= 0
        cell = ((np.arange(c - a, dtype=np.int64) * DECILES)[:, None] + bb)[member]
        n[a * DECILES : c * DECILES] = np.bincount(cell, minlength=(c - a) * DECILES)
        total[a * DECILES : c * DECILES] = np.bincount(
            cell, weights=rows_of(a, c)[member], minlength=(c - a) * DECILES
        )
    inv = np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)
    inv_prev = np.concatenate([np.zeros(DECILES), inv[:-DECILES]])
    turn = np.zeros(size)
    for a, c in blocks:
        bb = b[a:c]
        bp = np.empty_like(bb)
        bp[0] = b[a - 1] if a else -1
        bp[1:] = bb[:-1]
        base = (np.arange(a, c, dtype=np.int64) * DECILES)[:, None]
        member = bb >= 0
        part = np.zeros((c - a) * DECILES)
        stay = member & (bb == bp)
        k = (base + bb)[stay]
        part += np.bincount(k - a * DECILES, weights=np.abs(inv[k] - inv_prev[k]), minlength=part.size)
        enter = member & (bb != bp)
        k = (base + bb)[enter]
        part += np.bincount(k - a * DECILES, weights=inv[k], minlength=part.size)
        leave = (bp >= 0) & (bb != bp)
        k = (base + bp)[leave]
        part += np.bincount(k - a * DECILES, weights=inv_prev[k], minlength=part.size)
        turn[a * DECILES : c * DECILES] = part
    n = n.reshape(t_len, DECILES)
    total = total.reshape(t_len, DECILES)
    turn = turn.reshape(t_len, DECILES)
    live = n > 0
    gross = np.full(DECILES, np.nan)
    net = np.full(DECILES, np.nan)
    turnover = np.full(DECILES, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = total / np.where(live, n, 1.0)
    for q in range(DECILES):
        days = live[:, q]
        if days.any():
            gross[q] = float(ret[days, q].mean()) * 1e4
            turnover[q] = float(turn[days, q].mean())
            net[q] = float((ret[days, q] - cost_rate * turn[days, q]).mean()) * 1e4
    return gross, net, turnover


def alpha_diagnostics(
    signal: Any, close: Any, *, execution_lag: int, fees: float, slippage: float
) -> AlphaDiagnostics:
    """IC / RankIC per date, IC decay and decile returns of `signal` (T, N) on `close` (T, N)."""
    sig = np.asarray(signal, dtype=np.float64)
    px = np.asarray(close, dtype=np.float64)
    if sig.ndim == 1:
        sig, px = sig[:, None], (px[:, None] if px.ndim == 1 else px)
    lag = int(execution_lag)

    def fwd1(a: int, c: int) -> np.ndarray:  # rows a..c-1 of the 1-bar forward returns
        return forward_returns(px[a : c + lag + 1], 1, lag)[: c - a]

    # IC_t, RankIC_t and every decay horizon from one sort of the signal; equal, date by date, to
    # `ic_series` on each horizon's forward return, so the decay is `evaluation.ic_decay`'s.
    # The deciles come from the same sort (`qcut_buckets`' buckets, value for value).
    found = signal_ics(sig, px, execution_lag=execution_lag, horizons=IC_DECAY_HORIZONS, quantiles=DECILES)
    decay: dict[int, float | None] = {}
    for h in IC_DECAY_HORIZONS:
        valid = found.rank_ic[int(h)][~np.isnan(found.rank_ic[int(h)])]
        decay[int(h)] = float(valid.mean()) if valid.size else None
    gross, net, turnover = _decile_returns(sig, fwd1, fees + slippage, found.buckets)
    return AlphaDiagnostics(
        ic=found.ic,
        rank_ic=found.rank_ic[1],
        decay=decay,
        decile_gross_bps=gross,
        decile_net_bps=net,
        decile_turnover=turnover,
    )


def compute_comparisons(
    *,
    dates: Any,
    initial_capital: float,
    close: Any,
    benchmark_returns: Any = None,
    signal: Any = None,
    execution_lag: int = 1,
    fees: float = 0.0,
    slippage: float = 0.0,
) -> dict[str, Any]:
    """The JSON document of `tearsheet/comparisons.json`: benchmark, buy-and-hold and signal diagnostics."""
    day = np.asarray(dates).astype("datetime64[D]")
    doc: dict[str, Any] = {"dates": [str(d) for d in day]}
    bh = buy_and_hold_equity(close, initial_capital)
    doc["buy_and_hold_equity"] = None if bh is None else _json_list(bh)
    if benchmark_returns is not None:
        r = np.asarray(benchmark_returns, dtype=np.float64)
        doc["benchmark_equity"] = _json_list(initial_capital * np.cumprod(1.0 + r))
    else:
        doc["benchmark_equity"] = None
    doc["alpha"] = (
        None
        if signal is None
        else alpha_diagnostics(
            signal, close, execution_lag=execution_lag, fees=fees, slippage=slippage
        ).to_dict()
    )
    return doc
