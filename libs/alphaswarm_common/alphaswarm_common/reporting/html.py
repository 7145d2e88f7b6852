"""`render_tearsheet`: one self-contained HTML page from a `TearsheetData`.

Charts are PNGs drawn with matplotlib's Agg canvas on `Figure` objects (no
pyplot state: safe in threads and servers) and inlined as base64 `data:`
URIs; the style sheet is inline; the page loads nothing from anywhere, so it
opens offline and from an e-mail attachment. Every metric is shown with its
unit and convention (`METRIC_FORMATS`); an undefined metric shows its
reason. The numbers in the metrics table carry `data-metric` /
`data-value` attributes holding the exact value, so tools and tests can read
them back.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from alphaswarm_common.reporting.data import TearsheetData

__all__ = [
    "METRIC_FORMATS",
    "PLOT_BUCKETS",
    "ROLLING_SHARPE_BARS",
    "format_metric",
    "render_tearsheet",
    "thin",
]

ROLLING_SHARPE_BARS = 126
"""Window of the rolling Sharpe chart: 126 bars (six months of daily bars), annualised like `sharpe`."""

# name -> (label, unit, convention). Units: pct (a fraction shown in percent), ratio, bars, currency,
# count, bps. Annualisation and definitions follow docs/metrics.md.
METRIC_FORMATS: dict[str, tuple[str, str, str]] = {
    "total_return": ("Total return", "pct", "prod(1 + r) - 1, net of costs"),
    "annualized_return": ("Annualised return", "pct", "(1 + total) ** (periods_per_year / n) - 1"),
    "volatility": ("Volatility", "pct", "std(r, ddof=1) * sqrt(periods_per_year), annualised"),
    "downside_volatility": ("Downside volatility", "pct", "annualised, below rf"),
    "sharpe": ("Sharpe ratio", "ratio", "annualised, mean(r - rf) / std(r - rf)"),
    "sortino": ("Sortino ratio", "ratio", "annualised"),
    "calmar": ("Calmar ratio", "ratio", "annualised return / |max drawdown|"),
    "max_drawdown": ("Max drawdown", "pct", "min(equity / running peak - 1)"),
    "max_drawdown_duration": ("Longest drawdown", "bars", "bars below a previous peak"),
    "turnover": ("Turnover", "pct", "mean per bar of sum |w[s] - w[s-1]|, % of equity"),
    "turnover_adj_sharpe": (
        "Turnover-adjusted Sharpe",
        "ratio",
        "Sharpe if every unit traded cost 10 bp more",
    ),
    "probabilistic_sharpe": ("Probabilistic Sharpe", "pct", "P(true Sharpe > 0)"),
    "beta": ("Beta", "ratio", "against the benchmark"),
    "alpha": ("Alpha", "pct", "annualised, against the benchmark"),
    "skewness": ("Skewness", "ratio", "of per-bar returns"),
    "kurtosis": ("Kurtosis", "ratio", "excess, of per-bar returns"),
    "total_trades": ("Trades", "count", "closed trades"),
    "winning_trades": ("Winning trades", "count", ""),
    "losing_trades": ("Losing trades", "count", ""),
    "win_rate": ("Win rate", "pct", "share of closed trades with pnl > 0"),
    "profit_factor": ("Profit factor", "ratio", "gross profit / |gross loss|"),
    "average_win": ("Average win", "currency", "per closed winning trade"),
    "average_loss": ("Average loss", "currency", "per closed losing trade"),
    "largest_win": ("Largest win", "currency", ""),
    "largest_loss": ("Largest loss", "currency", ""),
    "average_trade_return": ("Average trade return", "pct", "pnl / position size"),
    "final_value": ("Final equity", "currency", ""),
    "peak_value": ("Peak equity", "currency", ""),
    "n_periods": ("Bars", "count", ""),
    # ML metrics of an alpha-backtest run (docs/metrics.md, "ML metrics").
    "ic_spearman": ("Rank IC", "ratio", "mean per-date Spearman IC"),
    "ic_pearson": ("IC", "ratio", "mean per-date Pearson IC"),
    "icir": ("ICIR", "ratio", "mean / std of RankIC_t, not annualised"),
    "mae": ("MAE", "ratio", "mean |prediction - label|"),
    "rmse": ("RMSE", "ratio", ""),
    "hit_rate": ("Hit rate", "pct", "share with sign(prediction) == sign(label)"),
    "score": ("Combined score", "ratio", "in [-1, 1]"),
}

_HEADLINE = ("total_return", "annualized_return", "sharpe", "max_drawdown", "volatility", "turnover")


def format_metric(name: str, value: float | None) -> str:
    """A metric as text with its unit: percent with 2 decimals, ratios with 3, currency with 2."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    unit = METRIC_FORMATS.get(name, ("", "ratio", ""))[1]
    v = float(value)
    if unit == "pct":
        return f"{v * 100:.2f} %"
    if unit in ("bars", "count"):
        return f"{v:,.0f}"
    if unit == "currency":
        return f"{v:,.2f}"
    if unit == "bps":
        return f"{v:.1f} bp"
    return f"{v:.3f}"


# --------------------------------------------------------------------------- charts


def _figure(width: float, height: float, rows: int = 1, **grid: Any) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=rows > 1, **grid)
    return fig, axes


def _img(fig: Any, alt: str, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (
        f'<img class="chart" data-chart="{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
    )


def _x(dates: np.ndarray) -> np.ndarray:
    return dates.astype("datetime64[D]")


PLOT_BUCKETS = 500
"""A chart of more than `2 * PLOT_BUCKETS` dates draws, per run of consecutive dates, each series' extremes."""


def _runs(n: int, buckets: int) -> tuple[int, int]:
    """(dates per run, runs) cutting `n` dates into at most `buckets` runs of equal length (the last shorter)."""
    k = -(-n // buckets)
    return k, -(-n // k)


def _padded(values: np.ndarray, k: int, runs: int, fill: float) -> np.ndarray:
    out = np.full(k * runs, fill)
    v = np.asarray(values, dtype=np.float64)
    out[: v.size] = np.where(np.isnan(v), fill, v)
    return out.reshape(runs, k)


def thin(n: int, *series: np.ndarray, buckets: int = PLOT_BUCKETS) -> np.ndarray:
    """Sorted indices of the dates a line chart of `n` dates draws (plotting only; the metrics use every date).

    Up to `2 * buckets` dates, all of them. Beyond, the dates are cut into
    `buckets` runs and each run keeps, for every series, the dates of its
    minimum and maximum (NaN ignored), plus the first and the last date: the
    line keeps every peak and trough (the deepest drawdown, the best equity)
    at a resolution finer than the chart's pixels.
    """
    if n <= 2 * buckets or not series:
        return np.arange(n)
    k, runs = _runs(n, buckets)
    base = np.arange(runs) * k
    keep = [np.array([0, n - 1])]
    for values in series:
        keep.append(base + _padded(values, k, runs, np.inf).argmin(axis=1))
        keep.append(base + _padded(values, k, runs, -np.inf).argmax(axis=1))
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def _bars(x: np.ndarray, values: np.ndarray, buckets: int = PLOT_BUCKETS) -> tuple[Any, Any, Any]:
    """(x, low, high) of the vertical bars from 0 to each value; beyond `2 * buckets` dates one bar per run
    of dates spans the run's lowest to highest value (what the overlapping bars would cover)."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if v.size <= 2 * buckets:
        return x, np.minimum(v, 0.0), np.maximum(v, 0.0)
    k, runs = _runs(v.size, buckets)
    low = np.minimum(_padded(v, k, runs, np.inf).min(axis=1), 0.0)
    high = np.maximum(_padded(v, k, runs, -np.inf).max(axis=1), 0.0)
    return x[::k][:runs], low, high


def _equity_chart(d: TearsheetData) -> str:
    fig, ax = _figure(9, 3.6)
    lines = [s for s in (d.equity, d.benchmark_equity, d.buy_and_hold_equity) if s is not None]
    i = thin(d.dates.size, *lines)
    x = _x(d.dates)[i]
    ax.plot(x, d.equity[i], lw=1.3, label="strategy (net of costs)", color="tab:blue")
    if d.benchmark_equity is not None:
        bench = d.config.get("benchmark") or "benchmark"
        ax.plot(x, d.benchmark_equity[i], lw=1.0, label=f"benchmark ({bench})", color="tab:gray")
    if d.buy_and_hold_equity is not None:
        ax.plot(x, d.buy_and_hold_equity[i], lw=1.0, label="buy-and-hold of the universe", color="tab:orange")
    ax.axhline(d.initial_capital, color="black", lw=0.5, ls=":")
    ax.set_title("Equity")
    ax.set_ylabel("equity (currency)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _img(fig, "equity curve against the benchmark and buy-and-hold", "equity")


def _drawdown_chart(d: TearsheetData) -> str:
    fig, ax = _figure(9, 2.4)
    i = thin(d.dates.size, d.drawdown)
    ax.fill_between(_x(d.dates)[i], d.drawdown[i] * 100.0, 0.0, color="tab:red", alpha=0.45, step="post")
    ax.set_title("Drawdown (underwater)")
    ax.set_ylabel("% below peak")
    ax.grid(alpha=0.3)
    return _img(fig, "drawdown underwater chart", "drawdown")


def rolling_sharpe(returns: np.ndarray, window: int, periods_per_year: float, rf: float = 0.0) -> np.ndarray:
    """Annualised Sharpe of each trailing `window` bars (ddof=1); NaN before the window fills or on zero std."""
    r = np.asarray(returns, dtype=np.float64) - rf / periods_per_year
    out = np.full(r.shape, np.nan)
    if r.size < window or window < 2:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(r, window)
    mean = win.mean(axis=1)
    std = win.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[window - 1 :] = np.where(std > 0, mean / std * math.sqrt(periods_per_year), np.nan)
    return out


def _periods_per_year(d: TearsheetData) -> float:
    value = d.conventions.get("periods_per_year")
    try:
        return float(value) if value else 252.0
    except (TypeError, ValueError):
        return 252.0


def _rolling_sharpe_chart(d: TearsheetData) -> str:
    ppy = _periods_per_year(d)
    rf = float(d.conventions.get("rf") or 0.0)
    window = min(ROLLING_SHARPE_BARS, max(2, d.dates.size // 3))
    fig, ax = _figure(9, 2.4)
    roll = rolling_sharpe(d.returns, window, ppy, rf)
    i = thin(d.dates.size, roll)
    ax.plot(_x(d.dates)[i], roll[i], lw=1.1, color="tab:purple")
    if d.metrics.get("sharpe") is not None:
        ax.axhline(
            float(d.metrics["sharpe"] or 0.0), color="tab:purple", lw=0.6, ls="--", label="full period"
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title(f"Rolling Sharpe ({window} bars, annualised)")
    ax.grid(alpha=0.3)
    return _img(fig, "rolling Sharpe ratio", "rolling_sharpe")


def monthly_returns(dates: np.ndarray, returns: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(years, (n_years, 12) compounded monthly returns, NaN for a month without bars)."""
    months = dates.astype("datetime64[M]")
    years = sorted({int(str(m)[:4]) for m in months})
    grid = np.full((len(years), 12), np.nan)
    r = np.nan_to_num(np.asarray(returns, dtype=np.float64))
    for m in np.unique(months):
        sel = months == m
        y, mo = int(str(m)[:4]), int(str(m)[5:7])
        grid[years.index(y), mo - 1] = float(np.prod(1.0 + r[sel]) - 1.0)
    return years, grid


def _monthly_chart(d: TearsheetData) -> str:
    years, grid = monthly_returns(d.dates, d.returns)
    fig, ax = _figure(9, max(1.6, 0.42 * len(years) + 1.0))
    pct = grid * 100.0
    finite = pct[np.isfinite(pct)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    ax.imshow(np.ma.masked_invalid(pct), cmap="RdYlGn", vmin=-bound, vmax=bound, aspect="auto")
    ax.set_xticks(
        range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    )
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    if len(years) <= 10:  # numbers in the cells while they stay legible (and cheap to draw)
        for i in range(len(years)):
            for j in range(12):
                if math.isfinite(pct[i, j]):
                    ax.text(j, i, f"{pct[i, j]:.1f}", ha="center", va="center", fontsize=7)
    ax.set_title("Monthly returns (%, compounded, net of costs)")
    return _img(fig, "monthly returns heatmap", "monthly_returns")


def _ic_chart(d: TearsheetData) -> str:
    assert d.alpha is not None
    fig, axes = _figure(9, 4.2, rows=2, height_ratios=[1, 1])
    x = _x(d.dates)
    a = d.alpha
    # One LineCollection, not a Rectangle per date; a long window one bar per run of dates.
    bx, low, high = _bars(x, a.rank_ic)
    axes[0].vlines(bx, low, high, color="tab:blue", alpha=0.6, lw=0.8, label="RankIC_t")
    i = thin(x.size, a.ic)
    axes[0].plot(x[i], a.ic[i], lw=0.6, color="tab:orange", label="IC_t")
    axes[0].axhline(0.0, color="grey", lw=0.5)
    axes[0].set_title("IC and Rank IC per date (1-bar return after the execution lag)")
    axes[0].legend(loc="upper left", fontsize=8)
    cum_rank, cum_ic = np.cumsum(np.nan_to_num(a.rank_ic)), np.cumsum(np.nan_to_num(a.ic))
    i = thin(x.size, cum_rank, cum_ic)
    axes[1].plot(x[i], cum_rank[i], lw=1.2, color="tab:blue", label="cumulative RankIC")
    axes[1].plot(x[i], cum_ic[i], lw=1.0, color="tab:orange", label="cumulative IC")
    axes[1].axhline(0.0, color="grey", lw=0.5)
    axes[1].legend(loc="upper left", fontsize=8)
    axes[1].set_ylabel("sum over dates")
    return _img(fig, "IC and Rank IC per date with their cumulative sums", "ic")


def _decay_chart(d: TearsheetData) -> str:
    assert d.alpha is not None
    fig, ax = _figure(4.4, 2.8)
    hs = sorted(d.alpha.decay)
    vals = [d.alpha.decay[h] if d.alpha.decay[h] is not None else np.nan for h in hs]
    ax.bar([str(h) for h in hs], vals, color="tab:blue")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("horizon (bars)")
    ax.set_ylabel("mean RankIC")
    ax.set_title("IC decay")
    return _img(fig, "IC decay over 1, 5, 10 and 20 bars", "ic_decay")


def _decile_chart(d: TearsheetData) -> str:
    assert d.alpha is not None
    fig, ax = _figure(4.8, 2.8)
    q = np.arange(1, d.alpha.decile_gross_bps.size + 1)
    ax.bar(
        q - 0.2, np.nan_to_num(d.alpha.decile_gross_bps), width=0.4, label="gross of costs", color="tab:green"
    )
    ax.bar(q + 0.2, np.nan_to_num(d.alpha.decile_net_bps), width=0.4, label="net of costs", color="tab:red")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_xticks(q)
    ax.set_xlabel("signal decile (1 = lowest)")
    ax.set_ylabel("mean 1-bar return (bp)")
    ax.set_title("Decile returns, gross and net of costs")
    ax.legend(fontsize=8)
    return _img(fig, "decile returns gross and net of costs", "deciles")


# --------------------------------------------------------------------------- tables


def _e(value: Any) -> str:
    return html.escape(str(value))


def _metric_rows(values: Mapping[str, float | None], reasons: Mapping[str, str], side: str) -> str:
    names = [n for n in METRIC_FORMATS if n in values] + sorted(n for n in values if n not in METRIC_FORMATS)
    rows = []
    for name in names:
        label, unit, conv = METRIC_FORMATS.get(name, (name, "ratio", ""))
        value = values.get(name)
        raw = "" if value is None else repr(float(value))
        shown = format_metric(name, value)
        if value is None:
            shown = f"n/a ({_e(reasons.get(name) or reasons.get(f'{side}.{name}') or 'undefined')})"
        rows.append(
            f'<tr><td>{_e(label)}</td><td class="num" data-metric="{_e(side)}.{_e(name)}" '
            f'data-value="{_e(raw)}">{_e(shown) if value is not None else shown}</td>'
            f"<td>{_e(_UNIT_NAMES.get(unit, unit))}</td><td class='conv'>{_e(conv)}</td></tr>"
        )
    return "\n".join(rows)


def _bps(fraction: Any) -> str:
    try:
        return f"{float(fraction) * 1e4:.1f} bp"
    except (TypeError, ValueError):
        return "n/a"


def _plain(value: Any) -> Any:
    """Integers that came back from a protobuf Struct as floats, shown as integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_UNIT_NAMES = {"pct": "percent", "bps": "bp", "bars": "bars", "count": "count", "currency": "currency"}


def config_rows(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows of what was tested: universe, window, strategy, costs, benchmark."""
    universe = list(config.get("universe") or [])
    shown = ", ".join(universe[:20]) + (f", ... ({len(universe)} symbols)" if len(universe) > 20 else "")
    window = config.get("window") or {}
    strategy = config.get("strategy") or {}
    costs = config.get("costs") or {}
    params = json.dumps(_plain(strategy.get("params") or {}), sort_keys=True, default=str)
    rows = [
        ("universe", f"{len(universe)} symbol{'s' if len(universe) != 1 else ''}: {shown}"),
        ("window", f"{window.get('start')} to {window.get('end')} ({window.get('n_bars')} bars)"),
        ("strategy", f"{strategy.get('type')} {params}"),
        (
            "costs",
            f"fees {_bps(costs.get('fees'))} + slippage {_bps(costs.get('slippage'))} per unit traded"
            + (f", min fee {costs['min_fee']}" if costs.get("min_fee") else ""),
        ),
        ("benchmark", str(config.get("benchmark") or "none")),
    ]
    for key in ("initial_capital", "execution_lag", "fill_price", "rebalance_every", "rf"):
        if config.get(key) is not None:
            rows.append((key.replace("_", " "), str(_plain(config[key]))))
    for key in ("stop_loss", "take_profit", "max_gross_leverage"):
        if config.get(key) is not None:
            rows.append((key.replace("_", " "), str(_plain(config[key]))))
    return rows


def _trades_section(trades: list[dict[str, Any]]) -> str:
    if not trades:
        return "<p>No trades.</p>"
    closed = [t for t in trades if t["exit_date"]]
    wins = [t for t in closed if t["pnl"] > 0]
    longs = sum(1 for t in trades if t["direction"] == "long")
    reasons = Counter(t["exit_reason"] or "open" for t in trades)
    fees = sum(t["fees_paid"] + t["slippage_cost"] for t in trades)
    mean_bars = sum(t["duration_bars"] for t in trades) / len(trades)
    summary = [
        ("trades", f"{len(trades)} ({len(closed)} closed, {len(trades) - len(closed)} open)"),
        ("long / short", f"{longs} / {len(trades) - longs}"),
        ("closed winners", f"{len(wins)} ({(len(wins) / len(closed) * 100 if closed else 0):.1f} %)"),
        ("mean holding", f"{mean_bars:.1f} bars"),
        ("costs paid", f"{fees:,.2f} (fees + slippage, currency)"),
        ("exit reasons", ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))),
    ]
    head = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in summary)
    ranked = sorted(trades, key=lambda t: t["pnl"])
    pick = ranked[-5:][::-1] + [t for t in ranked[:5] if t not in ranked[-5:]]
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="{c}">{_e(v)}</td>'
            for c, v in (
                ("", t["trade_number"]),
                ("", t["symbol"] or ""),
                ("", t["direction"]),
                ("", t["entry_date"]),
                ("", t["exit_date"] or "open"),
                ("num", f"{t['pnl']:,.2f}"),
                ("num", f"{t['pnl_percent'] * 100:.2f} %"),
                ("num", f"{t['mae'] * 100:.2f} %"),
                ("num", f"{t['mfe'] * 100:.2f} %"),
                ("num", t["duration_bars"]),
                ("", t["exit_reason"] or ""),
            )
        )
        + "</tr>"
        for t in pick
    )
    return (
        f'<table class="kv">{head}</table>'
        "<h3>Best and worst trades</h3>"
        '<table class="grid"><tr><th>#</th><th>symbol</th><th>side</th><th>entry</th><th>exit</th>'
        "<th>PnL</th><th>PnL %</th><th>MAE</th><th>MFE</th><th>bars</th><th>exit reason</th></tr>"
        f"{rows}</table>"
    )


def _total_return(equity: np.ndarray | None, initial: float) -> float | None:
    if equity is None or not equity.size or not math.isfinite(float(equity[-1])):
        return None
    return float(equity[-1]) / initial - 1.0


def verdict(d: TearsheetData) -> str:
    """One line: the strategy's total return against buy-and-hold of the universe over the same window."""
    mine = d.metrics.get("total_return")
    bh = _total_return(d.buy_and_hold_equity, d.initial_capital)
    if mine is None:
        return "total return undefined"
    if bh is None:
        return f"total return {mine * 100:.2f} % (buy-and-hold of the universe not recorded)"
    diff = (mine - bh) * 100
    word = "beat" if diff > 0 else "trailed"
    return (
        f"{word} buy-and-hold of the universe by {abs(diff):.2f} percentage points "
        f"(strategy {mine * 100:.2f} % net of costs, buy-and-hold {bh * 100:.2f} %)"
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;
color:#1d2330;background:#fff}
h1{font-size:22px;margin-bottom:2px}h2{font-size:17px;border-bottom:1px solid #d8dce4;padding-bottom:4px;margin-top:28px}
h3{font-size:14px}.sub{color:#5b6372;margin-top:0}.verdict{font-weight:600;margin:10px 0}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;text-align:left;vertical-align:top}
table.grid td,table.grid th{border-bottom:1px solid #eceef2}table.kv th{color:#5b6372;font-weight:500}
.num{text-align:right;font-variant-numeric:tabular-nums}.conv{color:#5b6372;font-size:12px}
img.chart{max-width:100%;display:block;margin:8px 0}.row{display:flex;gap:12px;flex-wrap:wrap}
.cards{display:flex;gap:10px;flex-wrap:wrap}.card{border:1px solid #d8dce4;border-radius:6px;padding:8px 12px;min-width:130px}
.card .v{font-size:18px;font-weight:600}.card .l{color:#5b6372;font-size:12px}.note{color:#7a5b00;font-size:12px}
footer{color:#8a91a0;font-size:11px;margin-top:32px}
"""


def render_tearsheet(d: TearsheetData, *, generated_at: dt.datetime | None = None) -> str:
    """The tearsheet page (module docstring)."""
    when = (generated_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    has_series = d.dates.size > 0 and bool(np.isfinite(d.equity).any())
    cards = "".join(
        f'<div class="card"><div class="v">{_e(format_metric(n, d.metrics.get(n)))}</div>'
        f'<div class="l">{_e(METRIC_FORMATS[n][0])}</div></div>'
        for n in _HEADLINE
        if n in d.metrics
    )
    config = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in config_rows(d.config))
    links = "".join(
        f"<tr><th>{_e(k.replace('_', ' '))}</th><td>{_e(v)}</td></tr>" for k, v in d.links.items()
    )
    charts = []
    if has_series:
        charts += [_equity_chart(d), _drawdown_chart(d), _rolling_sharpe_chart(d), _monthly_chart(d)]
    else:
        charts.append("<p>No equity series recorded for this backtest.</p>")
    alpha = ""
    if d.alpha is not None and has_series and d.alpha.ic.size == d.dates.size:
        alpha = (
            "<h2>Signal</h2>"
            '<p class="conv">IC_t / RankIC_t: Pearson / Spearman correlation across symbols of the signal at t '
            "with the return the decision earns (close[t+lag+1] / close[t+lag] - 1). Deciles: equal-weight "
            "portfolio of each signal decile, rebalanced every bar; net subtracts (fees + slippage) x its "
            "turnover.</p>" + _ic_chart(d) + f'<div class="row">{_decay_chart(d)}{_decile_chart(d)}</div>'
        )
    elif d.kind == "alpha":
        alpha = "<h2>Signal</h2><p>No signal diagnostics recorded for this backtest.</p>"
    ml = ""
    if d.ml_metrics:
        ml = (
            '<h3>ML metrics of the run</h3><table class="grid"><tr><th>metric</th><th>value</th><th>unit</th>'
            f"<th>convention</th></tr>{_metric_rows(d.ml_metrics, d.metric_reasons, 'ml')}</table>"
        )
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.notes)
    conventions = _e(json.dumps(d.conventions, sort_keys=True, default=str))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Tearsheet {_e(d.backtest_id)}</title><style>{_CSS}</style></head>
<body data-backtest-id="{_e(d.backtest_id)}">
<h1>{_e(d.title)}</h1>
<p class="sub">backtest {_e(d.backtest_id)} &middot; {_e(d.kind)} strategy &middot; generated {_e(when)}</p>
<p class="verdict" id="verdict">{_e(verdict(d))}</p>
<div class="cards">{cards}</div>
<h2>What was tested</h2><table class="kv" id="config">{config}</table>
<h2>Performance</h2>{"".join(charts)}
{alpha}
<h2>Metrics</h2>
<p class="conv">Percentages are fractions x 100; annualised with periods_per_year =
{_e(_periods_per_year(d))}; returns are net of costs unless marked gross.</p>
<table class="grid" id="metrics"><tr><th>metric</th><th>value</th><th>unit</th><th>convention</th></tr>
{_metric_rows(d.metrics, d.metric_reasons, "trading")}</table>
{ml}
<h2>Trades</h2>{_trades_section(d.trades)}
<h2>Links</h2><table class="kv">{links}</table>
{notes}
<footer>AlphaSwarm tearsheet. Conventions of the metrics: <code>{conventions}</code></footer>
</body></html>
"""
