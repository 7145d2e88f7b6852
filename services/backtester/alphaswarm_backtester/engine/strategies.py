"""Alpha strategies: a `(T, N)` prediction matrix -> `(T, N)` target weights.

`weights_from_signal(signal, strategy_type, params)` validates `params`
against the strategy's pydantic model (`ALPHA_STRATEGIES[name].params`) and
returns target weights in the engine's convention: row t is the target
formed from the predictions of row t (the engine applies the execution lag),
a fraction of equity, signed, 0 for "no position" (never NaN).

Common conventions:

- Causal by construction: row t uses rows <= t only (every strategy is
  row-wise except `long_only_topk` with `n_drop`, which also uses its own
  previous holdings).
- NaN predictions are excluded from the ranking on that date; a name with
  a NaN prediction gets weight 0 (except a name TopkDropout still holds).
- Ranking is by prediction, descending, ties broken by symbol order (the
  earlier column ranks higher), i.e. one deterministic total order per date.
  Long-short strategies go long the first names and short the last names of
  that order, so no name is ever on both sides.
- `top_k` larger than half the names available on a date (long-short) or
  than the names available (long-only) uses what is available:
  `k_t = min(top_k, n_t // 2)` (resp. `min(top_k, n_t)`). `top_k` larger
  than the number of symbols N is an error.
- `gross_exposure` is `sum_i |w_i|` of a full row (long-short: half long,
  half short, dollar neutral).
- `rebalance_every=k` (keyword of `weights_from_signal`): rows that are not
  decision rows (`t % k != 0`) repeat the previous decision row, and
  TopkDropout evolves on decision rows only, matching the engine, which reads
  targets on decision rows only.

Strategies (parameters and defaults in the `*Params` models):

- `long_short_topk(top_k=10, gross_exposure=1)`: long the first `k_t`, short
  the last `k_t` names, each at `gross / (2 k_t)`.
- `long_only_topk(top_k=10, n_drop=None, gross_exposure=1)`: the first `k_t`
  names at `gross / k_t`. With `n_drop`, Qlib's TopkDropoutStrategy
  (`method_sell="bottom"`, `method_buy="top"`): keep the holdings except
  the held names among the `n_drop` worst of (holdings + best candidates),
  replaced by the best names not held, so at most `n_drop` names change per
  rebalance; held names without a prediction rank last. Holdings are equally
  weighted (`gross / holdings`).
- `quantile(quantile=0.2, gross_exposure=1)`: long the first and short the
  last `max(1, floor(quantile * n_t))` names (0 if `n_t < 2`), as
  `long_short_topk`.
- `signal_weighted(normalize="zscore", clip=None, gross_exposure=1)`:
  weights proportional to the cross-sectionally demeaned prediction
  (`"demean"`), its z-score (ddof=1; `clip` winsorises it at +-clip), or its
  demeaned average rank (`"rank"`), scaled so `sum|w| = gross`. Without
  `clip`, `"demean"` and `"zscore"` give the same weights (the scale drops
  out). A date with fewer than two predictions or no dispersion is flat.
- `threshold(upper=0, lower=upper, size=1, sizing="fixed", long_only=False)`:
  `+size` where the prediction is above `upper`, `-size` below `lower`, 0
  between (and for NaN); `sizing="equal"` splits `size` across the
  positions of the date instead. Row-wise per symbol, so it works on one
  symbol; cap the total with the engine's `max_gross_leverage`.

Errors are `alphaswarm_common.errors.InvalidArgument` with `field`
`strategy_cfg.type` (unknown strategy) or `strategy_cfg.params.<name>`
(unknown, missing or invalid parameter); a malformed signal is a
`DataError` with field `signal`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.stats import rankdata

from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = [
    "ALPHA_STRATEGIES",
    "AlphaStrategy",
    "LongOnlyTopkParams",
    "LongShortTopkParams",
    "QuantileParams",
    "SignalWeightedParams",
    "ThresholdParams",
    "validate_strategy_params",
    "weights_from_signal",
]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LongShortTopkParams(_Params):
    """Long the `top_k` best, short the `top_k` worst names, equal weights, dollar neutral."""

    top_k: int = Field(default=10, ge=1)
    gross_exposure: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class LongOnlyTopkParams(_Params):
    """Long the `top_k` best names, equal weights; `n_drop` turns on Qlib's TopkDropout."""

    top_k: int = Field(default=10, ge=1)
    n_drop: int | None = Field(default=None, ge=1)
    gross_exposure: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _drop_le_k(self) -> LongOnlyTopkParams:
        if self.n_drop is not None and self.n_drop > self.top_k:
            raise ValueError(f"n_drop ({self.n_drop}) must be <= top_k ({self.top_k})")
        return self


class QuantileParams(_Params):
    """Long the top `quantile` of names, short the bottom `quantile`, equal weights, dollar neutral."""

    quantile: float = Field(default=0.2, gt=0, le=0.5)
    gross_exposure: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class SignalWeightedParams(_Params):
    """Weights proportional to the cross-sectionally normalised prediction, scaled to `gross_exposure`."""

    normalize: Literal["demean", "zscore", "rank"] = "zscore"
    clip: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    gross_exposure: float = Field(default=1.0, gt=0, allow_inf_nan=False)


class ThresholdParams(_Params):
    """Long above `upper`, short below `lower`, flat in between; works for one symbol."""

    upper: float = Field(default=0.0, allow_inf_nan=False)
    lower: float | None = Field(default=None, allow_inf_nan=False)
    size: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sizing: Literal["fixed", "equal"] = "fixed"
    long_only: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdParams:
        if self.lower is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) must be <= upper ({self.upper})")
        return self


@dataclass(frozen=True)
class AlphaStrategy:
    """A registered strategy: its name, parameter model and weight function."""

    name: str
    params: type[_Params]
    fn: Callable[[np.ndarray, Any, int], np.ndarray]
    description: str


# ----------------------------------------------------------------------------- ranking helpers


def _order(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(rank, n_valid)`: rank[t, i] = position of i in row t's order (prediction desc, column asc).

    NaN predictions rank after every valid one (ranks >= n_valid[t]).
    """
    key = np.where(np.isnan(signal), np.inf, -signal)
    order = np.argsort(key, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(signal.shape[1]), signal.shape), axis=1)
    n_valid = (~np.isnan(signal)).sum(axis=1)
    return rank, n_valid


def _long_short(rank: np.ndarray, n_valid: np.ndarray, k: np.ndarray, gross: float) -> np.ndarray:
    """Equal-weight long the first k_t and short the last k_t valid names of each row's order."""
    k = np.minimum(k, n_valid // 2)
    kk = k[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(k > 0, gross / (2.0 * k), 0.0)[:, None]
    longs = rank < kk
    shorts = (rank >= (n_valid[:, None] - kk)) & (rank < n_valid[:, None])
    return np.where(longs, unit, 0.0) - np.where(shorts, unit, 0.0)


def _check_top_k(top_k: int, n_syms: int) -> None:
    if top_k > n_syms:
        raise InvalidArgument(
            f"top_k ({top_k}) exceeds the number of symbols ({n_syms})", field="strategy_cfg.params.top_k"
        )


# ----------------------------------------------------------------------------- strategies


def _long_short_topk(signal: np.ndarray, p: LongShortTopkParams, every: int) -> np.ndarray:
    _check_top_k(p.top_k, signal.shape[1])
    rank, n_valid = _order(signal)
    return _long_short(rank, n_valid, np.full(signal.shape[0], p.top_k), p.gross_exposure)


def _quantile(signal: np.ndarray, p: QuantileParams, every: int) -> np.ndarray:
    rank, n_valid = _order(signal)
    # names per side: floor(q * n_t), at least one when two names are available (and q * n_t >= 1 is not).
    k = np.floor(p.quantile * n_valid + 1e-9).astype(np.int64)
    k = np.where(n_valid >= 2, np.maximum(k, 1), 0)
    return _long_short(rank, n_valid, k, p.gross_exposure)


def _long_only_topk(signal: np.ndarray, p: LongOnlyTopkParams, every: int) -> np.ndarray:
    _check_top_k(p.top_k, signal.shape[1])
    rank, n_valid = _order(signal)
    n_bars, n_syms = signal.shape
    if p.n_drop is None:
        k = np.minimum(p.top_k, n_valid)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = np.where(k > 0, p.gross_exposure / k, 0.0)
        return np.where(rank < k, unit, 0.0)
    # Qlib TopkDropoutStrategy (method_sell="bottom", method_buy="top"), on decision rows.
    out = np.zeros((n_bars, n_syms))
    held = np.zeros(n_syms, dtype=bool)
    top_k, n_drop = p.top_k, p.n_drop
    for t in range(0, n_bars, every):
        r = rank[t]
        last = np.flatnonzero(held)
        last = last[np.argsort(r[last], kind="stable")]
        candidates = np.flatnonzero(~held & (r < n_valid[t]))
        candidates = candidates[np.argsort(r[candidates], kind="stable")]
        today = candidates[: max(0, n_drop + top_k - last.size)]
        comb = np.concatenate((last, today))
        comb = comb[np.argsort(r[comb], kind="stable")]
        worst = comb[-n_drop:] if comb.size else comb
        sell = last[np.isin(last, worst)]
        buy = today[: max(0, sell.size + top_k - last.size)]
        held[sell] = False
        held[buy] = True
        n_held = int(held.sum())
        if n_held:
            out[t, held] = p.gross_exposure / n_held
    return out


def _signal_weighted(signal: np.ndarray, p: SignalWeightedParams, every: int) -> np.ndarray:
    valid = ~np.isnan(signal)
    n = valid.sum(axis=1, keepdims=True)
    # "rank": average ranks for ties (as scipy.stats.rankdata / alphalens), NaN stays NaN.
    score = rankdata(signal, method="average", axis=1, nan_policy="omit") if p.normalize == "rank" else signal
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, np.nansum(np.where(valid, score, 0.0), axis=1, keepdims=True) / n, 0.0)
        centred = np.where(valid, score - mean, 0.0)
        if p.normalize == "zscore":
            std = np.sqrt((centred * centred).sum(axis=1, keepdims=True) / np.maximum(n - 1, 1))
            centred = np.where(std > 0, centred / std, 0.0)
            if p.clip is not None:
                centred = np.clip(centred, -p.clip, p.clip)
        gross = np.abs(centred).sum(axis=1, keepdims=True)
        return np.where(gross > 0, centred * (p.gross_exposure / gross), 0.0)


def _threshold(signal: np.ndarray, p: ThresholdParams, every: int) -> np.ndarray:
    lower = p.lower if p.lower is not None else p.upper
    longs = signal > p.upper
    shorts = (signal < lower) & (not p.long_only)
    side = longs.astype(np.float64) - shorts.astype(np.float64)
    if p.sizing == "fixed":
        return side * p.size
    n_active = np.abs(side).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_active > 0, side * (p.size / n_active), 0.0)


ALPHA_STRATEGIES: Mapping[str, AlphaStrategy] = MappingProxyType(
    {
        s.name: s
        for s in (
            AlphaStrategy(
                "long_short_topk",
                LongShortTopkParams,
                _long_short_topk,
                "long the top_k, short the bottom top_k names, equal weights, dollar neutral",
            ),
            AlphaStrategy(
                "long_only_topk",
                LongOnlyTopkParams,
                _long_only_topk,
                "long the top_k names, equal weights; n_drop enables Qlib's TopkDropout",
            ),
            AlphaStrategy(
                "quantile",
                QuantileParams,
                _quantile,
                "long the top quantile, short the bottom quantile, equal weights, dollar neutral",
            ),
            AlphaStrategy(
                "signal_weighted",
                SignalWeightedParams,
                _signal_weighted,
                "weights proportional to the demeaned / z-scored / ranked prediction",
            ),
            AlphaStrategy(
                "threshold",
                ThresholdParams,
                _threshold,
                "long above upper, short below lower, flat in between",
            ),
        )
    }
)


def validate_strategy_params(strategy_type: str, params: Mapping[str, Any] | None) -> _Params:
    """The validated parameter model of `strategy_type` (InvalidArgument naming the field otherwise)."""
    strategy = ALPHA_STRATEGIES.get(strategy_type)
    if strategy is None:
        raise InvalidArgument(
            f"unknown strategy {strategy_type!r}; known: {sorted(ALPHA_STRATEGIES)}",
            field="strategy_cfg.type",
        )
    if params is not None and not isinstance(params, Mapping):
        raise InvalidArgument("params must be a mapping", field="strategy_cfg.params")
    try:
        return strategy.params.model_validate(dict(params or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"])
        field = f"strategy_cfg.params.{loc}" if loc else "strategy_cfg.params"
        raise InvalidArgument(f"{err['msg']}", field=field, details={"errors": exc.errors()}) from None


def weights_from_signal(
    signal: np.ndarray,
    strategy_type: str,
    params: Mapping[str, Any] | None = None,
    *,
    rebalance_every: int = 1,
) -> np.ndarray:
    """Target weights `(T, N)` from predictions `(T, N)` (a 1-D signal is one symbol).

    See the module docstring for the shared conventions and each params model
    for the strategy's parameters.
    """
    p = validate_strategy_params(strategy_type, params)
    if isinstance(rebalance_every, bool) or not isinstance(rebalance_every, int) or rebalance_every < 1:
        raise InvalidArgument(f"must be an integer >= 1, got {rebalance_every!r}", field="rebalance_every")
    try:
        sig = np.asarray(signal, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read as a float matrix: {exc}", field="signal") from None
    if sig.ndim == 1:
        sig = sig[:, None]
    if sig.ndim != 2:
        raise DataError(f"must be a (dates, symbols) matrix, got {sig.ndim} dimensions", field="signal")
    if np.isinf(sig).any():
        raise DataError("contains ±inf", field="signal")
    out = ALPHA_STRATEGIES[strategy_type].fn(sig, p, rebalance_every)
    if rebalance_every > 1 and out.shape[0]:
        rows = np.arange(out.shape[0]) // rebalance_every * rebalance_every
        out = out[rows]
    return out
