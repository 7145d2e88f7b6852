"""The model factory: model types by name, hyperparameters checked against each
estimator's signature, seeds honoured.

Every model is a scikit-learn `Pipeline(StandardScaler, estimator)`, so the
scaler is fitted on the training segment only and travels with the model.
New model types are one entry in `MODEL_TYPES`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alphaswarm_common.config import ModelConfig
from alphaswarm_common.errors import InvalidArgument

__all__ = ["MODEL_TYPES", "build_model"]


@dataclass(frozen=True)
class ModelType:
    factory: Callable[[], type]
    seeded: bool
    defaults: Mapping[str, Any]
    description: str


def _sk(module: str, name: str) -> Callable[[], type]:
    def load() -> type:
        import importlib

        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    return load


MODEL_TYPES: dict[str, ModelType] = {
    "ridge": ModelType(
        _sk("sklearn.linear_model", "Ridge"), False, {"alpha": 1.0}, "L2-penalised linear regression"
    ),
    "lasso": ModelType(
        _sk("sklearn.linear_model", "Lasso"),
        True,
        {"alpha": 1e-4, "max_iter": 5000},
        "L1-penalised linear regression",
    ),
    "elastic_net": ModelType(
        _sk("sklearn.linear_model", "ElasticNet"),
        True,
        {"alpha": 1e-4, "l1_ratio": 0.5, "max_iter": 5000},
        "L1+L2 linear regression",
    ),
    "linear": ModelType(_sk("sklearn.linear_model", "LinearRegression"), False, {}, "ordinary least squares"),
    "random_forest": ModelType(
        _sk("sklearn.ensemble", "RandomForestRegressor"),
        True,
        {"n_estimators": 200, "min_samples_leaf": 50, "n_jobs": -1},
        "random forest",
    ),
    "extra_trees": ModelType(
        _sk("sklearn.ensemble", "ExtraTreesRegressor"),
        True,
        {"n_estimators": 200, "min_samples_leaf": 50, "n_jobs": -1},
        "extremely randomised trees",
    ),
    "hist_gradient_boosting": ModelType(
        _sk("sklearn.ensemble", "HistGradientBoostingRegressor"),
        True,
        {"max_iter": 300, "learning_rate": 0.05},
        "histogram gradient boosting",
    ),
    "mlp": ModelType(
        _sk("sklearn.neural_network", "MLPRegressor"),
        True,
        {"hidden_layer_sizes": [64, 32], "early_stopping": True, "max_iter": 200},
        "multi-layer perceptron",
    ),
}


def build_model(cfg: ModelConfig) -> Any:
    """A fresh, unfitted `Pipeline(StandardScaler, estimator)` for the config.

    Raises InvalidArgument naming `model_cfg.type` for an unknown type and
    `model_cfg.params.<name>` for a hyperparameter the estimator does not take
    or a value it rejects.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    spec = MODEL_TYPES.get(cfg.type)
    if spec is None:
        raise InvalidArgument(
            f"unknown model type {cfg.type!r}; known: {', '.join(sorted(MODEL_TYPES))}",
            field="model_cfg.type",
        )
    estimator_cls = spec.factory()
    accepted = set(inspect.signature(estimator_cls).parameters)
    for name in cfg.params:
        if name not in accepted:
            raise InvalidArgument(
                f"{cfg.type} has no hyperparameter {name!r}; accepted: {', '.join(sorted(accepted))}",
                field=f"model_cfg.params.{name}",
            )
    params = {**spec.defaults, **cfg.params}
    if "hidden_layer_sizes" in params and isinstance(params["hidden_layer_sizes"], list):
        params["hidden_layer_sizes"] = tuple(int(x) for x in params["hidden_layer_sizes"])
    params = {
        k: (int(v) if isinstance(v, float) and v.is_integer() and k in _INT_PARAMS else v)
        for k, v in params.items()
    }
    if spec.seeded and "random_state" in accepted:
        params.setdefault("random_state", cfg.seed)
    estimator = estimator_cls(**params)
    try:
        estimator._validate_params()
    except AttributeError:  # pragma: no cover - estimators without the validation API
        pass
    except (ValueError, TypeError) as exc:
        name = next((p for p in cfg.params if p in str(exc)), None)
        raise InvalidArgument(
            str(exc), field=f"model_cfg.params.{name}" if name else "model_cfg.params"
        ) from exc
    return Pipeline([("scaler", StandardScaler()), ("model", estimator)])


_INT_PARAMS = {
    "n_estimators",
    "max_iter",
    "min_samples_leaf",
    "min_samples_split",
    "max_depth",
    "n_jobs",
    "max_leaf_nodes",
    "random_state",
    "n_iter_no_change",
    "batch_size",
}
