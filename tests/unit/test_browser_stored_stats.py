"""The run page's stored statistics: the audit as the store gives it back, the artifact's round
trip, and a run whose statistics cannot be stored still succeeds (the page computes them)."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_gateway import saga
from alphaswarm_gateway.browser import stored
from alphaswarm_gateway.browser.analytics import audit_from_arrays
from alphaswarm_gateway.browser.series import audit_stats
from tests.e2e.conftest import small_run


def _fields(rng: np.random.Generator, t: int, n: int) -> dict[str, np.ndarray]:
    pred = rng.normal(size=(t, n))
    pred[0, :] = np.nan  # a date without predictions drops out
    pred[:, 2] = np.nan  # so does a symbol without any
    pred[3, 1] = np.nan
    return {
        "prediction": pred,
        "realized": rng.normal(0, 0.01, (t, n)),
        "target": rng.normal(0, 0.1, (t, n)),
        "held": rng.normal(0, 0.1, (t, n)),
        "pnl": rng.normal(0, 0.001, (t, n)),
    }


def test_the_audit_is_rebuilt_as_the_store_gives_it_back() -> None:
    rng = np.random.default_rng(3)
    dates = [f"2020-01-{d:02d}" for d in range(1, 9)]
    symbols = ["ZZ", "AA", "MM", "BB", "CC"]
    fields = _fields(rng, 8, 5)
    audit = audit_from_arrays(dates, symbols, fields)
    assert audit.dates == dates[1:]
    assert audit.symbols == ["AA", "BB", "CC", "ZZ"]
    assert audit.prediction.dtype == np.float32
    col = {s: i for i, s in enumerate(symbols)}
    for j, sym in enumerate(audit.symbols):
        c = col[sym]
        expected = np.where(np.isnan(fields["prediction"][1:, c]), np.nan, fields["held"][1:, c])
        np.testing.assert_array_equal(audit.held[:, j], expected.astype(np.float32))
    # where there is no prediction, nothing else is kept
    t, j = audit.dates.index("2020-01-04"), audit.symbols.index("AA")
    assert np.isnan(audit.held[t, j]) and np.isnan(audit.realized[t, j])


@pytest.mark.parametrize("n_symbols", [1, 12])
def test_the_artifact_round_trips(n_symbols: int) -> None:
    rng = np.random.default_rng(5)
    dates = [str(d) for d in np.busday_offset(np.datetime64("2021-01-04"), np.arange(40), roll="forward")]
    symbols = [f"S{i:02d}" for i in range(n_symbols)]
    fields = {
        k: rng.normal(size=(40, n_symbols)) for k in ("prediction", "realized", "target", "held", "pnl")
    }
    config = AlphaBacktestConfig.model_validate(small_run()).model_dump(mode="json")
    doc = audit_stats(audit_from_arrays(dates, symbols, fields), dates, config)
    back, last = stored.from_bytes(stored.build(dates, symbols, fields, config))
    assert set(back) == set(doc)
    for key in ("ic_decay", "deciles", "notes", "audit_dates", "audit_symbols"):
        if key in doc:
            assert back[key] == doc[key]
    if "ic" in doc:
        np.testing.assert_array_equal(back["ic"]["rank_ic"], doc["ic"]["rank_ic"])
        np.testing.assert_array_equal(back["buy_and_hold"], doc["buy_and_hold"])
        assert [s for s, _ in back["weights"]] == [s for s, _ in doc["weights"]]
    assert last["date"] == dates[-1]
    np.testing.assert_array_equal(last["prediction"], fields["prediction"][-1].astype(np.float32))


def test_a_failed_write_does_not_fail_the_run(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*_: Any) -> None:
        raise ConnectionError("tracking server unreachable")

    ctx: Any = SimpleNamespace(
        gw=SimpleNamespace(tracker=SimpleNamespace(log_files=refuse)),
        cfg=AlphaBacktestConfig.model_validate(small_run()),
        parent_run_id="p",
        run_id="r",
    )
    rng = np.random.default_rng(1)
    fields = _fields(rng, 6, 4)
    with caplog.at_level(logging.WARNING):
        asyncio.run(saga._store_run_page(ctx, [f"2020-02-0{d}" for d in range(1, 7)], list("ABCD"), fields))
    assert "run page statistics not stored" in caplog.text
