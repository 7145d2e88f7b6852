"""Rule strategies: prices -> a target position per symbol in {-1, 0, +1}.

`rule_weights(strategy_type, params, *, close, open, high, low, volume)`
validates `params` against the strategy's pydantic model
(`RULE_STRATEGIES[name]`) and returns a `(T, N)` float matrix: row t is the
position each symbol should hold, as a fraction of the capital allocated to
that symbol, decided from the bars at or before t (the engine applies the
execution lag: the decision of the close of t fills at `t + execution_lag`).
The caller scales per leg: a rule backtest over N symbols gives each symbol
`1 / N` of the equity (`weights = rule_weights(...) / N`, see
`rule_target_weights`), so the account is never levered.

Common conventions
------------------
- Causal: every indicator at t uses bars <= t only; perturbing data after t
  changes no position at or before t (tested).
- Missing bars: indicators are computed on each symbol's closes forward
  filled from its last known close (a halted bar repeats the last price, as
  a chart does; leading NaN, before the symbol lists, stay NaN), but no
  entry or exit fires on a bar whose own close is missing, and an indicator
  still in its warm-up (fewer bars than its window since the symbol's first
  close) fires nothing. The engine cannot trade a bar without a price anyway.
- State machine: each rule defines four event streams per symbol, long
  entry (EL), long exit (XL), short entry (ES), short exit (XS). An entry sets
  the position to its side from any state (so an entry of the other side is
  a flip); an exit of a side closes a position of that side and does nothing
  otherwise; between events the position is held (the state is the
  forward fill of the last relevant event, computed with running maxima of
  event indices, no per-bar loop). Conflicting events on one bar (EL with
  ES, EL with XL, ES with XS) cancel each other, as vectorbt's
  `from_signals` ignores conflicts by default. Before the first entry the
  position is 0. Short events exist only with `allow_short=True` (default
  False: long-only).
- No substitution: a rule whose events never fire gives zero weights and
  the backtest reports zero trades; a rule never falls back to another one.

Indicators (windows counted in bars; `x` the forward-filled close)
----------------------------------------------------------------
- SMA(n): mean of the last n values (defined from the n-th bar of the symbol).
- EMA(span): `y_t = a x_t + (1 - a) y_{t-1}`, `a = 2 / (span + 1)`, seeded
  with the symbol's first value (pandas `ewm(span, adjust=False)`), defined
  from the span-th bar (`min_periods=span`).
- RSI(n), Wilder: per-bar changes split into gains and losses; the first
  averages are the simple means of the first n changes, then
  `avg_t = (avg_{t-1} (n - 1) + value_t) / n`; `RSI = 100 avg_gain /
  (avg_gain + avg_loss)` (= `100 - 100 / (1 + RS)`), 50 when both averages
  are 0 (no movement). Defined from bar n (n changes need n + 1 closes).
- Bollinger(n, k): middle SMA(n), bands `middle +- k * std`, std the
  population standard deviation (ddof=0, Bollinger's definition) of the
  last n values.
- Crosses: `a` crosses above `b` at t when `a_t > b_t` and `a_{t-1} <=
  b_{t-1}` (both defined at t and t-1); below mirrors it.

Rules (`*Params` models give the defaults and validation)
---------------------------------------------------------
- `sma_cross(fast_period=10, slow_period=20)`: EL when SMA(fast) crosses
  above SMA(slow), XL when it crosses below; short: ES = XL, XS = EL
  (always in the market after the first cross). `fast_period < slow_period`.
- `ema_cross(fast_period=12, slow_period=26)`: the same with EMAs.
- `rsi(period=14, lower=30, upper=70)`: mean reversion. EL when RSI <
  lower (oversold), XL when RSI > upper; short: ES when RSI > upper, XS when
  RSI < lower. `0 < lower < upper < 100`.
- `macd(fast_period=12, slow_period=26, signal_period=9)`: MACD = EMA(fast) -
  EMA(slow), signal = EMA(signal_period) of MACD (seeded at MACD's first
  value). EL when MACD crosses above the signal line, XL when it crosses
  below; short: ES = XL, XS = EL.
- `bollinger(period=20, num_std=2.0)`: mean reversion. EL when close <
  lower band, XL when close >= middle; short: ES when close > upper band,
  XS when close <= middle.
- `momentum(lookback=20, threshold=0.05)`: m = `x_t / x_{t-lookback} - 1`.
  EL when m > threshold, XL when m <= 0 (the trend is gone); short: ES when
  m < -threshold, XS when m >= 0.
- `mean_reversion(ma_period=20, entry_threshold=0.02, exit_threshold=0.01)`:
  d = `close / SMA(ma_period) - 1`. EL when d < -entry_threshold, XL when
  d >= -exit_threshold; short: ES when d > entry_threshold, XS when d <=
  exit_threshold. `0 <= exit_threshold < entry_threshold`.
- `breakout(entry_period=20, exit_period=10)`: Donchian channels of the
  previous bars (bar t excluded), from highs / lows when given (a bar
  without a high or low uses its forward-filled close), else closes. EL when close > the highest high of the previous entry_period
  bars, XL when close < the lowest low of the previous exit_period bars;
  short: ES when close < the lowest low of the previous entry_period bars,
  XS when close > the highest high of the previous exit_period bars.
- `volume_momentum(lookback=20, volume_period=20, threshold=0.05,
  volume_multiplier=1.5)`: momentum confirmed by volume. A surge is
  `volume_t > volume_multiplier * mean(volume of the previous volume_period
  bars)` (all of them present; bar t excluded). EL when m > threshold and a
  surge, XL when m <= 0; short: ES when m < -threshold and a surge, XS when
  m >= 0. Needs volume: without it, InvalidArgument naming
  `strategy_cfg.type`. A missing volume fires nothing.
- `buy_and_hold()`: +1 from the symbol's first close on, never exits.

Errors: `InvalidArgument` with `field` `strategy_cfg.type` (unknown rule,
missing input) or `strategy_cfg.params.<name>` (unknown, missing or invalid
parameter, including cross-field rules such as `fast_period < slow_period`,
reported on the second field); malformed prices are `DataError` naming the
input (`close`, `volume`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from scipy.signal import lfilter

from alphaswarm_backtester.engine.backtest import BacktestOutput, run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = [
    "RULE_STRATEGIES",
    "BollingerParams",
    "BreakoutParams",
    "BuyAndHoldParams",
    "EmaCrossParams",
    "MacdParams",
    "MeanReversionParams",
    "MomentumParams",
    "RsiParams",
    "RuleInputs",
    "RuleParams",
    "SmaCrossParams",
    "VolumeMomentumParams",
    "is_rule_strategy",
    "positions_from_events",
    "rule_sides",
    "rule_target_weights",
    "rule_weights",
    "run_rule_backtest",
    "validate_rule_params",
]


class _ParamError(ValueError):
    """A cross-field rule broken by `field` (pydantic keeps the exception in the error's ctx)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RuleParams(BaseModel):
    """Base of every rule's parameters: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: ClassVar[str] = ""
    #: price fields the rule cannot run without, beyond `close`.
    requires: ClassVar[tuple[str, ...]] = ()


class _Shortable(RuleParams):
    allow_short: bool = False


def _ordered(fast: int, slow: int, fast_name: str, slow_name: str) -> None:
    if fast >= slow:
        raise _ParamError(slow_name, f"{slow_name} ({slow}) must be greater than {fast_name} ({fast})")


class SmaCrossParams(_Shortable):
    description: ClassVar[str] = "long when the fast SMA crosses above the slow SMA, out (or short) below"
    fast_period: int = Field(default=10, ge=1)
    slow_period: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _check(self) -> SmaCrossParams:
        _ordered(self.fast_period, self.slow_period, "fast_period", "slow_period")
        return self


class EmaCrossParams(_Shortable):
    description: ClassVar[str] = "long when the fast EMA crosses above the slow EMA, out (or short) below"
    fast_period: int = Field(default=12, ge=1)
    slow_period: int = Field(default=26, ge=2)

    @model_validator(mode="after")
    def _check(self) -> EmaCrossParams:
        _ordered(self.fast_period, self.slow_period, "fast_period", "slow_period")
        return self


class RsiParams(_Shortable):
    description: ClassVar[str] = "long below the lower RSI level, out (or short) above the upper one"
    period: int = Field(default=14, ge=1)
    lower: float = Field(default=30.0, gt=0, lt=100, allow_inf_nan=False)
    upper: float = Field(default=70.0, gt=0, lt=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> RsiParams:
        if self.lower >= self.upper:
            raise _ParamError("upper", f"upper ({self.upper}) must be greater than lower ({self.lower})")
        return self


class MacdParams(_Shortable):
    description: ClassVar[str] = "long when MACD crosses above its signal line, out (or short) below"
    fast_period: int = Field(default=12, ge=1)
    slow_period: int = Field(default=26, ge=2)
    signal_period: int = Field(default=9, ge=1)

    @model_validator(mode="after")
    def _check(self) -> MacdParams:
        _ordered(self.fast_period, self.slow_period, "fast_period", "slow_period")
        return self


class BollingerParams(_Shortable):
    description: ClassVar[str] = "long below the lower band until the middle, short above the upper band"
    period: int = Field(default=20, ge=2)
    num_std: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class MomentumParams(_Shortable):
    description: ClassVar[str] = "long when the lookback return exceeds threshold, out when it turns <= 0"
    lookback: int = Field(default=20, ge=1)
    threshold: float = Field(default=0.05, ge=0, allow_inf_nan=False)


class MeanReversionParams(_Shortable):
    description: ClassVar[str] = "long when the close is entry_threshold below its SMA, out within exit"
    ma_period: int = Field(default=20, ge=2)
    entry_threshold: float = Field(default=0.02, gt=0, lt=1, allow_inf_nan=False)
    exit_threshold: float = Field(default=0.01, ge=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> MeanReversionParams:
        if self.exit_threshold >= self.entry_threshold:
            raise _ParamError(
                "exit_threshold",
                f"exit_threshold ({self.exit_threshold}) must be less than entry_threshold "
                f"({self.entry_threshold})",
            )
        return self


class BreakoutParams(_Shortable):
    description: ClassVar[str] = "long above the previous entry_period high, out below the exit_period low"
    entry_period: int = Field(default=20, ge=1)
    exit_period: int = Field(default=10, ge=1)


class VolumeMomentumParams(_Shortable):
    description: ClassVar[str] = "momentum entries confirmed by a volume surge, out when momentum turns <= 0"
    requires: ClassVar[tuple[str, ...]] = ("volume",)
    lookback: int = Field(default=20, ge=1)
    volume_period: int = Field(default=20, ge=1)
    threshold: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    volume_multiplier: float = Field(default=1.5, gt=0, allow_inf_nan=False)


class BuyAndHoldParams(RuleParams):
    description: ClassVar[str] = "long from the first close on, never exits"


# ----------------------------------------------------------------------------- inputs and indicators


def _price_matrix(data: Any, field: str, shape: tuple[int, int] | None, *, positive: bool) -> np.ndarray:
    try:
        arr = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as a float matrix: {exc}", field=field) from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"must be a (dates, symbols) matrix, got {arr.ndim} dimensions", field=field)
    if shape is not None and arr.shape != shape:
        raise DataError(f"has shape {arr.shape}, expected {shape} (as close)", field=field)
    if arr.size:
        # two reductions that skip NaN (a missing bar) and make no temporary
        low, high = float(np.fmin.reduce(arr, axis=None)), float(np.fmax.reduce(arr, axis=None))
    else:
        low = high = math.nan
    if math.isinf(low) or math.isinf(high):
        raise DataError("contains ±inf", field=field)
    if (low <= 0) if positive else (low < 0):
        what = "prices must be > 0" if positive else "volumes must be >= 0"
        raise DataError(f"{what} where present (NaN marks a missing bar)", field=field)
    return arr


def _first_valid(x: np.ndarray) -> np.ndarray:
    """Row of each column's first non-NaN value (T when there is none)."""
    valid = ~np.isnan(x)
    return np.where(valid.any(axis=0), valid.argmax(axis=0), x.shape[0])


def _ffill(x: np.ndarray) -> np.ndarray:
    """Forward fill NaN down each column (leading NaN stay)."""
    valid = ~np.isnan(x)
    if valid.all():
        return x
    idx = np.where(valid, np.arange(x.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = np.take_along_axis(x, idx, axis=0)
    out[np.arange(x.shape[0])[:, None] < _first_valid(x)[None, :]] = np.nan
    return out


def _warmup_mask(first: np.ndarray, n_bars: int, n: int, start: int = 0) -> np.ndarray:
    """True on rows before `first + n - 1` (fewer than n values since the column's first one).

    The rows are `start .. start + n_bars - 1` of the series.
    """
    return np.arange(start, start + n_bars)[:, None] < (first + n - 1)[None, :]


_BLOCK_CELLS = 1 << 15  # cells per block of the window sums: a block's partial sums stay in the CPU cache


class _WindowSums:
    """Sums over the last n rows of a column-centred matrix, by doubling, for any window length.

    `x - x0` (each column centred on its first value, missing values 0) is
    summed in power-of-two blocks, `P_{k+1}[t] = P_k[t] + P_k[t - 2^k]`, and
    a window of n rows adds the blocks of n's binary digits: log2(n) +
    popcount(n) vectorised additions, no running sum. Each window sum is a
    balanced tree of additions over its own n values only, so its rounding
    error is a few ulps of those values whatever the series' length or level
    (a running sum would carry the rounding of everything before the window).

    The rows are processed in blocks (with the n - 1 rows before each block),
    so the partial sums of a block stay in the cache; a window's tree only
    reads its own n rows, so the blocks change no value.
    """

    def __init__(self, x: np.ndarray, first: np.ndarray) -> None:
        n_bars, n_cols = x.shape
        cols = np.arange(n_cols)
        self.x = x
        self.first = first
        self.x0 = np.where(first < n_bars, x[np.minimum(first, n_bars - 1), cols], 0.0)
        self.leading_gaps = bool((first > 0).any())

    def _centred(self, r0: int, r1: int) -> np.ndarray:
        centred = self.x[r0:r1] - self.x0
        if self.leading_gaps:
            centred[np.isnan(centred)] = 0.0
        return centred

    def block_rows(self, n: int) -> int:
        """Rows per block for windows of n rows (enough for the window's history to be a small part)."""
        return max(_BLOCK_CELLS // max(self.x.shape[1], 1), 4 * (n - 1), 1)

    def mean_rows(self, n: int, r0: int, r1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `[r0, r1)` of the n-row means (`x0` added back; NaN before a column's n-th value)."""
        return self.means_rows((n,), r0, r1, out)[0]

    def means_rows(
        self, windows: tuple[int, ...], r0: int, r1: int, out: np.ndarray | None = None
    ) -> list[np.ndarray]:
        """`mean_rows` of several windows, their doubling blocks shared (`out` for a single window)."""
        h0 = max(0, r0 - (max(windows) - 1))
        blocks = []
        for n, sums in zip(windows, _doubling_sums(self._centred(h0, r1), *windows), strict=True):
            block = sums[r0 - h0 :] if out is None else out
            np.divide(sums[r0 - h0 :], n, out=block)
            block += self.x0
            if r0 < int(self.first.max()) + n - 1:
                block[_warmup_mask(self.first, r1 - r0, n, start=r0)] = np.nan
            blocks.append(block)
        return blocks

    def mean(self, n: int) -> np.ndarray:
        """`(T, N)` means of the last n values, NaN before each column's n-th value."""
        n_bars, n_cols = self.x.shape
        out = np.empty((n_bars, n_cols))
        rows = self.block_rows(n)
        for i0 in range(0, n_bars, rows):
            i1 = min(i0 + rows, n_bars)
            self.mean_rows(n, i0, i1, out[i0:i1])
        return out

    def crosses(self, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
        """`_crosses(mean(fast), mean(slow))` block by block, neither mean kept."""
        n_bars = self.x.shape[0]
        up = np.empty(self.x.shape, dtype=bool)
        down = np.empty(self.x.shape, dtype=bool)
        up[:1] = down[:1] = False
        rows = self.block_rows(max(fast, slow))
        for i0 in range(1, n_bars, rows):
            i1 = min(i0 + rows, n_bars)
            fast_mean, slow_mean = self.means_rows((fast, slow), i0 - 1, i1)
            _cross_block(fast_mean, slow_mean, up[i0:i1], down[i0:i1])
        return up, down


def _doubling_sums(centred: np.ndarray, *windows: int) -> list[np.ndarray]:
    """Sums of the last n rows of `centred` for each n of `windows` (fewer at its first n - 1 rows).

    The power-of-two blocks are built once for all the windows; each window
    adds the blocks of its binary digits in the same order as alone, so its
    sums do not depend on the other windows. May overwrite `centred`.
    """
    n_bars = centred.shape[0]
    block = centred  # P_k, sums of the last 2^k values
    spare: np.ndarray | None = None
    outs: list[np.ndarray | None] = [None] * len(windows)
    covered = [0] * len(windows)
    width, top = 1, max(windows)
    while width <= top:
        for i, n in enumerate(windows):
            if n & width:
                # out[t] += P_k[t - covered]: the next 2^k values before the ones already summed
                out = outs[i]
                if out is None:
                    outs[i] = block.copy()
                elif covered[i] < n_bars:
                    out[covered[i] :] += block[: n_bars - covered[i]]
                covered[i] += width
        if width * 2 <= top:
            nxt = np.empty_like(block) if spare is None else spare
            nxt[:width] = block[:width]
            if width < n_bars:
                np.add(block[width:], block[:-width], out=nxt[width:])
            spare = block if block is not centred else None
            block = nxt
        width *= 2
    assert all(out is not None for out in outs)
    return [out for out in outs if out is not None]


def _rolling_std(x: np.ndarray, n: int, first: np.ndarray) -> np.ndarray:
    """Population (ddof=0) standard deviation of the last n values."""
    n_bars, n_cols = x.shape
    cols = np.arange(n_cols)
    x0 = np.where(first < n_bars, x[np.minimum(first, n_bars - 1), cols], 0.0)
    c = np.where(np.isnan(x), 0.0, x - x0).astype(np.longdouble)
    s1 = np.zeros((n_bars + 1, n_cols), dtype=np.longdouble)
    s2 = np.zeros((n_bars + 1, n_cols), dtype=np.longdouble)
    np.cumsum(c, axis=0, out=s1[1:])
    np.cumsum(c * c, axis=0, out=s2[1:])
    out = np.full((n_bars, n_cols), np.nan)
    if n <= n_bars:
        w1 = s1[n:] - s1[:-n]
        w2 = s2[n:] - s2[:-n]
        var = (w2 - w1 * w1 / n) / n
        out[n - 1 :] = np.sqrt(np.maximum(var, 0).astype(np.float64))
        # a constant window (a halted symbol's repeated close) has exactly zero dispersion,
        # which the sums only reproduce up to rounding.
        filled = np.where(np.isnan(x), 0.0, x)
        hi = maximum_filter1d(filled, size=n, axis=0, origin=(n - 1) // 2, mode="nearest")
        lo = minimum_filter1d(filled, size=n, axis=0, origin=(n - 1) // 2, mode="nearest")
        out[hi == lo] = 0.0
    out[_warmup_mask(first, n_bars, n)] = np.nan
    return out


def _ema(x: np.ndarray, span: int, first: np.ndarray) -> np.ndarray:
    """pandas `ewm(span, adjust=False, min_periods=span).mean()` of a series with leading NaN only."""
    n_bars, n_cols = x.shape
    alpha = 2.0 / (span + 1.0)
    cols = np.arange(n_cols)
    has = first < n_bars
    x0 = np.where(has, x[np.minimum(first, n_bars - 1), cols], 0.0)
    filled = np.where(np.isnan(x), x0[None, :], x)
    # y_t = alpha x_t + (1 - alpha) y_{t-1} with y_{-1} = x0: y_0 = x0 for a first row equal to x0.
    y, _ = lfilter([alpha], [1.0, alpha - 1.0], filled, axis=0, zi=((1.0 - alpha) * x0)[None, :])
    y[_warmup_mask(first, n_bars, span)] = np.nan
    y[:, ~has] = np.nan
    return np.asarray(y, dtype=np.float64)


def _wilder_rsi(x: np.ndarray, n: int, first: np.ndarray) -> np.ndarray:
    n_bars, n_cols = x.shape
    diff = np.full((n_bars, n_cols), np.nan)
    diff[1:] = x[1:] - x[:-1]
    gains = np.where(diff > 0, diff, 0.0)
    losses = np.where(diff < 0, -diff, 0.0)
    rows = np.arange(n_bars)[:, None]
    seed_row = first + n  # the n-th change after the first close
    out = np.full((n_bars, n_cols), np.nan)
    ok = seed_row < n_bars
    if not ok.any():
        return out
    beta = 1.0 - 1.0 / n
    averages = []
    for values in (gains, losses):
        # seed: mean of the changes at rows first+1 .. first+n (centred sums are not needed: values >= 0).
        csum = np.zeros((n_bars + 1, n_cols))
        np.cumsum(np.where(np.isnan(values), 0.0, values), axis=0, out=csum[1:])
        s = np.minimum(seed_row, n_bars - 1)
        cols = np.arange(n_cols)
        seed = (csum[s + 1, cols] - csum[np.maximum(s + 1 - n, 0), cols]) / n
        z = np.where(rows > seed_row[None, :], values / n, 0.0)
        z[s[ok], cols[ok]] = seed[ok]
        avg = lfilter([1.0], [1.0, -beta], z, axis=0)
        averages.append(avg)
    ag, al = averages
    total = ag + al
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(total > 0, 100.0 * ag / total, 50.0)
    defined = (rows >= seed_row[None, :]) & ok[None, :]
    out[defined] = rsi[defined]
    return out


def _trailing_extreme(x: np.ndarray, n: int, first: np.ndarray, *, high: bool) -> np.ndarray:
    """Max (`high`) or min of the n bars before t (t excluded); NaN until n bars precede t."""
    n_bars = x.shape[0]
    fill = -np.inf if high else np.inf
    filled = np.where(np.isnan(x), fill, x)
    filt = maximum_filter1d if high else minimum_filter1d
    window = filt(filled, size=n, axis=0, origin=(n - 1) // 2, mode="nearest")
    out = np.full_like(x, np.nan)
    out[1:] = window[:-1]
    out[np.arange(n_bars)[:, None] < (first + n)[None, :]] = np.nan
    return out


class RuleInputs:
    """Validated price inputs of the rules plus a cache of indicators.

    One instance serves many parameter sets (an optimization): an SMA, EMA,
    RSI or channel of a given window is computed once. Arrays are `(T, N)`;
    `close_raw` keeps the NaN of missing bars (events never fire there),
    `close` is forward filled for the indicators. With `keep_indicators`
    false (one parameter set) no indicator outlives the rule that used it,
    and a rule may compute what it compares block by block (the SMA cross:
    its two means never exist whole).
    """

    def __init__(
        self,
        close: Any,
        *,
        open: Any = None,
        high: Any = None,
        low: Any = None,
        volume: Any = None,
        keep_indicators: bool = True,
    ) -> None:
        self.keep_indicators = keep_indicators
        self.close_raw = _price_matrix(close, "close", None, positive=True)
        shape = self.close_raw.shape
        self.shape = shape
        self.open = None if open is None else _price_matrix(open, "open", shape, positive=True)
        self.high = None if high is None else _price_matrix(high, "high", shape, positive=True)
        self.low = None if low is None else _price_matrix(low, "low", shape, positive=True)
        self.volume = None if volume is None else _price_matrix(volume, "volume", shape, positive=False)
        # no value is infinite, so the sum is NaN exactly when a bar is missing
        self.all_bars_ok = not math.isnan(float(np.add.reduce(self.close_raw, axis=None)))
        if self.all_bars_ok:
            self.close = self.close_raw
            self.first = np.zeros(shape[1], dtype=np.int64)
        else:
            self.close = _ffill(self.close_raw)
            self.first = _first_valid(self.close_raw)
        self._bar_ok: np.ndarray | None = None
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}
        self._sums: _WindowSums | None = None

    @property
    def bar_ok(self) -> np.ndarray:
        """`(T, N)`: True where the close is present."""
        if self._bar_ok is None:
            self._bar_ok = ~np.isnan(self.close_raw)
        return self._bar_ok

    def _memo(self, key: tuple[Any, ...], fn: Callable[[], np.ndarray]) -> np.ndarray:
        """The indicator `key`: kept for the next parameter set with `keep_indicators`, else not kept."""
        out = self._cache.get(key)
        if out is None:
            out = fn()
            out.flags.writeable = False
            if self.keep_indicators:
                self._cache[key] = out
        return out

    def sma(self, n: int) -> np.ndarray:
        return self._memo(("sma", n), lambda: self.window_sums().mean(n))

    def window_sums(self) -> _WindowSums:
        if self._sums is None:
            self._sums = _WindowSums(self.close, self.first)
        return self._sums

    def ema(self, n: int) -> np.ndarray:
        return self._memo(("ema", n), lambda: _ema(self.close, n, self.first))

    def rolling_std(self, n: int) -> np.ndarray:
        return self._memo(("std", n), lambda: _rolling_std(self.close, n, self.first))

    def rsi(self, n: int) -> np.ndarray:
        return self._memo(("rsi", n), lambda: _wilder_rsi(self.close, n, self.first))

    def macd(self, fast: int, slow: int, signal: int) -> tuple[np.ndarray, np.ndarray]:
        line = self._memo(("macd", fast, slow), lambda: self.ema(fast) - self.ema(slow))
        sig = self._memo(("macd_signal", fast, slow, signal), lambda: _ema(line, signal, _first_valid(line)))
        return line, sig

    def momentum(self, n: int) -> np.ndarray:
        def compute() -> np.ndarray:
            out = np.full(self.shape, np.nan)
            out[n:] = self.close[n:] / self.close[:-n] - 1.0
            return out

        return self._memo(("mom", n), compute)

    def channel(self, n: int, *, high: bool) -> np.ndarray:
        def compute() -> np.ndarray:
            src = self.high if high else self.low
            x = self.close if src is None else np.where(np.isnan(src), self.close, src)
            return _trailing_extreme(x, n, self.first, high=high)

        return self._memo(("channel", n, high), compute)

    def volume_surge_base(self, n: int) -> np.ndarray:
        """Mean volume of the n bars before t (NaN unless all n are present)."""

        def compute() -> np.ndarray:
            assert self.volume is not None
            v = self.volume
            present = ~np.isnan(v)
            csum = np.zeros((v.shape[0] + 1, v.shape[1]))
            np.cumsum(np.where(present, v, 0.0), axis=0, out=csum[1:])
            cnt = np.zeros((v.shape[0] + 1, v.shape[1]), dtype=np.int64)
            np.cumsum(present, axis=0, out=cnt[1:])
            out = np.full(v.shape, np.nan)
            if n < v.shape[0]:
                # rows t >= n: bars t-n .. t-1
                total = csum[n:-1] - csum[: -n - 1]
                count = cnt[n:-1] - cnt[: -n - 1]
                out[n:] = np.where(count == n, total / n, np.nan)
            return out

        return self._memo(("vol", n), compute)


# ----------------------------------------------------------------------------- the state machine


def _last_index(events: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per cell, the row of the last True at or before it (-1 when none)."""
    idx = np.where(events, rows, np.int32(-1))
    np.maximum.accumulate(idx, axis=0, out=idx)
    return idx


def _positions_one_column(
    el: np.ndarray, xl: np.ndarray, short_entry: np.ndarray | None, short_exit: np.ndarray | None
) -> np.ndarray:
    """`positions_from_events` of one column, on the bars with an event only (then repeated forward)."""
    el, xl = el.ravel(), xl.ravel()
    n_bars = el.size
    if short_entry is None and short_exit is None:
        v_el = el & ~xl
        rows = np.flatnonzero(v_el | xl)  # a conflicting bar (EL with XL) counts as nothing
        rows = rows[~(el[rows] & xl[rows])]
        state = v_el[rows].view(np.int8)
    else:
        es = np.zeros_like(el) if short_entry is None else np.asarray(short_entry, dtype=bool).ravel()
        xs = np.zeros_like(el) if short_exit is None else np.asarray(short_exit, dtype=bool).ravel()
        rows = np.flatnonzero(el | xl | es | xs)
        e_l, x_l, e_s, x_s = el[rows], xl[rows], es[rows], xs[rows]
        both = e_l & e_s
        idx = np.arange(rows.size, dtype=np.int64)
        last = [
            np.maximum.accumulate(np.where(flags, idx, -1)) if rows.size else idx
            for flags in (e_l & ~both & ~x_l, e_s & ~both & ~x_s, x_l & ~e_l, x_s & ~e_s)
        ]
        last_el, last_es, last_xl, last_xs = last
        longs = (last_el > last_es) & (last_el > last_xl)
        shorts = (last_es > last_el) & (last_es > last_xs)
        state = longs.view(np.int8) - shorts.view(np.int8)
    out = np.zeros((n_bars, 1), dtype=np.int8)
    if rows.size:
        out[rows[0] :, 0] = np.repeat(state, np.diff(rows, append=n_bars))
    return out


def positions_from_events(
    long_entry: np.ndarray,
    long_exit: np.ndarray,
    short_entry: np.ndarray | None = None,
    short_exit: np.ndarray | None = None,
) -> np.ndarray:
    """Positions in {-1, 0, +1} (int8) from four `(T, N)` boolean event streams (module docstring).

    With `L` the row of the last valid long entry at or before t, `S` of the
    last short entry, `XL` / `XS` of the last exits: long when `L > S` and
    `L > XL`, short when `S > L` and `S > XS` (an exit on the entry's own
    row is a conflict and has been removed), flat otherwise.
    """
    el = np.asarray(long_entry, dtype=bool)
    xl = np.asarray(long_exit, dtype=bool)
    if el.ndim == 2 and el.shape[1] == 1:
        return _positions_one_column(el, xl, short_entry, short_exit)
    rows = np.arange(el.shape[0], dtype=np.int32)[:, None]
    if short_entry is None and short_exit is None:
        last_el = _last_index(el & ~xl, rows)
        last_xl = _last_index(xl & ~el, rows)
        return (last_el > last_xl).view(np.int8)
    es = np.zeros_like(el) if short_entry is None else np.asarray(short_entry, dtype=bool)
    xs = np.zeros_like(el) if short_exit is None else np.asarray(short_exit, dtype=bool)
    both = el & es
    last_el = _last_index(el & ~both & ~xl, rows)
    last_es = _last_index(es & ~both & ~xs, rows)
    last_xl = _last_index(xl & ~el, rows)
    last_xs = _last_index(xs & ~es, rows)
    longs = (last_el > last_es) & (last_el > last_xl)
    shorts = (last_es > last_el) & (last_es > last_xs)
    return longs.view(np.int8) - shorts.view(np.int8)


def _crosses(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`up[t]`: a > b at t and a <= b at t - 1; `down[t]`: a < b at t and a >= b at t - 1 (NaN never crosses).

    By row blocks (each with the row before it), so the comparisons of a block
    run on rows already in the cache.
    """
    n_bars = a.shape[0]
    up = np.empty(a.shape, dtype=bool)
    down = np.empty(a.shape, dtype=bool)
    up[:1] = down[:1] = False
    rows = max(_BLOCK_CELLS // max(int(np.prod(a.shape[1:])), 1), 2)
    for i0 in range(1, n_bars, rows):
        i1 = min(i0 + rows, n_bars)
        _cross_block(a[i0 - 1 : i1], b[i0 - 1 : i1], up[i0:i1], down[i0:i1])
    return up, down


def _cross_block(a: np.ndarray, b: np.ndarray, up: np.ndarray, down: np.ndarray) -> None:
    """The crosses of rows `1:` of `a`, `b` (row 0 is the row before) into `up`, `down`."""
    now, before = slice(1, None), slice(None, -1)
    with np.errstate(invalid="ignore"):
        np.greater(a[now], b[now], out=up)
        up &= np.less_equal(a[before], b[before])
        np.less(a[now], b[now], out=down)
        down &= np.greater_equal(a[before], b[before])


def _machine(
    inp: RuleInputs,
    allow_short: bool,
    el: np.ndarray,
    xl: np.ndarray,
    es: np.ndarray | None,
    xs: np.ndarray | None,
) -> np.ndarray:
    if not allow_short:
        es = xs = None
    if inp.all_bars_ok:
        return positions_from_events(el, xl, es, xs)
    ok = inp.bar_ok
    return positions_from_events(
        el & ok,
        xl & ok,
        None if es is None else es & ok,
        None if xs is None else xs & ok,
    )


@numba.njit(cache=True, nogil=True)
def _cross_positions(
    a: np.ndarray, b: np.ndarray, allow_short: bool
) -> np.ndarray:  # pragma: no cover - compiled
    """The positions of a cross rule on one column of `a`, `b` `(T, 1)` whose bars all have a close.

    `_crosses` and the state machine in one loop: long from a cross above (EL,
    and XS with shorts), out (or short) from a cross below (XL, and ES), held
    in between; the two crosses never fall on one bar, so no event conflicts.
    """
    n = a.shape[0]
    out = np.zeros((n, 1), dtype=np.int8)
    pos = 0
    for t in range(1, n):
        x = a[t, 0]
        y = b[t, 0]
        if x > y and a[t - 1, 0] <= b[t - 1, 0]:
            pos = 1
        elif x < y and a[t - 1, 0] >= b[t - 1, 0]:
            pos = -1 if allow_short else 0
        out[t, 0] = pos
    return out


def _cross_rule(inp: RuleInputs, fast: np.ndarray, slow: np.ndarray, allow_short: bool) -> np.ndarray:
    if fast.shape[1] == 1 and inp.all_bars_ok and fast.flags.c_contiguous and slow.flags.c_contiguous:
        return _cross_positions(fast, slow, allow_short)  # the optimizer's common case, compiled
    up, down = _crosses(fast, slow)
    return _machine(inp, allow_short, up, down, down, up)


def _sma_cross(inp: RuleInputs, p: SmaCrossParams) -> np.ndarray:
    if inp.keep_indicators:
        return _cross_rule(inp, inp.sma(p.fast_period), inp.sma(p.slow_period), p.allow_short)
    up, down = inp.window_sums().crosses(p.fast_period, p.slow_period)  # one backtest: no SMA kept
    return _machine(inp, p.allow_short, up, down, down, up)


def _ema_cross(inp: RuleInputs, p: EmaCrossParams) -> np.ndarray:
    return _cross_rule(inp, inp.ema(p.fast_period), inp.ema(p.slow_period), p.allow_short)


def _macd(inp: RuleInputs, p: MacdParams) -> np.ndarray:
    line, signal = inp.macd(p.fast_period, p.slow_period, p.signal_period)
    return _cross_rule(inp, line, signal, p.allow_short)


def _rsi(inp: RuleInputs, p: RsiParams) -> np.ndarray:
    r = inp.rsi(p.period)
    with np.errstate(invalid="ignore"):
        low, high = r < p.lower, r > p.upper
    return _machine(inp, p.allow_short, low, high, high, low)


def _bollinger(inp: RuleInputs, p: BollingerParams) -> np.ndarray:
    mid = inp.sma(p.period)
    band = p.num_std * inp.rolling_std(p.period)
    x = inp.close
    with np.errstate(invalid="ignore"):
        return _machine(inp, p.allow_short, x < mid - band, x >= mid, x > mid + band, x <= mid)


def _momentum(inp: RuleInputs, p: MomentumParams) -> np.ndarray:
    m = inp.momentum(p.lookback)
    with np.errstate(invalid="ignore"):
        return _machine(inp, p.allow_short, m > p.threshold, m <= 0.0, m < -p.threshold, m >= 0.0)


def _mean_reversion(inp: RuleInputs, p: MeanReversionParams) -> np.ndarray:
    d = inp.close / inp.sma(p.ma_period) - 1.0
    e, x = p.entry_threshold, p.exit_threshold
    with np.errstate(invalid="ignore"):
        return _machine(inp, p.allow_short, d < -e, d >= -x, d > e, d <= x)


def _breakout(inp: RuleInputs, p: BreakoutParams) -> np.ndarray:
    x = inp.close
    hi_in, lo_out = inp.channel(p.entry_period, high=True), inp.channel(p.exit_period, high=False)
    lo_in, hi_out = inp.channel(p.entry_period, high=False), inp.channel(p.exit_period, high=True)
    with np.errstate(invalid="ignore"):
        return _machine(inp, p.allow_short, x > hi_in, x < lo_out, x < lo_in, x > hi_out)


def _volume_momentum(inp: RuleInputs, p: VolumeMomentumParams) -> np.ndarray:
    if inp.volume is None:
        raise InvalidArgument(
            "volume_momentum needs volume, and the prices have none", field="strategy_cfg.type"
        )
    m = inp.momentum(p.lookback)
    base = inp.volume_surge_base(p.volume_period)
    with np.errstate(invalid="ignore"):
        surge = inp.volume > p.volume_multiplier * base
        return _machine(
            inp, p.allow_short, (m > p.threshold) & surge, m <= 0.0, (m < -p.threshold) & surge, m >= 0.0
        )


def _buy_and_hold(inp: RuleInputs, p: BuyAndHoldParams) -> np.ndarray:
    return (np.arange(inp.shape[0])[:, None] >= inp.first[None, :]).astype(np.int8)


_RULES: Mapping[str, tuple[type[RuleParams], Callable[[RuleInputs, Any], np.ndarray]]] = MappingProxyType(
    {
        "sma_cross": (SmaCrossParams, _sma_cross),
        "ema_cross": (EmaCrossParams, _ema_cross),
        "rsi": (RsiParams, _rsi),
        "macd": (MacdParams, _macd),
        "bollinger": (BollingerParams, _bollinger),
        "momentum": (MomentumParams, _momentum),
        "mean_reversion": (MeanReversionParams, _mean_reversion),
        "breakout": (BreakoutParams, _breakout),
        "volume_momentum": (VolumeMomentumParams, _volume_momentum),
        "buy_and_hold": (BuyAndHoldParams, _buy_and_hold),
    }
)

#: Rule name -> its pydantic parameters model (defaults, validation, `description`, `requires`).
RULE_STRATEGIES: Mapping[str, type[RuleParams]] = MappingProxyType({k: v[0] for k, v in _RULES.items()})


def is_rule_strategy(strategy_type: str) -> bool:
    """Whether `strategy_type` names a rule strategy."""
    return strategy_type in _RULES


def validate_rule_params(strategy_type: str, params: Mapping[str, Any] | None) -> RuleParams:
    """The validated parameters of rule `strategy_type` (InvalidArgument naming the field otherwise)."""
    entry = _RULES.get(strategy_type)
    if entry is None:
        raise InvalidArgument(
            f"unknown rule strategy {strategy_type!r}; known: {sorted(_RULES)}", field="strategy_cfg.type"
        )
    if params is not None and not isinstance(params, Mapping):
        raise InvalidArgument("params must be a mapping", field="strategy_cfg.params")
    try:
        return entry[0].model_validate(dict(params or {}))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if not loc and isinstance(cause, _ParamError):
            loc = cause.field
        field = f"strategy_cfg.params.{loc}" if loc else "strategy_cfg.params"
        message = str(cause) if isinstance(cause, _ParamError) else err["msg"]
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors(include_url=False)]
        raise InvalidArgument(message, field=field, details={"errors": errors}) from None


def rule_sides(
    strategy_type: str, params: RuleParams | Mapping[str, Any] | None, inputs: RuleInputs
) -> np.ndarray:
    """`(T, N)` int8 positions in {-1, 0, +1} of a rule on prepared `inputs` (validates `params`)."""
    entry = _RULES.get(strategy_type)
    if entry is None or not isinstance(params, entry[0]):
        raw = params.model_dump() if isinstance(params, RuleParams) else params
        params = validate_rule_params(strategy_type, raw)
        entry = _RULES[strategy_type]
    return entry[1](inputs, params)


def rule_weights(
    strategy_type: str,
    params: Mapping[str, Any] | RuleParams | None = None,
    *,
    close: Any,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
) -> np.ndarray:
    """`(T, N)` float target positions in [-1, 1] per symbol (a 1-D close is one symbol).

    Each value is the position as a fraction of the capital allocated to
    that symbol, decided from bars <= t; see the module docstring for the
    rules and conventions. Scale by the leg's allocation before backtesting
    (`rule_target_weights` splits the equity equally).
    """
    p = params if isinstance(params, RuleParams) else validate_rule_params(strategy_type, params)
    inputs = RuleInputs(close, open=open, high=high, low=low, volume=volume)
    return rule_sides(strategy_type, p, inputs).astype(np.float64)


def rule_target_weights(
    strategy_type: str,
    params: Mapping[str, Any] | RuleParams | None = None,
    *,
    close: Any,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
) -> np.ndarray:
    """Engine target weights of a rule over N symbols: `rule_weights(...) / N` (equal capital per symbol).

    Each symbol trades its own rule on `1 / N` of the equity with shared
    cash; the account is never levered (`sum |w| <= 1`).
    """
    w = rule_weights(strategy_type, params, close=close, open=open, high=high, low=low, volume=volume)
    return w / w.shape[1]


def run_rule_backtest(
    strategy_type: str,
    params: Mapping[str, Any] | RuleParams | None,
    *,
    close: Any,
    dates: Any,
    symbols: Sequence[str],
    config: EngineConfig | None = None,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    volume: Any = None,
    start: int = 0,
    stop: int | None = None,
    benchmark: Any = None,
) -> BacktestOutput:
    """Backtest a rule on the rows `[start, stop)` of the prices, capital split equally across symbols.

    The targets are computed from the rows `[0, stop)` only, so the
    indicators' warm-up uses the history before `start` and nothing after
    `stop - 1` is read; the account starts flat in cash at `start` and the
    first decision (row `start`) fills at `start + execution_lag`.
    `benchmark` is a per-bar return series of the window. Returns
    `run_backtest`'s output for the window.
    """
    # one parameter set: an indicator is used once, so none is kept
    inputs = RuleInputs(close, open=open, high=high, low=low, volume=volume, keep_indicators=False)
    n_bars = inputs.shape[0]
    stop = n_bars if stop is None else stop
    if not 0 <= start < stop <= n_bars:
        raise InvalidArgument(f"window [{start}, {stop}) is outside the {n_bars} bars", field="start")
    if stop < n_bars:
        inputs = RuleInputs(
            inputs.close_raw[:stop],
            open=None if inputs.open is None else inputs.open[:stop],
            high=None if inputs.high is None else inputs.high[:stop],
            low=None if inputs.low is None else inputs.low[:stop],
            volume=None if inputs.volume is None else inputs.volume[:stop],
            keep_indicators=False,
        )
    sides = rule_sides(strategy_type, params, inputs)
    rows = slice(start, stop)

    def cut(arr: np.ndarray | None) -> np.ndarray | None:
        return None if arr is None else arr[rows]

    return run_backtest(
        sides[rows].astype(np.float64) / sides.shape[1],
        inputs.close_raw[rows],
        dates=np.asarray(dates)[rows],
        symbols=symbols,
        config=config,
        open=cut(inputs.open),
        high=cut(inputs.high),
        low=cut(inputs.low),
        benchmark=benchmark,
    )
