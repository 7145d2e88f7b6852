"""RunStrategyBacktest, Optimize and WalkForward end to end over the embedded stack's gRPC servers.

Every response is checked against the pure engine run here on the same
shipped panel (and the rule against a pandas rolling mean), and every
catalog row the backtester says it wrote is read back through the
persistence service (`GetBacktestResult`, `ListOptimizationResults`,
`ListWalkForwardTests`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as pb_grpc
from alphaswarm.common.v1 import config_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.optimize import optimize
from alphaswarm_backtester.engine.rules import run_rule_backtest
from alphaswarm_backtester.engine.walkforward import walk_forward
from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import call, remote_field
from alphaswarm_common.protoconv import (
    array_from_proto,
    matrix_from_proto,
    metricset_from_proto,
    struct_from_dict,
    struct_to_dict,
)

pytestmark = pytest.mark.e2e

TIMEOUT = 180.0
HISTORY_START, WINDOW = "2015-01-02", ("2017-01-03", "2019-06-28")
GRID = {"fast_period": [5, 10, 20, 40], "slow_period": [30, 60, 120]}


def _source(*symbols: str) -> pb.PriceSource:
    return pb.PriceSource(
        dataset_cfg=config_pb2.DatasetConfig(source="sp500", start_date=HISTORY_START, end_date=WINDOW[1]),
        symbols=list(symbols),
    )


def _window_cfg(**kwargs: Any) -> config_pb2.BacktestConfig:
    return config_pb2.BacktestConfig(start_date=WINDOW[0], end_date=WINDOW[1], **kwargs)


def _dataset_cfg() -> DatasetConfig:
    return DatasetConfig.model_validate(
        {"source": "sp500", "start_date": HISTORY_START, "end_date": WINDOW[1]}
    )


def _panel(*symbols: str) -> tuple[Panel, int]:
    """The panel as the servicer loads it and the first row of the backtest window."""
    panel = load_panel(_dataset_cfg()).select(list(symbols))
    return panel, int(np.searchsorted(panel.dates, np.datetime64(WINDOW[0])))


def _strategy(kind: str, **params: Any) -> config_pb2.StrategyConfig:
    return config_pb2.StrategyConfig(type=kind, params=struct_from_dict(params))


# ----------------------------------------------------------------------------- RunStrategyBacktest


def test_strategy_backtest_of_one_symbol_is_stored(
    stack: EmbeddedStack,
    backtester: pb_grpc.BacktesterServiceStub,
    persistence: ppb_grpc.PersistenceServiceStub,
) -> None:
    key = f"rule-{uuid.uuid4()}"
    assert stack.tracker is not None
    experiment = stack.tracker.ensure_experiment("e2e-rules")
    request = pb.RunStrategyBacktestRequest(
        source=_source("AAPL"),
        strategy_cfg=_strategy("sma_cross", fast_period=10, slow_period=50),
        backtest_cfg=_window_cfg(),
        persist=True,
        request_id=key,
        experiment_id=experiment,
    )
    response = call(backtester.RunStrategyBacktest, request, timeout=TIMEOUT)
    panel, start = _panel("AAPL")
    expected = run_rule_backtest(
        "sma_cross",
        {"fast_period": 10, "slow_period": 50},
        close=panel.close,
        dates=panel.dates,
        symbols=["AAPL"],
        start=start,
    )
    assert response.dates[0] == WINDOW[0] and response.dates[-1] <= WINDOW[1]
    np.testing.assert_allclose(array_from_proto(response.equity), expected.equity, rtol=1e-12)
    assert len(response.trades) == len(expected.trades) > 3
    # the rule itself, by hand: long from the bar after a cross of the 10-bar mean above the 50-bar mean
    close = pd.Series(panel.close[:, 0])
    fast, slow = close.rolling(10).mean(), close.rolling(50).mean()
    up = (fast > slow) & (fast.shift() <= slow.shift())
    down = (fast < slow) & (fast.shift() >= slow.shift())
    state = pd.Series(np.where(up, 1.0, np.where(down, 0.0, np.nan))).ffill().fillna(0.0).to_numpy()
    target, _, _ = matrix_from_proto(response.weights_target)
    np.testing.assert_array_equal(target[1:, 0], state[start : start + target.shape[0] - 1])

    stored = call(
        persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=response.backtest_id, include_trades=True),
        timeout=TIMEOUT,
    )
    assert stored.result.strategy_type == "sma_cross" and stored.result.symbol == "AAPL"
    assert len(stored.trades) == len(response.trades)
    np.testing.assert_allclose(array_from_proto(stored.result.equity_curve), expected.equity, rtol=1e-12)
    params = struct_to_dict(stored.result.parameters)
    assert params["strategy"] == {
        "type": "sma_cross",
        "params": {"fast_period": 10, "slow_period": 50, "allow_short": False},
    }
    again = call(backtester.RunStrategyBacktest, request, timeout=TIMEOUT)
    assert again.backtest_id == response.backtest_id  # idempotent by request_id
    run = stack.tracker.get_run(response.run_id)
    assert run.data.params["strategy_type"] == "sma_cross"
    assert run.data.metrics["sharpe"] == pytest.approx(expected.metrics["sharpe"], rel=1e-9)


def test_strategy_backtest_of_several_symbols_splits_capital(
    backtester: pb_grpc.BacktesterServiceStub,
) -> None:
    response = call(
        backtester.RunStrategyBacktest,
        pb.RunStrategyBacktestRequest(
            source=_source("AAPL", "MSFT", "KO"),
            strategy_cfg=_strategy("rsi", allow_short=True),
            backtest_cfg=_window_cfg(),
        ),
        timeout=TIMEOUT,
    )
    panel, start = _panel("AAPL", "MSFT", "KO")
    expected = run_rule_backtest(
        "rsi", {"allow_short": True}, close=panel.close, dates=panel.dates, symbols=panel.symbols, start=start
    )
    target, _, symbols = matrix_from_proto(response.weights_target)
    assert symbols == ["AAPL", "MSFT", "KO"]
    assert set(np.unique(target)) <= {-1 / 3, 0.0, 1 / 3}
    np.testing.assert_allclose(array_from_proto(response.equity), expected.equity, rtol=1e-12)
    assert response.backtest_id == "" and response.run_id == ""


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"strategy_cfg": _strategy("long_short_topk")}, "strategy_cfg.type"),
        ({"strategy_cfg": _strategy("volume_momentum")}, "strategy_cfg.type"),
        (
            {"strategy_cfg": _strategy("sma_cross", fast_period=50, slow_period=10)},
            "strategy_cfg.params.slow_period",
        ),
        ({"strategy_cfg": _strategy("nope")}, "strategy_cfg.type"),
        ({"source": _source("NOPE")}, "source.symbols[0]"),
        ({"backtest_cfg": _window_cfg(fees=2.0)}, "backtest_cfg.fees"),
    ],
)
def test_strategy_backtest_errors_name_the_field(
    backtester: pb_grpc.BacktesterServiceStub, overrides: dict[str, Any], field: str
) -> None:
    base: dict[str, Any] = {
        "source": _source("AAPL"),
        "strategy_cfg": _strategy("sma_cross"),
        "backtest_cfg": _window_cfg(),
    }
    with pytest.raises(InvalidArgument) as info:
        call(
            backtester.RunStrategyBacktest,
            pb.RunStrategyBacktestRequest(**{**base, **overrides}),
            timeout=TIMEOUT,
        )
    assert remote_field(info.value) == field


def test_validate_strategy_accepts_rules(backtester: pb_grpc.BacktesterServiceStub) -> None:
    reply = call(
        backtester.ValidateStrategy,
        pb.ValidateStrategyRequest(strategy_cfg=_strategy("macd", fast_period=8)),
        timeout=TIMEOUT,
    )
    assert json.loads(reply.params_json) == {
        "allow_short": False,
        "fast_period": 8,
        "slow_period": 26,
        "signal_period": 9,
    }
    with pytest.raises(InvalidArgument) as info:
        call(
            backtester.ValidateStrategy,
            pb.ValidateStrategyRequest(strategy_cfg=_strategy("rsi", lower=80)),
            timeout=TIMEOUT,
        )
    assert remote_field(info.value) == "strategy_cfg.params.upper"


# ----------------------------------------------------------------------------- Optimize


def test_optimize_ranks_every_set_and_stores_them(
    backtester: pb_grpc.BacktesterServiceStub, persistence: ppb_grpc.PersistenceServiceStub
) -> None:
    key = f"opt-{uuid.uuid4()}"
    request = pb.OptimizeRequest(
        source=_source("MSFT"),
        strategy_type="sma_cross",
        grid=struct_from_dict(GRID),
        objective="sortino",
        backtest_cfg=_window_cfg(),
        persist=True,
        request_id=key,
    )
    response = call(backtester.Optimize, request, timeout=TIMEOUT)
    panel, start = _panel("MSFT")
    expected = optimize(
        "sma_cross",
        close=panel.close,
        dates=panel.dates,
        symbols=["MSFT"],
        grid=GRID,
        objective="sortino",
        start=start,
    )
    evaluated = [t for t in response.trials if not t.HasField("skipped")]
    skipped = [t for t in response.trials if t.HasField("skipped")]
    assert len(evaluated) == len(expected.trials) == 11  # fast 40 >= slow 30 is skipped
    assert all(t.metrics.values for t in evaluated)
    assert [t.skipped.field for t in skipped] == ["strategy_cfg.params.slow_period"]
    assert skipped[0].skipped.reason and not skipped[0].metrics.values and not skipped[0].HasField("rank")
    assert (
        struct_to_dict(skipped[0].params)["fast_period"] >= struct_to_dict(skipped[0].params)["slow_period"]
    )
    assert [t.parameter_set for t in evaluated] == [t.parameter_set for t in expected.ranked]
    ranks = [t.rank for t in evaluated]
    assert ranks == list(range(1, len(evaluated) + 1))
    values = [t.objective_value for t in evaluated]
    assert values == sorted(values, reverse=True)
    best = expected.best
    assert best is not None
    assert response.best.parameter_set == best.parameter_set
    assert response.p_value == pytest.approx(best.p_value, rel=1e-12)
    assert best.p_value is not None
    assert response.is_statistically_significant == (best.p_value < 0.05)

    stored = call(
        persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=response.backtest_id),
        timeout=TIMEOUT,
    )
    assert stored.result.strategy_type == "sma_cross" and stored.result.symbol == "MSFT"
    assert struct_to_dict(stored.result.parameters)["strategy"]["params"] == best.params
    rows = call(
        persistence.ListOptimizationResults,
        ppb.ListOptimizationResultsRequest(backtest_id=response.backtest_id, page_size=100),
        timeout=TIMEOUT,
    ).results
    assert [r.optimization_id for r in rows] == list(response.optimization_ids)
    by_set = {t.parameter_set: t for t in expected.trials}
    for row in rows:
        t = by_set[row.parameter_set]
        assert row.rank == t.rank and row.objective_function == "sortino"
        assert row.objective_value == pytest.approx(t.objective_value, abs=5e-7)
        assert row.sharpe_ratio == pytest.approx(t.metrics["sharpe"], abs=5e-5)
        assert row.total_trades == t.metrics["total_trades"]
        assert row.p_value == pytest.approx(t.p_value, abs=5e-7)
        assert row.is_statistically_significant == t.is_statistically_significant
        assert struct_to_dict(row.parameters) == t.params
    again = call(backtester.Optimize, request, timeout=TIMEOUT)
    assert again.backtest_id == response.backtest_id
    assert list(again.optimization_ids) == list(response.optimization_ids)


def test_random_search_is_seeded(backtester: pb_grpc.BacktesterServiceStub) -> None:
    request = pb.OptimizeRequest(
        source=_source("KO"),
        strategy_type="rsi",
        space=struct_from_dict({"period": {"low": 5, "high": 30}, "lower": [20, 25, 30], "upper": [70, 75]}),
        method="random",
        n_samples=12,
        seed=4,
        backtest_cfg=_window_cfg(),
    )
    a = call(backtester.Optimize, request, timeout=TIMEOUT)
    b = call(backtester.Optimize, request, timeout=TIMEOUT)
    assert [struct_to_dict(t.params) for t in a.trials] == [struct_to_dict(t.params) for t in b.trials]
    assert a.backtest_id == "" and not a.optimization_ids
    with pytest.raises(InvalidArgument) as info:
        call(
            backtester.Optimize,
            pb.OptimizeRequest(
                source=_source("KO"), strategy_type="rsi", grid=struct_from_dict({"window": [3]})
            ),
            timeout=TIMEOUT,
        )
    assert remote_field(info.value) == "grid.window"


# ----------------------------------------------------------------------------- WalkForward


def test_walk_forward_stores_the_stitched_account_and_every_window(
    backtester: pb_grpc.BacktesterServiceStub, persistence: ppb_grpc.PersistenceServiceStub
) -> None:
    key = f"wf-{uuid.uuid4()}"
    grid = {"fast_period": [5, 10, 20], "slow_period": [40, 80]}
    request = pb.WalkForwardRequest(
        source=_source("XOM"),
        strategy_type="sma_cross",
        grid=struct_from_dict(grid),
        objective="sharpe",
        in_sample_bars=252,
        out_of_sample_bars=63,
        backtest_cfg=config_pb2.BacktestConfig(start_date="2016-01-04", end_date=WINDOW[1]),
        persist=True,
        request_id=key,
    )
    response = call(backtester.WalkForward, request, timeout=TIMEOUT)
    panel = load_panel(_dataset_cfg()).select(["XOM"])
    start = int(np.searchsorted(panel.dates, np.datetime64("2016-01-04")))
    expected = walk_forward(
        "sma_cross",
        close=panel.close,
        dates=panel.dates,
        symbols=["XOM"],
        grid=grid,
        in_sample_bars=252,
        out_of_sample_bars=63,
        start=start,
        config=EngineConfig(),
    )
    assert len(response.windows) == len(expected.windows) >= 4
    for got, want in zip(response.windows, expected.windows, strict=True):
        assert got.test_start == str(panel.dates[want.test_start])
        assert got.train_end == str(panel.dates[want.train_stop - 1])
        assert struct_to_dict(got.best_params) == want.best_params
        if want.performance_ratio is None:
            assert not got.HasField("performance_ratio")
        else:
            assert got.performance_ratio == pytest.approx(want.performance_ratio, rel=1e-12)
    values, _, _ = metricset_from_proto(response.out_of_sample_metrics)
    assert values["sharpe"] == pytest.approx(expected.stitched.metrics["sharpe"], rel=1e-12)

    parent = call(
        persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=response.parent_backtest_id),
        timeout=TIMEOUT,
    )
    np.testing.assert_allclose(
        array_from_proto(parent.result.equity_curve), expected.stitched.equity, rtol=1e-12
    )
    assert parent.result.start_date == str(panel.dates[expected.stitched_start])
    rows = call(
        persistence.ListWalkForwardTests,
        ppb.ListWalkForwardTestsRequest(parent_backtest_id=response.parent_backtest_id, page_size=100),
        timeout=TIMEOUT,
    ).windows
    assert sorted(r.walk_forward_id for r in rows) == sorted(response.walk_forward_ids)
    rows = sorted(rows, key=lambda r: r.test_period_start)
    for row, want in zip(rows, expected.windows, strict=True):
        assert row.window_size_months == round(252 / 21) == 12 and row.step_size_months == 3
        assert row.test_period_start == str(panel.dates[want.test_start])
        oos = want.out_of_sample.metrics  # type: ignore[union-attr]
        assert row.out_of_sample_return == pytest.approx(oos["total_return"], abs=5e-5)
        assert row.out_of_sample_trades == oos["total_trades"]
        assert row.is_profitable == (float(oos["total_return"] or 0.0) > 0)
        assert struct_to_dict(row.optimal_parameters) == want.best_params
    again = call(backtester.WalkForward, request, timeout=TIMEOUT)
    assert again.parent_backtest_id == response.parent_backtest_id
    assert list(again.walk_forward_ids) == list(response.walk_forward_ids)


def test_walk_forward_errors_name_the_field(backtester: pb_grpc.BacktesterServiceStub) -> None:
    base: dict[str, Any] = {
        "source": _source("XOM"),
        "strategy_type": "sma_cross",
        "grid": struct_from_dict({"fast_period": [5]}),
        "in_sample_bars": 252,
        "out_of_sample_bars": 63,
        "backtest_cfg": _window_cfg(),
    }
    for overrides, field in (
        ({"step_bars": 100}, "step_bars"),
        ({"in_sample_bars": 5000}, "in_sample_bars"),
        ({"grid": None}, "grid"),
        ({"strategy_type": "quantile"}, "strategy_type"),
    ):
        with pytest.raises(InvalidArgument) as info:
            call(backtester.WalkForward, pb.WalkForwardRequest(**{**base, **overrides}), timeout=TIMEOUT)
        assert remote_field(info.value) == field
