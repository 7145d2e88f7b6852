"""The run page's trades: the MAE / MFE scatter's sample keeps every trade up to its limit and,
beyond, the extremes and the shape of the P&L distribution, the same each time; the ledger by
trade number pages through the catalog's keyset pages without reading the whole ledger."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from alphaswarm_gateway.browser import api
from alphaswarm_gateway.browser.data import RunData
from alphaswarm_gateway.browser.series import trade_sample

pytestmark = pytest.mark.unit


def _trades(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    pnl = rng.standard_t(3, size=n) * 0.02
    mae = -np.abs(rng.normal(size=n)) * 0.03
    mfe = np.abs(rng.normal(size=n)) * 0.03
    rows = [
        {
            "trade_number": i + 1,
            "mae": float(mae[i]),
            "mfe": float(mfe[i]),
            "pnl_percent": float(pnl[i]),
            "symbol": f"S{i % 7}",
            "pnl": 1.0,
        }
        for i in range(n)
    ]
    rows[5]["mae"] = None  # a trade still open: no MAE yet
    return rows


def test_every_trade_up_to_the_limit() -> None:
    trades = _trades(150)
    got = trade_sample(trades, limit=150)
    assert [t["trade_number"] for t in got] == list(range(1, 151))
    assert set(got[0]) == {"trade_number", "mae", "mfe", "pnl_percent", "symbol"}


def test_beyond_the_limit_a_deterministic_sample_that_keeps_the_extremes() -> None:
    trades = _trades(20_000)
    got = trade_sample(trades, limit=2_000)
    assert len(got) == 2_000
    assert got == trade_sample(trades, limit=2_000)  # deterministic
    numbers = [t["trade_number"] for t in got]
    assert numbers == sorted(set(numbers))  # by trade number, no repeats
    for key in ("mae", "mfe", "pnl_percent"):
        values = [t[key] for t in trades if t[key] is not None]
        shown = [t[key] for t in got if t[key] is not None]
        assert min(shown) == min(values) and max(shown) == max(values), key
    # stratified over P&L: its quantiles are those of all the trades
    all_pnl = np.array([t["pnl_percent"] for t in trades])
    got_pnl = np.array([t["pnl_percent"] for t in got])
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(got_pnl, q) - np.quantile(all_pnl, q)) < 0.002, q


class _Ledger:
    """The catalog's keyset pages over `n` trades (ListBacktestTrades), counting the rows read."""

    def __init__(self, n: int) -> None:
        self.rows = _trades(n)
        self.read = 0
        self.calls = 0

    async def page(
        self, gw: Any, backtest_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[dict[str, Any]], str, int]:
        start = int(page_token or 0)
        got = self.rows[start : start + page_size]
        self.read += len(got)
        self.calls += 1
        end = start + len(got)
        return got, (str(end) if end < len(self.rows) else ""), len(self.rows)


def _data(ledger: _Ledger, first: int) -> RunData:
    return RunData(
        run={},
        config={},
        combined={},
        dates=[],
        equity=np.zeros(0),
        drawdown=np.zeros(0),
        initial_capital=1.0,
        conventions={},
        trades_total=len(ledger.rows),
        first_trades=ledger.rows[:first],
        audit=None,
        audit_reason=None,
        backtest_id="b",
    )


def test_ledger_pages_by_trade_number_read_only_what_they_show(monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = _Ledger(1_000)
    monkeypatch.setattr(api, "trade_page", ledger.page)
    data = _data(ledger, first=100)

    async def slice_(start: int, size: int) -> list[int]:
        return [t["trade_number"] for t in await api._trades_slice(None, data, start, size)]  # type: ignore[arg-type]

    assert asyncio.run(slice_(100, 25)) == list(range(101, 126))
    assert ledger.read == 125  # from the start once (no token known yet)
    assert asyncio.run(slice_(125, 25)) == list(range(126, 151))
    assert ledger.read == 150  # the next page from the kept token
    assert asyncio.run(slice_(975, 50)) == list(range(976, 1001))  # the last, short page
    assert data.trades is None  # the whole ledger was never kept
