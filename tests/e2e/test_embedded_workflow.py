"""The alpha-backtest workflow end to end over the embedded stack's gRPC servers.

Checks the numbers against independent computations: labels from the raw CSV
with pandas, per-date IC with scipy, and the catalog and MLflow rows the run
says it wrote.
"""

from __future__ import annotations

import concurrent.futures as cf
import uuid
from importlib.resources import files

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats

from alphaswarm.client import GatewayClient, RunFailed
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_common.grpc_client import channel, remote_field
from tests.e2e.conftest import STAGES, small_run

pytestmark = pytest.mark.e2e


def _experiment(stack: EmbeddedStack, doc: dict, **kwargs) -> AlphaBacktestExperiment:  # type: ignore[no-untyped-def]
    return AlphaBacktestExperiment.from_config(
        doc, settings=stack.settings, gateway_addr=stack.gateway_addr, **kwargs
    )


def _persistence(stack: EmbeddedStack) -> ppb_grpc.PersistenceServiceStub:
    assert stack.settings.persistence_addr
    return ppb_grpc.PersistenceServiceStub(channel(stack.settings.persistence_addr))


def _stage_order(events) -> list[str]:  # type: ignore[no-untyped-def]
    order: list[str] = []
    for e in events:
        if not order or order[-1] != e.stage:
            order.append(e.stage)
    return order


@pytest.fixture(scope="module")
def first_run(stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    return _experiment(stack, small_run(run_name="e2e-first", capture_predictions=True)).run()


def test_run_succeeds_with_every_stage_and_link(first_run) -> None:  # type: ignore[no-untyped-def]
    r = first_run
    assert r.status == "succeeded", r.error
    assert _stage_order(r.events) == STAGES
    assert [e.seq for e in r.events] == list(range(1, len(r.events) + 1))
    for link in (
        r.task_id,
        r.run_id,
        r.mlflow_parent_run_id,
        r.mlflow_train_run_id,
        r.mlflow_backtest_run_id,
        r.model_name,
        r.model_version,
        r.deployment_id,
        r.backtest_id,
    ):
        assert link
    cm = r.combined_metrics
    assert set(cm["ml"]) == {"ic_spearman", "ic_pearson", "icir", "mae", "rmse", "hit_rate"}
    assert set(cm["trading"]) == {
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "total_return",
        "turnover_adj_sharpe",
    }
    assert -1.0 <= cm["score"] <= 1.0
    assert cm["trading"]["max_drawdown"] <= 0


def test_mlflow_parent_run_has_children_and_combined_metrics(stack: EmbeddedStack, first_run) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient(
        tracking_uri=stack.settings.tracking_uri(), registry_uri=stack.settings.tracking_uri()
    )
    parent = client.get_run(first_run.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["score"] == pytest.approx(first_run.combined_metrics["score"])
    assert parent.data.metrics["trading_sharpe"] == pytest.approx(
        first_run.combined_metrics["trading"]["sharpe"]
    )
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert {c.info.run_name for c in children} == {"train", "backtest"}
    assert {c.info.run_id for c in children} == {
        first_run.mlflow_train_run_id,
        first_run.mlflow_backtest_run_id,
    }
    assert all(c.info.status == "FINISHED" for c in children)
    mv = client.get_model_version(first_run.model_name, first_run.model_version)
    assert mv.run_id == first_run.mlflow_train_run_id
    assert (
        str(client.get_model_version_by_alias(first_run.model_name, "champion").version)
        == first_run.model_version
    )


def _audit(stack: EmbeddedStack, run_id: str) -> pd.DataFrame:
    stub = _persistence(stack)
    rows, token = [], ""
    while True:
        page = stub.ListPredictionAudit(
            ppb.ListPredictionAuditRequest(run_id=run_id, page_size=5000, page_token=token), timeout=30
        )
        rows += [
            {
                "date": r.date,
                "symbol": r.symbol,
                "prediction": r.prediction,
                "realized_return": r.realized_return if r.HasField("realized_return") else np.nan,
                "target_weight": r.target_weight if r.HasField("target_weight") else np.nan,
                "held_weight": r.held_weight,
                "pnl_contribution": r.pnl_contribution,
            }
            for r in page.rows
        ]
        token = page.next_page_token
        if not token:
            return pd.DataFrame(rows)


def test_labels_follow_the_timing_contract_and_ml_metrics_match_scipy(
    stack: EmbeddedStack, first_run
) -> None:  # type: ignore[no-untyped-def]
    audit = _audit(stack, first_run.run_id)
    window = first_run.combined_metrics["window"]
    assert audit["date"].min() == window["start"] and audit["date"].max() == window["end"]
    assert len(audit) == window["n_dates"] * len(window["symbols"])  # every (date, symbol) of the window

    # label = close[t+lag+h] / close[t+lag] - 1 with lag = h = 1, from the raw file, inside the window
    raw = pd.read_csv(files("alphaswarm_common") / "data" / "sp500_dataset.csv.gz", index_col="Date")
    close = raw.loc[window["start"] : window["end"]]
    expected = (close.shift(-2) / close.shift(-1) - 1).stack().rename("expected").reset_index()
    expected.columns = ["date", "symbol", "expected"]
    merged = audit.merge(expected, on=["date", "symbol"], how="left")
    both = merged.dropna(subset=["realized_return", "expected"])
    assert len(both) == len(merged) - 2 * len(
        window["symbols"]
    )  # the last two dates have no label in the window
    np.testing.assert_allclose(both["realized_return"], both["expected"], rtol=1e-9, atol=1e-12)

    ic = [
        stats.spearmanr(g["prediction"], g["realized_return"]).statistic
        for _, g in both.groupby("date")
        if g["realized_return"].nunique() > 1
    ]
    assert first_run.combined_metrics["ml"]["ic_spearman"] == pytest.approx(np.mean(ic), rel=1e-9)
    assert first_run.combined_metrics["ml"]["icir"] == pytest.approx(
        np.mean(ic) / np.std(ic, ddof=1), rel=1e-9
    )
    err = both["prediction"] - both["realized_return"]
    assert first_run.combined_metrics["ml"]["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-9)
    nz = both[(both["prediction"] != 0) & (both["realized_return"] != 0)]
    assert first_run.combined_metrics["ml"]["hit_rate"] == pytest.approx(
        np.mean(np.sign(nz["prediction"]) == np.sign(nz["realized_return"])), rel=1e-12
    )

    # The long-short top-3 weights formed from the predictions: 3 longs at +1/6, 3 shorts at -1/6.
    day = audit[audit["date"] == window["start"]].sort_values("prediction")
    np.testing.assert_allclose(day["target_weight"].iloc[-3:], 1 / 6)
    np.testing.assert_allclose(day["target_weight"].iloc[:3], -1 / 6)
    # Contributions of a bar add up to the gross portfolio return before costs.
    assert audit["pnl_contribution"].notna().all()


def test_catalog_holds_the_backtest_and_the_run(stack: EmbeddedStack, first_run) -> None:  # type: ignore[no-untyped-def]
    stub = _persistence(stack)
    bt = stub.GetBacktestResult(
        ppb.GetBacktestResultRequest(backtest_id=first_run.backtest_id, include_trades=True), timeout=30
    )
    assert bt.result.strategy_type == "alpha:long_short_topk"
    assert bt.result.metrics.values["sharpe"].value == pytest.approx(
        first_run.combined_metrics["trading"]["sharpe"], abs=1e-4
    )
    assert len(bt.trades) > 0
    run = stub.GetAlphaBacktestRun(ppb.GetAlphaBacktestRunRequest(run_id=first_run.run_id), timeout=30).run
    assert run.backtest_id == first_run.backtest_id
    assert run.mlflow_parent_run_id == first_run.mlflow_parent_run_id
    assert run.predictions_captured


def test_reusing_a_deployment_trains_nothing(stack: EmbeddedStack, first_run) -> None:  # type: ignore[no-untyped-def]
    r = _experiment(
        stack, small_run(run_name="e2e-reuse", train_first=False, deployment_id=first_run.deployment_id)
    ).run()
    assert r.status == "succeeded"
    assert r.mlflow_train_run_id is None
    assert (r.model_name, r.model_version, r.deployment_id) == (
        first_run.model_name,
        first_run.model_version,
        first_run.deployment_id,
    )
    assert "training" not in {e.stage for e in r.events}
    assert any("reusing deployment" in e.message for e in r.events)
    # Same model, same window, same data: the same predictions and so the same ML metrics.
    assert r.combined_metrics["ml"] == first_run.combined_metrics["ml"]


def test_train_first_with_a_deployment_rolls_it(stack: EmbeddedStack, first_run) -> None:  # type: ignore[no-untyped-def]
    r = _experiment(
        stack,
        small_run(
            run_name="e2e-roll",
            train_first=True,
            deployment_id=first_run.deployment_id,
            model_cfg={"params": {"alpha": 50.0}},
        ),
    ).run()
    assert r.status == "succeeded"
    assert r.deployment_id == first_run.deployment_id
    assert int(r.model_version) > int(first_run.model_version)
    assert any(e.message.startswith("rolled deployment") for e in r.events)


def test_unknown_deployment_is_not_found_at_acceptance(stack: EmbeddedStack) -> None:
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    before = len(client.list(page_size=500).runs)
    cfg = AlphaBacktestConfig.model_validate(small_run(train_first=False, deployment_id=str(uuid.uuid4())))
    with pytest.raises(NotFound) as err:
        client.start(cfg)
    assert remote_field(err.value) == "deployment_id"
    assert len(client.list(page_size=500).runs) == before  # nothing written


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"model_cfg": {"type": "no_such_model"}}, "model_cfg.type"),
        ({"model_cfg": {"type": "ridge", "params": {"alpha": 1.0, "bogus": 3}}}, "model_cfg.params.bogus"),
        ({"strategy_cfg": {"type": "long_short_topk", "params": {"top_k": 50}}}, "strategy_cfg.params.top_k"),
        ({"strategy_cfg": {"type": "no_such_strategy"}}, "strategy_cfg.type"),
        (
            {"strategy_cfg": {"type": "sma_cross", "params": {}}},
            "strategy_cfg.type",
        ),  # a rule cannot trade an alpha
        ({"dataset_cfg": {**small_run()["dataset_cfg"], "symbols": ["AAPL", "NOPE"]}}, "dataset_cfg.symbols"),
        (
            {
                "dataset_cfg": {
                    **small_run()["dataset_cfg"],
                    "segments": {"train": ["2010-01-01", "2015-12-31"], "test": ["2030-01-01", "2031-01-01"]},
                }
            },
            "dataset_cfg.segments.test",
        ),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stack: EmbeddedStack, patch: dict, field: str
) -> None:
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    before = len(client.list(page_size=500).runs)
    cfg = AlphaBacktestConfig.model_validate(small_run(**patch))
    with pytest.raises(InvalidArgument) as err:
        client.start(cfg)
    assert remote_field(err.value) == field, str(err.value)
    assert len(client.list(page_size=500).runs) == before


def test_a_failing_stage_fails_the_run_everywhere_and_others_keep_going(stack: EmbeddedStack) -> None:
    # A train segment too short for the 50-bar features: accepted, then the training stage fails.
    failing = small_run(
        run_name="e2e-fails",
        dataset_cfg={
            **small_run()["dataset_cfg"],
            "start_date": "2010-01-01",
            "segments": {"train": ["2010-01-01", "2010-02-26"], "test": ["2010-06-01", "2010-12-31"]},
        },
    )
    good = small_run(run_name="e2e-concurrent")
    with cf.ThreadPoolExecutor(2) as pool:
        bad_f = pool.submit(lambda: _experiment(stack, failing).run())
        good_f = pool.submit(lambda: _experiment(stack, good).run())
        with pytest.raises(RunFailed) as err:
            bad_f.result(timeout=300)
        ok = good_f.result(timeout=300)
    assert ok.status == "succeeded"
    failed = err.value.result
    assert failed.status == "failed"
    assert failed.error["stage"] == "training"
    assert failed.error["code"] == "INVALID_ARGUMENT"
    assert failed.error["field"] == "dataset_cfg.segments.train"
    assert failed.events[-1].stage == "failed"
    assert failed.events[-1].data["stage"] == "training"
    parent = MlflowClient(stack.settings.tracking_uri()).get_run(failed.mlflow_parent_run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["alphaswarm.error_stage"] == "training"


def test_idempotent_start_returns_the_same_run(stack: EmbeddedStack) -> None:
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    cfg = AlphaBacktestConfig.model_validate(small_run(run_name="e2e-idem"))
    key = f"idem-{uuid.uuid4()}"
    a = client.start(cfg, request_id=key)
    b = client.start(cfg, request_id=key)
    assert (a.run_id, a.task_id) == (b.run_id, b.task_id)
    events = list(client.watch(a.task_id))
    assert events[-1].stage == "completed"
    assert sum(1 for e in events if e.stage == "accepted") == 1


def test_reuse_without_a_strategy_trades_the_deployments_strategy(stack: EmbeddedStack, first_run) -> None:  # type: ignore[no-untyped-def]
    doc = small_run(run_name="e2e-reuse-strategy", train_first=False, deployment_id=first_run.deployment_id)
    del doc["strategy_cfg"]
    r = _experiment(stack, doc).run()
    stored = _persistence(stack).GetBacktestResult(
        ppb.GetBacktestResultRequest(backtest_id=r.backtest_id), timeout=30
    )
    strategy = dict(stored.result.parameters["strategy"])
    assert strategy["type"] == "long_short_topk"
    assert dict(strategy["params"])["top_k"] == 3  # what the deployment was created with, not the default


def test_unknown_weight_key_is_rejected_at_acceptance(stack: EmbeddedStack) -> None:
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    cfg = AlphaBacktestConfig.model_validate(small_run(weights={"sharpe": 1.0, "sharp": 0.5}))
    with pytest.raises(InvalidArgument) as err:
        client.start(cfg)
    assert remote_field(err.value) == "weights.sharp"


def test_watching_a_finished_run_without_kept_events_ends(stack: EmbeddedStack) -> None:
    from google.protobuf import field_mask_pb2

    from alphaswarm.common.v1 import resources_pb2
    from alphaswarm_common.protoconv import config_to_proto

    stub = _persistence(stack)
    cfg = AlphaBacktestConfig.model_validate(small_run(run_name="finished-elsewhere"))
    created = stub.CreateAlphaBacktestRun(
        ppb.CreateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(
                run_name=cfg.run_name, state=resources_pb2.RUN_STATE_PENDING, config=config_to_proto(cfg)
            )
        ),
        timeout=30,
    ).run
    failed = resources_pb2.AlphaBacktestRun(
        run_id=created.run_id,
        state=resources_pb2.RUN_STATE_FAILED,
        stage="failed",
        error=resources_pb2.ErrorDetail(stage="training", code="INTERNAL", message="worker lost"),
    )
    stub.UpdateAlphaBacktestRun(
        ppb.UpdateAlphaBacktestRunRequest(
            run=failed, update_mask=field_mask_pb2.FieldMask(paths=["state", "stage", "error"])
        ),
        timeout=30,
    )
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    events = list(client.watch(created.task_id, timeout=30))
    assert [e.stage for e in events] == ["failed"]
    assert events[0].data["stage"] == "training"


def test_benchmark_gives_beta_and_alpha(stack: EmbeddedStack) -> None:
    r = _experiment(stack, small_run(run_name="e2e-benchmark", backtest_cfg={"benchmark": "JNJ"})).run()
    trading = r.combined_metrics["trading_all"]
    assert trading["beta"] is not None and trading["alpha"] is not None


def test_unknown_benchmark_is_rejected_at_acceptance(stack: EmbeddedStack) -> None:
    client = GatewayClient(stack.gateway_addr or "", settings=stack.settings)
    cfg = AlphaBacktestConfig.model_validate(small_run(backtest_cfg={"benchmark": "SPY"}))
    with pytest.raises(InvalidArgument) as err:
        client.start(cfg)
    assert remote_field(err.value) == "backtest_cfg.benchmark"
