"""Synthetic panels with a planted alpha (`DatasetConfig.source: synthetic`).

`generate_synthetic(cfg, execution_lag=, horizon=)` returns a `Panel` and a
`SyntheticTruth`; `load_panel` calls it for `source: synthetic` (parameters in
`dataset_cfg.synthetic`, label timing from `dataset_cfg.label`) and
`synthetic_truth(dataset_cfg)` gives the truth of the panel `load_panel`
returns. Seeded: the same config gives bit-identical bars on every platform
NumPy's PCG64 runs on.

The model
---------
Daily log returns follow a factor model, filtered by one autoregression that
plants the alpha::

    n[u, i] = sigma_m * m[u] + sigma_s * f[u, sector(i)] + sigma_e * e[u, i]     (iid N(0, 1) shocks)
    x[u, i] = n[u, i] + (c / h) * sum_{j = lag+1}^{lag+h} x[u - j, i]           (the planted AR)
    r[u, i] = x[u, i] + mu

- one market factor `m` and `K = max(1, min(10, N // 5))` sector factors
  `f` (each symbol in one sector, drawn uniformly), loading 1 on both: the
  market share of a symbol's variance is `MARKET_SHARE`, the sector share
  `SECTOR_SHARE`, the idiosyncratic rest `1 - MARKET_SHARE - SECTOR_SHARE`.
  Exposures are homogeneous on purpose: the market (and the drift `mu`,
  `MARKET_DRIFT` a year) is then the same for every symbol and drops out of
  every cross-sectional statistic, and every symbol has the same volatility;
- the stationary variance of `r` is `annual_volatility**2 / 252` (daily bars,
  `TRADING_DAYS = 252`); the first `burn_in` filtered rows are discarded so
  the panel starts in the stationary state;
- `close[t] = price0 * exp(sum_{u <= t} r[u])`.

The planted signal
------------------
The signal observed at t is the bar's own simple return,
`s[t, i] = close[t, i] / close[t-1, i] - 1` (the feature `ret_1`): a
short-term momentum effect for `ic > 0`, a reversal for `ic < 0`. The AR
makes the return a decision formed at t earns (METRICS.md timing),
`close[t+lag+h] / close[t+lag] - 1 = exp(sum_{u=t+lag+1}^{t+lag+h} r[u]) - 1`,
depend on it: the alpha of each signal is earned evenly over the `h` bars the
decision is held, after the `lag` bars of execution delay. `c` is solved so
that the **expected per-date cross-sectional Spearman IC** (`RankIC_t` of
`docs/metrics.md`) over the full cross-section of `n_symbols` equals `ic`:

- every shock is Gaussian and one linear filter acts on every component, so
  on a date the pairs `(s[t, i], label[t, i])` are jointly normal with the
  same correlation `rho` within every component (market, sector,
  idiosyncratic); `rho(c)` follows from the autocovariances of the AR
  (Yule-Walker);
- the expected sample Spearman correlation of `N` symbols is exact through
  orthant probabilities, `P(U > 0, V > 0) = 1/4 + arcsin(r) / (2 pi)`, summed
  over the pairs and triples of symbols by sector pattern (Moran's formula
  `6 / (pi (N+1)) [asin rho + (N-2) asin(rho/2)]` without sectors); it
  includes the small-sample bias, so a panel of 20 symbols and one of 3000
  both have mean RankIC `ic` in expectation. A one-symbol panel uses the
  time-series limit `6/pi asin(rho/2)`;
- the Pearson IC is not planted separately: it is about `rho` (e.g. 0.0524
  for `ic = 0.05`), reported as `SyntheticTruth.ic_pearson`; it is the
  population value of the log returns, the sample IC of simple returns
  differs from it by O(1/N) and O(vol).

Spearman is the target because it is exact: ranks are invariant to the
`exp(.) - 1` between log and simple returns, and to the market and drift
shared by every symbol on a date. `|ic|` is limited by stationarity
(`|c| < 1`); a value that cannot be planted for the label's `lag` and `h` is
an `InvalidArgument` naming `dataset_cfg.synthetic.ic`. For `h = 1`, the
planted signal is also the best linear predictor of the label; for `h > 1`
a combination of past returns predicts slightly better.

OHLCV (`ohlcv: true`)
---------------------
`open[t] = close[t-1] * exp(0.3 (r[t] - mu) + 0.2 sigma_d z1)` (an overnight
gap; `close[-1]` is `price0`), `high = max(open, close) * exp(0.5 sigma_d |z2|)`,
`low = min(open, close) * exp(-0.5 sigma_d |z3|)` (so `low <= open, close <=
high`), `volume = round(exp(v_i + 0.3 z4 + 0.25 |r - mu| / sigma_d))` with a
per-symbol level `v_i ~ N(ln 1e6, 1)`: volume rises with the size of the
move. These extra fields carry no information about future returns; drawing
them never changes `close` (the same seed gives the same closes with or
without OHLCV).

Size and cost
-------------
Symbols are generated in blocks of `BLOCK_SYMBOLS` with one random stream
per block (a `SeedSequence` spawn key), so memory is the output (8 bytes x
T x N per field) plus a few block-sized temporaries, and the result does
not depend on the machine. T=5040 x N=3000 with OHLCV (five 121 MB fields)
takes a few seconds. Dates are business days (Mon-Fri) from `start_date`;
symbols are `SYN0000`, `SYN0001`, ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alphaswarm_common.config import SyntheticConfig
from alphaswarm_common.data.panel import Panel
from alphaswarm_common.errors import InvalidArgument

__all__ = [
    "BLOCK_SYMBOLS",
    "MARKET_DRIFT",
    "MARKET_SHARE",
    "SECTOR_SHARE",
    "TRADING_DAYS",
    "SyntheticTruth",
    "expected_rank_ic",
    "generate_synthetic",
    "n_sectors",
    "planted_coefficient",
    "return_correlation",
]

MARKET_SHARE = 0.30
"""Share of a symbol's daily return variance that comes from the market factor."""
SECTOR_SHARE = 0.15
"""Share that comes from its sector factor (the idiosyncratic share is the rest)."""
MARKET_DRIFT = 0.05
"""Annual log drift shared by every symbol (cross-sectionally constant)."""
TRADING_DAYS = 252
"""Bars per year used to turn `annual_volatility` into a daily volatility."""
BLOCK_SYMBOLS = 256
"""Symbols generated together (one random stream per block)."""

_FIELD = "dataset_cfg.synthetic.ic"
_C_MAX = 1.0 - 1e-9
_MAX_BURN_IN = 100_000


@dataclass(frozen=True, eq=False)
class SyntheticTruth:
    """What the generator planted, aligned with the panel it describes.

    `signal[t, i]` is the planted signal (the simple 1-bar return at t, NaN on
    the first row); `ic` the expected per-date RankIC of `signal` against the
    label `close[t+lag+h]/close[t+lag]-1`; `ic_pearson` the population Pearson
    correlation of the underlying log returns (about the expected Pearson
    IC); `coefficient` the AR coefficient `c`; `sectors[i]` the sector of
    symbol i; `burn_in` the discarded rows.
    """

    dates: np.ndarray
    symbols: tuple[str, ...]
    signal: np.ndarray
    ic: float
    ic_pearson: float
    coefficient: float
    execution_lag: int
    horizon: int
    sectors: np.ndarray
    n_sectors: int
    daily_volatility: float
    burn_in: int


# --------------------------------------------------------------------------- the planted relation


def _ar_coefficients(c: float, execution_lag: int, horizon: int) -> np.ndarray:
    """`phi[j-1]` for lags `j = 1 .. lag+h`: `c/h` on lags `lag+1 .. lag+h`, 0 before."""
    phi = np.zeros(execution_lag + horizon)
    phi[execution_lag:] = c / horizon
    return phi


def _autocovariances(phi: np.ndarray, n_lags: int) -> np.ndarray:
    """`gamma(0..n_lags)` of the AR `x[u] = sum_j phi[j-1] x[u-j] + n[u]` with unit innovation variance.

    Yule-Walker: `gamma(k) - sum_j phi_j gamma(|k-j|) = [k == 0]` for `k = 0..p`
    (a `(p+1)`-square linear system), then `gamma(k) = sum_j phi_j gamma(k-j)`.
    """
    p = phi.size
    a = np.eye(p + 1)
    for k in range(p + 1):
        for j in range(1, p + 1):
            a[k, abs(k - j)] -= phi[j - 1]
    b = np.zeros(p + 1)
    b[0] = 1.0
    gamma = np.zeros(max(n_lags, p) + 1)
    gamma[: p + 1] = np.linalg.solve(a, b)
    for k in range(p + 1, gamma.size):
        gamma[k] = float(np.dot(phi, gamma[k - p : k][::-1]))
    return gamma


def return_correlation(c: float, execution_lag: int, horizon: int) -> float:
    """Correlation of a bar's log return `x[t]` with the label's log return `sum_{u=t+lag+1}^{t+lag+h} x[u]`."""
    if c == 0.0:
        return 0.0
    gamma = _autocovariances(_ar_coefficients(c, execution_lag, horizon), execution_lag + horizon)
    cov = float(gamma[execution_lag + 1 : execution_lag + horizon + 1].sum())
    m = np.arange(1, horizon)
    var_label = horizon * gamma[0] + 2.0 * float(((horizon - m) * gamma[m]).sum())
    return cov / math.sqrt(gamma[0] * var_label)


def n_sectors(n_symbols: int) -> int:
    """The number of sector factors of a panel of `n_symbols`: `max(1, min(10, N // 5))`."""
    return max(1, min(10, n_symbols // 5))


def expected_rank_ic(
    rho: float,
    sector_sizes: Sequence[int],
    *,
    sector_share: float = SECTOR_SHARE,
    market_share: float = MARKET_SHARE,
) -> float:
    """Expected sample Spearman correlation over one cross-section of `sum(sector_sizes)` symbols.

    Each symbol's pair (signal, label) is jointly normal with correlation
    `rho` in every variance component (market, sector, idiosyncratic); the
    market is common to all symbols. With
    `R_i - (n+1)/2 = sum_{j != i} (1[X_j < X_i] - 1/2)` the expectation is a
    sum over ordered pairs `(i, j)` and triples `(i, j, k)` of orthant
    probabilities `1/4 + asin(r) / (2 pi)`, where `r` is the correlation of
    `(X_i - X_j, Y_i - Y_k)` and depends only on which of `i, j, k` share a
    sector. Without sectors this is Moran's (1948) formula. A single symbol
    gives the large-sample limit `6/pi asin(rho/2)` (a time-series IC).
    """
    sizes = np.asarray([s for s in sector_sizes if s > 0], dtype=np.float64)
    n = float(sizes.sum())
    if n < 1:
        raise InvalidArgument("at least one symbol is needed", field="dataset_cfg.synthetic.n_symbols")
    if n == 1:
        return 6.0 / math.pi * math.asin(rho / 2.0)
    idio = 1.0 - market_share - sector_share
    s2, e2 = sector_share, idio

    def corr(d_ij: int, d_ik: int, d_jk: int) -> float:
        num = e2 + s2 * (1 - d_ik - d_ij + d_jk)
        den = 2.0 * math.sqrt((e2 + s2 * (1 - d_ij)) * (e2 + s2 * (1 - d_ik)))
        return float(np.clip(rho * num / den, -1.0, 1.0))

    pairs = n * (n - 1)
    triples = n * (n - 1) * (n - 2)
    all_same = float((sizes * (sizes - 1) * (sizes - 2)).sum())
    two_same = float((sizes * (sizes - 1) * (n - sizes)).sum())  # one of the three patterns
    all_diff = triples - all_same - 3.0 * two_same
    total = pairs * math.asin(rho)  # (i, j) pairs: corr(X_i - X_j, Y_i - Y_j) = rho, whatever the sectors
    total += all_same * math.asin(corr(1, 1, 1))
    total += two_same * (
        math.asin(corr(1, 0, 0))  # i, j share a sector, k elsewhere
        + math.asin(corr(0, 1, 0))  # i, k share
        + math.asin(corr(0, 0, 1))  # j, k share
    )
    total += all_diff * math.asin(corr(0, 0, 0))
    return 12.0 / (n * (n * n - 1.0)) * total / (2.0 * math.pi)


def _solve(fn: object, target: float, lo: float, hi: float) -> float:
    from scipy.optimize import brentq

    return float(brentq(lambda v: fn(v) - target, lo, hi, xtol=1e-14, rtol=1e-12, maxiter=200))  # type: ignore[operator]


def planted_coefficient(
    ic: float, execution_lag: int, horizon: int, sector_sizes: Sequence[int]
) -> tuple[float, float]:
    """`(c, rho)`: the AR coefficient whose expected RankIC is `ic`, and the log-return correlation `rho`.

    Raises `InvalidArgument(field="dataset_cfg.synthetic.ic")` when `|ic|` is
    beyond what a stationary AR (`|c| < 1`) can plant for this lag and horizon.
    """
    if ic == 0.0:
        return 0.0, 0.0
    sign = 1.0 if ic > 0 else -1.0

    def rank_ic_of_c(c: float) -> float:
        return expected_rank_ic(return_correlation(c, execution_lag, horizon), sector_sizes)

    edge = sign * _C_MAX
    reach = rank_ic_of_c(edge)
    if abs(ic) >= abs(reach):
        raise InvalidArgument(
            f"ic {ic} cannot be planted for execution_lag={execution_lag}, horizon={horizon}: "
            f"the stationary planted autoregression reaches |ic| < {abs(reach):.4f}",
            field=_FIELD,
        )
    c = _solve(rank_ic_of_c, ic, min(0.0, edge), max(0.0, edge))
    return c, return_correlation(c, execution_lag, horizon)


def _burn_in(phi: np.ndarray) -> int:
    """Rows after which the AR's impulse response has decayed below 1e-9 (at least 250)."""
    from scipy.signal import lfilter

    if not phi.any():
        return 0
    length = 4096
    while True:
        impulse = np.zeros(length)
        impulse[0] = 1.0
        psi = lfilter([1.0], np.concatenate(([1.0], -phi)), impulse)
        big = np.flatnonzero(np.abs(psi) > 1e-9)
        last = int(big[-1]) if big.size else 0
        if last < length - phi.size - 1 or length >= _MAX_BURN_IN:
            return max(250, min(last + 1, _MAX_BURN_IN))
        length *= 4


# --------------------------------------------------------------------------- generation


def _business_days(start: np.datetime64, n: int) -> np.ndarray:
    return np.busday_offset(start, np.arange(n), roll="forward").astype("datetime64[D]")


def generate_synthetic(
    cfg: SyntheticConfig, *, execution_lag: int = 1, horizon: int = 1
) -> tuple[Panel, SyntheticTruth]:
    """The panel `cfg` describes and its truth; the alpha is planted for the label `(execution_lag, horizon)`.

    See the module docstring for the model. Deterministic in `(cfg, execution_lag, horizon)`.
    """
    from scipy.signal import lfilter

    if execution_lag < 0 or horizon < 1:
        raise InvalidArgument(
            f"the planted label needs execution_lag >= 0 and horizon >= 1, got {execution_lag}, {horizon}",
            field="dataset_cfg.label",
        )
    t_rows, n_sym = int(cfg.n_dates), int(cfg.n_symbols)
    k_sec = n_sectors(n_sym)
    root = np.random.SeedSequence(int(cfg.seed) & ((1 << 128) - 1))
    common_ss, attr_ss, *_ = root.spawn(2)

    attrs = np.random.default_rng(attr_ss)
    sectors = attrs.integers(0, k_sec, n_sym)
    log_price0 = attrs.normal(math.log(40.0), 0.6, n_sym)
    log_volume_level = attrs.normal(math.log(1e6), 1.0, n_sym)

    sizes = np.bincount(sectors, minlength=k_sec)
    c, rho = planted_coefficient(float(cfg.ic), execution_lag, horizon, sizes.tolist())
    phi = _ar_coefficients(c, execution_lag, horizon)
    gamma0 = float(_autocovariances(phi, 0)[0])
    sigma_d = float(cfg.annual_volatility) / math.sqrt(TRADING_DAYS)
    var_n = sigma_d * sigma_d / gamma0  # innovation variance giving a stationary var(r) = sigma_d^2
    s_m = math.sqrt(MARKET_SHARE * var_n)
    s_s = math.sqrt(SECTOR_SHARE * var_n)
    s_e = math.sqrt((1.0 - MARKET_SHARE - SECTOR_SHARE) * var_n)
    mu = MARKET_DRIFT / TRADING_DAYS
    burn = _burn_in(phi)
    rows = t_rows + burn
    denominator = np.concatenate(([1.0], -phi))

    common = np.random.default_rng(common_ss).standard_normal((rows, 1 + k_sec))
    common[:, 0] *= s_m
    common[:, 1:] *= s_s

    close = np.empty((t_rows, n_sym))
    fields: dict[str, np.ndarray] = {}
    if cfg.ohlcv:
        fields = {name: np.empty((t_rows, n_sym)) for name in ("open", "high", "low", "volume")}
    signal = np.empty((t_rows, n_sym))

    n_blocks = -(-n_sym // BLOCK_SYMBOLS)
    block_seeds = root.spawn(n_blocks) if n_blocks else []
    # root.spawn continues the spawn counter: blocks are children 2.. of the root, whatever N is
    for b, block_ss in enumerate(block_seeds):
        c0, c1 = b * BLOCK_SYMBOLS, min(n_sym, (b + 1) * BLOCK_SYMBOLS)
        rng = np.random.default_rng(block_ss)
        width = c1 - c0
        innov = rng.standard_normal((rows, width))
        innov *= s_e
        innov += common[:, :1]
        innov += common[:, 1 + sectors[c0:c1]]
        x = lfilter([1.0], denominator, innov, axis=0)[burn:] if phi.any() else innov[burn:]
        del innov
        r = x + mu
        log_close = np.cumsum(r, axis=0)
        log_close += log_price0[c0:c1]
        close[:, c0:c1] = np.exp(log_close)
        sig = np.expm1(r)
        sig[0] = np.nan
        signal[:, c0:c1] = sig
        if cfg.ohlcv:
            z = rng.standard_normal((4, t_rows, width))
            prev = np.empty((t_rows, width))
            prev[0] = np.exp(log_price0[c0:c1])
            prev[1:] = close[:-1, c0:c1]
            opened = prev * np.exp(0.3 * (r - mu) + 0.2 * sigma_d * z[0])
            cl = close[:, c0:c1]
            fields["open"][:, c0:c1] = opened
            fields["high"][:, c0:c1] = np.maximum(opened, cl) * np.exp(0.5 * sigma_d * np.abs(z[1]))
            fields["low"][:, c0:c1] = np.minimum(opened, cl) * np.exp(-0.5 * sigma_d * np.abs(z[2]))
            fields["volume"][:, c0:c1] = np.round(
                np.exp(log_volume_level[c0:c1] + 0.3 * z[3] + 0.25 * np.abs(r - mu) / sigma_d)
            )
            del z, prev, opened

    dates = _business_days(np.datetime64(cfg.start_date, "D"), t_rows)
    width = max(4, len(str(max(0, n_sym - 1))))
    symbols = tuple(f"SYN{i:0{width}d}" for i in range(n_sym))
    panel = Panel._trusted(dates, symbols, close=close, **fields)
    signal.setflags(write=False)
    sectors.setflags(write=False)
    truth = SyntheticTruth(
        dates=panel.dates,
        symbols=symbols,
        signal=signal,
        ic=float(cfg.ic),
        ic_pearson=float(rho),
        coefficient=float(c),
        execution_lag=int(execution_lag),
        horizon=int(horizon),
        sectors=sectors,
        n_sectors=k_sec,
        daily_volatility=sigma_d,
        burn_in=burn,
    )
    return panel, truth
