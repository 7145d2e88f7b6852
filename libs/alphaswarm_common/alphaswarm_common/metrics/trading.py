"""Trading metrics of a per-bar return series (METRICS.md, "Trading metrics").

`returns` are simple (not log) per-bar portfolio returns `r_p[s]`, net of
costs, one per bar, oldest first. They must be finite: a backtest return
series has no gaps, and a NaN would silently mean different things to a
mean (skipped) and to a compounded equity (treated as 0) — empyrical does
exactly that; we raise DataError instead.

Conventions (defaults follow empyrical-reloaded; all are parameters and are
recorded in `MetricSet.conventions`):

- `periods_per_year` (default 252, see `infer_periods_per_year`); `rf` is an
  annual rate applied per bar as `rf_p = rf / periods_per_year` (simple, not
  compounded). empyrical's `risk_free` / `required_return` arguments are that
  per-bar `rf_p`.
- Compounding is geometric: equity = `cumprod(1 + r)` from 1.
- `total_return` = `prod(1 + r) - 1` (`account_equity[-1] / initial_capital - 1`
  when a backtest passes its account, the same to rounding).
- `annualized_return` = `(1 + total_return) ** (periods_per_year / n) - 1`
  (CAGR). Same as `empyrical.annual_return`, whose "number of years" is
  `n / periods_per_year`. A wiped-out account (`1 + total_return <= 0`)
  annualises to -1.
- `volatility` = `std(r, ddof=1) * sqrt(periods_per_year)` (= empyrical's
  `annual_volatility`); `sharpe` = `mean(r - rf_p) / std(r - rf_p, ddof=1) *
  sqrt(periods_per_year)` (= `empyrical.sharpe_ratio(r, rf_p)`).
- `downside_volatility` = `sqrt(mean(min(r - rf_p, 0) ** 2)) *
  sqrt(periods_per_year)`: the mean runs over ALL bars, a bar above `rf_p`
  contributing 0 (= `empyrical.downside_risk(r, rf_p)`; not the std of the
  negative returns). `sortino` = `mean(r - rf_p) * periods_per_year /
  downside_volatility` (= `empyrical.sortino_ratio(r, rf_p)`).
- `max_drawdown` = `min(equity / cummax(equity) - 1)` with the initial
  equity of 1 counted as a peak (a first-bar loss is a drawdown), a fraction
  <= 0 (= `empyrical.max_drawdown`). 0 when equity never falls below a peak.
- `max_drawdown_duration`: the longest run of consecutive bars whose equity
  is strictly below the running peak (bars under water; the recovery bar is
  not counted, an unrecovered drawdown runs to the last bar).
- `calmar` = `annualized_return / abs(max_drawdown)` (=
  `empyrical.calmar_ratio`), None when there is no drawdown.
- `turnover` = mean of the per-bar turnover series given (METRICS.md:
  `sum_i |w_held[s, i] - w_held[s-1, i]|`). `turnover_adj_sharpe` = `sharpe`
  of `r - turnover_penalty * traded` (the Sharpe if each unit of traded
  notional cost `turnover_penalty` more); when only `turnover` is given it
  stands in for `traded` (recorded as `turnover_adj_basis`).
- Trade statistics run over closed trades: `trade_pnls` (currency) when
  given, else `trade_returns` (fractions) (recorded as `trade_basis`). A trade
  wins when its PnL is > 0 and loses when < 0; a break-even trade counts in
  `total_trades` and `win_rate`'s denominator but is neither. `profit_factor`
  = gross profit / |gross loss|; `average_loss` and `largest_loss` are <= 0.
  `average_trade_return` is the mean of `trade_returns` when they are given.
- `beta` = cov(r, b) / var(b) and `alpha` = `(1 + mean(r - rf_p - beta *
  (b - rf_p))) ** periods_per_year - 1`, empyrical's `beta` / `alpha`
  (alpha is annualised by compounding the mean daily excess).
- `probabilistic_sharpe` = P(true Sharpe > 0), Bailey & López de Prado (2012):
  `Φ(SR * sqrt(n - 1) / sqrt(1 - γ3 * SR + (γ4 - 1) / 4 * SR²))` with `SR`
  the per-bar Sharpe (`sharpe / sqrt(periods_per_year)`, ddof=1), `γ3` the
  skewness and `γ4` the (non-excess) kurtosis of `r`, both the population
  (biased) moment estimators of `scipy.stats.skew` / `kurtosis(fisher=False)`,
  which guarantee `γ4 >= γ3² + 1` and so a non-negative radicand. `skewness`
  and `kurtosis` are reported too, so a caller can deflate the Sharpe later
  (`deflated_sharpe_ratio`).

A value that is undefined (no returns, fewer than 2 bars, zero variance, no
downside, no drawdown, no losing trade...) is None with the reason; values
that are only computed from an optional input (`turnover*`, trade stats,
`beta`/`alpha`, `final_value`/`peak_value`) are absent when that input is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics._types import MetricSet, _Builder

__all__ = [
    "deflated_sharpe_ratio",
    "drawdown_series",
    "expected_max_sharpe",
    "infer_periods_per_year",
    "max_drawdown_duration",
    "probabilistic_sharpe_ratio",
    "trading_metrics",
]

Array = NDArray[np.float64]

EULER_MASCHERONI = 0.5772156649015329

_NO_RETURNS = "no returns"
_TOO_SHORT = "fewer than 2 periods"
_ZERO_VARIANCE = "zero variance"


def _as_returns(data: ArrayLike | None, field: str, length: int | None = None) -> Array:
    return _summed(data, field, length)[0]


def _summed(data: ArrayLike | None, field: str, length: int | None = None) -> tuple[Array, float]:
    """The validated 1-D finite series and its sum (the first pass of its mean)."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidArgument(f"expected a 1-D series, got shape {arr.shape}", field=field)
    if length is not None and arr.shape[0] != length:
        raise InvalidArgument(f"has {arr.shape[0]} values, returns have {length}", field=field)
    total = float(np.add.reduce(arr))
    # a finite sum means every value is finite (a NaN or an infinity would show in it); only a sum
    # that is not finite needs the per-value check (it may also be finite values overflowing)
    if not math.isfinite(total) and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(f"value at position {bad} is {arr[bad]!r}; every value must be finite", field=field)
    return arr, total


def _finite_float(value: float, field: str, *, minimum: float | None = None, strict: bool = False) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"must be a number, got {value!r}", field=field) from None
    if not math.isfinite(out) or (minimum is not None and (out <= minimum if strict else out < minimum)):
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
        raise InvalidArgument(f"must be a finite number{bound}, got {value!r}", field=field)
    return out


# ----------------------------------------------------------------------------- equity path


def drawdown_series(returns: ArrayLike) -> Array:
    """Per-bar drawdown `equity / running_peak - 1` (<= 0), one value per return.

    Equity is `cumprod(1 + r)` starting from 1, and that initial 1 counts as a
    peak, as in `empyrical.drawdown_series`.
    """
    r = _as_returns(returns, "returns")
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing equity gives NaN, not a warning
        equity = np.cumprod(1.0 + r)
        peak = np.maximum(np.maximum.accumulate(equity), 1.0) if r.size else equity
        return equity / peak - 1.0


def _longest_true_run(flags: NDArray[np.bool_]) -> int:
    if not flags.any():
        return 0
    edges = np.flatnonzero(flags[1:] != flags[:-1]) + 1  # where a run ends and the next begins
    lengths = np.diff(np.concatenate(([0], edges, [flags.size])))
    return int((lengths[0::2] if flags[0] else lengths[1::2]).max())


_BLOCK = 1 << 15  # values per block of a per-bar pass: a block's temporaries stay in the CPU cache


def _underwater(drawdown: Array) -> tuple[float, float, int]:
    """`(min, max, longest run of drawdown < 0)` in one pass, block by block (the run in progress carries over)."""
    best = run = 0
    low, high = math.inf, -math.inf
    flags = np.empty(min(drawdown.size, _BLOCK), dtype=bool)
    for i0 in range(0, drawdown.size, _BLOCK):
        block = drawdown[i0 : i0 + _BLOCK]
        low = float(np.minimum(low, block.min()))  # NaN-propagating, as one min over the series
        high = float(np.maximum(high, block.max()))
        f = np.less(block, 0.0, out=flags[: block.size])
        dry = np.flatnonzero(~f)  # bars at a peak
        if dry.size == 0:
            run += f.size
            continue
        best = max(best, run + int(dry[0]), _longest_true_run(f[dry[0] : dry[-1] + 1]))
        run = f.size - 1 - int(dry[-1])
    return low, high, max(best, run)


def max_drawdown_duration(returns: ArrayLike) -> int:
    """Longest run of consecutive bars with equity strictly below a previous peak (the initial 1 included)."""
    return _longest_true_run(drawdown_series(returns) < 0.0)


# ----------------------------------------------------------------------------- bar spacing


_SPACING_SAMPLE = 100_000


def _sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique, without its hash-and-sort pass when the values are already sorted (the usual case)."""
    if values.size < 2:
        return values
    if bool(np.all(values[1:] >= values[:-1])):
        keep = np.empty(values.size, dtype=bool)
        keep[0] = True
        np.not_equal(values[1:], values[:-1], out=keep[1:])
        return values[keep]
    return np.unique(values)


def infer_periods_per_year(dates: ArrayLike) -> float:
    """Bars per year from the median spacing of `dates` (any datetime-like array; duplicates ignored).

    - median spacing < 0.9 day (intraday): bars per day (median count per
      calendar day) times the trading days per year below;
    - < 4 days: daily, 252 (business days) — or 365 when weekends carry bars
      (over 10% of the dates fall on a Saturday or Sunday, e.g. crypto);
    - 5-9 days: 52 (weekly); 27-33: 12 (monthly); 85-95: 4 (quarterly);
      180-186: 2; 360-370: 1 (annual);
    - anything else: 365.25 / median spacing in days.
    """
    try:
        stamps = np.asarray(dates, dtype="datetime64[ns]")
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"cannot read as dates: {exc}", field="dates") from None
    stamps = _sorted_distinct(stamps[~np.isnat(stamps)])
    if stamps.size < 2:
        raise InvalidArgument("need at least 2 distinct dates to infer a bar spacing", field="dates")
    gaps = np.diff(stamps).astype(np.int64)
    if gaps.size > _SPACING_SAMPLE:  # the spacing class needs no exact median of a million gaps
        gaps = gaps[:: gaps.size // _SPACING_SAMPLE]
    spacing_days = float(np.median(gaps)) / 86_400e9
    days = _sorted_distinct(stamps.astype("datetime64[D]"))
    # 1970-01-01 was a Thursday: weekday 0 = Monday.
    weekday = (days.astype(np.int64) + 3) % 7
    trading_days = 365.0 if np.mean(weekday >= 5) > 0.1 else 252.0
    if spacing_days < 0.9:
        day_of = stamps.astype("datetime64[D]")  # sorted, so each day's bars are one run
        starts = np.flatnonzero(np.r_[True, day_of[1:] != day_of[:-1]])
        per_day = np.diff(np.r_[starts, day_of.size])
        return trading_days * float(np.median(per_day))
    for low, high, value in (
        (0.9, 4.0, trading_days),
        (5.0, 9.0, 52.0),
        (27.0, 33.0, 12.0),
        (85.0, 95.0, 4.0),
        (180.0, 186.0, 2.0),
        (360.0, 370.0, 1.0),
    ):
        if low <= spacing_days < high:
            return value
    return 365.25 / spacing_days


# ----------------------------------------------------------------------------- Sharpe statistics


def _sharpe_radicand(sharpe: float, skew: float, kurtosis: float) -> float:
    return 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe


def probabilistic_sharpe_ratio(
    sharpe_per_period: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    sharpe_benchmark: float = 0.0,
) -> float:
    """P(true Sharpe > `sharpe_benchmark`), Bailey & López de Prado (2012).

    `PSR = Φ((SR - SR*) * sqrt(n_obs - 1) / sqrt(1 - γ3 SR + (γ4 - 1)/4 SR²))`
    with `SR` and `SR*` per period (not annualised), `γ3` the skewness and `γ4`
    the non-excess kurtosis (3 for a normal) of the returns. Raises
    InvalidArgument when `n_obs < 2` or the radicand is not positive (moments
    inconsistent with any distribution, or a degenerate two-point one).
    """
    sr = _finite_float(sharpe_per_period, "sharpe_per_period")
    sr0 = _finite_float(sharpe_benchmark, "sharpe_benchmark")
    g3 = _finite_float(skew, "skew")
    g4 = _finite_float(kurtosis, "kurtosis")
    if isinstance(n_obs, bool) or int(n_obs) != n_obs or n_obs < 2:
        raise InvalidArgument(f"must be an integer >= 2, got {n_obs!r}", field="n_obs")
    radicand = _sharpe_radicand(sr, g3, g4)
    if not radicand > 0.0:
        raise InvalidArgument(
            f"1 - skew*SR + (kurtosis-1)/4*SR² = {radicand:.6g} is not positive: the Sharpe "
            "estimator's variance is undefined for these moments",
            field="kurtosis",
        )
    return float(norm.cdf((sr - sr0) * math.sqrt(int(n_obs) - 1) / math.sqrt(radicand)))


def expected_max_sharpe(sharpe_trials_variance: float, n_trials: int) -> float:
    """Expected maximum of `n_trials` per-period Sharpe ratios under the null (true SR 0).

    `sqrt(V) * ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))`, γ the
    Euler-Mascheroni constant (Bailey & López de Prado 2014, eq. for SR₀);
    0 for a single trial (nothing was selected).
    """
    variance = _finite_float(sharpe_trials_variance, "sharpe_trials_variance", minimum=0.0)
    if isinstance(n_trials, bool) or int(n_trials) != n_trials or n_trials < 1:
        raise InvalidArgument(f"must be an integer >= 1, got {n_trials!r}", field="n_trials")
    n = int(n_trials)
    if n == 1 or variance == 0.0:
        return 0.0
    return math.sqrt(variance) * (
        (1.0 - EULER_MASCHERONI) * float(norm.ppf(1.0 - 1.0 / n))
        + EULER_MASCHERONI * float(norm.ppf(1.0 - 1.0 / (n * math.e)))
    )


def deflated_sharpe_ratio(
    sharpe_selected_per_period: float,
    sharpe_trials_variance: float,
    n_trials: int,
    n_obs: int,
    skew: float,
    kurtosis: float,
) -> float:
    """Deflated Sharpe Ratio (Bailey & López de Prado 2014), a probability in [0, 1].

    The PSR of the selected strategy against the Sharpe one would expect from
    the best of `n_trials` skill-less trials: `PSR(SR* = expected_max_sharpe(
    sharpe_trials_variance, n_trials))`. All Sharpe inputs are per period (an
    annualised Sharpe divided by `sqrt(periods_per_year)`; the variance is the
    variance across trials of those per-period Sharpes). `n_obs`, `skew` and
    `kurtosis` (non-excess) describe the selected strategy's returns. The
    optimisation p-value is `1 - deflated_sharpe_ratio(...)`. With one trial
    (or zero variance across trials) the DSR equals the PSR against 0.
    """
    sr0 = expected_max_sharpe(sharpe_trials_variance, n_trials)
    return probabilistic_sharpe_ratio(sharpe_selected_per_period, n_obs, skew, kurtosis, sr0)


class _Series:
    """`x - shift - k * y` (`y` optional), read block by block."""

    def __init__(self, x: Array, shift: float = 0.0, y: Array | None = None, k: float = 0.0) -> None:
        self.x, self.shift, self.y, self.k = x, shift, y, k
        self.n = int(x.size)

    def block(self, i0: int, i1: int, out: Array) -> Array:
        x = self.x[i0:i1]
        if self.y is None and self.shift == 0.0:
            return x
        o = out[: i1 - i0]
        if self.shift != 0.0:
            np.subtract(x, self.shift, out=o)
        else:
            o[:] = x
        if self.y is not None:
            o -= np.multiply(self.y[i0:i1], self.k, out=out[i1 - i0 : 2 * (i1 - i0)])
        return o


class _Centred:
    """Centred moments of one series, computed once: mean, sum of squares, the third and fourth sums.

    The two-pass algorithm of `numpy.std`: `total` (the series' sum, the
    first pass) gives the mean, then `_Centred.run` sums `x - mean` and its
    powers block by block (the temporaries of a block stay in the cache; the
    block partial sums add the rounding of about one addition per block),
    several series in one pass. With `downside`, the pass also sums
    `min(x, 0) ** 2`.
    """

    def __init__(self, series: _Series, total: float, *, moments: bool, downside: bool = False) -> None:
        self.series, self.moments_wanted, self.downside_wanted = series, moments, downside
        n = self.n = series.n
        self.mean = total / n if n else math.nan
        self.ss = self.s3 = self.s4 = self.downside_ss = 0.0
        self.constant = True

    @staticmethod
    def run(*stats: _Centred) -> None:
        """The centred pass of several series of the same length, together (each block read once)."""
        n = stats[0].n
        size = min(n, _BLOCK)
        values = [np.empty(2 * size) for _ in stats]
        c, c2 = np.empty(size), np.empty(size)
        for i0 in range(0, n, _BLOCK):
            i1 = min(i0 + _BLOCK, n)
            for st, buf in zip(stats, values, strict=True):
                v = st.series.block(i0, i1, buf)
                cm, cm2 = c[: v.size], c2[: v.size]
                if st.downside_wanted:
                    np.minimum(v, 0.0, out=cm)
                    st.downside_ss += float(np.dot(cm, cm))
                np.subtract(v, st.mean, out=cm)
                np.multiply(cm, cm, out=cm2)
                st.ss += float(np.add.reduce(cm2))
                if st.moments_wanted:
                    st.s3 += float(np.dot(cm2, cm))
                    st.s4 += float(np.dot(cm2, cm2))
        for st, buf in zip(stats, values, strict=True):
            if not st.moments_wanted:
                st.s3 = st.s4 = math.nan
            # A constant series centres to a residue of at most the mean's rounding (n ulps of its
            # level per value); only a sum of squares that small needs the exact test (max == min).
            residue = 4.0 * n * _EPS * abs(st.mean)
            if n < 2:
                st.constant = True
            elif st.ss > n * residue * residue:
                st.constant = False
            else:
                st.constant = bool(
                    _extreme(st.series, buf, high=True) == _extreme(st.series, buf, high=False)
                )

    def std(self) -> float:
        return math.sqrt(self.ss / (self.n - 1))

    def moments(self) -> tuple[float, float] | None:
        """Population skewness and non-excess kurtosis (scipy's biased estimators); None if constant."""
        if self.constant:
            return None
        m2 = self.ss / self.n
        if m2 <= 0.0:
            return None
        return self.s3 / self.n / m2**1.5, self.s4 / self.n / (m2 * m2)

    def sharpe(self, periods_per_year: float) -> tuple[float | None, str | None]:
        if self.n == 0:
            return None, _NO_RETURNS
        if self.n < 2:
            return None, _TOO_SHORT
        if self.constant:  # exact: the residue of a centred constant is not dispersion
            return None, _ZERO_VARIANCE
        return float(self.mean / self.std() * math.sqrt(periods_per_year)), None


_EPS = float(np.finfo(np.float64).eps)


def _extreme(series: _Series, buf: Array, *, high: bool) -> float:
    out = -math.inf if high else math.inf
    for i0 in range(0, series.n, _BLOCK):
        v = series.block(i0, min(i0 + _BLOCK, series.n), buf)
        out = max(out, float(v.max())) if high else min(out, float(v.min()))
    return out


def _growth(r: Array) -> float:
    """`prod(1 + r)`, block by block."""
    out = 1.0
    buf = np.empty(min(r.size, _BLOCK))
    for i0 in range(0, r.size, _BLOCK):
        block = r[i0 : i0 + _BLOCK]
        out *= float(np.multiply.reduce(np.add(block, 1.0, out=buf[: block.size])))
    return out


# ----------------------------------------------------------------------------- the metric set


def _trade_stats(b: _Builder, trades: Array) -> None:
    n = int(trades.size)
    wins = trades[trades > 0.0]
    losses = trades[trades < 0.0]
    b.put("total_trades", n)
    b.put("winning_trades", int(wins.size))
    b.put("losing_trades", int(losses.size))
    if n == 0:
        for name in (
            "win_rate",
            "profit_factor",
            "average_win",
            "average_loss",
            "largest_win",
            "largest_loss",
        ):
            b.put(name, None, "no closed trades")
        return
    b.put("win_rate", wins.size / n)
    gross_profit = float(wins.sum())
    gross_loss = float(losses.sum())
    if losses.size:
        b.put("profit_factor", gross_profit / abs(gross_loss))
        b.put("average_loss", float(losses.mean()))
        b.put("largest_loss", float(losses.min()))
    else:
        b.put("profit_factor", None, "no losing trades")
        b.put("average_loss", None, "no losing trades")
        b.put("largest_loss", None, "no losing trades")
    if wins.size:
        b.put("average_win", float(wins.mean()))
        b.put("largest_win", float(wins.max()))
    else:
        b.put("average_win", None, "no winning trades")
        b.put("largest_win", None, "no winning trades")


def trading_metrics(
    returns: ArrayLike,
    *,
    periods_per_year: float = 252.0,
    rf: float = 0.0,
    turnover: ArrayLike | None = None,
    traded: ArrayLike | None = None,
    turnover_penalty: float = 0.001,
    trade_pnls: ArrayLike | None = None,
    trade_returns: ArrayLike | None = None,
    benchmark: ArrayLike | None = None,
    initial_capital: float | None = None,
    drawdown: ArrayLike | None = None,
    account_equity: ArrayLike | None = None,
) -> MetricSet:
    """Return, risk, drawdown, turnover, trade and benchmark metrics of per-bar `returns`.

    `turnover` and `traded` are per-bar series aligned with `returns`
    (fractions of equity); `trade_pnls` / `trade_returns` hold one value per
    closed trade; `benchmark` is a per-bar return series aligned with
    `returns`. A backtest that already has its account's curves passes them:
    `drawdown` (the `drawdown_series` of these returns, to rounding) and
    `account_equity` (currency, from `initial_capital`: `final_value` and
    `peak_value` are read from it); otherwise they are compounded from the
    returns. See the module docstring for every definition.
    """
    # Overflow (absurd returns compounding past 1e308) must not warn: the
    # builder reports any non-finite result as None "not finite".
    with np.errstate(over="ignore", invalid="ignore"):
        return _trading_metrics(
            returns,
            periods_per_year=periods_per_year,
            rf=rf,
            turnover=turnover,
            traded=traded,
            turnover_penalty=turnover_penalty,
            trade_pnls=trade_pnls,
            trade_returns=trade_returns,
            benchmark=benchmark,
            initial_capital=initial_capital,
            drawdown=drawdown,
            account_equity=account_equity,
        )


def _trading_metrics(
    returns: ArrayLike,
    *,
    periods_per_year: float,
    rf: float,
    turnover: ArrayLike | None,
    traded: ArrayLike | None,
    turnover_penalty: float,
    trade_pnls: ArrayLike | None,
    trade_returns: ArrayLike | None,
    benchmark: ArrayLike | None,
    initial_capital: float | None,
    drawdown: ArrayLike | None,
    account_equity: ArrayLike | None,
) -> MetricSet:
    r, r_sum = _summed(returns, "returns")
    ppy = _finite_float(periods_per_year, "periods_per_year", minimum=0.0, strict=True)
    rf = _finite_float(rf, "rf")
    penalty = _finite_float(turnover_penalty, "turnover_penalty", minimum=0.0)
    n = int(r.size)
    rf_p = rf / ppy
    turnover_arr, turnover_sum = (None, 0.0) if turnover is None else _summed(turnover, "turnover", n)
    traded_arr, traded_sum = (None, 0.0) if traded is None else _summed(traded, "traded", n)
    cost_basis, basis_sum = (
        (traded_arr, traded_sum) if traded_arr is not None else (turnover_arr, turnover_sum)
    )
    stats = _Centred(_Series(r), r_sum, moments=True, downside=rf_p == 0.0)
    passes = [stats]
    ex_stats = stats
    if rf_p != 0.0:
        ex_stats = _Centred(_Series(r, rf_p), r_sum - n * rf_p, moments=False, downside=True)
        passes.append(ex_stats)
    adj_stats = None
    if cost_basis is not None:  # the Sharpe if each unit of traded notional cost `penalty` more
        adj_sum = r_sum - n * rf_p - penalty * basis_sum
        adj_stats = _Centred(_Series(r, rf_p, cost_basis, penalty), adj_sum, moments=False)
        passes.append(adj_stats)
    _Centred.run(*passes)
    b = _Builder()
    b.put("n_periods", n)
    equity: Array | None = None  # cumprod(1 + r), computed at most once
    dd: Array | None = None
    account: Array | None = None
    if account_equity is not None:
        if initial_capital is None:
            raise InvalidArgument("needs initial_capital", field="account_equity")
        capital = _finite_float(initial_capital, "initial_capital", minimum=0.0, strict=True)
        account = np.asarray(account_equity, dtype=np.float64)
        if account.shape != (n,):
            raise InvalidArgument(
                f"has shape {account.shape}, returns have {n} values", field="account_equity"
            )
    if drawdown is not None:
        dd = np.asarray(drawdown, dtype=np.float64)
        if dd.shape != (n,):
            raise InvalidArgument(f"has shape {dd.shape}, returns have {n} values", field="drawdown")
    elif n:
        grown: Array = np.cumprod(np.add(r, 1.0), dtype=np.float64)
        equity = grown
        peak = np.maximum.accumulate(grown)
        np.maximum(peak, 1.0, out=peak)
        dd = grown / peak
        dd -= 1.0

    # -- return and risk
    if n == 0:
        for name in (
            "total_return",
            "annualized_return",
            "volatility",
            "downside_volatility",
            "max_drawdown",
            "max_drawdown_duration",
        ):
            b.put(name, None, _NO_RETURNS)
    else:
        # prod(1 + r); a backtest's own account holds it already (equal to rounding)
        growth = float(account[-1]) / capital if account is not None else _growth(r)
        b.put("total_return", growth - 1.0)
        if growth > 0.0:
            b.put("annualized_return", float(np.power(growth, ppy / n)) - 1.0)
        elif growth == 0.0:
            b.put("annualized_return", -1.0)
        else:
            b.put("annualized_return", None, "equity went negative (1 + total_return < 0)")
        if n >= 2:
            b.put("volatility", 0.0 if stats.constant else float(stats.std() * math.sqrt(ppy)))
        else:
            b.put("volatility", None, _TOO_SHORT)
        b.put("downside_volatility", float(math.sqrt(ex_stats.downside_ss / n) * math.sqrt(ppy)))
        assert dd is not None
        dd_low, dd_high, dd_run = _underwater(dd)
        b.put("max_drawdown", dd_low)
        if math.isfinite(dd_low) and math.isfinite(dd_high):  # a NaN shows in both
            b.put("max_drawdown_duration", dd_run)
        else:
            b.put("max_drawdown_duration", None, "not finite (numerical overflow)")

    sharpe, reason = ex_stats.sharpe(ppy)
    b.put("sharpe", sharpe, reason)

    downside_vol = b.get("downside_volatility")
    if n < 2:
        b.put("sortino", None, _NO_RETURNS if n == 0 else _TOO_SHORT)
    elif downside_vol is None:
        b.put("sortino", None, b.reason("downside_volatility"))
    elif downside_vol == 0.0:
        b.put("sortino", None, "no downside deviation (no period below the risk-free rate)")
    else:
        b.put("sortino", float(ex_stats.mean * ppy / downside_vol))

    max_dd = b.get("max_drawdown")
    ann = b.get("annualized_return")
    if max_dd is None:
        b.put("calmar", None, b.reason("max_drawdown"))
    elif max_dd == 0.0:
        b.put("calmar", None, "no drawdown")
    elif ann is None:
        b.put("calmar", None, b.reason("annualized_return"))
    else:
        b.put("calmar", ann / abs(max_dd))

    # -- distribution and probabilistic Sharpe
    moments = stats.moments()
    if moments is None:
        reason = _NO_RETURNS if n == 0 else (_TOO_SHORT if n < 2 else _ZERO_VARIANCE)
        for name in ("skewness", "kurtosis", "probabilistic_sharpe"):
            b.put(name, None, reason)
    else:
        skew, kurt = moments
        b.put("skewness", skew)
        b.put("kurtosis", kurt)
        if sharpe is None:  # pragma: no cover - moments exist only when the Sharpe does
            b.put("probabilistic_sharpe", None, reason or _ZERO_VARIANCE)
        else:
            sr = sharpe / math.sqrt(ppy)
            radicand = _sharpe_radicand(sr, skew, kurt)
            if radicand > 0.0:
                z = sr * math.sqrt(n - 1) / math.sqrt(radicand)
                b.put("probabilistic_sharpe", float(norm.cdf(z)))
            else:
                b.put(
                    "probabilistic_sharpe",
                    None,
                    "degenerate return distribution (zero Sharpe estimator variance)",
                )

    # -- turnover
    conventions: dict[str, Any] = {
        "periods_per_year": ppy,
        "rf": rf,
        "rf_per_period": rf_p,
        "rf_application": "rf / periods_per_year per bar, simple",
        "ddof": 1,
        "compounding": "geometric",
        "drawdown_initial_peak": True,
        "downside_mean_over": "all periods",
        "moments": "population skewness, non-excess kurtosis",
        "psr_benchmark_sharpe": 0.0,
        "alpha_annualization": "compounded: (1 + mean excess) ** periods_per_year - 1",
        "turnover_penalty": penalty,
    }
    if turnover_arr is not None:
        if n:
            b.put("turnover", turnover_sum / n)
        else:
            b.put("turnover", None, _NO_RETURNS)
    if adj_stats is not None:
        conventions["turnover_adj_basis"] = "traded" if traded_arr is not None else "turnover"
        adj, reason = adj_stats.sharpe(ppy) if n else (None, _NO_RETURNS)
        b.put("turnover_adj_sharpe", adj, reason)

    # -- closed trades
    if trade_pnls is not None or trade_returns is not None:
        pnls = None if trade_pnls is None else _as_returns(trade_pnls, "trade_pnls")
        trets = None if trade_returns is None else _as_returns(trade_returns, "trade_returns")
        if pnls is not None and trets is not None and pnls.size != trets.size:
            raise InvalidArgument(
                f"has {trets.size} trades, trade_pnls has {pnls.size}", field="trade_returns"
            )
        basis = pnls if pnls is not None else trets
        assert basis is not None
        conventions["trade_basis"] = "pnl" if pnls is not None else "return"
        _trade_stats(b, basis)
        if trets is not None:
            if trets.size:
                b.put("average_trade_return", float(trets.mean()))
            else:
                b.put("average_trade_return", None, "no closed trades")

    # -- benchmark
    if benchmark is not None:
        bench = _as_returns(benchmark, "benchmark", n)
        if n < 2:
            b.put("beta", None, _NO_RETURNS if n == 0 else _TOO_SHORT)
            b.put("alpha", None, _NO_RETURNS if n == 0 else _TOO_SHORT)
        else:
            centred = bench - bench.mean()
            var_b = float(np.mean(centred * centred))
            if bench.max() == bench.min() or var_b < 1e-30:
                b.put("beta", None, "benchmark has zero variance")
                b.put("alpha", None, "benchmark has zero variance")
            else:
                beta = float(np.mean(centred * r)) / var_b
                b.put("beta", beta)
                mean_alpha = float(np.mean((r - rf_p) - beta * (bench - rf_p)))
                if 1.0 + mean_alpha > 0.0:
                    b.put("alpha", float(np.power(1.0 + mean_alpha, ppy)) - 1.0)
                else:
                    b.put("alpha", None, "mean per-period alpha <= -100%")

    # -- account values
    if initial_capital is not None:
        capital = _finite_float(initial_capital, "initial_capital", minimum=0.0, strict=True)
        conventions["initial_capital"] = capital
        if not n:
            b.put("final_value", capital)
            b.put("peak_value", capital)
        elif account is None:
            assert equity is not None
            b.put("final_value", capital * float(equity[-1]))
            b.put("peak_value", capital * max(1.0, float(equity.max())))
        else:
            b.put("final_value", float(account[-1]))
            b.put("peak_value", max(capital, float(account.max())))

    return b.build(conventions)
