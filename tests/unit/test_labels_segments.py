"""Labels (forward returns with execution lag) and purged segments."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_common.config import DatasetConfig, Segments
from alphaswarm_common.data import Panel, validate_segments
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.labels import make_labels, segment_rows

pytestmark = pytest.mark.unit


def _close(t: int = 60, n: int = 6, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0))
    close[:5, 0] = np.nan
    close[20, 1] = np.nan
    return close


def _hand_labels(close: np.ndarray, h: int, lag: int) -> np.ndarray:
    t_rows, n = close.shape
    out = np.full((t_rows, n), np.nan)
    for t in range(t_rows):
        for i in range(n):
            if t + lag + h < t_rows:
                out[t, i] = close[t + lag + h, i] / close[t + lag, i] - 1.0
    return out


@pytest.mark.parametrize(("h", "lag"), [(1, 0), (1, 1), (5, 1), (3, 2), (1, 4)])
def test_raw_labels_match_a_hand_loop(h: int, lag: int) -> None:
    close = _close()
    labels = make_labels(close, horizon=h, execution_lag=lag)
    expected = _hand_labels(close, h, lag)
    np.testing.assert_array_equal(np.isnan(labels), np.isnan(expected))
    np.testing.assert_allclose(labels, expected, rtol=1e-15)
    assert np.isnan(labels[-(h + lag) :]).all()


def test_one_dimensional_close() -> None:
    close = _close()[:, 2]
    labels = make_labels(close, horizon=2, execution_lag=1)
    assert labels.shape == close.shape
    np.testing.assert_allclose(labels, _hand_labels(close[:, None], 2, 1)[:, 0])


def test_demean_subtracts_the_cross_sectional_mean() -> None:
    close = _close()
    raw = pd.DataFrame(_hand_labels(close, 1, 1))
    expected = raw.sub(raw.mean(axis=1), axis=0).to_numpy()
    labels = make_labels(close, horizon=1, execution_lag=1, transform="demean")
    np.testing.assert_allclose(labels, expected, atol=1e-15)
    np.testing.assert_allclose(np.nanmean(labels[:-2], axis=1), 0.0, atol=1e-15)


def test_rank_is_the_cross_sectional_percentile() -> None:
    close = _close()
    raw = _hand_labels(close, 3, 1)
    labels = make_labels(close, horizon=3, execution_lag=1, transform="rank")
    for t in range(close.shape[0]):
        ok = ~np.isnan(raw[t])
        if ok.sum() < 2:
            assert np.isnan(labels[t]).all() or ok.sum() == 1
            continue
        expected = (stats.rankdata(raw[t, ok]) - 1) / (ok.sum() - 1)
        np.testing.assert_allclose(labels[t, ok], expected, atol=1e-15)
        assert np.isnan(labels[t, ~ok]).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"horizon": 0, "execution_lag": 1}, "dataset_cfg.label.horizon"),
        ({"horizon": 1, "execution_lag": -1}, "dataset_cfg.label.execution_lag"),
        ({"horizon": 1, "execution_lag": 1, "transform": "zscore"}, "dataset_cfg.label.transform"),
    ],
)
def test_label_argument_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        make_labels(_close(), **kwargs)
    assert err.value.field == field


# --------------------------------------------------------------------------- segments


def _dates(n: int = 400) -> np.ndarray:
    return pd.bdate_range("2020-01-01", periods=n).to_numpy().astype("datetime64[D]")


def _segments(**ranges: tuple[str, str]) -> Segments:
    return Segments.model_validate({k: list(v) for k, v in ranges.items()})


@pytest.mark.parametrize(("lag", "h", "embargo"), [(0, 1, 0), (1, 1, 0), (1, 5, 0), (2, 3, 4)])
def test_purging_keeps_every_label_inside_its_segment(lag: int, h: int, embargo: int) -> None:
    dates = _dates()
    seg = _segments(
        train=("2020-01-01", "2020-06-30"),
        valid=("2020-07-01", "2020-09-30"),
        test=("2020-10-01", "2021-12-31"),
    )
    rows = segment_rows(dates, seg, execution_lag=lag, horizon=h, embargo=embargo)
    assert list(rows) == ["train", "valid", "test"]
    assert seg.valid is not None
    order = [("train", seg.train), ("valid", seg.valid), ("test", seg.test)]
    for (name, s), (_, nxt) in itertools.pairwise(order):
        idx = rows[name]
        label_end = dates[idx + lag + h]  # the date the label of each row is realised
        assert label_end.max() < np.datetime64(nxt.start)
        # exactly lag + h + embargo dates are dropped, no more
        in_range = np.flatnonzero((dates >= np.datetime64(s.start)) & (dates <= np.datetime64(s.end)))
        np.testing.assert_array_equal(idx, in_range[: in_range.size - (lag + h + embargo)])
        if embargo == 0:
            assert dates[idx[-1] + lag + h] == dates[in_range[-1]]
    last = rows["test"]
    np.testing.assert_array_equal(dates[last], dates[dates >= np.datetime64("2020-10-01")])


def test_missing_valid_and_gaps_between_segments() -> None:
    dates = _dates()
    seg = _segments(train=("2019-06-01", "2020-03-31"), test=("2020-05-01", "2020-08-31"))
    rows = segment_rows(dates, seg, execution_lag=1, horizon=2, embargo=0)
    assert list(rows) == ["train", "test"]
    in_train = np.flatnonzero(dates <= np.datetime64("2020-03-31"))
    np.testing.assert_array_equal(rows["train"], in_train[:-3])
    assert dates[rows["test"][0]] == np.datetime64("2020-05-01")


def test_empty_and_fully_purged_segments_name_the_field() -> None:
    dates = _dates(100)
    with pytest.raises(DataError) as err:
        segment_rows(
            dates,
            _segments(
                train=("2020-01-01", "2020-02-28"),
                valid=("2020-03-07", "2020-03-08"),
                test=("2020-03-10", "2020-12-31"),
            ),
            execution_lag=1,
            horizon=1,
        )
    assert err.value.field == "dataset_cfg.segments.valid" and "no date" in err.value.message
    with pytest.raises(DataError) as err:
        segment_rows(
            dates,
            _segments(train=("2020-01-01", "2020-01-03"), test=("2020-01-06", "2020-12-31")),
            execution_lag=1,
            horizon=1,
            embargo=1,
        )
    assert err.value.field == "dataset_cfg.segments.train" and "purged" in err.value.message


def _config(**segments: tuple[str, str]) -> DatasetConfig:
    return DatasetConfig.model_validate({"segments": {k: list(v) for k, v in segments.items()}})


def test_validate_segments() -> None:
    dates = _dates(300)
    panel = Panel(dates=dates, symbols=("A",), close=np.ones((300, 1)))
    rows = validate_segments(
        panel, _config(train=("2020-01-01", "2020-06-30"), test=("2020-07-01", "2021-12-31"))
    )
    assert set(rows) == {"train", "test"}

    with pytest.raises(DataError) as err:
        validate_segments(
            panel, _config(train=("2020-01-01", "2020-06-30"), test=("2022-01-01", "2022-12-31"))
        )
    assert err.value.field == "dataset_cfg.segments.test" and "outside the data" in err.value.message

    short = _config(
        train=("2020-01-01", "2020-01-20"),
        valid=("2020-01-21", "2020-06-30"),
        test=("2020-07-01", "2020-12-31"),
    )
    with pytest.raises(DataError) as err:
        validate_segments(panel, short)
    assert err.value.field == "dataset_cfg.segments.train" and "at least 20" in err.value.message
    assert err.value.details["usable_dates"] == 14 - 2
    assert validate_segments(panel, short, min_dates={"train": 12})["train"].size == 12

    tiny_test = _config(train=("2020-01-01", "2021-02-18"), test=("2021-02-19", "2021-12-31"))
    with pytest.raises(DataError) as err:
        validate_segments(panel, tiny_test)
    assert err.value.field == "dataset_cfg.segments.test" and "at least 5" in err.value.message


def test_segment_rows_accepts_dates_from_config_types() -> None:
    dates = np.array([dt.date(2020, 1, d) for d in range(1, 31)], dtype="datetime64[D]")
    rows = segment_rows(
        dates,
        _segments(train=("2020-01-01", "2020-01-15"), test=("2020-01-16", "2020-01-30")),
        execution_lag=1,
        horizon=1,
    )
    np.testing.assert_array_equal(rows["train"], np.arange(13))
