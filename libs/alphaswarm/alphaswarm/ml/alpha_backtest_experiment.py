"""`AlphaBacktestExperiment`: how does this model perform when its predictions drive trades?

    from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment

    result = AlphaBacktestExperiment(
        dataset_cfg=dataset_cfg, model_cfg=model_cfg, strategy_cfg=strategy_cfg, backtest_cfg=backtest_cfg,
        run_name="ridge-alpha-backtest", train_first=True, capture_predictions=True,
    ).run()
    print(result.combined_metrics)

The experiment is a client of the gateway's gRPC API: it trains (unless
`train_first=False`), registers and deploys the model as an alpha, backtests the
trades its out-of-sample predictions drive, and stores ML and trading metrics
together under one MLflow parent run and in the catalog. Without a configured
gateway (`ALPHASWARM_GATEWAY_ADDR`) it starts the embedded stack first.

Config arguments accept dicts or the typed models of `alphaswarm_common.config`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from alphaswarm.client import AlphaBacktestResult, RunFailed, gateway_client
from alphaswarm_common.config import (
    AlphaBacktestConfig,
    BacktestConfig,
    DatasetConfig,
    ModelConfig,
    StrategyConfig,
)
from alphaswarm_common.configio import parse_config, read_config_file
from alphaswarm_common.events import ProgressEvent
from alphaswarm_common.settings import Settings

__all__ = ["AlphaBacktestExperiment", "AlphaBacktestResult", "RunFailed", "load_config"]


def _section(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


def load_config(source: str | Path | Mapping[str, Any]) -> AlphaBacktestConfig:
    """An `AlphaBacktestConfig` from a YAML/JSON file path or a mapping; errors name the field."""
    if isinstance(source, Mapping):
        return parse_config(source)
    return read_config_file(source)


class AlphaBacktestExperiment:
    """Train a model, deploy it as DeployedModelAlpha, backtest it, and keep the combined metrics."""

    def __init__(
        self,
        dataset_cfg: DatasetConfig | Mapping[str, Any],
        model_cfg: ModelConfig | Mapping[str, Any] | None = None,
        strategy_cfg: StrategyConfig | Mapping[str, Any] | None = None,
        backtest_cfg: BacktestConfig | Mapping[str, Any] | None = None,
        *,
        run_name: str = "alpha-backtest",
        train_first: bool = True,
        capture_predictions: bool = False,
        deployment_id: str | None = None,
        weights: Mapping[str, float] | None = None,
        experiment_name: str = "alphaswarm",
        request_id: str | None = None,
        settings: Settings | None = None,
        gateway_addr: str | None = None,
    ) -> None:
        doc: dict[str, Any] = {
            "dataset_cfg": _section(dataset_cfg),
            "run_name": run_name,
            "train_first": train_first,
            "capture_predictions": capture_predictions,
            "experiment_name": experiment_name,
        }
        for key, value in (
            ("model_cfg", model_cfg),
            ("strategy_cfg", strategy_cfg),
            ("backtest_cfg", backtest_cfg),
        ):
            if value is not None:
                doc[key] = _section(value)
        if deployment_id is not None:
            doc["deployment_id"] = deployment_id
        if weights is not None:
            doc["weights"] = dict(weights)
        if request_id is not None:
            doc["request_id"] = request_id
        self.config = load_config(doc)
        self.settings = settings
        self.gateway_addr = gateway_addr

    @classmethod
    def from_config(
        cls, config: AlphaBacktestConfig | str | Path | Mapping[str, Any], **kwargs: Any
    ) -> AlphaBacktestExperiment:
        cfg = config if isinstance(config, AlphaBacktestConfig) else load_config(config)
        doc = cfg.model_dump(mode="json", exclude_unset=True)
        sections = {
            k: doc.pop(k) for k in ("dataset_cfg", "model_cfg", "strategy_cfg", "backtest_cfg") if k in doc
        }
        return cls(**sections, **doc, **kwargs)

    def run(
        self,
        *,
        on_event: Callable[[ProgressEvent], None] | None = None,
        raise_on_failure: bool = True,
        timeout: float | None = None,
    ) -> AlphaBacktestResult:
        """Run the workflow to its end; raise `RunFailed` (naming the stage) when it fails."""
        client = gateway_client(self.settings, gateway_addr=self.gateway_addr)
        try:
            result = client.run(
                self.config, on_event=on_event, timeout=timeout, request_id=self.config.request_id or ""
            )
        finally:
            client.close()
        if raise_on_failure and result.status != "succeeded":
            raise RunFailed(result)
        return result
