"""Monte Carlo block bootstrap (`alphaswarm_backtester.engine.montecarlo`) and its gRPC method.

The paths are checked against a plain loop implementation of the documented
random stream, the per-path statistics against empyrical, the distributions
against pandas / statistics, the i.i.d. case against its closed-form mean,
and the servicer's stored-backtest path through a fake persistence stub.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_backtester.catalog_writer import PersistenceCatalogWriter
from alphaswarm_backtester.engine import montecarlo as mc
from alphaswarm_backtester.engine.montecarlo import bootstrap_indices, monte_carlo, path_statistics
from alphaswarm_backtester.servicer import BacktesterServicer
from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_common.protoconv import array_to_proto, metricset_to_proto

pytestmark = pytest.mark.unit


def _returns(seed: int, n: int, mu: float = 0.0004, sigma: float = 0.012) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, n) * sigma / math.sqrt(2.0) + mu


# ----------------------------------------------------------------------------- loop reference


def _loop_indices(n: int, n_sim: int, block: int, method: str, seed: int) -> list[list[int]]:
    """The documented stream, one path and one bar at a time."""
    starts_seq, breaks_seq = np.random.SeedSequence(seed).spawn(2)
    starts_rng, breaks_rng = np.random.default_rng(starts_seq), np.random.default_rng(breaks_seq)
    paths: list[list[int]] = []
    if method == "circular":
        n_blocks = -(-n // block)
        starts = starts_rng.integers(0, n, size=(n_sim, n_blocks))
        for k in range(n_sim):
            path = []
            for j in range(n):
                path.append(int((starts[k, j // block] + j % block) % n))
            paths.append(path)
        return paths
    starts = starts_rng.integers(0, n, size=(n_sim, n))
    uniforms = breaks_rng.random((n_sim, n))
    for k in range(n_sim):
        path = []
        current = -1
        for j in range(n):
            new_block = j == 0 or uniforms[k, j] < 1.0 / block
            current = int(starts[k, j]) if new_block else (current + 1) % n
            path.append(current)
        paths.append(path)
    return paths


def _loop_stats(path: list[float], ppy: float, rf: float) -> tuple[float, float, float]:
    equity, peak, worst = 1.0, 1.0, 0.0
    for r in path:
        equity *= 1.0 + r
        peak = max(peak, equity)
        worst = min(worst, equity / peak - 1.0)
    excess = [r - rf / ppy for r in path]
    if max(path) == min(path):
        sharpe = math.nan
    else:
        sharpe = statistics.fmean(excess) / statistics.stdev(excess) * math.sqrt(ppy)
    return equity - 1.0, worst, sharpe


@pytest.mark.parametrize("method", ["stationary", "circular"])
@pytest.mark.parametrize(("n", "block"), [(37, 5), (40, 1), (23, 23), (30, 7)])
def test_matches_a_loop_implementation(method: str, n: int, block: int) -> None:
    r = _returns(3, n)
    n_sim, seed, ppy, rf = 60, 11, 252.0, 0.02
    ref_idx = _loop_indices(n, n_sim, block, method, seed)
    idx = bootstrap_indices(n, n_simulations=n_sim, block_length=block, method=method, seed=seed)  # type: ignore[arg-type]
    assert idx.tolist() == ref_idx

    result = monte_carlo(r, n_simulations=n_sim, block_length=block, method=method, seed=seed, rf=rf)  # type: ignore[arg-type]
    ref = np.array([_loop_stats([float(r[i]) for i in path], ppy, rf) for path in ref_idx])
    np.testing.assert_allclose(result.total_return, ref[:, 0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.max_drawdown, ref[:, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.sharpe, ref[:, 2], rtol=1e-10, atol=1e-12)
    assert result.probability_of_loss == sum(t < 0 for t in ref[:, 0]) / n_sim

    for name, column in (("total_return", 0), ("max_drawdown", 1), ("sharpe", 2)):
        values = ref[:, column][np.isfinite(ref[:, column])]
        dist = result.distributions[name]
        expected = pd.Series(values).quantile([p / 100 for p in dist.percentiles]).to_numpy()
        np.testing.assert_allclose(dist.values, expected, rtol=1e-12, atol=1e-14)
        assert dist.mean == pytest.approx(statistics.fmean(values), rel=1e-12, abs=1e-15)
        assert dist.std == pytest.approx(statistics.stdev(values), rel=1e-10)
        assert dist.n == values.size


def test_path_statistics_match_empyrical() -> None:
    r = _returns(5, 252)
    paths = r[bootstrap_indices(r.size, n_simulations=40, block_length=10, seed=2)]
    stats = path_statistics(paths, periods_per_year=252.0, rf=0.03)
    for k, path in enumerate(paths):
        assert stats["total_return"][k] == pytest.approx(empyrical.cum_returns_final(path), rel=1e-10)
        assert stats["max_drawdown"][k] == pytest.approx(empyrical.max_drawdown(path), rel=1e-10, abs=1e-15)
        assert stats["sharpe"][k] == pytest.approx(
            empyrical.sharpe_ratio(path, risk_free=0.03 / 252.0, period=empyrical.DAILY), rel=1e-10
        )


# ----------------------------------------------------------------------------- distributions


@pytest.mark.parametrize("method", ["stationary", "circular"])
def test_iid_bootstrap_mean_total_return_matches_the_closed_form(method: str) -> None:
    """Block length 1 resamples bars i.i.d.: E[prod(1 + r*)] = (1 + mean r)^n exactly."""
    r = _returns(7, 60, mu=0.002, sigma=0.02)
    n_sim = 20_000
    result = monte_carlo(r, n_simulations=n_sim, block_length=1, method=method, seed=4)  # type: ignore[arg-type]
    m1 = float(np.mean(1.0 + r))
    m2 = float(np.mean((1.0 + r) ** 2))
    mean = m1**r.size - 1.0
    std = math.sqrt(m2**r.size - m1 ** (2 * r.size))
    assert abs(result.distributions["total_return"].mean - mean) < 4.0 * std / math.sqrt(n_sim)
    assert result.distributions["total_return"].std == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize("method", ["stationary", "circular"])
def test_every_bar_is_equally_likely(method: str) -> None:
    """Circular blocks: each bar of a path is uniform over the sample, so E[sum r*] = sum r."""
    r = _returns(8, 80)
    idx = bootstrap_indices(r.size, n_simulations=20_000, block_length=21, method=method, seed=9)  # type: ignore[arg-type]
    counts = np.bincount(idx.ravel(), minlength=r.size) / idx.size
    np.testing.assert_allclose(counts, 1.0 / r.size, rtol=0.05)


def test_block_structure() -> None:
    n, block = 100, 8
    idx = bootstrap_indices(n, n_simulations=500, block_length=block, method="circular", seed=1)
    step = (np.diff(idx, axis=1) % n) == 1
    inside = (np.arange(1, n) % block) != 0
    assert step[:, inside].all()
    idx = bootstrap_indices(n, n_simulations=4000, block_length=block, method="stationary", seed=1)
    breaks = (np.diff(idx, axis=1) % n) != 1
    # P(break) = 1 / block, less the chance that a new start happens to continue the block (1 / n).
    expected = 1.0 / block * (1.0 - 1.0 / n)
    assert breaks.mean() == pytest.approx(expected, rel=0.02)


def test_probability_of_loss_bounds() -> None:
    r = _returns(12, 120)
    gains = np.abs(r) + 1e-4
    losses = -np.abs(r) - 1e-4
    assert monte_carlo(gains, n_simulations=200, seed=1).probability_of_loss == 0.0
    assert monte_carlo(losses, n_simulations=200, seed=1).probability_of_loss == 1.0
    previous = 1.0
    for shift in (-0.002, -0.001, 0.0, 0.001, 0.002):  # same paths, higher returns: never more losses
        result = monte_carlo(r + shift, n_simulations=500, seed=3)
        assert 0.0 <= result.probability_of_loss <= previous
        assert result.probability_of_loss == np.mean(result.total_return < 0)
        previous = result.probability_of_loss


def test_seed_reproducibility_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    r = _returns(13, 90)
    a = monte_carlo(r, n_simulations=300, block_length=5, seed=42)
    b = monte_carlo(r, n_simulations=300, block_length=5, seed=42)
    c = monte_carlo(r, n_simulations=300, block_length=5, seed=43)
    np.testing.assert_array_equal(a.total_return, b.total_return)
    np.testing.assert_array_equal(a.sharpe, b.sharpe)
    assert not np.array_equal(a.total_return, c.total_return)
    first = monte_carlo(r, n_simulations=100, block_length=5, seed=42)
    np.testing.assert_array_equal(first.total_return, a.total_return[:100])
    for method in ("stationary", "circular"):
        whole = bootstrap_indices(90, n_simulations=50, block_length=6, method=method, seed=5)  # type: ignore[arg-type]
        monkeypatch.setattr(mc, "_CHUNK_CELLS", 7 * 90)  # 7 paths a chunk
        chunked = bootstrap_indices(90, n_simulations=50, block_length=6, method=method, seed=5)  # type: ignore[arg-type]
        monkeypatch.undo()
        np.testing.assert_array_equal(whole, chunked)
    assert monte_carlo(r, n_simulations=10, seed=None).n_simulations == 10


def test_constant_returns_have_no_sharpe_distribution() -> None:
    result = monte_carlo(np.full(30, 0.001), n_simulations=50, block_length=3, seed=0)
    assert "sharpe" not in result.distributions
    assert "zero variance" in result.reasons["sharpe"]
    assert np.isnan(result.sharpe).all()
    assert result.distributions["total_return"].mean == pytest.approx(1.001**30 - 1.0, rel=1e-12)
    assert result.distributions["total_return"].std == pytest.approx(0.0, abs=1e-15)
    assert result.probability_of_loss == 0.0


@pytest.mark.parametrize(
    ("returns", "kwargs", "field"),
    [
        ([], {}, "returns"),
        ([0.01], {}, "returns"),
        ([0.01, math.nan, 0.02], {"block_length": 1}, "returns"),
        ([0.01, math.inf, 0.02], {"block_length": 1}, "returns"),
        ([[0.01, 0.02], [0.0, 0.01]], {"block_length": 1}, "returns"),
        ([0.01, -1.5, 0.02], {"block_length": 1}, "returns"),
        ([0.01, 0.02, 0.03], {"block_length": 0}, "block_length"),
        ([0.01, 0.02, 0.03], {"block_length": 4}, "block_length"),
        ([0.01, 0.02, 0.03], {}, "block_length"),  # the default 21 is longer than the series
        ([0.01, 0.02, 0.03], {"block_length": 2.0}, "block_length"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "n_simulations": 1}, "n_simulations"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "n_simulations": True}, "n_simulations"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "n_simulations": 10**7}, "n_simulations"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "method": "moving"}, "method"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "seed": -1}, "seed"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "percentiles": []}, "percentiles"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "percentiles": [5, 101]}, "percentiles[1]"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "periods_per_year": 0}, "periods_per_year"),
        ([0.01, 0.02, 0.03], {"block_length": 1, "rf": math.nan}, "rf"),
    ],
)
def test_input_validation_names_the_field(returns: Any, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        monte_carlo(returns, **kwargs)
    assert info.value.field == field


# ----------------------------------------------------------------------------- gRPC method


class _FakePersistence:
    """Stands in for the persistence stub: one stored backtest."""

    def __init__(self, record: ppb.BacktestRecord) -> None:
        self.record = record
        self.calls: list[Any] = []

    def GetBacktestResult(self, request: ppb.GetBacktestResultRequest, timeout: float) -> Any:
        self.calls.append(request)
        if request.backtest_id != self.record.backtest_id:
            raise NotFound(f"no backtest {request.backtest_id}", field="backtest_id")
        return ppb.GetBacktestResultResponse(result=self.record)


def _Servicer(persistence: Any) -> BacktesterServicer:
    return BacktesterServicer(None, PersistenceCatalogWriter(persistence, deadline=5.0))  # type: ignore[arg-type]


def test_monte_carlo_rpc_reads_a_stored_backtest() -> None:
    r = _returns(21, 150)
    capital = 25_000.0
    equity = capital * np.cumprod(1.0 + r)
    record = ppb.BacktestRecord(
        backtest_id="bt-1",
        initial_capital=capital,
        equity_curve=array_to_proto(equity),
        metrics=metricset_to_proto({"sharpe": 1.0}, {}, {"periods_per_year": 52.0, "rf": 0.02}),
    )
    servicer = _Servicer(_FakePersistence(record))
    response = servicer.MonteCarlo(
        pb.MonteCarloRequest(backtest_id="bt-1", n_simulations=300, block_length=10, seed=6), None
    )
    expected = monte_carlo(r, n_simulations=300, block_length=10, seed=6, periods_per_year=52.0, rf=0.02)
    assert response.n_simulations == 300
    assert response.probability_of_loss == expected.probability_of_loss
    assert set(response.distributions) == {"total_return", "max_drawdown", "sharpe"}
    for name, dist in expected.distributions.items():
        got = response.distributions[name]
        assert list(got.percentiles) == [5.0, 25.0, 50.0, 75.0, 95.0]
        np.testing.assert_allclose(got.values, dist.values, rtol=1e-9)
        assert got.mean == pytest.approx(dist.mean, rel=1e-9)
        assert got.std == pytest.approx(dist.std, rel=1e-9)

    # returns given directly: defaults of the proto (1000 paths, 252 bars a year, rf 0)
    response = servicer.MonteCarlo(
        pb.MonteCarloRequest(returns=array_to_proto(r), block_length=10, seed=6, percentiles=[10, 90]), None
    )
    expected = monte_carlo(r, n_simulations=1000, block_length=10, seed=6, percentiles=[10, 90])
    assert response.n_simulations == 1000
    np.testing.assert_allclose(
        response.distributions["sharpe"].values, expected.distributions["sharpe"].values, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("request_kwargs", "error", "field"),
    [
        ({}, InvalidArgument, "returns"),
        ({"backtest_id": "bt-1", "returns": [0.01, 0.02]}, InvalidArgument, "backtest_id"),
        ({"backtest_id": "missing"}, NotFound, "backtest_id"),
        ({"returns": [0.01, 0.02, 0.0], "block_length": 5}, InvalidArgument, "block_length"),
        ({"returns": [0.01, 0.02, 0.0], "block_length": -1}, InvalidArgument, "block_length"),
        (
            {"returns": [0.01, 0.02, 0.0], "block_length": 1, "n_simulations": -5},
            InvalidArgument,
            "n_simulations",
        ),
        ({"returns": [0.01, 0.02, 0.0], "block_length": 1, "seed": -3}, InvalidArgument, "seed"),
    ],
)
def test_monte_carlo_rpc_errors(request_kwargs: dict[str, Any], error: type[Exception], field: str) -> None:
    record = ppb.BacktestRecord(
        backtest_id="bt-1", initial_capital=1.0, equity_curve=array_to_proto(np.ones(3))
    )
    kwargs = dict(request_kwargs)
    if "returns" in kwargs:
        kwargs["returns"] = array_to_proto(np.asarray(kwargs["returns"], dtype=np.float64))
    with pytest.raises(error) as info:
        _Servicer(_FakePersistence(record)).MonteCarlo(pb.MonteCarloRequest(**kwargs), None)
    assert info.value.field == field  # type: ignore[attr-defined]
