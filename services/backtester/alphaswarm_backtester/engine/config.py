"""`EngineConfig`: the accounting conventions of one backtest run, validated once.

Every field is a convention of METRICS.md ("Time and causality", "Backtest
accounting") with its documented default; the engine hides no other constant.
The fields shared with `alphaswarm_common.config.BacktestConfig` keep its names
and defaults; `min_fee`, `max_gross_leverage`, `stop_loss` and `take_profit`
exist only here for now (pass them to `from_backtest_config` as keywords).

Validation errors are `InvalidArgument` whose `field` is the dotted path of
the offending `backtest_cfg` field (`backtest_cfg.fees`), so a caller that
built the engine config from a user document can point at the right line.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from alphaswarm_common.config import BacktestConfig
from alphaswarm_common.errors import InvalidArgument

__all__ = ["EngineConfig", "FillPrice"]

FillPrice = Literal["close", "open"]

_ENGINE_ONLY = ("min_fee", "max_gross_leverage", "stop_loss", "take_profit")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"must be a number, got {type(value).__name__}", field=f"backtest_cfg.{name}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidArgument(f"must be finite, got {out!r}", field=f"backtest_cfg.{name}")
    return out


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"must be an integer, got {value!r}", field=f"backtest_cfg.{name}")
    if value < minimum:
        raise InvalidArgument(f"must be >= {minimum}, got {value}", field=f"backtest_cfg.{name}")
    return int(value)


@dataclass(frozen=True)
class EngineConfig:
    """Conventions of the backtest accounting (see `alphaswarm_backtester.engine.kernels`).

    - `initial_capital`: cash at the start of bar 0, in currency.
    - `fees`, `slippage`: proportional costs, fractions of the traded notional;
      an order of notional `x` costs `(fees + slippage) * x`. Slippage is a
      cost, not a price adjustment: orders fill at the quoted price.
    - `min_fee`: when > 0, every non-zero order pays `max(min_fee, (fees +
      slippage) * x)` in currency (Qlib's `min_cost`); the excess over the
      proportional cost is booked as fee.
    - `execution_lag`: a target formed from data through the close of t fills
      at bar `t + execution_lag`. `fill_price="open"` needs a lag >= 1: the
      open of t precedes the close of t the decision was formed from.
    - `fill_price`: `"close"` (default) or `"open"` of the fill bar; equity is
      always marked at the close.
    - `rebalance_every`: targets are read on decision bars `t = 0, k, 2k, ...`
      only (`k = rebalance_every`); share counts are constant in between.
    - `rf`: annual risk-free rate; cash (negative cash too: it is a loan)
      earns `rf / periods_per_year` per bar, compounded each bar.
    - `periods_per_year`: None infers it from the dates
      (`alphaswarm_common.metrics.infer_periods_per_year`).
    - `max_gross_leverage`: when set, a target row with `sum|w| > limit` is
      scaled down to `sum|w| == limit` (its proportions kept).
    - `stop_loss`, `take_profit`: fractions of the trade's entry price (see
      the `kernels` module); None disables them.
    - `turnover_penalty`: cost per unit traded of `turnover_adj_sharpe`.
    """

    initial_capital: float = 10_000.0
    fees: float = 0.001
    slippage: float = 0.001
    execution_lag: int = 1
    fill_price: FillPrice = "close"
    rebalance_every: int = 1
    rf: float = 0.0
    periods_per_year: float | None = None
    min_fee: float = 0.0
    max_gross_leverage: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    turnover_penalty: float = 0.001

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        capital = _number("initial_capital", self.initial_capital)
        if capital <= 0:
            raise InvalidArgument(f"must be > 0, got {capital}", field="backtest_cfg.initial_capital")
        put("initial_capital", capital)
        for name in ("fees", "slippage"):
            value = _number(name, getattr(self, name))
            if not 0 <= value < 1:
                raise InvalidArgument(f"must be in [0, 1), got {value}", field=f"backtest_cfg.{name}")
            put(name, value)
        put("execution_lag", _integer("execution_lag", self.execution_lag, 0))
        put("rebalance_every", _integer("rebalance_every", self.rebalance_every, 1))
        if self.fill_price not in ("close", "open"):
            raise InvalidArgument(
                f"must be 'close' or 'open', got {self.fill_price!r}", field="backtest_cfg.fill_price"
            )
        if self.fill_price == "open" and self.execution_lag < 1:
            raise InvalidArgument(
                "fill_price='open' needs execution_lag >= 1: a decision formed at the close of t "
                "cannot fill at the open of t",
                field="backtest_cfg.fill_price",
            )
        put("rf", _number("rf", self.rf))
        if self.periods_per_year is not None:
            ppy = _number("periods_per_year", self.periods_per_year)
            if ppy <= 0:
                raise InvalidArgument(f"must be > 0, got {ppy}", field="backtest_cfg.periods_per_year")
            put("periods_per_year", ppy)
        min_fee = _number("min_fee", self.min_fee)
        if min_fee < 0:
            raise InvalidArgument(f"must be >= 0, got {min_fee}", field="backtest_cfg.min_fee")
        put("min_fee", min_fee)
        for name in ("max_gross_leverage", "stop_loss", "take_profit"):
            raw = getattr(self, name)
            if raw is None:
                continue
            value = _number(name, raw)
            if value <= 0:
                raise InvalidArgument(f"must be > 0 or None, got {value}", field=f"backtest_cfg.{name}")
            put(name, value)
        penalty = _number("turnover_penalty", self.turnover_penalty)
        if penalty < 0:
            raise InvalidArgument(f"must be >= 0, got {penalty}", field="backtest_cfg.turnover_penalty")
        put("turnover_penalty", penalty)

    @property
    def cost_rate(self) -> float:
        """`fees + slippage`: the proportional cost of one unit of traded notional."""
        return self.fees + self.slippage

    @property
    def has_stops(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None

    def periods_per_year_for(self, inferred: float) -> float:
        """The configured `periods_per_year`, else `inferred`."""
        return self.periods_per_year if self.periods_per_year is not None else inferred

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_backtest_config(
        cls,
        cfg: BacktestConfig,
        *,
        execution_lag: int | None = None,
        **engine_only: Any,
    ) -> EngineConfig:
        """The engine config of a validated `BacktestConfig`.

        `execution_lag` is the dataset's label lag (`dataset_cfg.label.execution_lag`):
        it is used when `cfg.execution_lag` is None and must agree with it
        otherwise (the IC and the PnL must be measured on the same return).
        With neither given the METRICS.md default 1 applies. `engine_only`
        takes the risk options (`min_fee`, `max_gross_leverage`, `stop_loss`,
        `take_profit`; `BacktestConfig` carries them too and the backtester
        servicer passes them through); any other keyword is an InvalidArgument.
        """
        unknown = sorted(set(engine_only) - set(_ENGINE_ONLY))
        if unknown:
            raise InvalidArgument(f"unknown engine option(s) {unknown}", field=f"backtest_cfg.{unknown[0]}")
        lag = cfg.execution_lag
        if lag is None:
            lag = 1 if execution_lag is None else execution_lag
        elif execution_lag is not None and execution_lag != lag:
            raise InvalidArgument(
                f"backtest_cfg.execution_lag ({lag}) differs from the label's execution_lag "
                f"({execution_lag}): the IC and the PnL must be measured on the same return",
                field="backtest_cfg.execution_lag",
            )
        return cls(
            initial_capital=cfg.initial_capital,
            fees=cfg.fees,
            slippage=cfg.slippage,
            execution_lag=lag,
            fill_price=cfg.fill_price,
            rebalance_every=cfg.rebalance_every,
            rf=cfg.rf,
            periods_per_year=cfg.periods_per_year,
            turnover_penalty=cfg.turnover_penalty,
            **engine_only,
        )
