"""Typed configuration of an alpha-backtest run.

The four sections mirror the seed page (`dataset_cfg`, `model_cfg`,
`strategy_cfg`, `backtest_cfg`) and the YAML files under `configs/`. Every
convention of `docs/metrics.md` that a user may change is a field here with
the documented default; nothing in the domain hides a constant that belongs
in this file.

Validation errors name the offending field with its full dotted path
(`dataset_cfg.segments.test`), because they are raised by pydantic against
the whole `AlphaBacktestConfig` document.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AlphaBacktestConfig",
    "BacktestConfig",
    "DatasetConfig",
    "FeatureSpec",
    "LabelConfig",
    "MissingDataConfig",
    "ModelConfig",
    "RollingConfig",
    "Segment",
    "Segments",
    "StrategyConfig",
    "SyntheticConfig",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segment(_Strict):
    """An inclusive date range."""

    start: dt.date
    end: dt.date

    @model_validator(mode="after")
    def _ordered(self) -> Segment:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        return self

    @classmethod
    def from_pair(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 2:
            return {"start": value[0], "end": value[1]}
        return value


class Segments(_Strict):
    """Train, valid and test date ranges, in this order and not overlapping.

    Between consecutive segments the last `execution_lag + horizon` dates of the
    earlier one are purged, plus `embargo` extra dates (see `docs/metrics.md`).
    """

    train: Segment
    valid: Segment | None = None
    test: Segment

    @field_validator("train", "valid", "test", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return Segment.from_pair(value)

    @model_validator(mode="after")
    def _ordered(self) -> Segments:
        ordered = [("train", self.train), ("valid", self.valid), ("test", self.test)]
        present = [(n, s) for n, s in ordered if s is not None]
        for (n1, s1), (n2, s2) in itertools.pairwise(present):
            if s2.start <= s1.end:
                raise ValueError(f"segment {n2} starts ({s2.start}) on or before {n1} ends ({s1.end})")
        return self


class FeatureSpec(_Strict):
    """One feature family computed over one or more windows.

    `name` is a family of `alphaswarm_common.features` (`ret`, `mom`, `vol`,
    `ma_ratio`, ...); `cs_rank` adds the cross-sectional rank of every column
    of the family per date.
    """

    name: str
    windows: list[int] = Field(default_factory=list)
    cs_rank: bool = False

    @field_validator("windows")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError("every window must be >= 1")
        return value


def default_features() -> list[FeatureSpec]:
    return [
        FeatureSpec(name="ret", windows=[1, 5, 20], cs_rank=True),
        FeatureSpec(name="mom", windows=[60, 120], cs_rank=True),
        FeatureSpec(name="vol", windows=[20, 60], cs_rank=True),
        FeatureSpec(name="ma_ratio", windows=[10, 50], cs_rank=True),
    ]


class LabelConfig(_Strict):
    """Label of the decision formed at t: `close[t+lag+h] / close[t+lag] - 1`."""

    horizon: int = Field(default=1, ge=1)
    execution_lag: int = Field(default=1, ge=0)
    transform: Literal["raw", "demean", "rank"] = "raw"


class SyntheticConfig(_Strict):
    """A generated panel with a planted alpha (`source: synthetic`).

    Returns follow a factor model; a known signal observed at t predicts the
    return the decision earns (`close[t+lag+h]/close[t+lag]-1`) with cross-sectional
    IC `ic` in expectation. Seeded: the same config gives the same panel.
    """

    n_dates: int = Field(default=2520, ge=50)
    n_symbols: int = Field(default=50, ge=1)
    ic: float = Field(default=0.05, ge=-1, le=1)
    seed: int = 0
    start_date: dt.date = dt.date(2010, 1, 4)
    annual_volatility: float = Field(default=0.25, gt=0)
    ohlcv: bool = True


class MissingDataConfig(_Strict):
    """How gaps in the panel are treated (applied causally: no symbol's future is used)."""

    min_history: int = Field(
        default=0, ge=0, description="Bars a symbol must have before its values are used."
    )
    ffill_limit: int = Field(default=0, ge=0, description="Forward-fill at most this many missing closes.")
    drop_incomplete_symbols: bool = Field(
        default=False, description="Drop symbols missing any close in the range."
    )


class DatasetConfig(_Strict):
    """Where the panel comes from and how it is cut into segments.

    `source` is either the name of a shipped dataset (`sp500`) or a path to a
    CSV or Parquet file, long (`date,symbol,close[,open,high,low,volume]`) or
    wide (`date` then one close column per symbol).
    """

    source: str = "sp500"
    format: Literal["auto", "long", "wide"] = "auto"
    symbols: list[str] | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    segments: Segments | None = Field(
        default=None,
        description="Train/valid/test ranges; required to train, unused by price-only backtests.",
    )
    features: list[FeatureSpec] = Field(default_factory=default_features)
    label: LabelConfig = Field(default_factory=LabelConfig)
    embargo: int = Field(default=0, ge=0)
    synthetic: SyntheticConfig | None = Field(
        default=None, description="Generator settings when source is 'synthetic'."
    )
    missing: MissingDataConfig = Field(default_factory=MissingDataConfig)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("symbols, when given, must not be empty")
            if len(set(value)) != len(value):
                raise ValueError("symbols must be unique")
        return value

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[FeatureSpec]) -> list[FeatureSpec]:
        if not value:
            raise ValueError("at least one feature is required")
        return value


class RollingConfig(_Strict):
    """Retrain every `step` bars on an expanding or rolling window (Qlib's rolling mode)."""

    step: int = Field(default=63, ge=1, description="Bars between retrainings.")
    window: int | None = Field(
        default=None, ge=20, description="Training bars for a rolling window; None expands."
    )


class ModelConfig(_Strict):
    """The estimator to fit and the registered-model name it is stored under."""

    type: str = "ridge"
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, description="Registered model name; defaults to '<type>-alpha'.")
    seed: int = 0
    rolling: RollingConfig | None = Field(
        default=None,
        description="Evaluate with periodic retraining over valid+test (stitched out-of-sample).",
    )
    time_budget_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Stop growing the model once its fit has run this long and keep what was fitted "
            "(boosting rounds, trees). Models that grow step by step only: hist_gradient_boosting, "
            "lightgbm, mlp, random_forest, extra_trees."
        ),
    )

    @property
    def registered_name(self) -> str:
        return self.name or f"{self.type}-alpha"


class StrategyConfig(_Strict):
    """How predictions become target weights (`long_short_topk`, `long_only_topk`, ...)."""

    type: str = "long_short_topk"
    params: dict[str, Any] = Field(default_factory=dict)


class BacktestConfig(_Strict):
    """Accounting conventions of the backtest (defaults of the seed schema)."""

    initial_capital: float = Field(default=10_000.0, gt=0)
    fees: float = Field(default=0.001, ge=0, lt=1)
    slippage: float = Field(default=0.001, ge=0, lt=1)
    execution_lag: int | None = Field(
        default=None, ge=0, description="Defaults to dataset_cfg.label.execution_lag."
    )
    fill_price: Literal["close", "open"] = "close"
    rebalance_every: int = Field(default=1, ge=1)
    rf: float = 0.0
    periods_per_year: float | None = Field(default=None, gt=0)
    turnover_penalty: float = Field(default=0.001, ge=0)
    start_date: dt.date | None = Field(default=None, description="Defaults to the test segment's start.")
    end_date: dt.date | None = Field(default=None, description="Defaults to the test segment's end.")
    min_fee: float = Field(default=0.0, ge=0, description="Minimum cost per order, in currency.")
    max_gross_leverage: float | None = Field(
        default=None, gt=0, description="Scale weights so sum |w| stays below."
    )
    stop_loss: float | None = Field(default=None, gt=0, lt=1, description="Close a position after this loss.")
    take_profit: float | None = Field(default=None, gt=0, description="Close a position after this gain.")
    benchmark: str | None = Field(
        default=None, description="A symbol of the dataset used for beta and alpha."
    )

    @model_validator(mode="after")
    def _window(self) -> BacktestConfig:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class AlphaBacktestConfig(_Strict):
    """One alpha-backtest run: the YAML document a user submits."""

    dataset_cfg: DatasetConfig
    model_cfg: ModelConfig = Field(default_factory=ModelConfig)
    strategy_cfg: StrategyConfig | None = Field(
        default=None,
        description="How predictions become weights; when absent, the reused deployment's strategy, else the default.",
    )
    backtest_cfg: BacktestConfig = Field(default_factory=BacktestConfig)
    run_name: str = Field(default="alpha-backtest", min_length=1, max_length=200)
    experiment_name: str = Field(default="alphaswarm", min_length=1)
    train_first: bool = True
    capture_predictions: bool = False
    deployment_id: str | None = None
    weights: dict[str, float] | None = None
    request_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _coherent(self) -> AlphaBacktestConfig:
        lag = self.backtest_cfg.execution_lag
        if lag is not None and lag != self.dataset_cfg.label.execution_lag:
            raise ValueError(
                "backtest_cfg.execution_lag must equal dataset_cfg.label.execution_lag "
                f"({lag} != {self.dataset_cfg.label.execution_lag}): the IC and the PnL "
                "must be measured on the same return"
            )
        if not self.train_first and not self.deployment_id:
            raise ValueError("deployment_id is required when train_first is false")
        if self.dataset_cfg.segments is None:
            if self.train_first:
                raise ValueError("dataset_cfg.segments is required to train (train and test ranges)")
            if not (self.backtest_cfg.start_date and self.backtest_cfg.end_date):
                raise ValueError(
                    "dataset_cfg.segments is required unless backtest_cfg.start_date and end_date give the window"
                )
        return self

    @property
    def execution_lag(self) -> int:
        return self.dataset_cfg.label.execution_lag

    @property
    def strategy(self) -> StrategyConfig:
        """The strategy given, or the default one."""
        return self.strategy_cfg or StrategyConfig()

    @property
    def resolved_backtest_cfg(self) -> BacktestConfig:
        """The backtest section with the execution lag filled in from the label."""
        return self.backtest_cfg.model_copy(update={"execution_lag": self.execution_lag})
