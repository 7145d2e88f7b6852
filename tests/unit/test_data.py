"""Panel and loaders: round trips, filters, caching, fingerprints, and every bad-data case."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import (
    SHIPPED_DATASETS,
    Panel,
    clear_cache,
    load_panel,
    panel_from_frame,
    read_panel,
)
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit

SEGMENTS = {"train": ["1990-01-01", "2015-12-31"], "test": ["2016-01-01", "2022-12-31"]}


def _cfg(source: str | Path, **kw: Any) -> DatasetConfig:
    return DatasetConfig.model_validate({"source": str(source), "segments": SEGMENTS, **kw})


def _panel(t: int = 30, n: int = 4, ohlcv: bool = True, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    close = np.round(20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0)), 4)
    close[:5, 1] = np.nan  # listed late
    close[12, 2] = np.nan  # missing bar
    fields: dict[str, np.ndarray] = {"close": close}
    if ohlcv:
        fields["open"] = np.round(close * 1.01, 4)
        fields["high"] = np.round(close * 1.02, 4)
        fields["low"] = np.round(close * 0.98, 4)
        fields["volume"] = np.where(np.isnan(close), np.nan, np.round(rng.lognormal(8.0, 1.0, (t, n))))
    dates = pd.bdate_range("2021-03-01", periods=t).to_numpy().astype("datetime64[D]")
    return Panel(dates=dates, symbols=tuple(f"SYM{i}" for i in range(n)), **fields)


def _wide_frame(panel: Panel) -> pd.DataFrame:
    frame = panel.to_wide("close").reset_index()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    return frame


# --------------------------------------------------------------------------- shipped


def test_shipped_sp500_loads() -> None:
    panel = load_panel(_cfg("sp500"))
    assert panel.shape == (8313, 20)
    assert panel.dates[0] == np.datetime64("1990-01-02") and panel.dates[-1] == np.datetime64("2022-12-28")
    assert panel.symbols[:3] == ("AAPL", "AMD", "BAC") and "XOM" in panel.symbols
    assert panel.fields == ("close",) and not np.isnan(panel.close).any()
    assert load_panel(_cfg("sp500")) is panel  # memoised
    sub = load_panel(_cfg("sp500", symbols=["MSFT", "AAPL"], start_date="2020-01-01", end_date="2020-12-31"))
    assert sub.symbols == ("MSFT", "AAPL") and sub.n_dates == 253
    np.testing.assert_array_equal(sub.close[:, 1], panel.close[panel.index_of("2020-01-02") :][:253, 0])
    assert "sp500" in SHIPPED_DATASETS


def test_shipped_file_is_package_data() -> None:
    import alphaswarm_common.data as data

    folder = Path(data.__file__).parent
    assert (folder / "sp500_dataset.csv.gz").is_file() and (folder / "LICENSE-skfolio-sp500.txt").is_file()
    assert "skfolio" in (data.__doc__ or "")


# --------------------------------------------------------------------------- round trips


def test_long_csv_round_trip(tmp_path: Path) -> None:
    panel = _panel()
    path = tmp_path / "bars.csv"
    panel.to_frame().to_csv(path, index=False)
    loaded = load_panel(_cfg(path))
    assert loaded == panel and loaded.fingerprint == panel.fingerprint
    assert loaded.fields == ("open", "high", "low", "close", "volume")


def test_long_csv_gz_sorted_by_symbol_and_mixed_case_columns(tmp_path: Path) -> None:
    panel = _panel()
    frame = panel.to_frame().sort_values(["symbol", "date"], kind="stable")
    frame.columns = [c.upper() if c in ("date", "close") else c.title() for c in frame.columns]
    frame["date" if "date" in frame else "DATE"] = frame["DATE"].dt.strftime("%Y-%m-%d")
    path = tmp_path / "bars.csv.gz"
    frame.to_csv(path, index=False)
    assert load_panel(_cfg(path)) == panel


def test_wide_csv_round_trip(tmp_path: Path) -> None:
    panel = _panel(ohlcv=False)
    path = tmp_path / "closes.csv"
    _wide_frame(panel).to_csv(path, index=False)
    loaded = load_panel(_cfg(path))
    assert loaded == panel and loaded.symbols == panel.symbols
    assert load_panel(_cfg(path, format="wide")) == panel


@pytest.mark.parametrize("layout", ["long", "wide"])
def test_parquet_round_trip(tmp_path: Path, layout: str) -> None:
    panel = _panel(ohlcv=layout == "long")
    frame = panel.to_frame() if layout == "long" else panel.to_wide("close")
    path = tmp_path / f"bars.{layout}.parquet"
    frame.to_parquet(path, index=layout == "wide")
    assert load_panel(_cfg(path)) == panel


def test_parquet_with_tz_aware_and_date_objects(tmp_path: Path) -> None:
    panel = _panel(ohlcv=False)
    frame = panel.to_frame()
    frame["date"] = frame["date"].dt.tz_localize("Asia/Tokyo")
    path = tmp_path / "tz.parquet"
    frame.to_parquet(path)
    assert load_panel(_cfg(path)) == panel
    frame["date"] = [d.date() for d in panel.to_frame()["date"]]
    path2 = tmp_path / "dates.parquet"
    frame.to_parquet(path2)
    assert load_panel(_cfg(path2)) == panel


def test_yyyymmdd_integer_dates(tmp_path: Path) -> None:
    panel = _panel(ohlcv=False)
    frame = _wide_frame(panel)
    frame["date"] = frame["date"].str.replace("-", "").astype(int)
    path = tmp_path / "int_dates.csv"
    frame.to_csv(path, index=False)
    assert load_panel(_cfg(path)) == panel


def test_panel_from_frame_and_read_panel(tmp_path: Path) -> None:
    panel = _panel()
    assert panel_from_frame(panel.to_frame()) == panel
    path = tmp_path / "x.csv"
    panel.to_frame().to_csv(path, index=False)
    assert read_panel(path) == panel


# --------------------------------------------------------------------------- filters and cache


def test_symbols_and_dates_filters(tmp_path: Path) -> None:
    panel = _panel(t=40, n=5)
    path = tmp_path / "bars.csv"
    panel.to_frame().to_csv(path, index=False)
    start, end = dt.date(2021, 3, 5), dt.date(2021, 3, 20)
    sub = load_panel(_cfg(path, symbols=["SYM3", "SYM0"], start_date=start, end_date=end))
    assert sub.symbols == ("SYM3", "SYM0")
    assert sub.dates[0] >= np.datetime64(start) and sub.dates[-1] <= np.datetime64(end)
    assert sub.dates[0] == panel.dates[panel.index_of(start, "backfill")]
    assert sub == panel.slice(start, end).select(["SYM3", "SYM0"])


def test_filters_drop_empty_dates_and_unlisted_symbols(tmp_path: Path) -> None:
    panel = _panel(t=30, n=3, ohlcv=False)
    close = np.array(panel.close)
    close[7] = np.nan  # a date with no bar at all (wide file with an empty row)
    close[:15, 2] = np.nan  # SYM2 listed on the 16th date
    wide = Panel(dates=panel.dates, symbols=panel.symbols, close=close)
    path = tmp_path / "w.csv"
    _wide_frame(wide).to_csv(path, index=False)
    loaded = load_panel(_cfg(path, end_date=str(wide.dates[12])))
    assert loaded.symbols == ("SYM0", "SYM1")  # SYM2 has no close before its listing
    assert wide.dates[7] not in loaded.dates and loaded.n_dates == 12
    with pytest.raises(DataError) as err:
        load_panel(_cfg(path, symbols=["SYM2"], end_date=str(wide.dates[12])))
    assert err.value.field == "dataset_cfg.symbols" and "SYM2" in err.value.message


def test_cache_returns_the_same_panel_until_the_file_changes(tmp_path: Path) -> None:
    clear_cache()
    panel = _panel(ohlcv=False)
    path = tmp_path / "c.csv"
    _wide_frame(panel).to_csv(path, index=False)
    first = load_panel(_cfg(path))
    assert load_panel(_cfg(path)) is first
    assert load_panel(_cfg(tmp_path / "." / "c.csv")) is first  # same resolved path
    frame = _wide_frame(panel)
    frame.loc[3, "SYM0"] = 99.0
    frame.to_csv(path, index=False)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_panel(_cfg(path))
    assert second is not first and second.close[3, 0] == 99.0
    clear_cache()
    assert load_panel(_cfg(path)) is not second


def test_relative_paths_use_base_dir(tmp_path: Path) -> None:
    panel = _panel(ohlcv=False)
    _wide_frame(panel).to_csv(tmp_path / "rel.csv", index=False)
    assert load_panel(_cfg("rel.csv"), base_dir=tmp_path) == panel


# --------------------------------------------------------------------------- bad data


def _write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("date,A,B\n2021-01-04,1,2\n2021-01-06,1,2\n2021-01-05,1,2\n", ["not sorted", "2021-01-05", "row 3"]),
        ("date,A,B\n2021-01-04,1,2\n2021-01-04,1,2\n", ["duplicate date", "2021-01-04"]),
        ("date,A,B\n2021-01-04,1,2\n2021-01-05,-1,2\n", ["non-positive", "A", "2021-01-05", "-1.0"]),
        ("date,A,B\n2021-01-04,1,0\n", ["non-positive", "B"]),
        ("date,A,B\n2021-01-04,1,inf\n", ["non-finite", "B"]),
        ("date,A,B\n2021-01-04,1,abc\n", ["not numeric", "'B'", "abc"]),
        ("date,A,B\n2021-01-04,1,2\nnot-a-date,1,2\n", ["not dates", "not-a-date"]),
        ("date,A,A\n2021-01-04,1,2\n", ["duplicated column", "A"]),
        ("day,A,B\n2021-01-04,1,2\n", ["no 'date' column", "day"]),
        ("date,A\n", ["no rows"]),
        ("", ["empty"]),
        ("date,close\n2021-01-04,1\n", ["no 'symbol' column"]),
        (
            "date,symbol,close\n2021-01-04,A,1\n2021-01-05,A,2\n2021-01-04,A,3\n",
            ["duplicate (date, symbol)", "A", "2021-01-04", "row 3"],
        ),
        (
            "date,symbol,close\n2021-01-05,A,1\n2021-01-05,B,2\n2021-01-04,A,3\n",
            ["not sorted", "A", "2021-01-04", "row 3"],
        ),
        ("date,symbol,price\n2021-01-04,A,1\n", ["missing 'close' column", "price"]),
        ("date,symbol,close,volume\n2021-01-04,A,1,-5\n", ["volume", "negative", "A"]),
        ("date,symbol,close\n2021-01-04,,1\n", ["missing symbol", "row 1"]),
    ],
)
def test_bad_files_are_data_errors_on_the_source(tmp_path: Path, text: str, words: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_panel(_cfg(path))
    assert err.value.field == "dataset_cfg.source"
    for word in words:
        assert word in err.value.message, (word, err.value.message)


def test_long_file_sorted_by_date_then_symbol_is_fine(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "date,symbol,close\n2021-01-04,B,1\n2021-01-04,A,2\n2021-01-05,A,3\n2021-01-05,B,4\n"
    )
    panel = load_panel(_cfg(path))
    assert panel.symbols == ("A", "B")
    np.testing.assert_array_equal(panel.close, [[2.0, 1.0], [3.0, 4.0]])


def test_missing_unsupported_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_panel(_cfg(tmp_path / "nope.csv"))
    assert err.value.field == "dataset_cfg.source" and "not found" in err.value.message
    with pytest.raises(DataError) as err:
        load_panel(_cfg(_write(tmp_path, "x", "data.xlsx")))
    assert err.value.field == "dataset_cfg.source" and "unsupported" in err.value.message
    with pytest.raises(DataError) as err:
        load_panel(_cfg(_write(tmp_path, "not parquet at all", "broken.parquet")))
    assert err.value.field == "dataset_cfg.source" and "cannot read" in err.value.message
    with pytest.raises(DataError) as err:
        load_panel(_cfg(tmp_path))
    assert err.value.field == "dataset_cfg.source" and "not a file" in err.value.message


def test_unknown_symbols_are_listed(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_panel(_cfg("sp500", symbols=["AAPL", "NOPE", "ZZZ"]))
    assert err.value.field == "dataset_cfg.symbols"
    assert "NOPE" in err.value.message and "ZZZ" in err.value.message and "AAPL" not in err.value.message
    assert err.value.details["unknown"] == ["NOPE", "ZZZ"]


def test_empty_after_date_filter() -> None:
    with pytest.raises(DataError) as err:
        load_panel(_cfg("sp500", start_date="2030-01-01"))
    assert err.value.field == "dataset_cfg.start_date" and "2022-12-28" in err.value.message
    with pytest.raises(DataError) as err:
        load_panel(_cfg("sp500", end_date="1980-01-01"))
    assert err.value.field == "dataset_cfg.end_date"
    with pytest.raises(DataError) as err:
        load_panel(_cfg("sp500", start_date="2000-01-01", end_date="1999-01-01"))
    assert err.value.field == "dataset_cfg.end_date"
    with pytest.raises(DataError) as err:  # a weekend holds no trading date
        load_panel(_cfg("sp500", start_date="2020-01-04", end_date="2020-01-05"))
    assert err.value.field == "dataset_cfg.start_date" and "no data" in err.value.message


# --------------------------------------------------------------------------- Panel


def test_panel_arrays_are_read_only_copies() -> None:
    close = np.ones((3, 2))
    dates = np.array(["2021-01-04", "2021-01-05", "2021-01-06"], dtype="datetime64[D]")
    panel = Panel(dates=dates, symbols=("A", "B"), close=close)
    close[0, 0] = 5.0
    assert panel.close[0, 0] == 1.0
    assert panel.dates.dtype == np.dtype("datetime64[D]") and panel.symbols == ("A", "B")
    with pytest.raises(ValueError):
        panel.close[0, 0] = 2.0
    with pytest.raises(ValueError):
        panel.slice("2021-01-05", None).close[0, 0] = 2.0
    with pytest.raises(ValueError):
        panel.select(["B"]).close[0, 0] = 2.0


def test_slice_select_index_of_field() -> None:
    panel = _panel(t=20)
    sub = panel.slice(panel.dates[3], panel.dates[9])
    assert sub.n_dates == 7 and sub.dates[0] == panel.dates[3] and sub.dates[-1] == panel.dates[9]
    assert panel.slice(None, None) is panel
    weekend = np.datetime64("2021-03-06")  # a Saturday between two trading dates
    assert panel.index_of(weekend, "pad") == panel.index_of("2021-03-05")
    assert panel.index_of(weekend, "backfill") == panel.index_of("2021-03-08")
    with pytest.raises(DataError):
        panel.index_of(weekend)
    with pytest.raises(DataError):
        panel.slice("2030-01-01", None)
    sel = panel.select(["SYM2", "SYM0"])
    np.testing.assert_array_equal(sel.field("volume"), panel.field("volume")[:, [2, 0]])
    with pytest.raises(DataError) as err:
        panel.select(["SYM0", "BAD"])
    assert err.value.field == "dataset_cfg.symbols" and "BAD" in err.value.message
    np.testing.assert_array_equal(panel.field("high"), panel.high)
    with pytest.raises(DataError):
        Panel(dates=panel.dates, symbols=panel.symbols, close=panel.close).field("volume")
    with pytest.raises(InvalidArgument):
        panel.field("vwap")


def test_to_frame_is_long_and_skips_missing_bars() -> None:
    panel = _panel(t=20)
    frame = panel.to_frame()
    assert list(frame.columns) == ["date", "symbol", "open", "high", "low", "close", "volume"]
    assert len(frame) == 20 * 4 - 5 - 1
    assert len(panel.to_frame(dropna=False)) == 80
    row = frame[(frame.symbol == "SYM3") & (frame.date == pd.Timestamp(panel.dates[4]))].iloc[0]
    assert row.close == panel.close[4, 3]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"dates": ["2021-01-05", "2021-01-04"]}, "unsorted"),
        ({"dates": ["2021-01-04", "2021-01-04"]}, "duplicate"),
        ({"symbols": ["A", "A"]}, "unique"),
        ({"close": [[1.0, 2.0]]}, "shape"),
        ({"close": [[1.0, 2.0], [0.0, 1.0]]}, "non-positive"),
        ({"volume": [[1.0, -2.0], [1.0, 1.0]]}, "negative"),
        ({"dates": ["2021-01-04T10:00", "2021-01-05"]}, "time of day"),
    ],
)
def test_panel_validates_its_inputs(kwargs: dict, words: str) -> None:
    args: dict[str, Any] = {
        "dates": ["2021-01-04", "2021-01-05"],
        "symbols": ["A", "B"],
        "close": [[1.0, 2.0], [3.0, 4.0]],
    }
    args.update(kwargs)
    if "dates" in kwargs and "T" in kwargs["dates"][0]:
        args["dates"] = np.array(kwargs["dates"], dtype="datetime64[m]")
    with pytest.raises(DataError) as err:
        Panel(**args)
    assert words in err.value.message


def test_fingerprint_is_content_sensitive() -> None:
    panel = _panel()
    base = panel.fingerprint
    assert len(base) == 64 and int(base, 16) >= 0
    same = Panel(
        dates=panel.dates,
        symbols=panel.symbols,
        close=np.array(panel.close),
        open=panel.open,
        high=panel.high,
        low=panel.low,
        volume=panel.volume,
    )
    assert same.fingerprint == base and same == panel and hash(same) == hash(panel)
    close = np.array(panel.close)
    close[17, 3] = np.nextafter(close[17, 3], np.inf)
    variants = [
        Panel(
            dates=panel.dates,
            symbols=panel.symbols,
            close=close,
            open=panel.open,
            high=panel.high,
            low=panel.low,
            volume=panel.volume,
        ),
        Panel(
            dates=panel.dates + 1,
            symbols=panel.symbols,
            close=panel.close,
            open=panel.open,
            high=panel.high,
            low=panel.low,
            volume=panel.volume,
        ),
        Panel(
            dates=panel.dates,
            symbols=("SYM0", "SYM1", "SYM2", "SYMX"),
            close=panel.close,
            open=panel.open,
            high=panel.high,
            low=panel.low,
            volume=panel.volume,
        ),
        Panel(
            dates=panel.dates,
            symbols=panel.symbols,
            close=panel.close,
            open=panel.open,
            high=panel.high,
            low=panel.low,
        ),
        Panel(
            dates=panel.dates,
            symbols=panel.symbols,
            close=panel.close,
            high=panel.open,
            open=panel.high,
            low=panel.low,
            volume=panel.volume,
        ),
        panel.select(list(reversed(panel.symbols))),
        panel.slice(panel.dates[1], None),
    ]
    prints = {v.fingerprint for v in variants}
    assert base not in prints and len(prints) == len(variants)


def test_fingerprint_is_stable_across_processes() -> None:
    panel = load_panel(_cfg("sp500"))
    code = (
        "from alphaswarm_common.config import DatasetConfig\n"
        "from alphaswarm_common.data import load_panel\n"
        "cfg = DatasetConfig(segments={'train': ['1990-01-01', '2015-12-31'], 'test': ['2016-01-01', '2022-12-31']})\n"
        "print(load_panel(cfg).fingerprint)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == panel.fingerprint
