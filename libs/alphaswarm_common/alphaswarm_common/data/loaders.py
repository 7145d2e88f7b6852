"""Load a `Panel` from a shipped dataset or a CSV / Parquet file, and check segments against it.

Sources (`DatasetConfig.source`)
--------------------------------
- A shipped dataset name (`SHIPPED_DATASETS`, e.g. `sp500`). A shipped name
  wins over a file of the same name in the working directory.
- Otherwise a path to a `.csv` (optionally compressed: `.csv.gz`, `.csv.bz2`,
  `.csv.xz`, `.csv.zst`, `.csv.zip`) or `.parquet` / `.pq` file **inside a
  configured data root** (`alphaswarm_common.data.sources`: `~` expanded,
  relative paths against `base_dir` (default the working directory) then
  each root, symlinks resolved before the check). Anything else is
  `InvalidArgument` naming `dataset_cfg.source`, and messages name a file
  only relative to its root.

Layouts (`DatasetConfig.format`, `auto` detects)
------------------------------------------------
- long: columns `date`, `symbol`, `close` and optionally `open`, `high`,
  `low`, `volume` (names case-insensitive, surrounding spaces ignored; other
  columns ignored). `auto` picks long when there is a `symbol` column.
- wide: `date` then one close column per symbol (symbol names kept as
  written). Every non-date column is a symbol and must be numeric.

Dates: ISO strings, datetimes, or integers `YYYYMMDD`. Time zones are dropped
keeping the local wall-clock date; a time of day is truncated to the date,
and two bars falling on one date are a duplicate (intraday data is not
supported). Symbols of a long file are sorted; a wide file keeps its column
order; `symbols` in the config reorders to the order given.

Validation (every problem is a `DataError` naming the field and the first
offending row): unreadable or missing file, unsupported extension, missing
`date` / `close` / `symbol` column (`dataset_cfg.source`); unparsable dates,
dates not increasing in file order (a wide file), or per symbol in file
order (a long file: it may be sorted by symbol then date, or by date);
duplicate dates or (date, symbol) pairs; non-numeric, non-finite or
non-positive prices, negative volumes (`dataset_cfg.source`); unknown
symbols (`dataset_cfg.symbols`); no data left after the date filter
(`dataset_cfg.start_date` / `end_date`). Files are rejected rather than
silently sorted: out-of-order rows usually mean a broken export or a wrong
day/month parse.

Missing values: an empty cell, or a (date, symbol) pair absent from a long
file, is a missing bar (NaN); see `Panel`. After the date filter, dates with
no close for any symbol are dropped (not trading dates of this universe),
and when `symbols` is not given, so are symbols with no close in the window.
A symbol named in `symbols` with no close in the window is an error.

Synthetic data: `source: synthetic` generates a panel with a planted alpha
from `DatasetConfig.synthetic` (defaults when absent) and the label timing of
`DatasetConfig.label` (see `alphaswarm_common.data.synthetic`); `symbols`,
`start_date`, `end_date` and the missing-data policy then apply as to a file,
and the fingerprint covers the generated content. `synthetic_truth(cfg)`
gives the planted signal of the panel `load_panel(cfg)` returns.

Missing-data policy (`DatasetConfig.missing`), applied in this order after
the symbol selection:

1. dates with no close for any selected symbol are dropped (over the whole
   source, so that "bars" below means bars of this universe);
2. `min_history`: a symbol's values (every field) are NaN until it has
   `min_history` bars, its bar at t included (`Panel.mask_history`).
   Bars before `start_date` count: history is history;
3. `ffill_limit`: a missing close is filled from the symbol's last close if
   that close is at most `ffill_limit` bars earlier, as a flat bar with zero
   volume (`Panel.ffill`); bars before `start_date` may fill the first dates
   of the window;
4. the date filter, then dropping dates and (when `symbols` is not given)
   symbols left without any close, as above;
5. `drop_incomplete_symbols`: symbols missing any close on the loaded dates
   are dropped (a named symbol too). **This step looks ahead by definition**:
   whether a symbol is kept depends on its whole loaded range, including
   listings and delistings after any given date (survivorship bias). It is a
   user choice for experiments that need a rectangular panel; every other
   step is causal (a value at t depends on bars at or before t only) and
   handles symbols entering (leading NaN) and leaving (trailing NaN) the
   universe without using their future existence.

Caching: loads are memoised in-process by (resolved path, mtime, size,
format) for the parsed file (by the generator settings and label timing for
synthetic data) and by that plus (symbols, start_date, end_date, missing
policy) for the result, so repeated loads return the same immutable
`Panel` object. Editing the file invalidates its entries; `clear_cache()`
empties the cache.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import pandas as pd

from alphaswarm_common.config import DatasetConfig, MissingDataConfig, SyntheticConfig
from alphaswarm_common.data.panel import FIELDS, Panel
from alphaswarm_common.data.sources import resolve_data_file
from alphaswarm_common.data.synthetic import SyntheticTruth, generate_synthetic
from alphaswarm_common.errors import DataError, InvalidArgument

__all__ = [
    "DEFAULT_MIN_SEGMENT_DATES",
    "SHIPPED_DATASETS",
    "ShippedDataset",
    "check_dataset_source",
    "clear_cache",
    "load_panel",
    "panel_from_frame",
    "read_panel",
    "synthetic_truth",
    "validate_segments",
]

SYNTHETIC_SOURCE = "synthetic"
"""The `DatasetConfig.source` that generates a panel with a planted alpha."""
_SOURCE = "dataset_cfg.source"
_SYMBOLS = "dataset_cfg.symbols"


@dataclass(frozen=True)
class ShippedDataset:
    """A dataset inside the package: file name, layout and provenance."""

    filename: str
    format: Literal["long", "wide"]
    description: str


SHIPPED_DATASETS: Mapping[str, ShippedDataset] = {
    "sp500": ShippedDataset(
        filename="sp500_dataset.csv.gz",
        format="wide",
        description=(
            "Adjusted daily closes of 20 S&P 500 stocks, 1990-01-02..2022-12-28 (8313 dates), "
            "from skfolio's datasets (BSD-3-Clause, see LICENSE-skfolio-sp500.txt)"
        ),
    ),
}

DEFAULT_MIN_SEGMENT_DATES: Mapping[str, int] = {"train": 20, "valid": 5, "test": 5}

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst", ".csv.zip")
_PARQUET_SUFFIXES = (".parquet", ".pq")


# --------------------------------------------------------------------------- cache

V = TypeVar("V")


class _LRU(Generic[V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[Any, ...], value: V) -> V:
        """Store `value` unless another thread stored one first; return the stored panel."""
        with self._lock:
            existing = self._items.get(key)
            if existing is not None:
                self._items.move_to_end(key)
                return existing
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_FILES: _LRU[Panel] = _LRU(4)
_RESULTS: _LRU[Panel] = _LRU(32)
_TRUTHS: _LRU[SyntheticTruth] = _LRU(4)


def clear_cache() -> None:
    """Forget every memoised panel (files, generated panels and filtered results)."""
    _FILES.clear()
    _RESULTS.clear()
    _TRUTHS.clear()


# --------------------------------------------------------------------------- public


def load_panel(cfg: DatasetConfig, *, base_dir: str | Path | None = None) -> Panel:
    """The panel `cfg` describes: source, layout, `symbols`, `start_date`, `end_date` and `missing` applied.

    Repeated calls with the same source file (unchanged on disk) or generator
    settings and the same filters return the same `Panel` object. See the
    module docstring for formats, synthetic data, validation and the
    missing-data policy.
    """
    if cfg.start_date and cfg.end_date and cfg.end_date < cfg.start_date:
        raise DataError(
            f"end_date ({cfg.end_date}) is before start_date ({cfg.start_date})", field="dataset_cfg.end_date"
        )
    file_key, path, fmt, shown = _resolve_cfg(cfg, base_dir)
    key = (
        *file_key,
        None if cfg.symbols is None else tuple(cfg.symbols),
        cfg.start_date,
        cfg.end_date,
        cfg.missing.min_history,
        cfg.missing.ffill_limit,
        cfg.missing.drop_incomplete_symbols,
    )
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    full = _FILES.get(file_key)
    if full is None:
        full = _FILES.put(file_key, _read_source(cfg, path, fmt, shown))
    panel = _filter(full, cfg.symbols, cfg.start_date, cfg.end_date, cfg.missing)
    return _RESULTS.put(key, panel)


def check_dataset_source(cfg: DatasetConfig, *, field: str = _SOURCE) -> None:
    """Refuse (`DataError` naming `field`) a source that is neither shipped, synthetic nor a file in a root.

    What `load_panel` checks first, without reading the data: for request
    handlers that accept work to run later.
    """
    name = cfg.source.strip().lower()
    if name != SYNTHETIC_SOURCE and name not in SHIPPED_DATASETS:
        resolve_data_file(cfg.source, shipped=[*SHIPPED_DATASETS, SYNTHETIC_SOURCE], field=field)


def synthetic_truth(cfg: DatasetConfig) -> SyntheticTruth:
    """The planted signal of the synthetic panel `load_panel(cfg)` returns, on its dates and symbols.

    `cfg.source` must be `synthetic`. The truth is the generator's (the
    signal is defined wherever the generator has a return, whatever the
    missing-data policy masks); it is restricted to the rows and columns of
    the loaded panel, so `truth.signal` and `load_panel(cfg).close` align.
    """
    if cfg.source.strip().lower() != SYNTHETIC_SOURCE:
        raise InvalidArgument(
            f"synthetic_truth needs source {SYNTHETIC_SOURCE!r}, got {cfg.source!r}", field=_SOURCE
        )
    panel = load_panel(cfg)
    truth = _TRUTHS.get(_synthetic_key(cfg))
    if truth is None:
        _, truth = generate_synthetic(
            _synthetic_cfg(cfg), execution_lag=cfg.label.execution_lag, horizon=cfg.label.horizon
        )
        truth = _TRUTHS.put(_synthetic_key(cfg), truth)
    rows = np.searchsorted(truth.dates, panel.dates)
    position = {s: i for i, s in enumerate(truth.symbols)}
    cols = np.fromiter((position[s] for s in panel.symbols), dtype=np.intp, count=panel.n_symbols)
    signal = np.ascontiguousarray(truth.signal[np.ix_(rows, cols)])
    signal.setflags(write=False)
    sectors = truth.sectors[cols]
    return dataclasses.replace(
        truth, dates=panel.dates, symbols=panel.symbols, signal=signal, sectors=sectors
    )


def read_panel(
    path: str | Path, *, format: Literal["auto", "long", "wide"] = "auto", name: str | None = None
) -> Panel:
    """Parse and validate one CSV or Parquet file into a `Panel` (no filtering, no cache).

    `name` is how messages name the file (default: the path as given).
    """
    path = Path(path)
    shown = name if name is not None else str(path)
    frame = _read_frame(path, shown)
    header = _csv_header(path) if _is_csv(path) else None
    return panel_from_frame(frame, format=format, header=header, source=shown)


def panel_from_frame(
    frame: pd.DataFrame,
    *,
    format: Literal["auto", "long", "wide"] = "auto",
    header: list[str] | None = None,
    source: str = "the data",
) -> Panel:
    """A validated `Panel` from a long or wide frame laid out as a file would be (see module docstring).

    `header` is the raw column row of a CSV, used to detect duplicated column
    names that the CSV reader renamed; `source` names the data in messages.
    Errors are `DataError(field="dataset_cfg.source")`.
    """
    if frame.index.name is not None and str(frame.index.name).strip().lower() == "date":
        frame = frame.reset_index()
    if header is not None:
        raw_dups = sorted(c for c, n in Counter(header).items() if n > 1)
        if raw_dups:
            raise DataError(f"{source} has duplicated column names: {raw_dups[:10]}", field=_SOURCE)
    lower = Counter(str(c).strip().lower() for c in frame.columns)
    dup = sorted(c for c in ("date", "symbol", *FIELDS) if lower[c] > 1)
    if dup:
        raise DataError(f"{source} has duplicated columns (case-insensitive): {dup}", field=_SOURCE)
    frame = frame.copy(deep=False)
    frame.columns = pd.Index([str(c) for c in frame.columns])
    by_lower = {str(c).strip().lower(): str(c) for c in frame.columns}
    if "date" not in by_lower:
        raise DataError(
            f"{source} has no 'date' column; columns are {_show(list(frame.columns))}", field=_SOURCE
        )
    if len(frame) == 0:
        raise DataError(f"{source} has no rows", field=_SOURCE)
    if format == "auto":
        if "symbol" in by_lower:
            format = "long"
        elif "close" in by_lower:
            raise DataError(
                f"{source} has a 'close' column but no 'symbol' column: add a 'symbol' column (long "
                "layout) or write one close column per symbol (wide layout, format: wide)",
                field=_SOURCE,
            )
        else:
            format = "wide"
    if format == "long":
        return _from_long(frame, by_lower, source)
    if format == "wide":
        return _from_wide(frame, by_lower, source)
    raise DataError(f"format must be 'auto', 'long' or 'wide', got {format!r}", field="dataset_cfg.format")


def validate_segments(
    panel: Panel, cfg: DatasetConfig, *, min_dates: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Check that every segment of `cfg` has enough usable dates in `panel`; return the purged rows.

    A segment fails (`DataError(field="dataset_cfg.segments.<name>")`) when
    it lies outside the data, or when fewer than `min_dates[name]` rows are
    left after purging (defaults `DEFAULT_MIN_SEGMENT_DATES`: 20 for train, 5
    for valid and test; a mapping given replaces the defaults by key).
    Purging uses `cfg.label` and `cfg.embargo` as `segment_rows` does. A
    segment may extend beyond the data; only its dates in the data count.
    """
    if cfg.segments is None:
        raise DataError("train and test segments are required to train a model", field="dataset_cfg.segments")
    # imported here: `labels` imports the feature kernels, whose package imports this one
    from alphaswarm_common.labels import SEGMENT_NAMES, segment_rows

    minimum = {**DEFAULT_MIN_SEGMENT_DATES, **(min_dates or {})}
    first, last = panel.dates[0], panel.dates[-1]
    for name in SEGMENT_NAMES:
        seg = getattr(cfg.segments, name)
        if seg is None:
            continue
        if np.datetime64(seg.end, "D") < first or np.datetime64(seg.start, "D") > last:
            raise DataError(
                f"segment {name} ({seg.start}..{seg.end}) lies outside the data ({first}..{last})",
                field=f"dataset_cfg.segments.{name}",
            )
    rows = segment_rows(
        panel.dates,
        cfg.segments,
        execution_lag=cfg.label.execution_lag,
        horizon=cfg.label.horizon,
        embargo=cfg.embargo,
    )
    for name, idx in rows.items():
        need = int(minimum.get(name, 1))
        if idx.size < need:
            seg = getattr(cfg.segments, name)
            raise DataError(
                f"segment {name} ({seg.start}..{seg.end}) has {idx.size} usable date(s) in the data "
                f"after purging; at least {need} are needed",
                field=f"dataset_cfg.segments.{name}",
                details={"usable_dates": int(idx.size), "minimum": need},
            )
    return rows


# --------------------------------------------------------------------------- resolve / read


def _synthetic_cfg(cfg: DatasetConfig) -> SyntheticConfig:
    return cfg.synthetic if cfg.synthetic is not None else SyntheticConfig()


def _synthetic_key(cfg: DatasetConfig) -> tuple[Any, ...]:
    return (
        SYNTHETIC_SOURCE,
        _synthetic_cfg(cfg).model_dump_json(),
        cfg.label.execution_lag,
        cfg.label.horizon,
    )


def _resolve_cfg(
    cfg: DatasetConfig, base_dir: str | Path | None
) -> tuple[tuple[Any, ...], Path | None, Any, str]:
    """(cache key, file or None for synthetic data, format, how messages name the data)."""
    if cfg.source.strip().lower() == SYNTHETIC_SOURCE:
        return _synthetic_key(cfg), None, SYNTHETIC_SOURCE, SYNTHETIC_SOURCE
    if cfg.synthetic is not None:
        raise InvalidArgument(
            f"dataset_cfg.synthetic is only used with source {SYNTHETIC_SOURCE!r}, not {cfg.source!r}",
            field="dataset_cfg.synthetic",
        )
    return _resolve(cfg.source, cfg.format, base_dir)


def _read_source(cfg: DatasetConfig, path: Path | None, fmt: Any, display: str) -> Panel:
    if path is None:
        panel, _ = generate_synthetic(
            _synthetic_cfg(cfg), execution_lag=cfg.label.execution_lag, horizon=cfg.label.horizon
        )
        return panel  # the truth is regenerated (and then memoised) only when asked for
    return read_panel(path, format=fmt, name=display)


def _resolve(source: str, fmt: str, base_dir: str | Path | None) -> tuple[tuple[Any, ...], Path, Any, str]:
    shipped = SHIPPED_DATASETS.get(source.strip().lower())
    if shipped is not None:
        ref = resources.files("alphaswarm_common.data").joinpath(shipped.filename)
        path = Path(str(ref))
        if not path.is_file():
            raise DataError(f"shipped dataset {source!r} is missing from the installation", field=_SOURCE)
        use = shipped.format if fmt == "auto" else fmt
        return ("shipped", source.strip().lower(), use), path, use, source.strip().lower()
    found = resolve_data_file(source, shipped=[*SHIPPED_DATASETS, SYNTHETIC_SOURCE], base_dir=base_dir)
    path = found.path
    if not (_is_csv(path) or _is_parquet(path)):
        raise DataError(
            f"unsupported file type {path.name!r}; use {', '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)}",
            field=_SOURCE,
        )
    stat = path.stat()
    return ("file", str(path), stat.st_mtime_ns, stat.st_size, fmt), path, fmt, found.display


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith(_CSV_SUFFIXES)


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith(_PARQUET_SUFFIXES)


def _read_frame(path: Path, shown: str) -> pd.DataFrame:
    try:
        if _is_parquet(path):
            return pd.read_parquet(path)
        if _is_csv(path):
            return pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError as exc:
        raise DataError(f"data file not found: {shown}", field=_SOURCE) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{shown} is empty", field=_SOURCE) from exc
    except Exception as exc:  # the readers raise many types for corrupt input; their text may hold the path
        raise DataError(
            f"cannot read {shown}: {type(exc).__name__}: {str(exc).replace(str(path), shown)}", field=_SOURCE
        ) from exc
    raise DataError(f"unsupported file type {path.name!r}", field=_SOURCE)


def _csv_header(path: Path) -> list[str] | None:
    """The first row of a CSV as written (the reader renames duplicates to `x.1`)."""
    try:
        head = pd.read_csv(
            path, header=None, nrows=1, dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except Exception:
        return None
    return [str(c) for c in head.iloc[0].tolist()] if len(head) else None


# --------------------------------------------------------------------------- parse


def _show(items: list[Any], limit: int = 12) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def _parse_dates(values: pd.Series, source: str) -> np.ndarray:
    """`datetime64[D]` dates, or `DataError` naming the first value that is not a date."""
    if values.isna().any():
        i = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(f"{source}: missing date on data row {i + 1}", field=_SOURCE)
    if pd.api.types.is_integer_dtype(values.dtype):
        parsed = pd.to_datetime(values.astype(str), format="%Y%m%d", errors="coerce")
    elif pd.api.types.is_float_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise DataError(
            f"{source}: the date column is numeric ({values.dtype}); write dates as YYYY-MM-DD", field=_SOURCE
        )
    elif isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_localize(None)
    else:
        parsed = pd.to_datetime(values, errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_localize(None)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: {int(bad.sum())} value(s) of the date column are not dates, "
            f"e.g. {values.iloc[i]!r} on data row {i + 1}",
            field=_SOURCE,
        )
    return parsed.to_numpy().astype("datetime64[D]")


def _numeric(values: pd.Series, what: str, source: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    coerced = pd.to_numeric(values, errors="coerce")
    bad = coerced.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: {what} is not numeric: {int(bad.sum())} value(s) such as {values.iloc[i]!r} "
            f"on data row {i + 1}",
            field=_SOURCE,
        )
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_order_wide(days: np.ndarray, source: str) -> None:
    step = np.diff(days.astype(np.int64))
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0])
        raise DataError(
            f"{source}: dates are not sorted: {days[i + 1]} on data row {i + 2} comes after {days[i]}",
            field=_SOURCE,
        )
    if (step == 0).any():
        i = int(np.flatnonzero(step == 0)[0])
        raise DataError(f"{source}: duplicate date {days[i]} on data rows {i + 1} and {i + 2}", field=_SOURCE)


def _build(dates: np.ndarray, symbols: tuple[str, ...], fields: dict[str, np.ndarray], source: str) -> Panel:
    try:
        return Panel(dates=dates, symbols=symbols, **fields)
    except DataError as exc:
        raise DataError(f"{source}: {exc.message}", field=_SOURCE, details=exc.details) from exc


def _from_wide(frame: pd.DataFrame, by_lower: dict[str, str], source: str) -> Panel:
    date_col = by_lower["date"]
    days = _parse_dates(frame[date_col], source)
    symbol_cols = [c for c in frame.columns if c != date_col]
    if not symbol_cols:
        raise DataError(
            f"{source}: a wide file needs one close column per symbol after 'date'", field=_SOURCE
        )
    symbols = tuple(str(c).strip() for c in symbol_cols)
    if any(not s for s in symbols):
        raise DataError(f"{source}: a symbol column has an empty name", field=_SOURCE)
    _check_order_wide(days, source)
    block = frame[symbol_cols]
    numeric = [pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in block.dtypes]
    if all(numeric):
        close = block.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        close = np.empty((len(frame), len(symbol_cols)), dtype=np.float64)
        for j, col in enumerate(symbol_cols):
            close[:, j] = _numeric(block[col], f"column {col!r}", source)
    return _build(days, symbols, {"close": close}, source)


def _from_long(frame: pd.DataFrame, by_lower: dict[str, str], source: str) -> Panel:
    if "symbol" not in by_lower:
        raise DataError(
            f"{source}: a long file needs a 'symbol' column; columns are {_show(list(frame.columns))}",
            field=_SOURCE,
        )
    if "close" not in by_lower:
        raise DataError(
            f"{source}: missing 'close' column; columns are {_show(list(frame.columns))}", field=_SOURCE
        )
    days = _parse_dates(frame[by_lower["date"]], source)
    raw_sym = frame[by_lower["symbol"]]
    if raw_sym.isna().any():
        i = int(np.flatnonzero(raw_sym.isna().to_numpy())[0])
        raise DataError(f"{source}: missing symbol on data row {i + 1}", field=_SOURCE)
    sym = raw_sym.astype(str).str.strip().to_numpy(dtype=object)
    if (sym == "").any():
        i = int(np.flatnonzero(sym == "")[0])
        raise DataError(f"{source}: empty symbol on data row {i + 1}", field=_SOURCE)
    codes, uniques = pd.factorize(sym, sort=True)
    day_int = days.astype(np.int64)

    # duplicates: exact, whatever the row order
    pair = pd.DataFrame({"s": codes, "d": day_int})
    dup = pair.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(
            f"{source}: duplicate (date, symbol) ({days[i]}, {uniques[codes[i]]}) on data row {i + 1} "
            f"({int(dup.sum())} duplicate row(s) in all)",
            field=_SOURCE,
        )
    # per-symbol order: dates must increase down the file within each symbol
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    back = same & (np.diff(day_int[order]) < 0)
    if back.any():
        j = int(np.flatnonzero(back)[0])
        i = int(order[j + 1])
        raise DataError(
            f"{source}: dates of {uniques[codes[i]]} are not sorted: {days[i]} on data row {i + 1} "
            f"comes after {days[order[j]]} on data row {int(order[j]) + 1}",
            field=_SOURCE,
        )

    grid, row = np.unique(day_int, return_inverse=True)
    shape = (grid.size, len(uniques))
    fields: dict[str, np.ndarray] = {}
    for name in FIELDS:
        if name not in by_lower:
            continue
        values = _numeric(frame[by_lower[name]], f"column {by_lower[name]!r}", source)
        arr = np.full(shape, np.nan, dtype=np.float64)
        arr[row, codes] = values
        fields[name] = arr
    symbols = tuple(str(u) for u in uniques)
    return _build(grid.astype("datetime64[D]"), symbols, fields, source)


# --------------------------------------------------------------------------- filter


def _drop_empty_dates(panel: Panel) -> Panel:
    keep = ~np.isnan(panel.close).all(axis=1)
    if keep.all() or not keep.any():
        return panel
    return panel.rows(np.flatnonzero(keep))


def _filter(
    full: Panel,
    symbols: list[str] | None,
    start: dt.date | None,
    end: dt.date | None,
    missing: MissingDataConfig | None = None,
) -> Panel:
    first, last = full.dates[0], full.dates[-1]
    if start is not None and np.datetime64(start, "D") > last:
        raise DataError(
            f"start_date {start} is after the last date of the data ({last})", field="dataset_cfg.start_date"
        )
    if end is not None and np.datetime64(end, "D") < first:
        raise DataError(
            f"end_date {end} is before the first date of the data ({first})", field="dataset_cfg.end_date"
        )
    panel = full.select(symbols) if symbols is not None else full
    policy = missing if missing is not None else MissingDataConfig()
    masked = policy.min_history > 1
    if masked or policy.ffill_limit > 0:
        panel = _drop_empty_dates(panel)
        panel = panel.mask_history(policy.min_history).ffill(policy.ffill_limit)
    try:
        panel = panel.slice(start, end)
    except DataError as exc:
        raise DataError(
            f"no data between start_date {start} and end_date {end} (the data covers {first}..{last})",
            field="dataset_cfg.start_date",
        ) from exc
    has_close = ~np.isnan(panel.close)
    keep_syms = has_close.any(axis=0)
    if symbols is not None and not keep_syms.all():
        empty = [s for s, k in zip(panel.symbols, keep_syms, strict=True) if not k]
        why = (
            f" (dataset_cfg.missing.min_history = {policy.min_history} masks a symbol's first bars)"
            if masked
            else ""
        )
        raise DataError(
            f"{len(empty)} selected symbol(s) have no close between {panel.dates[0]} and "
            f"{panel.dates[-1]}: {_show(empty)}{why}",
            field=_SYMBOLS,
            details={"empty": empty},
        )
    keep_dates = has_close.any(axis=1)
    if not keep_dates.any():
        raise DataError(
            f"no close between {panel.dates[0]} and {panel.dates[-1]} for any symbol",
            field="dataset_cfg.missing.min_history" if masked else "dataset_cfg.start_date",
        )
    if not keep_syms.all():
        panel = panel.select([s for s, k in zip(panel.symbols, keep_syms, strict=True) if k])
    if not keep_dates.all():
        panel = panel.rows(np.flatnonzero(keep_dates))
    if policy.drop_incomplete_symbols:
        complete = panel.complete_symbols()
        if not complete:
            raise DataError(
                f"every symbol misses at least one close between {panel.dates[0]} and {panel.dates[-1]}, "
                "so drop_incomplete_symbols leaves no data; raise ffill_limit or choose a later start_date",
                field="dataset_cfg.missing.drop_incomplete_symbols",
            )
        if len(complete) < panel.n_symbols:
            panel = panel.select(complete)
    return panel
