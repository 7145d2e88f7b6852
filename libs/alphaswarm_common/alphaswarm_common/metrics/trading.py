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

Computation: the per-bar series are read once, in cache-sized blocks, by
`BarStats` (block means and centred power sums merged pairwise, the
drawdown's extremes and longest run carried across blocks); a backtest that
builds its account block by block feeds it directly (`bar_stats=`).

A value that is undefined (no returns, fewer than 2 bars, zero variance, no
downside, no drawdown, no losing trade...) is None with the reason; values
that are only computed from an optional input (`turnover*`, trade stats,
`beta`/`alpha`, `final_value`/`peak_value`) are absent when that input is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri  # the standard normal's CDF and its inverse

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics._types import MetricSet, _Builder

__all__ = [
    "BarStats",
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
    arr = _as_series(data, field, length)
    if not np.isfinite(arr).all():
        _raise_not_finite(arr, field, 0)
    return arr


def _as_series(data: ArrayLike | None, field: str, length: int | None = None) -> Array:
    """A 1-D float series of the expected length (finiteness is checked where it is read)."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidArgument(f"expected a 1-D series, got shape {arr.shape}", field=field)
    if length is not None and arr.shape[0] != length:
        raise InvalidArgument(f"has {arr.shape[0]} values, returns have {length}", field=field)
    return arr


def _raise_not_finite(block: Array, field: str, offset: int) -> None:
    """Raise the DataError naming the first non-finite value of `block` (bar `offset` onwards), if any."""
    bad_at = np.flatnonzero(~np.isfinite(block))
    if bad_at.size:
        bad = int(bad_at[0])
        raise DataError(
            f"value at position {offset + bad} is {block[bad]!r}; every value must be finite", field=field
        )


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
    return float(ndtr((sr - sr0) * math.sqrt(int(n_obs) - 1) / math.sqrt(radicand)))


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
        (1.0 - EULER_MASCHERONI) * float(ndtri(1.0 - 1.0 / n))
        + EULER_MASCHERONI * float(ndtri(1.0 - 1.0 / (n * math.e)))
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


_EPS = float(np.finfo(np.float64).eps)


def _plain(v: Array) -> Array:
    """`v` as a writable C-contiguous float64 array: the one signature the compiled passes are built for."""
    return np.require(v, np.float64, ["C", "W"])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _centred_sums(v: Array, powers: bool) -> tuple[float, float, float, float, float, float]:
    """One block's sum, centred power sums (2, and 3 and 4 with `powers`), max and min, compiled.

    Two passes over the block (its sum, then the powers of the values less
    its mean), the two-pass algorithm of `numpy.std`, summed in order.
    """
    total = 0.0
    high = -np.inf
    low = np.inf
    for x in v:
        total += x
        high = max(high, x)
        low = min(low, x)
    mean = total / v.size
    m2 = m3 = m4 = 0.0
    for x in v:
        c = x - mean
        c2 = c * c
        m2 += c2
        if powers:
            m3 += c2 * c
            m4 += c2 * c2
    return total, m2, m3, m4, high, low


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _downside_growth(r: Array, rf_p: float, growth: bool) -> tuple[float, float]:
    """`(sum of min(r - rf_p, 0) ** 2, prod(1 + r) if growth else 1)` of one block, compiled."""
    ss = 0.0
    g = 1.0
    for x in r:
        d = min(x - rf_p, 0.0)
        ss += d * d
        if growth:
            g *= 1.0 + x
    return ss, g


class _Moments:
    """Count, mean and centred power sums (`m2`, `m3`, `m4`) of a series, merged block by block.

    Each block is centred on its own mean (in the cache) and merged with the
    pairwise update of Chan, Golub & LeVeque (1979) and Pébay (2008), as
    stable as the two-pass algorithm of `numpy.std`. `constant` is exact:
    a block whose dispersion is at rounding level (a constant block centres to
    a residue of its mean's rounding) is tested with max == min.
    """

    __slots__ = ("constant", "m2", "m3", "m4", "mean", "n", "powers", "value")

    def __init__(self, *, powers: bool) -> None:
        self.powers = powers
        self.n, self.mean, self.m2, self.m3, self.m4 = 0, 0.0, 0.0, 0.0, 0.0
        self.constant, self.value = True, math.nan

    def add(self, v: Array, c: Array, c2: Array) -> float:
        """Merge the block `v` (`c`, `c2`: unused scratch, kept for callers); returns the block's sum."""
        del c, c2
        nb = v.size
        total, m2b, m3b, m4b, high, low = _centred_sums(_plain(v), self.powers)
        mean_b = total / nb
        if self.constant:
            residue = 4.0 * nb * _EPS * abs(mean_b)
            if not m2b <= nb * residue * residue:
                self.constant = False
            else:
                self.constant = high == low and (self.n == 0 or high == self.value)
                self.value = high
        na = self.n
        n = na + nb
        delta = mean_b - self.mean
        if self.powers:
            self.m4 += (
                m4b
                + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
                + 6.0 * delta * delta * (na * na * m2b + nb * nb * self.m2) / (n * n)
                + 4.0 * delta * (na * m3b - nb * self.m3) / n
            )
            self.m3 += (
                m3b + delta**3 * na * nb * (na - nb) / (n * n) + 3.0 * delta * (na * m2b - nb * self.m2) / n
            )
        self.m2 += m2b + delta * delta * na * nb / n
        self.mean += delta * nb / n
        self.n = n
        return total

    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1))

    def moments(self) -> tuple[float, float] | None:
        """Population skewness and non-excess kurtosis (scipy's biased estimators); None if constant."""
        if self.constant or self.n < 2:
            return None
        m2 = self.m2 / self.n
        if m2 <= 0.0:
            return None
        return self.m3 / self.n / m2**1.5, self.m4 / self.n / (m2 * m2)

    def sharpe(self, periods_per_year: float, shift: float = 0.0) -> tuple[float | None, str | None]:
        """Sharpe of the series less `shift` per bar (the dispersion does not move)."""
        if self.n == 0:
            return None, _NO_RETURNS
        if self.n < 2:
            return None, _TOO_SHORT
        if self.constant:  # exact: the residue of a centred constant is not dispersion
            return None, _ZERO_VARIANCE
        return float((self.mean - shift) / self.std() * math.sqrt(periods_per_year)), None


class BarStats:
    """The per-bar statistics behind `trading_metrics`, accumulated block by block in bar order.

    `trading_metrics` feeds the series it is given to one of these in
    cache-sized blocks, reading each series once. A backtest that produces
    its account block by block can feed each block while it is still in the
    cache and pass the result as `trading_metrics(..., bar_stats=...)`; the
    numbers are the same. `add` takes aligned blocks of the returns and of the
    optional series declared at construction (`turnover`, `traded`,
    `drawdown`, `account_equity`), and raises DataError naming the series
    and bar of a non-finite value (returns, turnover, traded).
    """

    def __init__(
        self,
        *,
        periods_per_year: float = 252.0,
        rf: float = 0.0,
        turnover_penalty: float = 0.001,
        turnover: bool = False,
        traded: bool = False,
        drawdown: bool = False,
        account_equity: bool = False,
    ) -> None:
        self.periods_per_year = _finite_float(periods_per_year, "periods_per_year", minimum=0.0, strict=True)
        self.rf = _finite_float(rf, "rf")
        self.rf_per_period = self.rf / self.periods_per_year
        self.penalty = _finite_float(turnover_penalty, "turnover_penalty", minimum=0.0)
        self.has = {
            "turnover": turnover,
            "traded": traded,
            "drawdown": drawdown,
            "account_equity": account_equity,
        }
        self.returns = _Moments(powers=True)
        self.downside_ss = 0.0  # sum of min(r - rf_p, 0) ** 2
        self.adjusted = _Moments(powers=False) if (traded or turnover) else None
        self.turnover_sum = 0.0
        self.growth = 1.0  # prod(1 + r)
        self.dd_low, self.dd_high = math.inf, -math.inf
        self.dd_best = self.dd_run = 0  # longest run under water so far, run in progress
        self.dd_last = 0.0
        self.account_high, self.account_last = -math.inf, math.nan
        self._c = self._c2 = self._v = np.empty(0)  # block scratch, grown to the largest block seen
        self._flags = np.empty(0, dtype=bool)

    @classmethod
    def from_totals(
        cls,
        totals: Mapping[str, float],
        *,
        periods_per_year: float = 252.0,
        rf: float = 0.0,
        turnover_penalty: float = 0.001,
    ) -> BarStats:
        """The statistics of returns, drawdown and account equity computed elsewhere in one pass.

        A compiled backtest loop (the optimizer's K accounts) computes the
        sums `add` would accumulate and hands them over: `n`, `total`, `mean`,
        the centred power sums `m2`, `m3`, `m4`, `constant` (all returns
        equal), `downside_ss` (sum of `min(r - rf_p, 0) ** 2`),
        `drawdown_low` / `drawdown_high` / `drawdown_last`, `underwater` (the
        longest run of bars below 0) and `equity_high` / `equity_last`
        (currency). The result is declared with `drawdown` and
        `account_equity`, without turnover or traded; every metric formula
        stays in `trading_metrics`.
        """
        stats = cls(
            periods_per_year=periods_per_year,
            rf=rf,
            turnover_penalty=turnover_penalty,
            drawdown=True,
            account_equity=True,
        )
        ret = stats.returns
        ret.n = int(totals["n"])
        ret.mean, ret.m2, ret.m3, ret.m4 = (float(totals[k]) for k in ("mean", "m2", "m3", "m4"))
        ret.constant = bool(totals["constant"])
        stats.downside_ss = float(totals["downside_ss"])
        stats.dd_low, stats.dd_high = float(totals["drawdown_low"]), float(totals["drawdown_high"])
        stats.dd_best, stats.dd_run = int(totals["underwater"]), 0
        stats.dd_last = float(totals["drawdown_last"])
        stats.account_high, stats.account_last = float(totals["equity_high"]), float(totals["equity_last"])
        return stats

    @property
    def n(self) -> int:
        return self.returns.n

    def add(
        self,
        returns: Array,
        *,
        turnover: Array | None = None,
        traded: Array | None = None,
        drawdown: Array | None = None,
        account_equity: Array | None = None,
    ) -> None:
        """Add the next bars (any count; long blocks are split into cache-sized ones)."""
        given = {
            "turnover": turnover,
            "traded": traded,
            "drawdown": drawdown,
            "account_equity": account_equity,
        }
        for name, arr in given.items():
            if (arr is not None) != self.has[name]:
                raise InvalidArgument(
                    "declared at construction but not given"
                    if arr is None
                    else "not declared at construction",
                    field=name,
                )
            if arr is not None and arr.shape != returns.shape:
                raise InvalidArgument(
                    f"has {arr.shape[0]} values, returns have {returns.shape[0]}", field=name
                )
        for i0 in range(0, returns.size, _BLOCK):
            i1 = min(i0 + _BLOCK, returns.size)
            self._add_block(
                returns[i0:i1],
                None if turnover is None else turnover[i0:i1],
                None if traded is None else traded[i0:i1],
                None if drawdown is None else drawdown[i0:i1],
                None if account_equity is None else account_equity[i0:i1],
            )

    def _add_block(
        self,
        r: Array,
        turnover: Array | None,
        traded: Array | None,
        drawdown: Array | None,
        account: Array | None,
    ) -> None:
        m, offset = r.size, self.n
        if m == 0:
            return
        if self._c.size < m:
            self._c, self._c2, self._v = np.empty(m), np.empty(m), np.empty(m)
            self._flags = np.empty(m, dtype=bool)
        c, c2, v = self._c[:m], self._c2[:m], self._v[:m]
        if not math.isfinite(self.returns.add(r, c, c2)):
            _raise_not_finite(r, "returns", offset)
        downside_ss, growth = _downside_growth(_plain(r), self.rf_per_period, account is None)
        self.downside_ss += downside_ss
        if account is None:
            self.growth *= growth
        basis = None
        if turnover is not None:
            total = float(np.add.reduce(turnover))
            if not math.isfinite(total):
                _raise_not_finite(turnover, "turnover", offset)
            self.turnover_sum += total
            basis = turnover
        if traded is not None:
            if not math.isfinite(float(np.add.reduce(traded))):
                _raise_not_finite(traded, "traded", offset)
            basis = traded
        if basis is not None and self.adjusted is not None:
            # the returns if each unit of traded notional cost `penalty` more (rf_p is a shift)
            np.multiply(basis, -self.penalty, out=v)
            v += r
            self.adjusted.add(v, c, c2)
        if drawdown is not None:
            self.dd_low = float(np.minimum(self.dd_low, drawdown.min()))  # NaN-propagating
            self.dd_high = float(np.maximum(self.dd_high, drawdown.max()))
            self.dd_last = float(drawdown[-1])
            flags = np.less(drawdown, 0.0, out=self._flags[:m])
            dry = np.flatnonzero(~flags)  # bars at a peak
            if dry.size == 0:
                self.dd_run += m
            else:
                inside = _longest_true_run(flags[dry[0] : dry[-1] + 1])
                self.dd_best = max(self.dd_best, self.dd_run + int(dry[0]), inside)
                self.dd_run = m - 1 - int(dry[-1])
        if account is not None:
            self.account_high = float(np.maximum(self.account_high, account.max()))
            self.account_last = float(account[-1])

    @property
    def underwater(self) -> int:
        return max(self.dd_best, self.dd_run)


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
    bar_stats: BarStats | None = None,
) -> MetricSet:
    """Return, risk, drawdown, turnover, trade and benchmark metrics of per-bar `returns`.

    `turnover` and `traded` are per-bar series aligned with `returns`
    (fractions of equity); `trade_pnls` / `trade_returns` hold one value per
    closed trade; `benchmark` is a per-bar return series aligned with
    `returns`. A backtest that already has its account's curves passes them:
    `drawdown` (the `drawdown_series` of these returns, to rounding) and
    `account_equity` (currency, from `initial_capital`: `final_value`,
    `peak_value` and `total_return` are read from it); otherwise they are
    compounded from the returns. `bar_stats`, when given, holds these same
    series already accumulated (`BarStats`, built with the same
    `periods_per_year`, `rf` and `turnover_penalty`), and they are not read
    again (nor need they be passed: only `returns`' length is). See the
    module docstring for every definition.
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
            bar_stats=bar_stats,
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
    bar_stats: BarStats | None,
) -> MetricSet:
    r = _as_series(returns, "returns")
    n = int(r.size)
    turnover_arr = None if turnover is None else _as_series(turnover, "turnover", n)
    traded_arr = None if traded is None else _as_series(traded, "traded", n)
    dd = None if drawdown is None else _as_series(drawdown, "drawdown", n)
    account = None if account_equity is None else _as_series(account_equity, "account_equity", n)
    capital = math.nan
    peak_growth = math.nan  # the compounded growth's peak, when compounded here
    if account is not None or (bar_stats is not None and bar_stats.has["account_equity"]):
        if initial_capital is None:
            raise InvalidArgument("needs initial_capital", field="account_equity")
        capital = _finite_float(initial_capital, "initial_capital", minimum=0.0, strict=True)
    if bar_stats is None:
        stats = BarStats(
            periods_per_year=periods_per_year,
            rf=rf,
            turnover_penalty=turnover_penalty,
            turnover=turnover_arr is not None,
            traded=traded_arr is not None,
            drawdown=True,
            account_equity=account is not None,
        )
        if (
            dd is None and n
        ):  # a non-finite return is reported by `stats.add` below, before the drawdown is read
            grown: Array = np.cumprod(np.add(r, 1.0), dtype=np.float64)
            peak = np.maximum.accumulate(grown)
            np.maximum(peak, 1.0, out=peak)
            peak_growth = float(peak[-1])
            dd = grown / peak
            dd -= 1.0
        stats.add(
            r,
            turnover=turnover_arr,
            traded=traded_arr,
            drawdown=dd if dd is not None else np.empty(0),
            account_equity=account,
        )
    else:
        stats = bar_stats
        if stats.n != n:
            raise InvalidArgument(f"holds {stats.n} bars, returns have {n}", field="bar_stats")
        mismatch = [
            name
            for name, value, want in (
                ("periods_per_year", stats.periods_per_year, float(periods_per_year)),
                ("rf", stats.rf, float(rf)),
                ("turnover_penalty", stats.penalty, float(turnover_penalty)),
            )
            if value != want
        ]
        given = {"turnover": turnover_arr, "traded": traded_arr, "account_equity": account}
        # a series the statistics hold need not be passed again (it is not read)
        mismatch += [name for name, arr in given.items() if arr is not None and not stats.has[name]]
        if not stats.has["drawdown"]:
            mismatch.append("drawdown")
        if mismatch:
            raise InvalidArgument(f"built with another {', '.join(mismatch)}", field="bar_stats")
    ppy, rf, penalty, rf_p = stats.periods_per_year, stats.rf, stats.penalty, stats.rf_per_period
    ret = stats.returns
    b = _Builder()
    b.put("n_periods", n)

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
        growth = stats.account_last / capital if stats.has["account_equity"] else stats.growth
        b.put("total_return", growth - 1.0)
        if growth > 0.0:
            b.put("annualized_return", float(np.power(growth, ppy / n)) - 1.0)
        elif growth == 0.0:
            b.put("annualized_return", -1.0)
        else:
            b.put("annualized_return", None, "equity went negative (1 + total_return < 0)")
        if n >= 2:
            b.put("volatility", 0.0 if ret.constant else float(ret.std() * math.sqrt(ppy)))
        else:
            b.put("volatility", None, _TOO_SHORT)
        b.put("downside_volatility", float(math.sqrt(stats.downside_ss / n) * math.sqrt(ppy)))
        b.put("max_drawdown", stats.dd_low)
        if math.isfinite(stats.dd_low) and math.isfinite(stats.dd_high):  # a NaN shows in both
            b.put("max_drawdown_duration", stats.underwater)
        else:
            b.put("max_drawdown_duration", None, "not finite (numerical overflow)")

    sharpe, reason = ret.sharpe(ppy, rf_p)
    b.put("sharpe", sharpe, reason)

    downside_vol = b.get("downside_volatility")
    if n < 2:
        b.put("sortino", None, _NO_RETURNS if n == 0 else _TOO_SHORT)
    elif downside_vol is None:
        b.put("sortino", None, b.reason("downside_volatility"))
    elif downside_vol == 0.0:
        b.put("sortino", None, "no downside deviation (no period below the risk-free rate)")
    else:
        b.put("sortino", float((ret.mean - rf_p) * ppy / downside_vol))

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
    moments = ret.moments()
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
                b.put("probabilistic_sharpe", float(ndtr(z)))
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
    if stats.has["turnover"]:
        if n:
            b.put("turnover", stats.turnover_sum / n)
        else:
            b.put("turnover", None, _NO_RETURNS)
    if stats.adjusted is not None:
        conventions["turnover_adj_basis"] = "traded" if stats.has["traded"] else "turnover"
        adj, reason = stats.adjusted.sharpe(ppy, rf_p) if n else (None, _NO_RETURNS)
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
        elif stats.has["account_equity"]:
            b.put("final_value", stats.account_last)
            b.put("peak_value", max(capital, stats.account_high))
        else:
            b.put("final_value", capital * stats.growth)
            if math.isnan(peak_growth):  # from a given drawdown: the running peak at the last bar
                peak_growth = stats.growth / (1.0 + stats.dd_last)
            b.put("peak_value", capital * peak_growth)

    return b.build(conventions)
