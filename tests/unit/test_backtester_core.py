"""The backtester's use cases (`alphaswarm_backtester.core.Backtester`) over an in-memory catalog
and tracker: what each one writes, under which keys, with which domain rules, and nothing for a
caller that has gone away. The engine's numbers are checked against the engine itself, run here
on the same shipped panel."""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.catalog import (
    BacktestEntry,
    OptimizationEntry,
    PortfolioEntry,
    StoredEquity,
    WalkForwardEntry,
)
from alphaswarm_backtester.core import (
    SIGNIFICANT_PSR,
    Backtester,
    MonteCarloInput,
    OptimizeInput,
    PortfolioInput,
    PriceSource,
    Recording,
    RuleBacktestInput,
    SignalBacktestInput,
    WalkForwardInput,
    is_significant_window,
)
from alphaswarm_backtester.engine import EngineConfig, run_rule_backtest
from alphaswarm_backtester.engine.montecarlo import monte_carlo
from alphaswarm_backtester.engine.portfolio import PortfolioLeg
from alphaswarm_backtester.series import PLOT_FILE, SERIES_FILE, _thin
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import InvalidArgument, NotFound, Timeout
from alphaswarm_common.metrics import MetricSet

pytestmark = pytest.mark.unit

HISTORY_START, WINDOW = "2015-01-02", ("2017-01-03", "2018-06-29")
GRID = {"fast_period": [5, 10, 20], "slow_period": [30, 60]}


@dataclass
class FakeCatalog:
    """A `CatalogWriter` in memory: ids are the row's position, prefixed by its kind."""

    backtests: list[BacktestEntry] = field(default_factory=list)
    optimizations: list[tuple[list[OptimizationEntry], str]] = field(default_factory=list)
    walk_forward: list[tuple[list[WalkForwardEntry], str]] = field(default_factory=list)
    portfolios: list[tuple[PortfolioEntry, str]] = field(default_factory=list)
    equity: dict[str, StoredEquity] = field(default_factory=dict)

    def save_backtest(self, entry: BacktestEntry) -> str:
        self.backtests.append(entry)
        return entry.backtest_id or f"bt-{len(self.backtests)}"

    def save_optimizations(self, rows: Sequence[OptimizationEntry], *, request_id: str = "") -> list[str]:
        self.optimizations.append((list(rows), request_id))
        return [f"opt-{i}" for i in range(len(rows))]

    def save_walk_forward(self, rows: Sequence[WalkForwardEntry], *, request_id: str = "") -> list[str]:
        self.walk_forward.append((list(rows), request_id))
        return [f"wf-{i}" for i in range(len(rows))]

    def save_portfolio(self, entry: PortfolioEntry, *, request_id: str = "") -> str:
        self.portfolios.append((entry, request_id))
        return "pf-1"

    def stored_equity(self, backtest_id: str) -> StoredEquity:
        if backtest_id not in self.equity:
            raise NotFound(f"backtest result {backtest_id} does not exist", field="backtest_id")
        return self.equity[backtest_id]


@dataclass
class FakeTracker:
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ensure_experiment(self, name: str) -> str:
        return f"exp-{name}"

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {"experiment": experiment_id, "name": run_name, "parent": parent_run_id}
        self.runs[run_id]["tags"] = dict(tags or {})
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self.runs[run_id]["params"] = dict(params)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], *, step: int = 0) -> None:
        self.runs[run_id]["metrics"] = dict(metrics)

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        self.runs[run_id]["files"] = dict(files)

    def end_run(self, run_id: str, *, failed: bool = False) -> None:
        self.runs[run_id]["status"] = "FAILED" if failed else "FINISHED"


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def backtester(tracker: FakeTracker, catalog: FakeCatalog) -> Backtester:
    return Backtester(tracker, catalog)


def _source(*symbols: str) -> PriceSource:
    return PriceSource(
        DatasetConfig.model_validate({"source": "sp500", "start_date": HISTORY_START, "end_date": WINDOW[1]}),
        symbols=list(symbols),
    )


def _window(**kwargs: Any) -> BacktestConfig:
    return BacktestConfig(start_date=WINDOW[0], end_date=WINDOW[1], **kwargs)


def _gone(what: str) -> None:
    raise Timeout(f"the caller is gone; {what} not saved")


# ----------------------------------------------------------------------------- backtests


def test_rule_backtest_is_logged_as_data_and_stored_under_its_key(
    backtester: Backtester, tracker: FakeTracker, catalog: FakeCatalog
) -> None:
    req = RuleBacktestInput(
        strategy_cfg=StrategyConfig(type="sma_cross", params={"fast_period": 10, "slow_period": 50}),
        backtest_cfg=_window(),
        source=_source("AAPL"),
        recording=Recording(persist=True, request_id="req-1", fingerprint="f" * 64),
        experiment_id="exp-1",
        task_id="task-1",
    )
    waited: list[str] = []
    run = backtester.run_rule_backtest(req, waited.append)
    assert waited == ["the backtest"]

    panel = load_panel(req.source.dataset_cfg).select(["AAPL"])  # type: ignore[arg-type]
    start = int(np.searchsorted(panel.dates, np.datetime64(WINDOW[0])))
    stop = int(np.searchsorted(panel.dates, np.datetime64(WINDOW[1]), side="right"))
    expected = run_rule_backtest(
        "sma_cross",
        {"fast_period": 10, "slow_period": 50},
        close=panel.close[:stop],
        dates=panel.dates[:stop],
        symbols=["AAPL"],
        open=panel.open[:stop] if panel.open is not None else None,
        high=panel.high[:stop] if panel.high is not None else None,
        low=panel.low[:stop] if panel.low is not None else None,
        volume=panel.volume[:stop] if panel.volume is not None else None,
        config=EngineConfig.from_backtest_config(_window()),
        start=start,
        stop=stop,
    )
    np.testing.assert_array_equal(run.out.equity, expected.equity)

    # the catalog row: id derived from the key, the request's fingerprint recorded
    (entry,) = catalog.backtests
    assert (
        run.backtest_id
        == entry.backtest_id
        == str(uuid.uuid5(uuid.UUID("5b0c7a8e-4d4b-4f0e-9d8a-6a1f3c2b7e10"), "backtest_result:req-1"))
    )
    assert entry.request_id == "req-1" and entry.parameters["request_fingerprint"] == "f" * 64
    assert entry.symbol == "AAPL" and entry.strategy_type == "sma_cross"
    assert entry.parameters["warmup_bars"] == start and entry.parameters["capital_per_symbol"] == 1.0

    # the tracking run: params, metrics and the series as one Parquet file plus a PNG
    logged = tracker.runs[run.run_id]
    assert logged["status"] == "FINISHED" and logged["parent"] is None
    assert logged["tags"] == {"alphaswarm.task_id": "task-1", "alphaswarm.stage": "backtest"}
    assert logged["params"]["n_bars"] == stop - start and logged["params"]["start_date"] == WINDOW[0]
    assert set(logged["files"]) == {SERIES_FILE, PLOT_FILE}
    series = pd.read_parquet(io.BytesIO(logged["files"][SERIES_FILE]))
    assert list(series.columns) == ["date", "equity", "drawdown", "returns", "weight:AAPL"]
    np.testing.assert_array_equal(series["equity"].to_numpy(), run.out.equity)
    np.testing.assert_array_equal(series["returns"].to_numpy(), run.out.returns)
    np.testing.assert_array_equal(series["drawdown"].to_numpy(), run.out.drawdown)
    np.testing.assert_array_equal(series["weight:AAPL"].to_numpy(), run.out.weights_held[:, 0])
    assert [str(d) for d in series["date"]] == [str(d) for d in run.out.dates.astype("datetime64[D]")]
    assert logged["files"][PLOT_FILE].startswith(b"\x89PNG")


def test_nothing_is_written_for_a_caller_that_is_gone(
    backtester: Backtester, tracker: FakeTracker, catalog: FakeCatalog
) -> None:
    req = RuleBacktestInput(
        strategy_cfg=StrategyConfig(type="buy_and_hold"),
        backtest_cfg=_window(),
        source=_source("KO"),
        recording=Recording(persist=True),
        experiment_id="exp-1",
    )
    with pytest.raises(Timeout):
        backtester.run_rule_backtest(req, _gone)
    assert catalog.backtests == [] and tracker.runs == {}


def test_signal_backtest_refuses_a_rule_strategy_and_an_unset_lag(backtester: Backtester) -> None:
    dates = np.arange("2020-01-01", "2020-01-11", dtype="datetime64[D]")
    base = {
        "signal": np.ones((10, 1)),
        "dates": dates,
        "symbols": ["X"],
        "prices": {"close": np.linspace(10, 11, 10).reshape(-1, 1)},
    }
    with pytest.raises(InvalidArgument) as info:
        backtester.run_backtest(
            SignalBacktestInput(
                **base,
                strategy_cfg=StrategyConfig(type="sma_cross"),
                backtest_cfg=BacktestConfig(execution_lag=1),
            )
        )
    assert info.value.field == "strategy_cfg.type"
    with pytest.raises(InvalidArgument) as info:
        backtester.run_backtest(
            SignalBacktestInput(
                **base, strategy_cfg=StrategyConfig(type="long_only"), backtest_cfg=BacktestConfig()
            )
        )
    assert info.value.field == "backtest_cfg.execution_lag"


def test_a_missing_dataset_and_an_alpha_strategy_name_their_fields(backtester: Backtester) -> None:
    with pytest.raises(InvalidArgument) as info:
        backtester.run_rule_backtest(
            RuleBacktestInput(StrategyConfig(type="buy_and_hold"), _window(), PriceSource(None))
        )
    assert info.value.field == "source.dataset_cfg"
    with pytest.raises(InvalidArgument) as info:
        backtester.optimize(OptimizeInput("long_only", _window(), _source("AAPL"), grid=GRID))
    assert info.value.field == "strategy_type"


# ----------------------------------------------------------------------------- searches


def test_optimization_stores_the_chosen_backtest_then_every_ranked_set(
    backtester: Backtester, catalog: FakeCatalog
) -> None:
    req = OptimizeInput(
        "sma_cross",
        _window(),
        _source("AAPL"),
        grid=GRID,
        recording=Recording(persist=True, request_id="opt", fingerprint="ab"),
    )
    run = backtester.optimize(req)
    (best,) = catalog.backtests
    assert best.request_id == "opt:best" and best.parameters["optimization"]["n_trials"] == 6
    rows, key = catalog.optimizations[0]
    assert key == "opt:sets" and run.optimization_ids == [f"opt-{i}" for i in range(len(rows))]
    assert [r.parameter_set for r in rows] == [t.parameter_set for t in run.result.ranked]
    for row, trial in zip(rows, run.result.ranked, strict=True):
        assert row.backtest_id == run.backtest_id
        assert row.sharpe_ratio == trial.metrics.get("sharpe")
        assert row.rank == trial.rank and row.objective_function == "sharpe"
    assert run.chosen == (run.result.best or run.result.ranked[0])


def test_walk_forward_rows_follow_the_domain_rules(backtester: Backtester, catalog: FakeCatalog) -> None:
    req = WalkForwardInput(
        "sma_cross",
        _window(),
        _source("AAPL", "KO"),
        grid=GRID,
        in_sample_bars=126,
        out_of_sample_bars=63,
        recording=Recording(persist=True, request_id="wf", fingerprint="cd"),
    )
    run = backtester.walk_forward(req)
    (parent,) = catalog.backtests
    assert parent.request_id == "wf:parent" and parent.symbol == "PORTFOLIO"
    rows, key = catalog.walk_forward[0]
    assert key == "wf:windows" and len(rows) == len(run.result.windows) > 1
    for row, window in zip(rows, run.result.windows, strict=True):
        oos = window.out_of_sample.metrics if window.out_of_sample is not None else None
        assert row.parent_backtest_id == run.parent_backtest_id
        assert row.window_size_months == 6 and row.step_size_months == 3
        assert row.is_statistically_significant == is_significant_window(oos)
        total = oos.get("total_return") if oos is not None else None
        assert row.is_profitable == (None if total is None else total > 0)


@pytest.mark.parametrize(
    ("psr", "significant"),
    [(None, False), (SIGNIFICANT_PSR, False), (np.nextafter(SIGNIFICANT_PSR, 1.0), True), (0.5, False)],
)
def test_window_significance_is_psr_above_095(psr: float | None, significant: bool) -> None:
    reasons = {} if psr is not None else {"probabilistic_sharpe": "too few returns"}
    ms = MetricSet(values={"probabilistic_sharpe": psr}, reasons=reasons, conventions={})
    assert is_significant_window(ms) is significant
    assert is_significant_window(None) is False


# ----------------------------------------------------------------------------- risk and portfolios


def test_monte_carlo_of_a_stored_backtest_uses_its_conventions(
    backtester: Backtester, catalog: FakeCatalog
) -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.0005, 0.01, 200)
    catalog.equity["bt-1"] = StoredEquity(
        1000.0 * np.cumprod(1 + r), 1000.0, {"periods_per_year": 52, "rf": 0.01}
    )
    got = backtester.monte_carlo(
        MonteCarloInput(backtest_id="bt-1", n_simulations=200, block_length=5, seed=2)
    )
    expected = monte_carlo(r, n_simulations=200, block_length=5, seed=2, periods_per_year=52.0, rf=0.01)
    assert got.probability_of_loss == expected.probability_of_loss
    np.testing.assert_allclose(got.distributions["sharpe"].values, expected.distributions["sharpe"].values)
    with pytest.raises(NotFound):
        backtester.monte_carlo(MonteCarloInput(backtest_id="other"))


def test_portfolio_is_stored_with_a_default_name_that_fits_the_column(
    backtester: Backtester, catalog: FakeCatalog
) -> None:
    legs = [PortfolioLeg(symbol=s, strategy_cfg=StrategyConfig(type="buy_and_hold")) for s in ("AAPL", "KO")]
    req = PortfolioInput(
        legs=legs,
        dataset_cfg=DatasetConfig(source="sp500", start_date="2016-01-01", end_date="2018-12-31"),
        backtest_cfg=_window(initial_capital=50_000.0),
        rebalance_frequency="monthly",
        position_sizing_method="equal",
        recording=Recording(persist=True, request_id="pf"),
    )
    run = backtester.run_portfolio(req)
    entry, key = catalog.portfolios[0]
    assert run.portfolio_backtest_id == "pf-1" and key == "pf"
    assert entry.portfolio_name == "equal monthly: AAPL+KO" and entry.initial_capital == 50_000.0
    assert (entry.start_date, entry.end_date) == WINDOW
    np.testing.assert_array_equal(entry.equity, run.result.backtest.equity)
    assert entry.weights_history.shape == (len(entry.dates), 2)
    with pytest.raises(Timeout):
        backtester.run_portfolio(req, _gone)
    assert len(catalog.portfolios) == 1


# ----------------------------------------------------------------------------- series


def test_plot_thinning_keeps_the_extremes() -> None:
    x = np.sin(np.linspace(0, 50, 100_003))
    x[77_777] = -5.0
    keep, values = _thin(x, 300)
    assert len(keep) <= 320 and keep[0] == 0 and keep[-1] == x.size - 1
    assert values.min() == -5.0 and values.max() == x.max()
    assert np.all(np.diff(keep) > 0)
