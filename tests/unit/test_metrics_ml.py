"""ML metrics against scipy.stats / scikit-learn on seeded random panels, plus `MetricSet` invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error

from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.metrics import ICMethod, MetricSet, ic_series, ml_metrics

pytestmark = pytest.mark.unit


def _panel(seed: int, n_dates: int = 60, n_symbols: int = 25, *, holes: float = 0.15, ties: bool = False):
    """Predictions weakly correlated with labels, NaN holes, and some degenerate dates."""
    rng = np.random.default_rng(seed)
    labels = rng.standard_normal((n_dates, n_symbols)) * 0.02
    preds = 0.3 * labels / 0.02 + rng.standard_normal((n_dates, n_symbols))
    if ties:  # coarse values: many ties on both sides
        preds = np.round(preds, 0)
        labels = np.round(labels, 2)
    preds[rng.random(preds.shape) < holes] = np.nan
    labels[rng.random(labels.shape) < holes] = np.nan
    preds[3, :] = 1.5  # constant predictions: skipped
    labels[7, :] = 0.01  # constant labels: skipped
    preds[11, 2:] = np.nan  # at most 2 pairs
    labels[13, 1:] = np.nan  # at most 1 pair: skipped
    return preds, labels


def _scipy_ic(preds: np.ndarray, labels: np.ndarray, method: str, min_symbols: int = 2) -> np.ndarray:
    """Reference: scipy per date on the pairs with both values; NaN where undefined."""
    out = np.full(preds.shape[0], np.nan)
    for t in range(preds.shape[0]):
        ok = ~np.isnan(preds[t]) & ~np.isnan(labels[t])
        x, y = preds[t, ok], labels[t, ok]
        if ok.sum() < min_symbols or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        fn = stats.spearmanr if method == "spearman" else stats.pearsonr
        out[t] = fn(x, y).statistic
    return out


# ----------------------------------------------------------------------------- ic_series


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["spearman", "pearson"])
@pytest.mark.parametrize("ties", [False, True])
def test_ic_series_matches_scipy_per_date(seed: int, method: ICMethod, ties: bool) -> None:
    preds, labels = _panel(seed, ties=ties)
    got = ic_series(preds, labels, method)
    want = _scipy_ic(preds, labels, method)
    assert got.shape == (preds.shape[0],)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # the degenerate dates are skipped, not zero
    assert np.isnan(got[[3, 7, 13]]).all()


def test_ic_series_min_symbols_skips_thin_dates() -> None:
    preds, labels = _panel(4, n_dates=30, n_symbols=8, holes=0.3)
    got = ic_series(preds, labels, "spearman", min_symbols=5)
    want = _scipy_ic(preds, labels, "spearman", min_symbols=5)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    counts = (~np.isnan(preds) & ~np.isnan(labels)).sum(axis=1)
    assert np.isnan(got[counts < 5]).all()


def test_ic_series_threaded_equals_serial_on_a_large_panel() -> None:
    rng = np.random.default_rng(9)
    labels = rng.standard_normal((900, 2500))
    preds = np.round(0.1 * labels + rng.standard_normal(labels.shape), 1)  # ties too
    preds[rng.random(preds.shape) < 0.05] = np.nan
    serial = ic_series(preds, labels, n_threads=1)
    threaded = ic_series(preds, labels, n_threads=4)
    np.testing.assert_array_equal(serial, threaded)
    rows = [0, 450, 899]
    np.testing.assert_allclose(serial[rows], _scipy_ic(preds[rows], labels[rows], "spearman"), rtol=1e-12)


def test_ic_series_identical_sides_correlate_exactly_one() -> None:
    a = np.random.default_rng(3).standard_normal((20, 30))
    assert (ic_series(a, a, "spearman") == 1.0).all()
    assert (ic_series(a, a, "pearson") == 1.0).all()
    assert (ic_series(a, -a, "pearson") == -1.0).all()


def test_ic_series_rejects_bad_input() -> None:
    a = np.zeros((5, 3))
    with pytest.raises(InvalidArgument) as err:
        ic_series(a, np.zeros((5, 4)))
    assert err.value.field == "labels"
    with pytest.raises(InvalidArgument) as err:
        ic_series(a, a, "kendall")  # type: ignore[arg-type]
    assert err.value.field == "method"
    with pytest.raises(InvalidArgument) as err:
        ic_series(a, a, min_symbols=1)
    assert err.value.field == "min_symbols"
    bad = a.copy()
    bad[1, 1] = np.inf
    with pytest.raises(DataError) as err:
        ic_series(bad, a)
    assert err.value.field == "predictions"
    with pytest.raises(InvalidArgument) as err:
        ic_series(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    assert err.value.field == "predictions"


# ----------------------------------------------------------------------------- ml_metrics, cross-sectional


@pytest.mark.parametrize("seed", [0, 5])
def test_ml_metrics_cross_sectional_against_references(seed: int) -> None:
    preds, labels = _panel(seed, n_dates=80, n_symbols=30)
    preds[5, 4] = 0.0  # zero prediction: not a directional pair
    labels[6, 9] = 0.0
    ms = ml_metrics(preds, labels)

    rank_ic = _scipy_ic(preds, labels, "spearman")
    ic = _scipy_ic(preds, labels, "pearson")
    valid = rank_ic[~np.isnan(rank_ic)]
    icir = valid.mean() / valid.std(ddof=1)
    assert ms.conventions["ic_mode"] == "cross_sectional"
    assert ms["n_dates"] == valid.size
    assert ms["ic_spearman"] == pytest.approx(valid.mean(), rel=1e-12)
    assert ms["ic_pearson"] == pytest.approx(np.nanmean(ic), rel=1e-12)
    assert ms["icir"] == pytest.approx(icir, rel=1e-10)
    assert ms["ic_tstat"] == pytest.approx(icir * math.sqrt(valid.size), rel=1e-10)

    both = ~np.isnan(preds) & ~np.isnan(labels)
    p, y = preds[both], labels[both]
    assert ms["n_pairs"] == both.sum()
    assert ms["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert ms["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, p)), rel=1e-12)
    directional = (p != 0) & (y != 0)
    assert ms["hit_rate"] == pytest.approx(np.mean(np.sign(p[directional]) == np.sign(y[directional])))
    assert ms.reasons == {}
    json.dumps(ms.to_dict(), allow_nan=False)


def test_icir_is_not_annualised_and_uses_ddof_1() -> None:
    preds, labels = _panel(11, n_dates=40)
    rank_ic = ic_series(preds, labels)
    valid = rank_ic[~np.isnan(rank_ic)]
    ms = ml_metrics(preds, labels)
    assert ms["icir"] == pytest.approx(np.mean(valid) / np.std(valid, ddof=1), rel=1e-12)
    assert ms["icir"] != pytest.approx(np.mean(valid) / np.std(valid, ddof=0), rel=1e-6)
    assert ms.conventions["icir_ddof"] == 1
    assert ms.conventions["icir_annualized"] is False


# ----------------------------------------------------------------------------- ml_metrics, time series


def _block_reference(x: np.ndarray, y: np.ndarray, block: int) -> np.ndarray:
    out = []
    for start in range(0, (x.size // block) * block, block):
        xs, ys = x[start : start + block], y[start : start + block]
        ok = ~np.isnan(xs) & ~np.isnan(ys)
        if ok.sum() >= 2 and np.ptp(xs[ok]) > 0 and np.ptp(ys[ok]) > 0:
            out.append(stats.spearmanr(xs[ok], ys[ok]).statistic)
    return np.asarray(out)


@pytest.mark.parametrize("block", [21, 10])
def test_ml_metrics_one_symbol_uses_time_series_mode(block: int) -> None:
    rng = np.random.default_rng(21)
    labels = rng.standard_normal(250) * 0.01  # 250 = 11 full 21-bar blocks + 19 dropped bars
    preds = 0.2 * labels / 0.01 + rng.standard_normal(250)
    preds[[4, 40, 41]] = np.nan
    ms = ml_metrics(preds, labels, ts_block=block)

    ok = ~np.isnan(preds)
    assert ms.conventions["ic_mode"] == "time_series"
    assert ms.conventions["ts_block"] == block
    assert ms["ic_spearman"] == pytest.approx(stats.spearmanr(preds[ok], labels[ok]).statistic, rel=1e-12)
    assert ms["ic_pearson"] == pytest.approx(stats.pearsonr(preds[ok], labels[ok]).statistic, rel=1e-12)
    blocks = _block_reference(preds, labels, block)
    assert ms["n_blocks"] == blocks.size == 250 // block
    icir = blocks.mean() / blocks.std(ddof=1)
    assert ms["icir"] == pytest.approx(icir, rel=1e-10)
    assert ms["ic_tstat"] == pytest.approx(icir * math.sqrt(blocks.size), rel=1e-10)
    assert ms["n_dates"] == ok.sum()
    assert ms["mae"] == pytest.approx(mean_absolute_error(labels[ok], preds[ok]), rel=1e-12)


def test_a_single_column_with_data_is_a_one_symbol_universe() -> None:
    rng = np.random.default_rng(2)
    preds = np.full((100, 4), np.nan)
    labels = rng.standard_normal((100, 4))
    preds[:, 2] = rng.standard_normal(100)
    ms = ml_metrics(preds, labels)
    assert ms.conventions["ic_mode"] == "time_series"
    assert ms["ic_spearman"] == pytest.approx(stats.spearmanr(preds[:, 2], labels[:, 2]).statistic)
    assert ms.conventions["n_symbols"] == 4


def test_time_series_too_short_for_two_blocks() -> None:
    rng = np.random.default_rng(8)
    ms = ml_metrics(rng.standard_normal(30), rng.standard_normal(30))
    assert ms["ic_spearman"] is not None
    assert ms["icir"] is None and "fewer than 2" in (ms.reason("icir") or "")
    assert ms["n_blocks"] == 1


# ----------------------------------------------------------------------------- undefined values


def test_all_missing_gives_none_with_reasons_and_strict_json() -> None:
    ms = ml_metrics(np.full((10, 5), np.nan), np.ones((10, 5)))
    for name in ("ic_spearman", "ic_pearson", "icir", "ic_tstat", "mae", "rmse", "hit_rate"):
        assert ms[name] is None
        assert ms.reason(name)
    assert ms["n_pairs"] == 0 and ms["n_dates"] == 0
    text = json.dumps(ms.to_dict(), allow_nan=False)
    assert MetricSet.from_dict(json.loads(text)) == ms


def test_constant_predictions_skip_every_date() -> None:
    labels = np.random.default_rng(0).standard_normal((12, 6))
    ms = ml_metrics(np.ones((12, 6)), labels)
    assert ms["ic_spearman"] is None and ms["ic_pearson"] is None
    assert "non-constant" in (ms.reason("ic_spearman") or "")
    assert ms["mae"] is not None and ms["n_dates"] == 0


def test_constant_ic_series_has_undefined_icir() -> None:
    a = np.random.default_rng(1).standard_normal((15, 10))
    ms = ml_metrics(a, a)  # RankIC = 1 on every date
    assert ms["ic_spearman"] == 1.0
    assert ms["icir"] is None and ms.reason("icir") == "zero variance of the date rank IC"
    assert ms["ic_tstat"] is None


def test_single_valid_date_has_ic_but_no_icir() -> None:
    rng = np.random.default_rng(4)
    preds = np.full((5, 6), np.nan)
    preds[2] = rng.standard_normal(6)
    labels = rng.standard_normal((5, 6))
    ms = ml_metrics(preds, labels)
    assert ms["n_dates"] == 1
    assert ms["ic_spearman"] == pytest.approx(stats.spearmanr(preds[2], labels[2]).statistic)
    assert ms["icir"] is None and ms.reason("icir") == "fewer than 2 dates with a defined IC"


def test_zero_predictions_leave_hit_rate_undefined() -> None:
    ms = ml_metrics(np.zeros((4, 3)), np.random.default_rng(0).standard_normal((4, 3)))
    assert ms["hit_rate"] is None and ms.reason("hit_rate")


def test_overflowing_errors_are_none_not_inf() -> None:
    a = np.random.default_rng(0).standard_normal((6, 5)) * 1e200
    ms = ml_metrics(a, -a)
    assert ms["rmse"] is None and "not finite" in (ms.reason("rmse") or "")
    assert ms["ic_pearson"] == -1.0
    json.dumps(ms.to_dict(), allow_nan=False)


def test_ml_metrics_rejects_bad_arguments() -> None:
    a = np.zeros((4, 3))
    with pytest.raises(InvalidArgument) as err:
        ml_metrics(a, np.zeros((3, 3)))
    assert err.value.field == "labels"
    with pytest.raises(InvalidArgument) as err:
        ml_metrics(a, a, ts_block=1)
    assert err.value.field == "ts_block"
    with pytest.raises(InvalidArgument) as err:
        ml_metrics(a, a, n_threads=0)
    assert err.value.field == "n_threads"


# ----------------------------------------------------------------------------- MetricSet


def test_metric_set_round_trips_and_is_read_only() -> None:
    ms = MetricSet(
        values={"a": np.float64(1.5), "n": np.int64(3), "b": None},  # type: ignore[dict-item]
        reasons={"b": "zero variance"},
        conventions={"ppy": np.float64(252.0), "nested": {"k": [np.int32(1), 2.5]}},
    )
    assert isinstance(ms["a"], float) and isinstance(ms["n"], int)
    assert ms.get("missing") is None and ms.get("missing", 0.0) == 0.0
    assert "a" in ms and "missing" not in ms
    assert ms.reason("b") == "zero variance" and ms.reason("a") is None
    doc = ms.to_dict()
    assert doc == {
        "values": {"a": 1.5, "n": 3, "b": None},
        "reasons": {"b": "zero variance"},
        "conventions": {"ppy": 252.0, "nested": {"k": [1, 2.5]}},
    }
    assert MetricSet.from_dict(json.loads(json.dumps(doc, allow_nan=False))) == ms
    with pytest.raises(TypeError):
        ms.values["a"] = 2.0  # type: ignore[index]
    doc["values"]["a"] = 99.0  # to_dict hands out copies
    assert ms["a"] == 1.5


@pytest.mark.parametrize(
    ("values", "reasons", "field"),
    [
        ({"a": float("nan")}, {}, "values.a"),
        ({"a": float("inf")}, {}, "values.a"),
        ({"a": None}, {}, "reasons.a"),
        ({"a": 1.0}, {"a": "why"}, "reasons.a"),
        ({"a": True}, {}, "values.a"),
        ({"a": "1.0"}, {}, "values.a"),
    ],
)
def test_metric_set_rejects_values_that_break_the_contract(values, reasons, field) -> None:
    with pytest.raises(InvalidArgument) as err:
        MetricSet(values=values, reasons=reasons)
    assert err.value.field == field


def test_metric_set_rejects_non_json_conventions() -> None:
    with pytest.raises(InvalidArgument) as err:
        MetricSet(values={}, conventions={"x": float("nan")})
    assert err.value.field == "conventions.x"
    with pytest.raises(InvalidArgument):
        MetricSet(values={}, conventions={"x": object()})
    with pytest.raises(InvalidArgument):
        MetricSet.from_dict({"values": {}, "extra": 1})
