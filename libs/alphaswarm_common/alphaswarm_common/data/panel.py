"""`Panel`: an immutable (date x symbol) matrix of daily bars.

Conventions
-----------
- `dates` is a 1-D `datetime64[D]` array, strictly increasing (sorted, unique).
  A panel holds daily bars; a date is a trading date of at least one symbol.
- `symbols` is a tuple of unique, non-empty strings; column `i` of every field
  belongs to `symbols[i]`.
- `close` (required) and `open`, `high`, `low`, `volume` (optional, `None`
  when absent) are `(T, N)` float64 arrays, C-contiguous and read-only.
- Missing bars are NaN. A symbol that is not listed yet (leading NaN), no
  longer listed (trailing NaN) or halted (interior NaN) simply has NaN there:
  nothing is forward-filled, and every consumer (features, labels, backtest)
  propagates the gap as "not computable". Where a value is present, a price
  must be finite and > 0 and a volume finite and >= 0; every field is checked
  on its own (a bar may have a close and no volume).
- Missing-data policies (`DatasetConfig.missing`, applied by the loader):
  `mask_history` (hide a symbol's values until it has `min_history` bars),
  `ffill` (causal forward fill of at most `limit` missing closes) and
  `complete_symbols` (for `drop_incomplete_symbols`) derive new panels; the
  first two are causal, each reading rows `<= t` for the value at t.
- OHLC consistency (`low <= open, close <= high`) is not enforced: adjusted
  vendor data breaks it by rounding, and nothing downstream relies on it.
- `fingerprint` is the SHA-256 of the canonical content (a version tag, the
  shape, the dates as int64 days, the symbols, and every field's float64
  little-endian bytes with NaN and -0.0 canonicalised). It is stable across
  processes and platforms and changes with any date, symbol, field or value;
  two panels are equal (`==`) when their fingerprints are. It is computed on
  first access (about 1 s per GB of data) and then cached on the instance.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd

from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = ["FIELDS", "OPTIONAL_FIELDS", "PRICE_FIELDS", "DateLike", "Panel", "to_day"]

PRICE_FIELDS: tuple[str, ...] = ("open", "high", "low", "close")
FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_FIELDS: tuple[str, ...] = ("open", "high", "low", "volume")

DateLike: TypeAlias = dt.date | np.datetime64 | pd.Timestamp | str

_FINGERPRINT_TAG = b"alphaswarm.panel.v1\x00"
_HASH_ROWS = 1 << 14  # rows canonicalised per hashing step (bounds the temporary copy)


def to_day(value: DateLike) -> np.datetime64:
    """`value` as a `datetime64[D]`; a time of day other than midnight is an error.

    Accepts a `date` / `datetime` / `pandas.Timestamp` (time zone dropped,
    keeping the local date), an ISO string or a `numpy.datetime64`.
    """
    try:
        if isinstance(value, np.datetime64):
            stamp = value
        elif isinstance(value, str | dt.date):
            ts = pd.Timestamp(value)
            if ts.tzinfo is not None:
                ts = ts.tz_localize(None)
            stamp = ts.to_datetime64()
        else:
            raise TypeError(f"unsupported type {type(value).__name__}")
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{value!r} is not a date ({exc})") from exc
    if np.isnat(stamp):
        raise InvalidArgument(f"{value!r} is not a date")
    day = stamp.astype("datetime64[D]")
    if day != stamp:
        raise InvalidArgument(f"{value!r} is not a date: it has a time of day")
    return day


def _as_dates(dates: Any) -> np.ndarray:
    arr = np.asarray(dates)
    if arr.ndim != 1:
        raise DataError(f"dates must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "M":
        days = arr.astype("datetime64[D]")
        with np.errstate(invalid="ignore"):
            bad = ~np.isnat(arr) & (days.astype(arr.dtype) != arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"dates must be whole days; {arr[i]} at position {i} has a time of day")
    else:
        try:
            days = np.asarray(pd.to_datetime(arr).values).astype("datetime64[D]")
        except (TypeError, ValueError) as exc:
            raise DataError(f"dates cannot be read as dates: {exc}") from exc
    if np.isnat(days).any():
        i = int(np.flatnonzero(np.isnat(days))[0])
        raise DataError(f"dates contain a missing value (NaT) at position {i}")
    return np.ascontiguousarray(days)


def _check_dates(days: np.ndarray) -> None:
    if days.size == 0:
        raise DataError("the panel has no dates")
    step = np.diff(days.astype(np.int64))
    if (step <= 0).any():
        i = int(np.flatnonzero(step <= 0)[0])
        kind = "duplicate" if step[i] == 0 else "unsorted"
        raise DataError(
            f"dates must be strictly increasing: {kind} dates at positions {i} and {i + 1} "
            f"({days[i]}, {days[i + 1]})",
            details={"position": i + 1},
        )


def _check_symbols(symbols: Any) -> tuple[str, ...]:
    if isinstance(symbols, str):
        raise DataError("symbols must be a sequence of strings, not one string")
    out = tuple(symbols)
    if not out:
        raise DataError("the panel has no symbols")
    bad = [s for s in out if not isinstance(s, str) or not s]
    if bad:
        raise DataError(f"every symbol must be a non-empty string, got {bad[:5]!r}")
    if len(set(out)) != len(out):
        dups = sorted(s for s, k in Counter(out).items() if k > 1)
        raise DataError(f"symbols must be unique; duplicated: {dups[:10]}")
    return out


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _as_field(name: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric: {exc}") from exc
    if arr.shape != shape:
        raise DataError(f"{name} has shape {arr.shape}, expected (dates, symbols) = {shape}")
    return arr


def _check_values(name: str, arr: np.ndarray, dates: np.ndarray, symbols: tuple[str, ...]) -> None:
    """Finite and > 0 (prices) or >= 0 (volume) wherever a value is present."""
    present = ~np.isnan(arr)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(arr) & ((arr >= 0) if name == "volume" else (arr > 0))
    bad = present & ~ok
    if not bad.any():
        return
    rows, cols = np.nonzero(bad)
    t, i = int(rows[0]), int(cols[0])
    n_inf = int((present & ~np.isfinite(arr)).sum())
    n_sign = int(bad.sum()) - n_inf
    rule = "finite and >= 0" if name == "volume" else "finite and > 0"
    found = []
    if n_sign:
        found.append(f"{n_sign} {'negative' if name == 'volume' else 'non-positive'} value(s)")
    if n_inf:
        found.append(f"{n_inf} non-finite value(s)")
    raise DataError(
        f"{name} must be {rule} where present; found {' and '.join(found)}, "
        f"e.g. {symbols[i]} on {dates[t]}: {float(arr[t, i])!r}",
        details={"field_name": name, "count": int(bad.sum()), "symbol": symbols[i], "date": str(dates[t])},
    )


@dataclass(frozen=True, eq=False, repr=False)
class Panel:
    """Daily bars of `symbols` on `dates` (see the module docstring for the conventions).

    Construction copies the inputs, validates them (raising `DataError`) and
    makes every array read-only; derived panels (`slice`, `select`) share or
    copy already-validated arrays without re-checking them.
    """

    dates: np.ndarray
    symbols: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray | None = None
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    volume: np.ndarray | None = None

    def __post_init__(self) -> None:
        dates = _as_dates(self.dates)
        _check_dates(dates)
        symbols = _check_symbols(self.symbols)
        shape = (dates.size, len(symbols))
        set_ = object.__setattr__
        set_(self, "dates", _readonly(dates))
        set_(self, "symbols", symbols)
        for name in FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            arr = _as_field(name, value, shape)
            _check_values(name, arr, dates, symbols)
            set_(self, name, _readonly(arr))

    @classmethod
    def _trusted(cls, dates: np.ndarray, symbols: tuple[str, ...], **fields: np.ndarray | None) -> Panel:
        """A panel from arrays that are already valid (a slice or selection of a panel)."""
        obj = object.__new__(cls)
        set_ = object.__setattr__
        set_(obj, "dates", _readonly(dates) if dates.flags.writeable else dates)
        set_(obj, "symbols", symbols)
        for name in FIELDS:
            arr = fields.get(name)
            if arr is not None and arr.flags.writeable:
                arr = _readonly(arr)
            set_(obj, name, arr)
        return obj

    # ------------------------------------------------------------------ shape

    @property
    def shape(self) -> tuple[int, int]:
        """`(n_dates, n_symbols)`."""
        return (self.dates.size, len(self.symbols))

    @property
    def n_dates(self) -> int:
        return int(self.dates.size)

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields present, in the order `open, high, low, close, volume`."""
        return tuple(name for name in FIELDS if getattr(self, name) is not None)

    def has(self, name: str) -> bool:
        """Whether field `name` is present."""
        return name in FIELDS and getattr(self, name) is not None

    def field(self, name: str) -> np.ndarray:
        """The `(T, N)` array of field `name` (`open`, `high`, `low`, `close`, `volume`)."""
        if name not in FIELDS:
            raise InvalidArgument(f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
        arr = getattr(self, name)
        if arr is None:
            raise DataError(f"the panel has no {name} (fields present: {', '.join(self.fields)})")
        return arr

    # ------------------------------------------------------------------ lookup

    def index_of(self, date: DateLike, method: Literal["exact", "pad", "backfill"] = "exact") -> int:
        """Row of `date`.

        `method="exact"` requires the date to be in the panel; `"pad"` gives the
        last row on or before it, `"backfill"` the first row on or after it.
        Raises `DataError` when there is no such row.
        """
        day = to_day(date)
        if method == "exact":
            i = int(np.searchsorted(self.dates, day, side="left"))
            if i < self.n_dates and self.dates[i] == day:
                return i
            raise DataError(f"{day} is not a date of the panel ({self.dates[0]}..{self.dates[-1]})")
        if method == "pad":
            i = int(np.searchsorted(self.dates, day, side="right")) - 1
            if i >= 0:
                return i
            raise DataError(f"no date of the panel is on or before {day} (first date {self.dates[0]})")
        if method == "backfill":
            i = int(np.searchsorted(self.dates, day, side="left"))
            if i < self.n_dates:
                return i
            raise DataError(f"no date of the panel is on or after {day} (last date {self.dates[-1]})")
        raise InvalidArgument(f"method must be 'exact', 'pad' or 'backfill', got {method!r}")

    def symbol_index(self, symbol: str) -> int:
        """Column of `symbol`."""
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise DataError(f"unknown symbol {symbol!r}", field="dataset_cfg.symbols") from None

    # ------------------------------------------------------------------ derive

    def slice(self, start: DateLike | None = None, end: DateLike | None = None) -> Panel:
        """The rows with `start <= date <= end` (both inclusive; `None` is open-ended).

        Shares memory with this panel. Raises `DataError` when no date is left.
        """
        lo = 0 if start is None else int(np.searchsorted(self.dates, to_day(start), side="left"))
        hi = self.n_dates if end is None else int(np.searchsorted(self.dates, to_day(end), side="right"))
        if lo == 0 and hi == self.n_dates:
            return self
        if hi <= lo:
            raise DataError(
                f"no dates between {start} and {end}; the panel covers {self.dates[0]}..{self.dates[-1]}"
            )
        return self.rows(slice(lo, hi))

    def rows(self, index: builtins.slice | np.ndarray) -> Panel:
        """The panel restricted to rows `index` (a slice, or sorted unique positions / a boolean mask)."""
        dates = self.dates[index]
        if isinstance(index, np.ndarray):
            _check_dates(dates)
        elif dates.size == 0:
            raise DataError("the selection has no dates")
        return Panel._trusted(
            dates,
            self.symbols,
            **{name: None if getattr(self, name) is None else getattr(self, name)[index] for name in FIELDS},
        )

    def select(self, symbols: Iterable[str] | str) -> Panel:
        """The panel restricted to `symbols`, in the order given.

        Unknown symbols raise `DataError(field="dataset_cfg.symbols")` listing
        every unknown name.
        """
        wanted = [symbols] if isinstance(symbols, str) else list(symbols)
        if not wanted:
            raise DataError("no symbols selected", field="dataset_cfg.symbols")
        if len(set(wanted)) != len(wanted):
            dups = sorted(s for s, k in Counter(wanted).items() if k > 1)
            raise DataError(f"symbols must be unique; duplicated: {dups}", field="dataset_cfg.symbols")
        position = {s: i for i, s in enumerate(self.symbols)}
        unknown = [s for s in wanted if s not in position]
        if unknown:
            shown = ", ".join(map(str, unknown[:20])) + (
                f" (+{len(unknown) - 20} more)" if len(unknown) > 20 else ""
            )
            raise DataError(
                f"{len(unknown)} unknown symbol(s): {shown}; the data has {self.n_symbols} symbols",
                field="dataset_cfg.symbols",
                details={"unknown": unknown},
            )
        if tuple(wanted) == self.symbols:
            return self
        cols = np.fromiter((position[s] for s in wanted), dtype=np.intp, count=len(wanted))
        return Panel._trusted(
            self.dates,
            tuple(wanted),
            **{
                name: None
                if getattr(self, name) is None
                else np.ascontiguousarray(getattr(self, name)[:, cols])
                for name in FIELDS
            },
        )

    # ------------------------------------------------------------------ missing data

    def bar_count(self) -> np.ndarray:
        """`(T, N)` int64: the bars (present closes) each symbol has through each date, inclusive.

        Causal: row t counts rows `<= t` only.
        """
        return np.cumsum(~np.isnan(self.close), axis=0, dtype=np.int64)

    def mask_history(self, min_history: int) -> Panel:
        """The panel with every field NaN where the symbol has fewer than `min_history` bars.

        A value at t is kept once `bar_count()[t] >= min_history` (the bar at t
        counts), so `min_history` 0 or 1 changes nothing and `min_history = 60`
        masks a symbol's first 59 bars. Causal: it reads rows `<= t` only. Look-back
        windows of features then start at the first kept bar, so a feature of
        window w first exists `w` bars (or `w + 1` for return-based families)
        after it.
        """
        if min_history < 0:
            raise InvalidArgument(
                f"min_history must be >= 0, got {min_history}", field="dataset_cfg.missing.min_history"
            )
        if min_history <= 1:
            return self
        young = self.bar_count() < min_history
        if not young.any():
            return self
        out: dict[str, np.ndarray | None] = {}
        for name in FIELDS:
            arr = getattr(self, name)
            out[name] = None if arr is None else np.where(young, np.nan, arr)
        return Panel._trusted(self.dates, self.symbols, **out)

    def ffill(self, limit: int) -> Panel:
        """Causal forward fill of at most `limit` consecutive missing closes per symbol.

        A missing close at t is replaced by the symbol's last close when that
        close is at most `limit` rows earlier (pandas `DataFrame.ffill(limit=...)`,
        also after a symbol's last bar, since at t nobody knows whether a gap
        is a halt or a delisting). A filled bar is a flat bar at that close:
        `open`, `high`, `low` (when present and missing) take the filled close
        and `volume` (when present and missing) is 0, as vendors record a halted
        day. Leading gaps (before the first bar) are never filled. `limit = 0`
        changes nothing.
        """
        if limit < 0:
            raise InvalidArgument(
                f"ffill_limit must be >= 0, got {limit}", field="dataset_cfg.missing.ffill_limit"
            )
        missing = np.isnan(self.close)
        if limit == 0 or not missing.any():
            return self
        t_rows, n = self.shape
        rows = np.arange(t_rows, dtype=np.int64)[:, None]
        last = np.maximum.accumulate(np.where(missing, -1, rows), axis=0)
        fill = missing & (last >= 0) & (rows - last <= limit)
        if not fill.any():
            return self
        cols = np.broadcast_to(np.arange(n), (t_rows, n))
        close = np.array(self.close, copy=True)
        close[fill] = self.close[last[fill], cols[fill]]
        out: dict[str, np.ndarray | None] = {"close": close}
        for name in OPTIONAL_FIELDS:
            arr = getattr(self, name)
            if arr is None:
                out[name] = None
                continue
            arr = np.array(arr, copy=True)
            hole = fill & np.isnan(arr)
            arr[hole] = 0.0 if name == "volume" else close[hole]
            out[name] = arr
        return Panel._trusted(self.dates, self.symbols, **out)

    def complete_symbols(self) -> tuple[str, ...]:
        """The symbols with a close on every date of the panel (in panel order)."""
        keep = ~np.isnan(self.close).any(axis=0)
        return tuple(s for s, k in zip(self.symbols, keep, strict=True) if k)

    # ------------------------------------------------------------------ export

    def to_frame(self, dropna: bool = True) -> pd.DataFrame:
        """Long frame `date, symbol, <fields>` ordered by date then symbol (panel order).

        `dropna=True` leaves out the cells where every field is missing (no bar).
        `date` is `datetime64`; a long frame round-trips through the loader.
        """
        t, n = self.shape
        frame = pd.DataFrame(
            {
                "date": pd.to_datetime(np.repeat(self.dates, n)),
                "symbol": np.tile(np.asarray(self.symbols, dtype=object), t),
                **{name: getattr(self, name).ravel() for name in self.fields},
            }
        )
        if dropna:
            any_value = np.zeros(t * n, dtype=bool)
            for name in self.fields:
                any_value |= ~np.isnan(getattr(self, name).ravel())
            frame = frame.loc[any_value].reset_index(drop=True)
        return frame

    def to_wide(self, name: str = "close") -> pd.DataFrame:
        """Field `name` as a frame indexed by date with one column per symbol."""
        return pd.DataFrame(
            self.field(name),
            index=pd.DatetimeIndex(pd.to_datetime(self.dates), name="date"),
            columns=list(self.symbols),
        )

    # ------------------------------------------------------------------ identity

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of the canonical content (see the module docstring)."""
        h = hashlib.sha256(_FINGERPRINT_TAG)
        t, n = self.shape
        h.update(struct.pack("<qq", t, n))
        h.update(self.dates.astype("<i8").tobytes())
        for s in self.symbols:
            b = s.encode("utf-8")
            h.update(struct.pack("<q", len(b)))
            h.update(b)
        for name in FIELDS:
            arr = getattr(self, name)
            h.update(name.encode() + (b"\x00" if arr is None else b"\x01"))
            if arr is None:
                continue
            for lo in range(0, t, _HASH_ROWS):
                block = arr[lo : lo + _HASH_ROWS].astype("<f8", copy=True)
                block += 0.0  # -0.0 -> +0.0
                block[np.isnan(block)] = np.nan  # one NaN bit pattern
                h.update(block.data)
        return h.hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Panel):
            return NotImplemented
        return self is other or (self.shape == other.shape and self.fingerprint == other.fingerprint)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        t, n = self.shape
        shown = ", ".join(self.symbols[:5]) + (", ..." if n > 5 else "")
        return (
            f"Panel({t} dates {self.dates[0]}..{self.dates[-1]}, {n} symbols [{shown}], "
            f"fields={','.join(self.fields)})"
        )
