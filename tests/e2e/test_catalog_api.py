"""The catalog's REST reads over a real socket, on data written through the persistence service's gRPC API.

The session's embedded stack is shared with other e2e tests, so every row
written here carries a tag of its own (symbol, strategy type, portfolio name)
and the assertions filter on it. Expected values come from what was sent
(rounded to the seed's column scales by Python's `decimal`) and from pandas
for rankings and aggregates.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
from google.protobuf import timestamp_pb2

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.protoconv import array_to_proto, metricset_to_proto, struct_from_dict

pytestmark = pytest.mark.e2e

TAG = uuid.uuid4().hex[:6].upper()
SYMBOLS = [f"E{TAG}A", f"E{TAG}B"]  # 7 characters: the seed's symbol column holds 10
STRATEGY = f"e2e-catalog-{TAG}"
PORTFOLIO = f"e2e-portfolio-{TAG}"
NOW = dt.datetime.now(dt.UTC)


def _fit(value: float | None, scale: int) -> float | None:
    if value is None:
        return None
    q = decimal.Decimal(repr(value)).quantize(
        decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP
    )
    return float(q)


def _ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def _get(rest_url: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(rest_url + path, params={k: v for k, v in params.items() if v is not None}, timeout=30)


def _pages(rest_url: str, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = None
    for _ in range(200):
        resp = _get(rest_url, path, page_token=token, **params)
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        items += doc["items"]
        token = doc["next_page_token"]
        if token is None:
            return items
    raise AssertionError("no last page")


@pytest.fixture(scope="module")
def stub(stack: EmbeddedStack) -> Iterator[pb_grpc.PersistenceServiceStub]:
    assert stack.settings.persistence_addr
    chan = channel(stack.settings.persistence_addr)
    yield pb_grpc.PersistenceServiceStub(chan)
    chan.close()


@pytest.fixture(scope="module")
def seeded(stub: pb_grpc.PersistenceServiceStub) -> dict[str, Any]:
    """Six backtests (one with trades and series), an optimization, a walk-forward test and two portfolios."""
    rng = np.random.default_rng(4242)
    backtests: list[dict[str, Any]] = []
    sharpes = [1.25, None, 2.5, 2.5, -0.5, 0.75]
    drawdowns = [-0.2, -0.05, -0.3, None, -0.05, -0.15]
    dates = [str(d) for d in pd.bdate_range("2021-01-04", periods=30).date]
    for i in range(6):
        metrics = {
            "sharpe": sharpes[i],
            "max_drawdown": drawdowns[i],
            "total_return": float(np.round(rng.normal(0.05, 0.1), 4)),
            "volatility": float(np.round(rng.uniform(0.1, 0.3), 4)),
            "win_rate": float(np.round(rng.uniform(0.3, 0.7), 4)),
            "total_trades": float(4 + i),
            "profit_factor": None,
        }
        record = pb.BacktestRecord(
            symbol=SYMBOLS[i % 2],
            strategy_type=STRATEGY,
            start_date=dates[0],
            end_date=dates[-1],
            metrics=metricset_to_proto(
                metrics, {"profit_factor": "no losing trades"}, {"periods_per_year": 252}
            ),
            parameters=struct_from_dict({"i": i}),
        )
        record.backtest_date.CopyFrom(_ts(NOW - dt.timedelta(hours=6 - i)))
        trades: list[resources_pb2.Trade] = []
        if i == 0:
            equity = 10_000 * np.cumprod(1 + rng.normal(0, 0.01, 30))
            equity[5] = np.nan
            record.dates.extend(dates)
            record.equity_curve.CopyFrom(array_to_proto(equity))
            record.drawdown_series.CopyFrom(array_to_proto(np.minimum(0, rng.normal(-0.02, 0.01, 30))))
            trades = [
                resources_pb2.Trade(
                    trade_number=k + 1,
                    symbol=SYMBOLS[0],
                    direction="long" if k % 2 == 0 else "short",
                    entry_date=dates[k],
                    entry_price=100.0 + k,
                    exit_date=dates[k + 2] if k < 6 else "",
                    exit_price=101.0 + k if k < 6 else 0.0,
                    pnl=float(k) - 3.0,
                    exit_reason="signal" if k < 6 else "",
                )
                for k in range(7)
            ]
        bid = stub.SaveBacktestResult(
            pb.SaveBacktestResultRequest(result=record, trades=trades, request_id=f"{TAG}-bt-{i}"), timeout=30
        ).backtest_id
        backtests.append({"backtest_id": bid, "symbol": SYMBOLS[i % 2], **metrics, "record": record})
    parent = backtests[0]["backtest_id"]
    ranks: list[Any] = [3, 1, None, 2, 1, None]
    optimization = stub.SaveOptimizationResults(
        pb.SaveOptimizationResultsRequest(
            results=[
                pb.OptimizationRecord(
                    backtest_id=parent,
                    parameter_set=k,
                    parameters=struct_from_dict({"fast": 5 + k, "slow": 50}),
                    objective_function="sharpe",
                    sharpe_ratio=0.5 + 0.1 * k,
                    total_trades=10 + k,
                    **({"rank": ranks[k]} if ranks[k] is not None else {}),
                )
                for k in range(6)
            ],
            request_id=f"{TAG}-opt",
        ),
        timeout=30,
    )
    windows = []
    for k in (2, 0, 3, 1):
        train_start = dt.date(2018, 1, 1) + dt.timedelta(days=90 * k)
        train_end = train_start + dt.timedelta(days=364)
        windows.append(
            pb.WalkForwardRecord(
                parent_backtest_id=parent,
                window_size_months=12,
                step_size_months=3,
                training_start=train_start.isoformat(),
                training_end=train_end.isoformat(),
                test_period_start=(train_end + dt.timedelta(days=1)).isoformat(),
                test_period_end=(train_end + dt.timedelta(days=90)).isoformat(),
                out_of_sample_sharpe=0.1 * k,
                is_profitable=k % 2 == 0,
                optimal_parameters=struct_from_dict({"fast": 5 + k}),
            )
        )
    walk_forward = stub.SaveWalkForwardTests(
        pb.SaveWalkForwardTestsRequest(windows=windows, request_id=f"{TAG}-wf"), timeout=30
    )
    portfolios = []
    for j in range(2):
        weights = rng.dirichlet(np.ones(2), size=len(dates))
        weights[2, 0] = np.nan
        portfolio = pb.PortfolioRecord(
            portfolio_name=PORTFOLIO,
            start_date=dates[0],
            end_date=dates[-1],
            symbols=SYMBOLS,
            weights=struct_from_dict({SYMBOLS[0]: 0.6, SYMBOLS[1]: 0.4}),
            rebalance_frequency="weekly",
            component_backtest_ids=[b["backtest_id"] for b in backtests[:2]],
            metrics=metricset_to_proto({"sharpe": 1.1 + j, "sortino": 1e6, "calmar": 0.9}, {}, {"rf": 0.0}),
            dates=dates,
            equity_curve=array_to_proto(100_000 * np.cumprod(1 + rng.normal(0, 0.01, len(dates)))),
            weights_history=array_to_proto(weights),
        )
        portfolio.backtest_date.CopyFrom(_ts(NOW - dt.timedelta(minutes=10 - j)))
        pid = stub.SavePortfolioBacktest(
            pb.SavePortfolioBacktestRequest(portfolio=portfolio, request_id=f"{TAG}-pf-{j}"), timeout=30
        ).portfolio_backtest_id
        portfolios.append((pid, portfolio))
    return {
        "backtests": backtests,
        "optimization_ids": list(optimization.optimization_ids),
        "ranks": ranks,
        "walk_forward_ids": list(walk_forward.walk_forward_ids),
        "windows": windows,
        "portfolios": portfolios,
        "dates": dates,
    }


def test_list_backtests_filters_orders_and_pages(rest_url: str, seeded: dict[str, Any]) -> None:
    ids = [b["backtest_id"] for b in seeded["backtests"]]
    newest_first = _pages(rest_url, "/backtests", strategy_type=STRATEGY, page_size=4)
    assert [b["backtest_id"] for b in newest_first] == ids[::-1]
    first = newest_first[-1]
    assert first["symbol"] == SYMBOLS[0] and first["parameters"] == {"i": 0}
    assert first["metrics"]["profit_factor"] is None
    assert first["metric_reasons"] == {"profit_factor": "no losing trades"}
    assert first["conventions"] == {"periods_per_year": 252}
    assert "series" not in first
    by_sharpe = _pages(rest_url, "/backtests", strategy_type=STRATEGY, order_by="-sharpe_ratio", page_size=2)
    frame = pd.DataFrame(
        {
            "id": ids,
            "sharpe": [b["sharpe"] for b in seeded["backtests"]],
            "u": [uuid.UUID(i).bytes for i in ids],
        }
    )
    frame["null"] = frame["sharpe"].isna()
    expected = frame.sort_values(["null", "sharpe", "u"], ascending=[True, False, False])["id"].tolist()
    assert [b["backtest_id"] for b in by_sharpe] == expected  # NULLs last, ties by id in the same direction
    one = _pages(rest_url, "/backtests", symbol=SYMBOLS[1], strategy_type=STRATEGY)
    assert {b["backtest_id"] for b in one} == set(ids[1::2])
    today = NOW.date()
    dated = _pages(
        rest_url,
        "/backtests",
        strategy_type=STRATEGY,
        from_date=(today - dt.timedelta(days=1)).isoformat(),
        to_date=(today + dt.timedelta(days=1)).isoformat(),
    )
    assert len(dated) == 6


def test_pages_stay_stable_while_backtests_arrive(
    rest_url: str, seeded: dict[str, Any], stub: pb_grpc.PersistenceServiceStub
) -> None:
    strategy = f"{STRATEGY}-live"
    before = []
    for i in range(9):
        record = pb.BacktestRecord(
            symbol=f"L{TAG}",
            strategy_type=strategy,
            start_date="2021-01-04",
            end_date="2021-02-12",
            metrics=metricset_to_proto({"sharpe": float(i % 4)}),
        )
        before.append(
            stub.SaveBacktestResult(pb.SaveBacktestResultRequest(result=record), timeout=30).backtest_id
        )
    seen: list[str] = []
    token = None
    for _ in range(50):
        doc = _get(
            rest_url, "/backtests", strategy_type=strategy, order_by="-sharpe", page_size=2, page_token=token
        ).json()
        seen += [b["backtest_id"] for b in doc["items"]]
        token = doc["next_page_token"]
        if token is None:
            break
        record = pb.BacktestRecord(
            symbol=f"L{TAG}",
            strategy_type=strategy,
            start_date="2021-01-04",
            end_date="2021-02-12",
            metrics=metricset_to_proto({"sharpe": 1.5}),
        )
        stub.SaveBacktestResult(pb.SaveBacktestResultRequest(result=record), timeout=30)
    assert len(seen) == len(set(seen)) and set(before) <= set(seen)


def test_get_backtest_with_series_and_paginated_trades(rest_url: str, seeded: dict[str, Any]) -> None:
    bid = seeded["backtests"][0]["backtest_id"]
    doc = _get(rest_url, f"/backtests/{bid}").json()
    series = doc["series"]
    assert series["dates"] == seeded["dates"] and len(series["equity"]) == 30
    assert series["equity"][5] is None and all(
        v is not None for k, v in enumerate(series["equity"]) if k != 5
    )
    assert doc["metrics"]["sharpe"] == 1.25
    trades: list[dict[str, Any]] = []
    token = None
    pages = 0
    while True:
        page = _get(rest_url, f"/backtests/{bid}/trades", page_size=3, page_token=token).json()
        pages += 1
        assert page["total_size"] == 7
        trades += page["items"]
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3 and [t["trade_number"] for t in trades] == list(range(1, 8))
    assert trades[-1]["exit_date"] is None and trades[-1]["exit_price"] is None  # still open
    assert trades[0]["exit_date"] == seeded["dates"][2] and trades[0]["pnl"] == -3.0
    other = seeded["backtests"][1]["backtest_id"]
    first_token = _get(rest_url, f"/backtests/{bid}/trades", page_size=3).json()["next_page_token"]
    resp = _get(rest_url, f"/backtests/{other}/trades", page_token=first_token)
    assert resp.status_code == 400 and resp.json()["error"]["details"]["field"] == "page_token"
    empty = _get(rest_url, f"/backtests/{other}/trades").json()
    assert empty == {"items": [], "next_page_token": None, "total_size": 0}


def test_best_backtest_is_direction_aware(rest_url: str, seeded: dict[str, Any]) -> None:
    frame = pd.DataFrame(
        [
            {k: b[k] for k in ("backtest_id", "sharpe", "max_drawdown", "volatility", "total_trades")}
            for b in seeded["backtests"]
        ]
    )
    frame["order"] = range(len(frame))  # backtest_date increases with the index

    def expected(column: str, higher: bool, min_trades: int = 0) -> str:
        df = frame[frame[column].notna() & (frame["total_trades"] >= min_trades)]
        return str(df.sort_values([column, "order"], ascending=[not higher, False])["backtest_id"].iloc[0])

    for metric, column, higher in (
        ("sharpe_ratio", "sharpe", True),
        ("max_drawdown", "max_drawdown", True),
        ("volatility", "volatility", False),
    ):
        for min_trades in (0, 7):
            doc = _get(
                rest_url, "/backtests/best", metric=metric, min_trades=min_trades, strategy_type=STRATEGY
            )
            assert doc.status_code == 200, doc.text
            assert doc.json()["backtest_id"] == expected(column, higher, min_trades), (metric, min_trades)
    resp = _get(rest_url, "/backtests/best", metric="sharpe_ratio", min_trades=10**6, strategy_type=STRATEGY)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "NOT_FOUND"
    resp = _get(rest_url, "/backtests/best", metric="nope")
    assert resp.status_code == 400 and resp.json()["error"]["details"]["field"] == "metric"
    resp = _get(rest_url, "/backtests/best")
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "metric"
    resp = _get(rest_url, "/backtests/best", metric="sharpe_ratio", min_trades=-1)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "min_trades"


def test_compare_ranks_each_metric_in_its_direction(rest_url: str, seeded: dict[str, Any]) -> None:
    chosen = seeded["backtests"][:5]
    ids = [b["backtest_id"] for b in chosen]
    resp = httpx.post(
        f"{rest_url}/backtests/compare",
        json={"backtest_ids": ids, "metrics": ["sharpe", "max_drawdown", "volatility"]},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert [r["backtest_id"] for r in doc["results"]] == ids
    assert doc["metrics"] == ["sharpe_ratio", "max_drawdown", "volatility"]
    for metric, column, higher in (
        ("sharpe_ratio", "sharpe", True),
        ("max_drawdown", "max_drawdown", True),
        ("volatility", "volatility", False),
    ):
        values = pd.Series([b[column] for b in chosen], dtype="float64")
        ranks = values.rank(method="min", ascending=not higher)
        got = [c for c in doc["comparisons"] if c["metric"] == metric]
        assert [c["backtest_id"] for c in got] == ids
        for c, value, rank in zip(got, values, ranks, strict=True):
            assert c["higher_is_better"] is higher
            if math.isnan(value):
                assert c["value"] is None and c["rank"] is None
            else:
                assert c["value"] == pytest.approx(value) and c["rank"] == int(rank)
    default = httpx.post(f"{rest_url}/backtests/compare", json={"backtest_ids": ids[:2]}, timeout=30).json()
    assert default["metrics"][:3] == ["total_return", "annualized_return", "sharpe_ratio"]
    for body, status, field in (
        ({"backtest_ids": ids[:1]}, 422, "backtest_ids"),
        ({"backtest_ids": [ids[0], "not-a-uuid"]}, 422, "backtest_ids.1"),
        ({"backtest_ids": [ids[0], ids[1]], "metrics": ["sharpe", "bogus"]}, 400, "metrics[1]"),
    ):
        resp = httpx.post(f"{rest_url}/backtests/compare", json=body, timeout=30)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["details"]["field"] == field
    missing = str(uuid.uuid4())
    resp = httpx.post(f"{rest_url}/backtests/compare", json={"backtest_ids": [ids[0], missing]}, timeout=30)
    assert resp.status_code == 404 and missing in resp.json()["error"]["message"]


def _aggregates(grouped: Any) -> pd.DataFrame:
    return grouped.agg(
        count=("symbol", "size"),
        avg_total_return=("total_return", "mean"),
        avg_sharpe_ratio=("sharpe", "mean"),
        best_sharpe_ratio=("sharpe", "max"),
        avg_max_drawdown=("max_drawdown", "mean"),
        avg_win_rate=("win_rate", "mean"),
        total_trades=("total_trades", "sum"),
    )


def test_summary_groups_match_pandas(rest_url: str, seeded: dict[str, Any]) -> None:
    frame = pd.DataFrame(
        [
            {
                "symbol": b["symbol"],
                "strategy_type": STRATEGY,
                "total_return": _fit(b["total_return"], 4),
                "sharpe": b["sharpe"],
                "max_drawdown": b["max_drawdown"],
                "win_rate": _fit(b["win_rate"], 4),
                "total_trades": b["total_trades"],
            }
            for b in seeded["backtests"]
        ]
    ).astype({"sharpe": "float64", "max_drawdown": "float64"})
    # The seeded symbols and strategy type are this module's own: their groups hold exactly the seeded rows.
    expected = pd.concat([_aggregates(frame.groupby("symbol")), _aggregates(frame.groupby("strategy_type"))])
    doc = _get(rest_url, "/backtests/summary", days=7).json()
    assert doc["days"] == 7 and doc["overall"]["key"] is None and doc["overall"]["count"] >= 6
    groups = {g["key"]: g for g in doc["by_symbol"]}
    groups.update({g["key"]: g for g in doc["by_strategy"] if g["key"] == STRATEGY})
    for key, row in expected.iterrows():
        group = groups[str(key)]
        assert group["count"] == row["count"] and group["total_trades"] == row["total_trades"]
        for name in (
            "avg_total_return",
            "avg_sharpe_ratio",
            "best_sharpe_ratio",
            "avg_max_drawdown",
            "avg_win_rate",
        ):
            assert group[name] == pytest.approx(row[name], rel=1e-12), (key, name)
    assert _get(rest_url, "/backtests/summary").json()["days"] == 30
    resp = _get(rest_url, "/backtests/summary", days=0)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "days"


def test_optimizations_and_walk_forward_tests(rest_url: str, seeded: dict[str, Any]) -> None:
    parent = seeded["backtests"][0]["backtest_id"]
    ranked = _pages(rest_url, "/optimizations", backtest_id=parent, page_size=4)
    ranks = seeded["ranks"]
    order = sorted(range(6), key=lambda k: (ranks[k] is None, ranks[k] or 0, k))
    assert [r["optimization_id"] for r in ranked] == [seeded["optimization_ids"][k] for k in order]
    assert [r["rank"] for r in ranked] == [ranks[k] for k in order]
    one = _get(rest_url, f"/optimizations/{seeded['optimization_ids'][2]}").json()
    assert one["parameters"] == {"fast": 7.0, "slow": 50.0} and one["sharpe_ratio"] == 0.7
    assert one["rank"] is None and one["total_trades"] == 12 and one["objective_function"] == "sharpe"
    assert one["backtest_id"] == parent and one["p_value"] is None

    windows = _pages(rest_url, "/walk-forward-tests", parent_backtest_id=parent, page_size=3)
    starts = [w["test_period_start"] for w in windows]
    assert starts == sorted(m.test_period_start for m in seeded["windows"])
    by_id = dict(zip(seeded["walk_forward_ids"], seeded["windows"], strict=True))
    for w in windows:
        sent = by_id[w["walk_forward_id"]]
        assert w["test_period_start"] == sent.test_period_start and w["is_profitable"] == sent.is_profitable
        assert w["out_of_sample_sharpe"] == pytest.approx(sent.out_of_sample_sharpe)
        assert w["optimal_parameters"] == {"fast": sent.optimal_parameters["fast"]}
    single = _get(rest_url, f"/walk-forward-tests/{windows[0]['walk_forward_id']}").json()
    assert single == windows[0]

    missing = str(uuid.uuid4())
    for path, params in (
        (f"/optimizations/{missing}", {}),
        (f"/walk-forward-tests/{missing}", {}),
        ("/optimizations", {"backtest_id": missing}),
        ("/walk-forward-tests", {"parent_backtest_id": missing}),
    ):
        resp = _get(rest_url, path, **params)
        assert resp.status_code == 404, path
    resp = _get(rest_url, "/optimizations/not-a-uuid")
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "optimization_id"


def test_portfolio_backtests(rest_url: str, seeded: dict[str, Any]) -> None:
    listed = _pages(rest_url, "/portfolio-backtests", portfolio_name=PORTFOLIO, page_size=1)
    (older_id, _), (newer_id, newer) = seeded["portfolios"]
    assert [p["portfolio_backtest_id"] for p in listed] == [newer_id, older_id]
    assert "series" not in listed[0]
    doc = _get(rest_url, f"/portfolio-backtests/{newer_id}").json()
    assert doc["symbols"] == SYMBOLS and doc["weights"] == {SYMBOLS[0]: 0.6, SYMBOLS[1]: 0.4}
    assert doc["initial_capital"] == 100_000.0 and doc["rebalance_frequency"] == "weekly"
    assert doc["metrics"] == {"calmar": 0.9, "sharpe": 2.1, "sortino": None}
    assert doc["metric_reasons"] == {"sortino": "1000000.0 exceeds Numeric(8,4)"}
    assert doc["conventions"] == {"rf": 0.0}
    assert doc["notes"] == "sortino_ratio: 1000000.0 exceeds Numeric(8,4)"
    assert doc["component_backtest_ids"] == list(newer.component_backtest_ids)
    series = doc["series"]
    assert series["dates"] == seeded["dates"] and len(series["equity"]) == len(seeded["dates"])
    assert series["weights"]["symbols"] == SYMBOLS and series["weights"]["values"][2][0] is None
    assert len(series["weights"]["values"]) == len(seeded["dates"])
    assert _get(rest_url, f"/portfolio-backtests/{uuid.uuid4()}").status_code == 404


def test_malformed_filters_name_the_field(rest_url: str, seeded: dict[str, Any]) -> None:
    for params, status, field in (
        ({"from_date": "2024-13-01"}, 422, "from_date"),
        ({"order_by": "bogus"}, 400, "order_by"),
        ({"page_size": 0}, 422, "page_size"),
        ({"page_token": "garbage!"}, 400, "page_token"),
        ({"from_date": "2024-02-01", "to_date": "2024-01-01"}, 400, "to_date"),
    ):
        resp = _get(rest_url, "/backtests", **params)
        assert resp.status_code == status, (params, resp.text)
        error = resp.json()["error"]
        assert error["details"]["field"] == field, params
    resp = _get(rest_url, "/backtests/not-a-uuid")
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "backtest_id"
    resp = _get(rest_url, "/walk-forward-tests", parent_backtest_id="xyz")
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "parent_backtest_id"


def test_delete_cascades_and_unknown_ids_are_404(
    rest_url: str, seeded: dict[str, Any], stub: pb_grpc.PersistenceServiceStub
) -> None:
    record = seeded["backtests"][0]["record"]
    copy = pb.BacktestRecord()
    copy.CopyFrom(record)
    bid = stub.SaveBacktestResult(pb.SaveBacktestResultRequest(result=copy), timeout=30).backtest_id
    oid = stub.SaveOptimizationResults(
        pb.SaveOptimizationResultsRequest(results=[pb.OptimizationRecord(backtest_id=bid, parameter_set=0)]),
        timeout=30,
    ).optimization_ids[0]
    window = pb.WalkForwardRecord()
    window.CopyFrom(seeded["windows"][0])
    window.parent_backtest_id = bid
    wid = stub.SaveWalkForwardTests(
        pb.SaveWalkForwardTestsRequest(windows=[window]), timeout=30
    ).walk_forward_ids[0]
    assert _get(rest_url, f"/optimizations/{oid}").status_code == 200

    resp = httpx.delete(f"{rest_url}/backtests/{bid}", timeout=30)
    assert resp.status_code == 204 and resp.content == b""
    for path in (
        f"/backtests/{bid}",
        f"/backtests/{bid}/trades",
        f"/optimizations/{oid}",
        f"/walk-forward-tests/{wid}",
    ):
        gone = _get(rest_url, path)
        assert gone.status_code == 404, path
        assert gone.json()["error"]["code"] == "NOT_FOUND"
    again = httpx.delete(f"{rest_url}/backtests/{bid}", timeout=30)
    assert again.status_code == 404 and again.json()["error"]["details"]["field"] == "backtest_id"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetOptimizationResult(pb.GetOptimizationResultRequest(optimization_id=oid), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # The seeded rows of the other backtests are untouched.
    assert _get(rest_url, f"/backtests/{seeded['backtests'][0]['backtest_id']}").status_code == 200


def test_openapi_documents_every_catalog_route(rest_url: str) -> None:
    spec = httpx.get(f"{rest_url}/openapi.json", timeout=10).json()
    operations = {
        ("/backtests", "get"): "list_backtests",
        ("/backtests/best", "get"): "get_best_backtest",
        ("/backtests/compare", "post"): "compare_backtests",
        ("/backtests/summary", "get"): "get_backtest_performance_summary",
        ("/backtests/{backtest_id}", "get"): "get_backtest",
        ("/backtests/{backtest_id}", "delete"): "delete_backtest",
        ("/backtests/{backtest_id}/trades", "get"): "list_backtest_trades",
        ("/optimizations", "get"): "list_optimization_results",
        ("/optimizations/{optimization_id}", "get"): "get_optimization_result",
        ("/walk-forward-tests", "get"): "list_walk_forward_tests",
        ("/walk-forward-tests/{walk_forward_id}", "get"): "get_walk_forward_test",
        ("/portfolio-backtests", "get"): "list_portfolio_backtests",
        ("/portfolio-backtests/{portfolio_backtest_id}", "get"): "get_portfolio_backtest",
    }
    for (path, method), operation_id in operations.items():
        operation = spec["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation.get("summary"), path
        assert "404" in operation["responses"] and "422" in operation["responses"]
    schemas = spec["components"]["schemas"]
    assert {
        "Backtest",
        "BacktestDetail",
        "Comparison",
        "PerformanceSummary",
        "Optimization",
        "PortfolioDetail",
    } <= set(schemas)
    metric_values = schemas["Backtest"]["properties"]["metrics"]["additionalProperties"]
    assert {"type": "null"} in metric_values["anyOf"]  # numbers or null
