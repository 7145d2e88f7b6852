"""Monte Carlo of a strategy's per-bar returns by block bootstrap (pure NumPy, no I/O).

`monte_carlo(returns, ...)` resamples the per-bar simple returns of a backtest
into `n_simulations` paths of the original length `n`, computes the total
return, the maximum drawdown and the Sharpe ratio of every path, and
summarises each by percentiles, mean and standard deviation, with the
probability of loss (the share of paths whose total return is < 0).

Bootstrap schemes (both circular: a block that runs past the last bar wraps
around to the first, so every bar is equally likely to be drawn and no bar
near the end is under-sampled):

- `"stationary"` (default): the stationary bootstrap of Politis & Romano
  (1994). A path starts a new block at bar 0 and, at every later bar, with
  probability `1 / block_length`; block lengths are therefore geometric with
  mean `block_length`, and the resampled series is stationary. This is the
  scheme of `arch.bootstrap.StationaryBootstrap`.
- `"circular"`: the circular block bootstrap of Politis & Romano (1992):
  blocks of exactly `block_length` bars from uniformly drawn starts,
  concatenated and cut to `n` bars (`arch.bootstrap.CircularBlockBootstrap`).

`block_length = 1` is the i.i.d. bootstrap under both schemes. Blocks keep the
short-range autocorrelation and volatility clustering of the returns inside a
block, which an i.i.d. resample destroys; 21 bars (a trading month) is the
default.

Random numbers (the exact stream, so that a result can be reproduced
elsewhere): `seq = numpy.random.SeedSequence(seed)`, `starts_rng, breaks_rng =
[numpy.random.default_rng(s) for s in seq.spawn(2)]`; integers are drawn
as `dtype=numpy.int32` (the same values as the default int64 for `n < 2**31`).

- circular: `starts = starts_rng.integers(0, n, size=(n_simulations, ceil(n
  / block_length)))`; bar `j` of path `k` is `returns[(starts[k, j //
  block_length] + j % block_length) % n]`.
- stationary: `starts = starts_rng.integers(0, n, size=(n_simulations, n))`,
  `new = breaks_rng.random((n_simulations, n)) < 1 / block_length` with
  `new[:, 0] = True`; bar `j` of path `k` is `returns[(starts[k, b] + j - b)
  % n]` with `b` the last `j' <= j` where `new[k, j']` (the bar the current
  block began on).

Both arrays are drawn row by row (path by path) from their own generator, so
the paths do not depend on how many paths are simulated at once: the
computation runs in chunks of paths (bounded memory) and the first `m` paths
of a run with `n_simulations > m` equal those of a run with `m`.

Statistics of a path `r*` (the conventions of
`alphaswarm_common.metrics.trading_metrics`):

- `total_return = prod(1 + r*) - 1`;
- `max_drawdown = min(equity / running_peak - 1)` with `equity =
  cumprod(1 + r*)` and the initial equity 1 counted as a peak (<= 0);
- `sharpe = mean(r* - rf_p) / std(r* - rf_p, ddof=1) * sqrt(periods_per_year)`
  with `rf_p = rf / periods_per_year`; undefined (NaN in the per-path arrays,
  left out of the distribution) for a path whose returns are all equal.

A distribution reports `numpy.percentile` (linear interpolation between order
statistics, the default "linear" method, as `pandas.Series.quantile`), the
mean and the standard deviation with `ddof=1` over the paths on which the
statistic is defined; a statistic defined on fewer than 2 paths has no
distribution (`MonteCarloResult.reasons` says why).

Input validation raises `InvalidArgument` / `DataError` whose `field` names
the argument (`returns`, `block_length`, `n_simulations`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = [
    "BOOTSTRAP_METHODS",
    "DEFAULT_BLOCK_LENGTH",
    "DEFAULT_N_SIMULATIONS",
    "DEFAULT_PERCENTILES",
    "MAX_SIMULATIONS",
    "BootstrapMethod",
    "Distribution",
    "MonteCarloResult",
    "bootstrap_indices",
    "monte_carlo",
    "path_statistics",
]

BootstrapMethod = Literal["stationary", "circular"]
BOOTSTRAP_METHODS: tuple[str, ...] = ("stationary", "circular")
DEFAULT_BLOCK_LENGTH = 21
DEFAULT_N_SIMULATIONS = 1000
DEFAULT_PERCENTILES: tuple[float, ...] = (5.0, 25.0, 50.0, 75.0, 95.0)
MAX_SIMULATIONS = 1_000_000
STATISTICS: tuple[str, ...] = ("total_return", "max_drawdown", "sharpe")

_CHUNK_CELLS = 1 << 20  # path cells per chunk: a few 8 MiB temporaries at most


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Distribution:
    """A statistic over the simulated paths: `values[i]` is the `percentiles[i]`-th percentile.

    `mean` and `std` (`ddof=1`) run over the `n` paths on which the statistic is defined.
    """

    percentiles: tuple[float, ...]
    values: tuple[float, ...]
    mean: float
    std: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "percentiles": list(self.percentiles),
            "values": list(self.values),
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
        }


@dataclass(frozen=True, eq=False)
class MonteCarloResult:
    """The bootstrap distributions and the per-path statistics (read-only arrays, one value per path).

    `distributions` holds `total_return`, `max_drawdown` and `sharpe`; a
    statistic defined on fewer than 2 paths is absent and `reasons` says why.
    `sharpe` is NaN on the paths where it is undefined (constant returns).
    """

    distributions: Mapping[str, Distribution]
    reasons: Mapping[str, str]
    probability_of_loss: float
    total_return: np.ndarray
    max_drawdown: np.ndarray
    sharpe: np.ndarray
    n_simulations: int
    n_bars: int
    block_length: int
    method: str
    seed: int | None
    periods_per_year: float
    rf: float
    conventions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON summary (no per-path arrays)."""
        return {
            "distributions": {k: d.to_dict() for k, d in self.distributions.items()},
            "reasons": dict(self.reasons),
            "probability_of_loss": self.probability_of_loss,
            "n_simulations": self.n_simulations,
            "conventions": dict(self.conventions),
        }


# ----------------------------------------------------------------------------- validation


def _int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"must be an integer, got {value!r}", field=name)
    out = int(value)
    if out < minimum or (maximum is not None and out > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InvalidArgument(f"must be {bound}, got {out}", field=name)
    return out


def _returns(returns: ArrayLike) -> np.ndarray:
    try:
        r = np.asarray(returns, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"cannot read as numbers: {exc}", field="returns") from None
    if r.ndim != 1:
        raise InvalidArgument(
            f"must be a 1-D series of per-bar returns, got shape {r.shape}", field="returns"
        )
    if r.size < 2:
        raise InvalidArgument(f"needs at least 2 returns, got {r.size}", field="returns")
    bad = ~np.isfinite(r)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"value at position {i} is {r[i]!r}; every return must be finite", field="returns")
    if (r < -1.0).any():
        i = int(np.flatnonzero(r < -1.0)[0])
        raise DataError(
            f"value at position {i} is {r[i]!r}: a per-bar return below -100% is not an account's return",
            field="returns",
        )
    return r


def _percentiles(values: Sequence[float] | None) -> tuple[float, ...]:
    if values is None:
        return DEFAULT_PERCENTILES
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidArgument(f"must be numbers in [0, 100], got {values!r}", field="percentiles") from None
    if not out:
        raise InvalidArgument("must not be empty", field="percentiles")
    for i, p in enumerate(out):
        if not (math.isfinite(p) and 0.0 <= p <= 100.0):
            raise InvalidArgument(f"must be in [0, 100], got {p!r}", field=f"percentiles[{i}]")
    return out


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgument(f"must be a number, got {value!r}", field=name)
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise InvalidArgument(f"must be a finite number > 0, got {value!r}", field=name)
    return out


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgument(f"must be a number, got {value!r}", field=name)
    out = float(value)
    if not math.isfinite(out):
        raise InvalidArgument(f"must be finite, got {value!r}", field=name)
    return out


def _check_scheme(n_bars: int, n_simulations: int, block_length: int, method: str, seed: Any) -> None:
    _int(n_simulations, "n_simulations", 1, MAX_SIMULATIONS)
    _int(block_length, "block_length", 1)
    if block_length > n_bars:
        raise InvalidArgument(
            f"must be <= the number of returns ({n_bars}), got {block_length}", field="block_length"
        )
    if method not in BOOTSTRAP_METHODS:
        raise InvalidArgument(
            f"must be one of {', '.join(BOOTSTRAP_METHODS)}, got {method!r}", field="method"
        )
    if seed is not None:
        _int(seed, "seed", 0)


# ----------------------------------------------------------------------------- resampling


def _generators(seed: int | None) -> tuple[np.random.Generator, np.random.Generator]:
    starts_seq, breaks_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(starts_seq), np.random.default_rng(breaks_seq)


def _index_chunks(
    n_bars: int, n_simulations: int, block_length: int, method: str, seed: int | None, chunk: int
) -> Iterator[np.ndarray]:
    """Yield `(m, n_bars)` int32 index blocks of consecutive paths, `m <= chunk`."""
    starts_rng, breaks_rng = _generators(seed)
    # int32 halves the memory traffic; `integers` draws the same values for int32 and int64.
    offsets = np.arange(n_bars, dtype=np.int32)
    if method == "circular":
        n_blocks = -(-n_bars // block_length)
        block_of = offsets // block_length
        within = offsets % block_length
    for first in range(0, n_simulations, chunk):
        m = min(chunk, n_simulations - first)
        if method == "circular":
            starts = starts_rng.integers(0, n_bars, size=(m, n_blocks), dtype=np.int32)
            idx = starts[:, block_of]
            idx += within
        else:
            starts = starts_rng.integers(0, n_bars, size=(m, n_bars), dtype=np.int32)
            new = breaks_rng.random((m, n_bars)) < 1.0 / block_length
            new[:, 0] = True
            # The bar each block began on: the running maximum of the bars that start a block.
            began = np.where(new, offsets, np.int32(0))
            np.maximum.accumulate(began, axis=1, out=began)
            idx = np.take_along_axis(starts, began, axis=1)
            idx += offsets
            idx -= began
        np.remainder(idx, n_bars, out=idx)
        yield idx


def _chunk_rows(n_bars: int) -> int:
    return max(1, _CHUNK_CELLS // max(n_bars, 1))


def bootstrap_indices(
    n_bars: int,
    *,
    n_simulations: int,
    block_length: int = DEFAULT_BLOCK_LENGTH,
    method: BootstrapMethod = "stationary",
    seed: int | None = None,
) -> np.ndarray:
    """The `(n_simulations, n_bars)` int32 bar indices of the bootstrap paths (see the module docstring).

    `returns[bootstrap_indices(len(returns), ...)]` are the resampled paths
    `monte_carlo` evaluates with the same arguments. Holds the whole matrix
    in memory; `monte_carlo` itself works in chunks.
    """
    n = _int(n_bars, "n_bars", 1)
    _check_scheme(n, n_simulations, block_length, method, seed)
    chunks = list(_index_chunks(n, int(n_simulations), int(block_length), method, seed, _chunk_rows(n)))
    return np.concatenate(chunks, axis=0)


# ----------------------------------------------------------------------------- statistics


def path_statistics(
    paths: ArrayLike, *, periods_per_year: float = 252.0, rf: float = 0.0
) -> dict[str, np.ndarray]:
    """`total_return`, `max_drawdown` and `sharpe` of every row of `paths` (`(m, n)` per-bar returns).

    Conventions of the module docstring; `sharpe` is NaN for a row whose
    returns are all equal. Rows are independent: vectorised over paths.
    """
    p = np.asarray(paths, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InvalidArgument(f"must be an (n_paths, n_bars >= 2) matrix, got shape {p.shape}", field="paths")
    ppy = _positive(periods_per_year, "periods_per_year")
    rf_p = _finite(rf, "rf") / ppy
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        equity = p + 1.0
        np.cumprod(equity, axis=1, out=equity)
        total = equity[:, -1] - 1.0
        peak = np.maximum.accumulate(equity, axis=1)
        np.maximum(peak, 1.0, out=peak)
        np.divide(equity, peak, out=equity)
        max_dd = equity.min(axis=1) - 1.0
        del equity, peak
        excess = p - rf_p if rf_p else p
        sharpe = excess.mean(axis=1) / excess.std(axis=1, ddof=1) * math.sqrt(ppy)
    sharpe[(p.max(axis=1) == p.min(axis=1)) | ~np.isfinite(sharpe)] = np.nan
    return {"total_return": total, "max_drawdown": max_dd, "sharpe": sharpe}


def _distribution(values: np.ndarray, percentiles: tuple[float, ...]) -> Distribution:
    return Distribution(
        percentiles=percentiles,
        values=tuple(float(v) for v in np.percentile(values, percentiles)),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)),
        n=int(values.size),
    )


def monte_carlo(
    returns: ArrayLike,
    *,
    n_simulations: int = DEFAULT_N_SIMULATIONS,
    block_length: int = DEFAULT_BLOCK_LENGTH,
    method: BootstrapMethod = "stationary",
    seed: int | None = None,
    percentiles: Sequence[float] | None = None,
    periods_per_year: float = 252.0,
    rf: float = 0.0,
) -> MonteCarloResult:
    """Block-bootstrap distributions of total return, max drawdown and Sharpe of `returns`.

    `returns` are per-bar simple returns (finite, >= -1, at least 2);
    `n_simulations` paths (>= 2, at most `MAX_SIMULATIONS`) of `len(returns)`
    bars each; `block_length` in `[1, len(returns)]`; `method` `"stationary"`
    or `"circular"`; `seed` a non-negative integer (None draws fresh entropy:
    not reproducible); `percentiles` in [0, 100] (default 5, 25, 50, 75, 95);
    `periods_per_year` and `rf` (annual) as in `trading_metrics`. Everything
    is vectorised over paths, in chunks of about 2**20 path-bars.
    """
    r = _returns(returns)
    n = int(r.size)
    sims = _int(n_simulations, "n_simulations", 2, MAX_SIMULATIONS)
    _check_scheme(n, sims, block_length, method, seed)
    block = int(block_length)
    pct = _percentiles(percentiles)
    ppy = _positive(periods_per_year, "periods_per_year")
    rf_value = _finite(rf, "rf")
    seed_value = None if seed is None else int(seed)

    total = np.empty(sims)
    max_dd = np.empty(sims)
    sharpe = np.empty(sims)
    row = 0
    for idx in _index_chunks(n, sims, block, method, seed_value, _chunk_rows(n)):
        stats = path_statistics(r[idx], periods_per_year=ppy, rf=rf_value)
        m = idx.shape[0]
        total[row : row + m] = stats["total_return"]
        max_dd[row : row + m] = stats["max_drawdown"]
        sharpe[row : row + m] = stats["sharpe"]
        row += m

    distributions: dict[str, Distribution] = {}
    reasons: dict[str, str] = {}
    for name, values in (("total_return", total), ("max_drawdown", max_dd), ("sharpe", sharpe)):
        defined = values[np.isfinite(values)]
        if defined.size >= 2:
            distributions[name] = _distribution(defined, pct)
        elif name == "sharpe":
            reasons[name] = "zero variance: the returns of (almost) every path are constant"
        else:
            reasons[name] = "not finite (numerical overflow)"
    for arr in (total, max_dd, sharpe):
        arr.flags.writeable = False
    conventions = {
        "method": method,
        "block_length": block,
        "block_wrap": "circular",
        "n_simulations": sims,
        "n_bars": n,
        "seed": seed_value,
        "rng": "SeedSequence(seed).spawn(2) -> PCG64 (starts, block breaks)",
        "periods_per_year": ppy,
        "rf": rf_value,
        "ddof": 1,
        "percentile_method": "linear",
        "compounding": "geometric",
        "drawdown_initial_peak": True,
        "probability_of_loss": "share of paths with total_return < 0",
    }
    return MonteCarloResult(
        distributions=MappingProxyType(distributions),
        reasons=MappingProxyType(reasons),
        probability_of_loss=float(np.mean(total < 0.0)),
        total_return=total,
        max_drawdown=max_dd,
        sharpe=sharpe,
        n_simulations=sims,
        n_bars=n,
        block_length=block,
        method=method,
        seed=seed_value,
        periods_per_year=ppy,
        rf=rf_value,
        conventions=MappingProxyType(conventions),
    )
