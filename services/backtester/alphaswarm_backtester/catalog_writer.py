"""`PersistenceCatalogWriter`: the `CatalogWriter` of the backtester over the persistence service.

Each save is one unary call with the writer's deadline. A backtest saved
under a `request_id` that the catalog already holds (`REQUEST_ID_REUSED`) is
read back: when the stored row records the same request fingerprint (a
replay whose only difference is the measured execution time), its id is
the answer; otherwise the ALREADY_EXISTS stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.catalog import (
    BacktestEntry,
    OptimizationEntry,
    PortfolioEntry,
    StoredEquity,
    WalkForwardEntry,
)
from alphaswarm_backtester.catalog_mapping import (
    backtest_record,
    optimization_record,
    portfolio_record,
    trades_to_proto,
    walk_forward_record,
)
from alphaswarm_common.errors import AlreadyExists, NotFound
from alphaswarm_common.grpc_client import call
from alphaswarm_common.protoconv import array_from_proto, metricset_from_proto, struct_to_dict

__all__ = ["PersistenceCatalogWriter"]


class PersistenceCatalogWriter:
    """The catalog through `PersistenceService` (see the module docstring)."""

    def __init__(self, persistence: ppb_grpc.PersistenceServiceStub, *, deadline: float = 60.0) -> None:
        self.persistence = persistence
        self.deadline = deadline

    def _call(self, method: str, request: object) -> Any:
        return call(getattr(self.persistence, method), request, timeout=self.deadline, target="persistence")

    def save_backtest(self, entry: BacktestEntry) -> str:
        record = backtest_record(entry)
        request = ppb.SaveBacktestResultRequest(
            result=record, trades=trades_to_proto(entry.output), request_id=entry.request_id
        )
        try:
            return str(self._call("SaveBacktestResult", request).backtest_id)
        except AlreadyExists as exc:
            if not entry.request_id or not entry.backtest_id or exc.reason != "REQUEST_ID_REUSED":
                raise
            try:
                stored = self._call(
                    "GetBacktestResult", ppb.GetBacktestResultRequest(backtest_id=entry.backtest_id)
                )
            except NotFound:
                raise exc from None
            if struct_to_dict(stored.result.parameters).get("request_fingerprint") != entry.fingerprint:
                raise
            return entry.backtest_id

    def save_optimizations(self, rows: Sequence[OptimizationEntry], *, request_id: str = "") -> list[str]:
        saved = self._call(
            "SaveOptimizationResults",
            ppb.SaveOptimizationResultsRequest(
                results=[optimization_record(r) for r in rows], request_id=request_id
            ),
        )
        return [str(i) for i in saved.optimization_ids]

    def save_walk_forward(self, rows: Sequence[WalkForwardEntry], *, request_id: str = "") -> list[str]:
        saved = self._call(
            "SaveWalkForwardTests",
            ppb.SaveWalkForwardTestsRequest(
                windows=[walk_forward_record(r) for r in rows], request_id=request_id
            ),
        )
        return [str(i) for i in saved.walk_forward_ids]

    def save_portfolio(self, entry: PortfolioEntry, *, request_id: str = "") -> str:
        saved = self._call(
            "SavePortfolioBacktest",
            ppb.SavePortfolioBacktestRequest(portfolio=portfolio_record(entry), request_id=request_id),
        )
        return str(saved.portfolio_backtest_id)

    def stored_equity(self, backtest_id: str) -> StoredEquity:
        record = self._call(
            "GetBacktestResult", ppb.GetBacktestResultRequest(backtest_id=backtest_id, include_trades=False)
        ).result
        equity = (
            array_from_proto(record.equity_curve, field="equity_curve")
            if record.HasField("equity_curve")
            else None
        )
        _, _, conventions = metricset_from_proto(record.metrics)
        return StoredEquity(equity=equity, initial_capital=record.initial_capital, conventions=conventions)
