"""The JSON of the run page's charts: statistics computed once per run (`stats`), downsampled to
the number of points the page asks for (`series_view`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alphaswarm_gateway.browser import analytics as an
from alphaswarm_gateway.browser.data import RunData

__all__ = ["DECAY_HORIZONS", "ROLLING_WINDOW", "audit_stats", "page_settings", "series_view", "stats"]

DECAY_HORIZONS = (1, 5, 10, 20)
ROLLING_WINDOW = 63
TOP_WEIGHTS = 10


def _values(arr: np.ndarray | list[Any]) -> list[float | None]:
    data = np.asarray(arr, dtype=np.float64)
    return [float(v) if math.isfinite(v) else None for v in data.tolist()]


def _shift(arr: np.ndarray, by: int) -> np.ndarray:
    """Rows moved `by` places later (NaN where nothing moves in)."""
    out = np.full_like(arr, np.nan, dtype=np.float64)
    if by < arr.shape[0]:
        out[by:] = arr[: arr.shape[0] - by]
    return out


def stats(data: RunData) -> dict[str, Any]:
    """Every full-length statistic of the run page (cached on `data`, computed once): those of the
    equity curve, and those of the prediction audit, read from the statistics the run stored
    (`data.stored`) when it has them, else computed from the streamed audit."""
    with data.lock:
        if "stats" not in data.cache:
            data.cache["stats"] = _compute(data)
        return data.cache["stats"]  # type: ignore[no-any-return]


def page_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Label horizon, execution lag and cost rate (fees + slippage) of a run's configuration."""
    cfg = config or {}
    bt = cfg.get("backtest_cfg") or {}
    label = (cfg.get("dataset_cfg") or {}).get("label") or {}
    horizon = int(label.get("horizon") or 1)
    lag_cfg = bt.get("execution_lag")
    lag = int(lag_cfg if lag_cfg is not None else label.get("execution_lag", 1))
    cost_rate = float(bt.get("fees", 0.001)) + float(bt.get("slippage", 0.001))
    return {"horizon": horizon, "lag": lag, "cost_rate": cost_rate, "benchmark": bt.get("benchmark")}


def _compute(data: RunData) -> dict[str, Any]:
    cfg = data.config or {}
    bt = cfg.get("backtest_cfg") or {}
    ppy = float(data.conventions.get("periods_per_year") or bt.get("periods_per_year") or 252.0)
    rf = float(data.conventions.get("rf") or bt.get("rf") or 0.0)
    settings = page_settings(cfg)
    out: dict[str, Any] = {
        "horizon": settings["horizon"],
        "lag": settings["lag"],
        "periods_per_year": ppy,
        "cost_rate": settings["cost_rate"],
    }

    growth = data.equity / data.initial_capital if data.equity.size else data.equity
    prev = np.concatenate([[1.0], growth[:-1]]) if growth.size else growth
    returns = growth / prev - 1.0 if growth.size else growth
    out["growth"] = growth
    out["returns"] = returns
    out["rolling_sharpe"] = an.rolling_sharpe(returns, ROLLING_WINDOW, ppy, rf) if returns.size else returns
    out["monthly"] = an.monthly_returns(data.dates, returns)

    if data.stored is not None:
        out.update(data.stored)
    else:
        out.update(audit_stats(data.audit, data.dates, cfg))
    return out


def audit_stats(audit: an.Audit | None, dates: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The run page's statistics of a prediction audit (full length, not downsampled): IC and Rank
    IC per date, IC decay, buy-and-hold of the universe and the benchmark over the backtest's
    `dates`, decile returns, exposure and the top weights; with the audit's dates and symbols.

    The one implementation, called by the gateway over a streamed audit and by the run itself
    when it saves its audit (`browser/stored.py`)."""
    settings = page_settings(config)
    horizon, lag, cost_rate = settings["horizon"], settings["lag"], settings["cost_rate"]
    out: dict[str, Any] = {}
    notes: dict[str, str] = {}
    if audit is not None:
        out["audit_dates"] = list(audit.dates)
        out["audit_symbols"] = list(audit.symbols)
    if audit is not None and len(audit.symbols) >= 2:
        ic, rank_ic = an.cross_sectional_ic(audit.prediction, audit.realized)
        out["ic"] = {"ic": ic, "rank_ic": rank_ic}
        if horizon == 1:
            one_bar = audit.realized.astype(np.float64)
            decay = []
            for k in DECAY_HORIZONS:
                if k == 1:  # the one-bar label itself: the IC above
                    ic_k, rank_k = ic, rank_ic
                else:
                    ic_k, rank_k = an.cross_sectional_ic(audit.prediction, an.forward_returns(one_bar, k))
                decay.append(
                    {
                        "horizon": k,
                        "ic": _mean(ic_k),
                        "rank_ic": _mean(rank_k),
                        "n_dates": int(np.isfinite(rank_k).sum()),
                    }
                )
            out["ic_decay"] = decay
            # One-bar close-to-close return of bar s is the label formed at s - lag - 1.
            asset = _shift(one_bar, lag + 1)
            pos = {d: i for i, d in enumerate(audit.dates)}
            rows = np.array([pos.get(d, -1) for d in dates], dtype=np.int64)
            aligned = np.where(rows[:, None] >= 0, asset[np.maximum(rows, 0)], np.nan)
            out["buy_and_hold"] = an.buy_and_hold(aligned)
            bench = settings["benchmark"]
            if bench and bench in audit.symbols:
                out["benchmark"] = an.buy_and_hold(aligned[:, audit.symbols.index(bench)])
                out["benchmark_symbol"] = bench
            elif bench:
                notes["benchmark"] = f"the benchmark {bench} is not in the audited universe"
        else:
            out["ic_decay"] = [
                {
                    "horizon": horizon,
                    "ic": _mean(ic),
                    "rank_ic": _mean(rank_ic),
                    "n_dates": int(np.isfinite(rank_ic).sum()),
                }
            ]
            notes["decay"] = f"labels of horizon {horizon}: IC decay and buy-and-hold need one-bar labels"
        gross, net, turnover = an.decile_returns(audit.prediction, audit.realized, cost_rate)
        out["deciles"] = {"gross": gross, "net": net, "turnover": turnover}
        out["exposure"] = an.exposure(audit.held)
        out["weights"] = an.top_weights(audit.held, audit.symbols, TOP_WEIGHTS)
    elif audit is not None:
        notes["ic"] = "a one-symbol universe has no cross-section: IC per date is not defined"
    out["notes"] = notes
    return out


def _mean(x: np.ndarray) -> float | None:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else None


def series_view(data: RunData, points: int) -> dict[str, Any]:
    """The run page's chart data, each long series cut to about `points` points."""
    s = stats(data)
    dates = np.asarray(data.dates)
    growth = s["growth"]
    idx = an.minmax_indices(growth, points) if growth.size else np.arange(0)
    equity: dict[str, Any] = {
        "dates": dates[idx].tolist(),
        "strategy": _values(growth[idx]),
        "benchmark": _values(s["benchmark"][idx]) if "benchmark" in s else None,
        "benchmark_symbol": s.get("benchmark_symbol"),
        "buy_and_hold": _values(s["buy_and_hold"][idx]) if "buy_and_hold" in s else None,
        "n": int(growth.size),
    }
    dd_idx = an.minmax_indices(data.drawdown, points) if data.drawdown.size else idx
    rs = s["rolling_sharpe"]
    rs_idx = an.minmax_indices(rs, points) if rs.size else idx
    cost_bps = s["cost_rate"] * 1e4
    notes = {
        "equity": "growth of 1, net of costs; buy-and-hold puts equal amounts in every symbol of the universe at the start and never trades",
        "ic": data.audit_reason
        or s["notes"].get("ic")
        or "bars: Rank IC (Spearman) per date; line: cumulative sum of Rank IC",
        "deciles": f"equal-weight decile portfolios by prediction, rebalanced every bar; net subtracts {cost_bps:.0f} bps (fees + slippage) per unit of turnover",
        "trades": f"{data.trades_total} trades; MAE / MFE are the worst / best unrealised return while open; "
        f"{SCATTER_NOTE}",
        **{k: v for k, v in s["notes"].items() if k not in ("ic",)},
    }
    doc: dict[str, Any] = {
        "run": data.run,
        "window": {
            "start": data.dates[0] if data.dates else None,
            "end": data.dates[-1] if data.dates else None,
            "n_dates": len(data.dates),
        },
        "conventions": {
            **data.conventions,
            "rolling_window": ROLLING_WINDOW,
            "cost_rate": s["cost_rate"],
            "horizon": s["horizon"],
            "execution_lag": s["lag"],
        },
        "points": points,
        "equity": equity,
        "drawdown": {"dates": dates[dd_idx].tolist(), "values": _values(data.drawdown[dd_idx])},
        "rolling_sharpe": {
            "window": ROLLING_WINDOW,
            "dates": dates[rs_idx].tolist(),
            "values": _values(rs[rs_idx]),
        },
        "monthly": s["monthly"],
        "notes": notes,
        "ic": None,
        "ic_decay": None,
        "deciles": None,
        "exposure": None,
        "weights": None,
        "trades": {"total": data.trades_total, "scatter_limit": SCATTER_LIMIT},
        "audit": None,
    }
    if "ic" in s:
        audit_dates: list[str] = s["audit_dates"]
        adates = np.asarray(audit_dates)
        ic, rank_ic = s["ic"]["ic"], s["ic"]["rank_ic"]
        b_idx, rank_b = an.bucket_means(rank_ic, points)
        _, ic_b = an.bucket_means(ic, points)
        cum = np.cumsum(np.nan_to_num(rank_ic, nan=0.0))
        cum_ic = np.cumsum(np.nan_to_num(ic, nan=0.0))
        doc["ic"] = {
            "dates": adates[b_idx].tolist(),
            "ic": _values(ic_b),
            "rank_ic": _values(rank_b),
            "cum_rank_ic": _values(cum[b_idx]),
            "cum_ic": _values(cum_ic[b_idx]),
            "bucketed": bool(rank_ic.size > points),
            "n_dates": int(np.isfinite(rank_ic).sum()),
            "mean_ic": _mean(ic),
            "mean_rank_ic": _mean(rank_ic),
        }
        doc["ic_decay"] = s["ic_decay"]
        doc["deciles"] = {"labels": [f"D{i + 1}" for i in range(10)], **s["deciles"]}
        ex = s["exposure"]
        e_idx = an.minmax_indices(ex["gross"], points)
        doc["exposure"] = {"dates": adates[e_idx].tolist(), **{k: _values(v[e_idx]) for k, v in ex.items()}}
        w_idx = an.minmax_indices(np.arange(len(audit_dates), dtype=np.float64), min(points, 400))
        doc["weights"] = {
            "dates": adates[w_idx].tolist(),
            "symbols": [{"symbol": sym, "values": _values(vals[w_idx])} for sym, vals in s["weights"]],
        }
        doc["audit"] = {
            "dates": audit_dates[:1] + audit_dates[-1:],
            "symbols": s["audit_symbols"],
            "n_dates": len(audit_dates),
        }
    return doc


SCATTER_LIMIT = 2_000
"""Trades drawn in the MAE / MFE scatter at most (`trade_sample`)."""
_EXTREMES = 10  # per end of each of MAE, MFE and P&L
SCATTER_NOTE = (
    f"the scatter shows every trade up to {SCATTER_LIMIT:,}; beyond, a deterministic sample: the "
    f"{_EXTREMES} lowest and highest of MAE, MFE and P&L, and the rest one trade per equal slice of "
    "the trades ranked by P&L"
)
_SCATTER_FIELDS = ("trade_number", "mae", "mfe", "pnl_percent", "symbol")


def trade_sample(trades: list[dict[str, Any]], limit: int = SCATTER_LIMIT) -> list[dict[str, Any]]:
    """The trades of the MAE / MFE scatter, by trade number: every trade when there are at most
    `limit`; else a deterministic stratified sample of `limit` that keeps the extremes (the
    `_EXTREMES` lowest and highest MAE, MFE and P&L) and fills the rest with the middle trade of
    equal slices of the others ranked by P&L, so the P&L distribution keeps its shape."""
    n = len(trades)
    if n <= limit:
        pick = np.arange(n)
    else:

        def col(key: str) -> np.ndarray:
            v = np.array([t.get(key) for t in trades], dtype=np.float64)
            return np.where(np.isfinite(v), v, np.nan)

        keep: set[int] = set()
        for key in ("mae", "mfe", "pnl_percent"):
            v = col(key)
            finite = np.flatnonzero(np.isfinite(v))
            order = finite[np.argsort(v[finite], kind="stable")]
            keep.update(order[:_EXTREMES].tolist())
            keep.update(order[-_EXTREMES:].tolist())
        pnl = col("pnl_percent")
        ranked = np.argsort(np.where(np.isfinite(pnl), pnl, np.inf), kind="stable")
        rest = ranked[~np.isin(ranked, list(keep))]
        slots = max(limit - len(keep), 0)
        if slots and rest.size:
            edges = np.linspace(0, rest.size, slots + 1)
            keep.update(rest[((edges[:-1] + edges[1:]) / 2).astype(np.int64)].tolist())
        pick = np.array(sorted(keep), dtype=np.int64)
    return [{k: trades[int(i)].get(k) for k in _SCATTER_FIELDS} for i in pick]
