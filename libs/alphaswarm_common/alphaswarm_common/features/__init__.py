"""Causal features of a `Panel`: Qlib Alpha158-style families, computed on the whole panel at once.

`compute_features(panel, specs)` turns a list of `FeatureSpec` (a family name,
its windows, and whether to add cross-sectional ranks) into a `FeatureSet`:
`values[t, i, f]` is feature `names[f]` of `symbols[i]` at `dates[t]`.

Conventions
-----------
- Causality: a feature at date `t` reads bars at dates `<= t` only, and its
  arithmetic does not depend on later bars either, so perturbing any data
  after `t` leaves every value at or before `t` bit-for-bit unchanged.
- Windows are in bars (rows of the panel), trailing and inclusive: window
  `w` at `t` is rows `t-w+1 .. t`. Families built on bar-to-bar changes (a
  return, `close[t] - close[t-1]`) use the `w` changes ending at `t`, so they
  read `w + 1` closes.
- Missing data: a feature is NaN when any bar it reads is missing (a
  strict `min_periods = w`: no partial windows at the start, no skipping of
  gaps), and when it is undefined (a zero denominator: a flat window for
  `rsv`, `rsqr`, `corr`, `sump`, ...; zero volume for `vma`). Qlib adds
  `1e-12` to such denominators and reports 0 or a huge number; we report NaN
  so a model never sees a fabricated value. Values are never +-inf.
- Standard deviations use `ddof=1` and are not annualised.
- `max`, `min`, `rsv`, `imax`, `imin`, `imxd` read `high` / `low` when the
  panel has them (as Qlib does) and `close` otherwise.
- Column order: every spec's columns in spec order (one per window), then
  the `<name>_csrank` columns of the specs with `cs_rank=True`, in the same
  order. Keeping the ranks together makes the base block and the rank block
  contiguous slices of `values`.
- `cs_rank=True` appends, for each column of the family, its
  cross-sectional percentile rank per date (`<name>_csrank`): average ranks
  for ties over the symbols with a value, scaled by `(rank - 1) / (n - 1)`
  to `[0, 1]` (0.5 when one symbol has a value), NaN where the feature is NaN.
  Ranks are computed from the stored (float32) values, so they are exactly
  the ranks of the feature the model sees.
- `values` is float32 by default (half the memory of float64; its ~7
  significant digits are far below the noise of any return feature), C-ordered
  `(T, N, F)` so that `values[rows].reshape(-1, F)` is a design matrix; pass
  `dtype=np.float64` for full precision. The array is read-only.

Cost: every family is a few dozen whole-panel NumPy passes (prefix sums for
window sums and moments, compiled in one pass each; rolling max/min and
their positions scanned by a compiled loop for windows up to 64 bars,
`log2(w)` doubling steps beyond; `rank` a compiled loop). The panel is processed in blocks of
symbols (~2 M cells per temporary), so memory is the output plus a few
hundred MB whatever the panel size. Cross-sectional ranks radix-sort every
(date, column) row in a compiled loop (`_compiled.rank_rows`, the same
ranks as `cs_rank`). A spilled output is written with one `pwrite` per date
and block of symbols and ranked through `pread` / `pwrite` of blocks of
dates, so no page of the mapping is faulted in while computing. Measured
on the shared 2-vCPU VM, T=5040 x N=3000 (15 M cells), 51 columns (34 + 17
ranks): about 19 s of CPU (user + system) on two threads, a peak RSS of
1.5 GB (panel included) for a 3.1 GB float32 output (benchmarks/bench_features.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np

from alphaswarm_common.config import FeatureSpec
from alphaswarm_common.data.panel import Panel
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.features import _heap, store
from alphaswarm_common.features import _kernels as k
from alphaswarm_common.features._kernels import cs_rank

__all__ = ["FEATURE_FAMILIES", "FeatureFamily", "FeatureSet", "compute_features", "cs_rank", "feature_names"]

_BLOCK_CELLS = 1 << 21  # (dates x symbols) cells per block: ~16 MB per float64 temporary
_STAGE_COLUMNS = 8  # at least this many features computed before their block is copied into the output
_STAGE_CELLS = 1 << 25  # and up to this many staged cells (128 MB float32): fewer passes over the output
_PACK_CELLS = 1 << 18  # cells of the output written at a time from a staged block of a spilled output
_RANK_CELLS = 1 << 21  # cells ranked per call (bounds the sort temporaries to a few tens of MB)


class _Bars:
    """The bars of a block of symbols, with derived series computed once and shared by families."""

    def __init__(self, panel: Panel, cols: slice) -> None:
        self._panel = panel
        self._cols = cols
        self.close = np.ascontiguousarray(panel.close[:, cols])
        self._memo: dict[tuple[Any, ...], Any] = {}

    def _field(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self._panel.field(name)[:, self._cols])

    @cached_property
    def open(self) -> np.ndarray:
        return self._field("open")

    @cached_property
    def high(self) -> np.ndarray:
        """`high` when the panel has it, else `close`."""
        return self._field("high") if self._panel.has("high") else self.close

    @cached_property
    def low(self) -> np.ndarray:
        """`low` when the panel has it, else `close`."""
        return self._field("low") if self._panel.has("low") else self.close

    @cached_property
    def volume(self) -> np.ndarray:
        return self._field("volume")

    @cached_property
    def change(self) -> np.ndarray:
        """`close[t] - close[t-1]`."""
        return self.close - k.lag(self.close, 1)

    @cached_property
    def log_return(self) -> np.ndarray:
        """`ln(close[t] / close[t-1])`."""
        return np.log(self.close / k.lag(self.close, 1))

    @cached_property
    def simple_return(self) -> np.ndarray:
        """`close[t] / close[t-1] - 1`."""
        return self.close / k.lag(self.close, 1) - 1.0

    @cached_property
    def log_volume(self) -> np.ndarray:
        """`ln(1 + volume)`."""
        return np.log1p(self.volume)

    @cached_property
    def volume_change(self) -> np.ndarray:
        """`volume[t] - volume[t-1]`."""
        return self.volume - k.lag(self.volume, 1)

    def memo(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # shared window statistics ------------------------------------------------

    def trend(self, w: int) -> k.Trend:
        """Least-squares line of close on the bar index over `w` bars (for `beta`, `rsqr`, `resi`)."""
        return self.memo(("trend", w), lambda: k.rolling_trend(self.close, w))

    def extreme(self, w: int, kind: str, *, position: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Rolling max of `high` (`kind="max"`) or min of `low`, and (if asked) the offset of the extreme."""
        with_pos = self._memo.get(("extreme", w, kind, True))
        if with_pos is not None:
            return with_pos  # type: ignore[no-any-return]

        def make() -> tuple[np.ndarray, np.ndarray | None]:
            source = self.high if kind == "max" else self.low
            return k.rolling_extreme(source, w, "max" if kind == "max" else "min", with_position=position)

        return self.memo(("extreme", w, kind, position), make)  # type: ignore[no-any-return]

    def sum_of(self, key: str, w: int, series: Callable[[], np.ndarray]) -> np.ndarray:
        return self.memo(("sum", key, w), lambda: k.rolling_sum(series(), w))


def _where(cond: np.ndarray, value: np.ndarray) -> np.ndarray:
    """`value` with NaN where `cond` (used for undefined ratios)."""
    return np.where(cond, np.nan, value)


def _indicator(x: np.ndarray, positive: bool) -> np.ndarray:
    """1.0 where `x > 0` (or `< 0`), 0.0 elsewhere, NaN where `x` is NaN."""
    hit = (x > 0) if positive else (x < 0)
    return np.where(np.isnan(x), np.nan, hit.astype(np.float64))


# --------------------------------------------------------------------------- families


def _ret(b: _Bars, w: int) -> np.ndarray:
    return b.close / k.lag(b.close, w) - 1.0


def _mom(b: _Bars, w: int) -> np.ndarray:
    return np.log(b.close / k.lag(b.close, w))


def _vol(b: _Bars, w: int) -> np.ndarray:
    return np.sqrt(k.rolling_moments(b.log_return, w).m2x / (w - 1))


def _ma_ratio(b: _Bars, w: int) -> np.ndarray:
    return b.close / (b.sum_of("close", w, lambda: b.close) / w) - 1.0


def _std(b: _Bars, w: int) -> np.ndarray:
    return np.sqrt(k.rolling_moments(b.close, w).m2x / (w - 1)) / b.close


def _beta(b: _Bars, w: int) -> np.ndarray:
    return b.trend(w).slope / b.close


def _rsqr(b: _Bars, w: int) -> np.ndarray:
    return b.trend(w).rsqr


def _resi(b: _Bars, w: int) -> np.ndarray:
    t = b.trend(w)
    return np.where(t.m2x == 0, 0.0, (b.close - t.fitted) / b.close)


def _max(b: _Bars, w: int) -> np.ndarray:
    return b.extreme(w, "max")[0] / b.close


def _min(b: _Bars, w: int) -> np.ndarray:
    return b.extreme(w, "min")[0] / b.close


def _rsv(b: _Bars, w: int) -> np.ndarray:
    hi, lo = b.extreme(w, "max")[0], b.extreme(w, "min")[0]
    return _where(hi == lo, (b.close - lo) / (hi - lo))


def _position(b: _Bars, w: int, kind: str) -> np.ndarray:
    pos = b.extreme(w, kind, position=True)[1]
    assert pos is not None
    return _where(pos < 0, (pos + 1.0) / w)


def _imax(b: _Bars, w: int) -> np.ndarray:
    return _position(b, w, "max")


def _imin(b: _Bars, w: int) -> np.ndarray:
    return _position(b, w, "min")


def _imxd(b: _Bars, w: int) -> np.ndarray:
    return _imax(b, w) - _imin(b, w)


def _cntp(b: _Bars, w: int) -> np.ndarray:
    return b.sum_of("up", w, lambda: _indicator(b.change, True)) / w


def _cntn(b: _Bars, w: int) -> np.ndarray:
    return b.sum_of("down", w, lambda: _indicator(b.change, False)) / w


def _cntd(b: _Bars, w: int) -> np.ndarray:
    return _cntp(b, w) - _cntn(b, w)


def _abs_change_sum(b: _Bars, w: int, key: str, change: Callable[[], np.ndarray]) -> np.ndarray:
    return b.sum_of(f"abs_{key}", w, lambda: np.abs(change()))


def _sum_ratio(b: _Bars, w: int, key: str, change: Callable[[], np.ndarray], part: str) -> np.ndarray:
    total = _abs_change_sum(b, w, key, change)
    if part == "up":
        num = b.sum_of(f"up_{key}", w, lambda: np.maximum(change(), 0.0))
    elif part == "down":
        num = b.sum_of(f"down_{key}", w, lambda: np.maximum(-change(), 0.0))
    else:
        num = b.sum_of(f"net_{key}", w, change)
    return _where(total == 0, num / total)


def _sump(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "close", lambda: b.change, "up")


def _sumn(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "close", lambda: b.change, "down")


def _sumd(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "close", lambda: b.change, "net")


def _rank(b: _Bars, w: int) -> np.ndarray:
    return k.ts_rank(b.close, w)


def _vma(b: _Bars, w: int) -> np.ndarray:
    v = b.volume
    return _where(v == 0, b.sum_of("volume", w, lambda: v) / w / v)


def _vstd(b: _Bars, w: int) -> np.ndarray:
    v = b.volume
    return _where(v == 0, np.sqrt(k.rolling_moments(v, w).m2x / (w - 1)) / v)


def _wvma(b: _Bars, w: int) -> np.ndarray:
    m = k.rolling_moments(np.abs(b.simple_return) * b.volume, w)
    return _where(m.mean_x == 0, np.sqrt(m.m2x / (w - 1)) / m.mean_x)


def _corr(b: _Bars, w: int) -> np.ndarray:
    m = k.rolling_moments(b.close, w, b.log_volume)
    assert m.m2y is not None and m.cxy is not None
    return _where((m.m2x == 0) | (m.m2y == 0), m.cxy / np.sqrt(m.m2x * m.m2y))


def _vsump(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "volume", lambda: b.volume_change, "up")


def _vsumn(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "volume", lambda: b.volume_change, "down")


def _vsumd(b: _Bars, w: int) -> np.ndarray:
    return _sum_ratio(b, w, "volume", lambda: b.volume_change, "net")


def _kmid(b: _Bars, w: int | None) -> np.ndarray:
    return (b.close - b.open) / b.open


def _klen(b: _Bars, w: int | None) -> np.ndarray:
    return (b.high - b.low) / b.open


def _kup(b: _Bars, w: int | None) -> np.ndarray:
    return (b.high - np.maximum(b.open, b.close)) / b.open


def _klow(b: _Bars, w: int | None) -> np.ndarray:
    return (np.minimum(b.open, b.close) - b.low) / b.open


def _ksft(b: _Bars, w: int | None) -> np.ndarray:
    return (2.0 * b.close - b.high - b.low) / b.open


@dataclass(frozen=True)
class FeatureFamily:
    """A feature family: `compute(bars, w)` gives one `(T, n)` float64 column per window."""

    name: str
    description: str
    compute: Callable[[_Bars, Any], np.ndarray]
    needs: tuple[str, ...] = ()
    windowed: bool = True
    min_window: int = 1


_VOLUME = ("volume",)
_OHLC = ("open", "high", "low")
_HL = "`high` (`close` if the panel has no high)"
_LW = "`low` (`close` if the panel has no low)"

_FAMILIES: dict[str, FeatureFamily] = {
    f.name: f
    for f in (
        FeatureFamily("ret", "w-bar simple return: close[t] / close[t-w] - 1", _ret),
        FeatureFamily("mom", "w-bar momentum as a log return: ln(close[t] / close[t-w])", _mom),
        FeatureFamily(
            "vol", "std (ddof=1, not annualised) of the w daily log returns ending at t", _vol, min_window=2
        ),
        FeatureFamily("ma_ratio", "close[t] / SMA_w(close) - 1", _ma_ratio),
        FeatureFamily("std", "Qlib STD: std_w(close, ddof=1) / close[t]", _std, min_window=2),
        FeatureFamily(
            "beta",
            "Qlib BETA: OLS slope of close on the bar index over w bars / close[t]",
            _beta,
            min_window=2,
        ),
        FeatureFamily("rsqr", "Qlib RSQR: R^2 of that regression; NaN on a flat window", _rsqr, min_window=2),
        FeatureFamily("resi", "Qlib RESI: residual of that regression at t / close[t]", _resi, min_window=2),
        FeatureFamily("max", f"Qlib MAX: max_w of {_HL} / close[t]", _max),
        FeatureFamily("min", f"Qlib MIN: min_w of {_LW} / close[t]", _min),
        FeatureFamily(
            "rsv",
            f"Qlib RSV: (close[t] - min_w low) / (max_w high - min_w low), with {_HL} and {_LW}; NaN if flat",
            _rsv,
        ),
        FeatureFamily(
            "imax",
            f"Qlib IMAX: (1 + offset of the max of {_HL} from the oldest bar of the window) / w; "
            "1 = the max is today, ties go to the oldest bar",
            _imax,
        ),
        FeatureFamily("imin", f"Qlib IMIN: as imax for the min of {_LW}", _imin),
        FeatureFamily("imxd", "Qlib IMXD: imax - imin", _imxd),
        FeatureFamily("cntp", "Qlib CNTP: share of the w bars ending at t with close up", _cntp),
        FeatureFamily("cntn", "Qlib CNTN: share of the w bars ending at t with close down", _cntn),
        FeatureFamily("cntd", "Qlib CNTD: cntp - cntn", _cntd),
        FeatureFamily(
            "sump", "Qlib SUMP: sum of close gains / sum of |close changes| over w bars; NaN if flat", _sump
        ),
        FeatureFamily(
            "sumn", "Qlib SUMN: sum of close losses / sum of |close changes| over w bars; NaN if flat", _sumn
        ),
        FeatureFamily("sumd", "Qlib SUMD: sump - sumn", _sumd),
        FeatureFamily(
            "rank",
            "Qlib RANK: percentile of close[t] within its window (pandas rolling rank, pct, average ties)",
            _rank,
        ),
        FeatureFamily("vma", "Qlib VMA: SMA_w(volume) / volume[t]; NaN on zero volume", _vma, needs=_VOLUME),
        FeatureFamily(
            "vstd",
            "Qlib VSTD: std_w(volume, ddof=1) / volume[t]; NaN on zero volume",
            _vstd,
            needs=_VOLUME,
            min_window=2,
        ),
        FeatureFamily(
            "wvma",
            "Qlib WVMA: std_w / mean_w of |close[t]/close[t-1] - 1| * volume[t] (ddof=1)",
            _wvma,
            needs=_VOLUME,
            min_window=2,
        ),
        FeatureFamily(
            "corr",
            "Qlib CORR: Pearson correlation of close and ln(1 + volume) over w bars",
            _corr,
            needs=_VOLUME,
            min_window=2,
        ),
        FeatureFamily(
            "vsump",
            "Qlib VSUMP: sum of volume increases / sum of |volume changes| over w bars",
            _vsump,
            needs=_VOLUME,
        ),
        FeatureFamily(
            "vsumn",
            "Qlib VSUMN: sum of volume decreases / sum of |volume changes| over w bars",
            _vsumn,
            needs=_VOLUME,
        ),
        FeatureFamily("vsumd", "Qlib VSUMD: vsump - vsumn", _vsumd, needs=_VOLUME),
        FeatureFamily(
            "kmid", "Qlib KMID: (close - open) / open (no window)", _kmid, needs=_OHLC, windowed=False
        ),
        FeatureFamily(
            "klen", "Qlib KLEN: (high - low) / open (no window)", _klen, needs=_OHLC, windowed=False
        ),
        FeatureFamily(
            "kup", "Qlib KUP: (high - max(open, close)) / open (no window)", _kup, needs=_OHLC, windowed=False
        ),
        FeatureFamily(
            "klow",
            "Qlib KLOW: (min(open, close) - low) / open (no window)",
            _klow,
            needs=_OHLC,
            windowed=False,
        ),
        FeatureFamily(
            "ksft", "Qlib KSFT: (2 close - high - low) / open (no window)", _ksft, needs=_OHLC, windowed=False
        ),
    )
}

FEATURE_FAMILIES: Mapping[str, str] = MappingProxyType({name: f.description for name, f in _FAMILIES.items()})
"""Family name -> what it computes (for docs, CLIs and error messages)."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class _Group:
    """The columns of one spec: base columns, then their ranks when `cs_rank`."""

    family: FeatureFamily
    windows: tuple[int | None, ...]
    names: tuple[str, ...]
    rank_names: tuple[str, ...]


def _plan(specs: Sequence[FeatureSpec | Mapping[str, Any]], panel: Panel | None, field: str) -> list[_Group]:
    groups: list[_Group] = []
    seen: dict[str, int] = {}
    known = ", ".join(_FAMILIES)
    for i, raw in enumerate(specs):
        spec = raw if isinstance(raw, FeatureSpec) else FeatureSpec.model_validate(raw)
        family = _FAMILIES.get(spec.name)
        if family is None:
            raise InvalidArgument(
                f"unknown feature family {spec.name!r}; known families: {known}", field=f"{field}[{i}].name"
            )
        if panel is not None:
            absent = [f for f in family.needs if not panel.has(f)]
            if absent:
                raise DataError(
                    f"feature family {spec.name!r} needs {', '.join(family.needs)}, but "
                    f"{' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} absent from the data "
                    f"(fields present: {', '.join(panel.fields)})",
                    field=f"{field}[{i}].name",
                )
        windows: tuple[int | None, ...]
        if family.windowed:
            if not spec.windows:
                raise InvalidArgument(
                    f"feature family {spec.name!r} needs at least one window", field=f"{field}[{i}].windows"
                )
            small = [w for w in spec.windows if w < family.min_window]
            if small:
                raise InvalidArgument(
                    f"feature family {spec.name!r} needs windows >= {family.min_window}, got {small}",
                    field=f"{field}[{i}].windows",
                )
            windows = tuple(spec.windows)
            names = tuple(f"{spec.name}_{w}" for w in windows)
        else:
            if spec.windows:
                raise InvalidArgument(
                    f"feature family {spec.name!r} takes no window, got {spec.windows}",
                    field=f"{field}[{i}].windows",
                )
            windows = (None,)
            names = (spec.name,)
        rank_names = tuple(f"{n}_csrank" for n in names) if spec.cs_rank else ()
        for name in names + rank_names:
            if name in seen:
                raise InvalidArgument(
                    f"feature {name!r} is requested twice (also by {field}[{seen[name]}])",
                    field=f"{field}[{i}]",
                )
            seen[name] = i
        groups.append(_Group(family, windows, names, rank_names))
    if not groups:
        raise InvalidArgument("at least one feature is required", field=field)
    return groups


def feature_names(
    specs: Sequence[FeatureSpec | Mapping[str, Any]], *, field: str = "dataset_cfg.features"
) -> list[str]:
    """The column names `compute_features` gives for `specs` (validates the specs, not the data)."""
    groups = _plan(specs, None, field)
    return [n for g in groups for n in g.names] + [n for g in groups for n in g.rank_names]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of a panel: `values[t, i, f]` is `names[f]` of `symbols[i]` at `dates[t]`.

    `values` is `(T, N, F)`, float32 unless asked otherwise, C-ordered and
    read-only; NaN where a feature is not computable (warm-up, missing bars,
    undefined ratio).
    """

    names: list[str]
    values: np.ndarray
    dates: np.ndarray
    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        expected = (len(self.dates), len(self.symbols), len(self.names))
        if self.values.shape != expected:
            raise InvalidArgument(f"values has shape {self.values.shape}, expected {expected}")
        if len(set(self.names)) != len(self.names):
            raise InvalidArgument("feature names must be unique")

    def index(self, name: str) -> int:
        """Position of feature `name` on the last axis."""
        try:
            return self.names.index(name)
        except ValueError:
            raise InvalidArgument(f"unknown feature {name!r}; features are {self.names}") from None

    def column(self, name: str) -> np.ndarray:
        """Feature `name` as a `(T, N)` view."""
        return self.values[:, :, self.index(name)]

    @property
    def on_disk(self) -> bool:
        """True when `values` is file-backed (`compute_features(..., spill=True)`)."""
        return store.is_disk_backed(self.values)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """`values[start:stop]` as an in-memory array (a copy read from the file when file-backed, which
        leaves nothing resident; a read-only view otherwise)."""
        return store.read_rows(self.values, start, stop)


# --------------------------------------------------------------------------- compute


def compute_features(
    panel: Panel,
    specs: Sequence[FeatureSpec | Mapping[str, Any]],
    *,
    dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32,
    block_symbols: int | None = None,
    field: str = "dataset_cfg.features",
    spill: bool | None = None,
    threads: int | None = None,
) -> FeatureSet:
    """Compute the features `specs` on every (date, symbol) of `panel`.

    Columns: first every spec's columns in spec order (one per window,
    `<family>_<w>`, or `<family>` for window-free families), then the
    cross-sectional ranks of the specs with `cs_rank`, in the same order
    (`<family>_<w>_csrank`). `feature_names(specs)` gives the list without
    computing anything.

    Errors name the offending spec with `field` as prefix: an unknown family
    raises `InvalidArgument` (`<field>[i].name`, listing the known families),
    a family that needs absent data (volume, OHLC) raises `DataError` on the
    same field, a missing or too small window raises `InvalidArgument`
    (`<field>[i].windows`).

    `block_symbols` sets how many symbols are processed together (default:
    ~2 M cells per temporary); it changes speed and memory, never the result.

    `spill` writes the result into a file-backed array (`features.store`)
    instead of memory; `None` (default) spills when the result is larger
    than `store.SPILL_BYTES`. The values are the same bits either way: the
    computation is the same per block of symbols, only where the output
    lives differs. While spilling, each finished block of symbols (and each
    block of dates of the rank pass) is dropped from resident memory, so
    the process holds the bars, one block's output and the temporaries.

    `threads` blocks (of symbols, then of dates for the ranks) are computed
    at once (default `FEATURE_THREADS`: `ALPHASWARM_FEATURE_THREADS`, else
    the number of CPUs, at most 4). Blocks write disjoint cells and every
    block does the same arithmetic whatever the thread count, so the result
    does not depend on it.
    """
    groups = _plan(specs, panel, field)
    out_dtype = np.dtype(dtype)
    if out_dtype.kind != "f":
        raise InvalidArgument(f"dtype must be a floating type, got {out_dtype}")
    t_rows, n_sym = panel.shape
    base = [(g.family, w) for g in groups for w in g.windows]
    names = [n for g in groups for n in g.names] + [n for g in groups for n in g.rank_names]
    n_base, n_feat = len(base), len(names)
    ranked_src = [i for i, n in enumerate(names[:n_base]) if f"{n}_csrank" in names[n_base:]]
    nbytes = t_rows * n_sym * n_feat * out_dtype.itemsize
    on_disk = nbytes > store.SPILL_BYTES if spill is None else spill
    values = (
        store.disk_array((t_rows, n_sym, n_feat), out_dtype)
        if on_disk
        else np.empty((t_rows, n_sym, n_feat), dtype=out_dtype)
    )

    # a spilled block's output stays resident until the block is done, next to its temporaries: when
    # spilling, the blocks in flight together are as large as one in-memory block
    workers = max(1, threads or FEATURE_THREADS)
    cells = _BLOCK_CELLS // (2 * workers) if on_disk else _BLOCK_CELLS
    block = block_symbols or max(1, cells // max(1, t_rows))
    block = min(block, n_sym)

    from alphaswarm_common.features import _compiled  # numba: imported on first use

    stage_cols = min(n_base, max(_STAGE_COLUMNS, _STAGE_CELLS // max(1, t_rows * block)))

    buffers = threading.local()  # one stage per thread, reused by its blocks (no fresh pages to fault in)

    def base_block(c0: int) -> None:
        c1 = min(n_sym, c0 + block)
        if getattr(buffers, "stage", None) is None:
            buffers.stage = np.empty(stage_cols * t_rows * block, dtype=out_dtype)
        stage = buffers.stage[: stage_cols * t_rows * (c1 - c0)].reshape(stage_cols, t_rows, c1 - c0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # per thread
            bars = _Bars(panel, slice(c0, c1))
            for f0 in range(0, n_base, stage_cols):
                f1 = min(n_base, f0 + stage_cols)
                part = stage[: f1 - f0]
                for j, (family, w) in enumerate(base[f0:f1]):
                    np.copyto(part[j], family.compute(bars, w), casting="same_kind")
                if on_disk and f1 - f0 == n_base:
                    # every base column of the block at once: its cells of each date are one run of
                    # the file (the rank columns in it are written by the rank pass), one pwrite each
                    step = max(1, _PACK_CELLS // max(1, (c1 - c0) * n_feat))
                    cells = np.zeros((step, c1 - c0, n_feat), dtype=out_dtype)
                    for t0 in range(0, t_rows, step):
                        t1 = min(t_rows, t0 + step)
                        _compiled.pack_rows(part, t0, t1, cells)
                        store.write_cells(values, t0, c0, cells[: t1 - t0])
                    return
                # values[:, c0:c1, f0:f1] = part.transpose(1, 2, 0), non-finite as NaN
                _compiled.scatter_columns(part, values, c0, f0)
        store.release_columns(values, c0, c1)  # this block is written: drop its pages (no-op in memory)

    src = np.asarray(ranked_src, dtype=np.intp)
    n_rank = len(ranked_src)
    rank_rows = max(1, _RANK_CELLS // max(1, n_sym * n_rank))

    def _rank_rows(target: np.ndarray, r0: int, r1: int) -> None:
        _compiled.rank_rows(target, target.view(np.uint32), r0, r1, src, n_base)

    def rank_block(d0: int) -> None:
        d1 = min(t_rows, d0 + rank_rows)
        # the ranks `cs_rank` gives, from a compiled radix sort of the float32 values
        if out_dtype == np.float32 and on_disk:  # one pread and one pwrite of the rows: no page faults
            rows = store.read_rows(values, d0, d1)
            _rank_rows(rows, 0, d1 - d0)
            store.write_rows(values, d0, rows)
            return
        if out_dtype == np.float32:
            _rank_rows(values, d0, d1)
        else:
            chunk = np.take(values[d0:d1], src, axis=2)  # (rows, N, R)
            ranked = cs_rank(np.ascontiguousarray(chunk.transpose(0, 2, 1)).reshape(-1, n_sym))
            values[d0:d1, :, n_base:] = ranked.reshape(d1 - d0, n_rank, n_sym).transpose(0, 2, 1)
        store.release(values, d0, d1)

    with _heap.retained_heap():  # the blocks' temporaries reuse freed pages instead of faulting new ones
        _run(base_block, range(0, n_sym, block), workers)
        if ranked_src:
            _run(rank_block, range(0, t_rows, rank_rows), workers)

    values.setflags(write=False)
    return FeatureSet(names=names, values=values, dates=panel.dates, symbols=panel.symbols)


def _default_threads() -> int:
    raw = os.environ.get("ALPHASWARM_FEATURE_THREADS")
    return max(1, int(raw)) if raw else max(1, min(4, os.cpu_count() or 1))


FEATURE_THREADS = _default_threads()
"""Blocks `compute_features` computes at once by default (NumPy releases the GIL in its loops)."""


def _run(fn: Callable[[int], None], starts: range, threads: int) -> None:
    workers = min(len(starts), threads)
    if workers <= 1:
        for start in starts:
            fn(start)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="features") as pool:
        for future in [pool.submit(fn, start) for start in starts]:
            future.result()
