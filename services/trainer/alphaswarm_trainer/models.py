"""The model factory: model types by name, hyperparameters checked against each
estimator's signature, seeds honoured, early stopping on the valid segment.

Every model is a scikit-learn `Pipeline(StandardScaler, estimator)`, so the
scaler is fitted on the training segment only and travels with the model.
New model types are one entry in `MODEL_TYPES`; `lightgbm` is registered
only when the package is importable (`pip install 'alphaswarm[lightgbm]'`).

Fitting (`fit_model`):

- `hist_gradient_boosting` early-stops on the **valid segment**: scikit-learn
  >= 1.7's `HistGradientBoostingRegressor.fit(X, y, X_val=, y_val=)` scores
  the loss on those rows (scaled by the scaler fitted on train) after each
  iteration and stops after `n_iter_no_change` (default 10) iterations
  without an improvement of `tol`; the fitted `n_iter_` is reported. Without
  a valid segment (or with `early_stopping: false` in `model_cfg.params`) it
  runs `max_iter` iterations: sklearn's own fallback, a random 10% of the
  training rows, would validate on rows interleaved in time with the ones it
  fits. `lightgbm` early-stops on the valid segment the same way
  (`eval_set` + `early_stopping(LIGHTGBM_STOPPING_ROUNDS)`). `mlp` keeps
  sklearn's `early_stopping` on an internal 10% split of the training rows.
- Refits with fixed capacity (`refit_overrides`): a rolling retraining reuses
  the iteration count found on the valid segment (`max_iter = n_iter_`,
  `early_stopping = False`; `n_estimators = best_iteration_` for lightgbm).
- Time budget (`model_cfg.time_budget_seconds`): models that grow step by
  step stop growing once their fit has run that long and keep what they have
  (as H2O's `max_runtime_secs` or FLAML's `time_budget` do). Boosting
  (`hist_gradient_boosting`) and `mlp` add rounds or epochs in warm-started
  chunks sized from the measured time per step, so the budget is overshot by
  about one chunk (a twentieth of the budget); forests check it after each tenth of their trees;
  lightgbm checks it after every round. The fit reports `stopped_by =
  "time_budget"` and the size reached (`n_iter`, `n_estimators`). Other model
  types are refused with the field named.
- Determinism: seeded estimators get `random_state = model_cfg.seed` (unless
  given). Forests are fitted with `n_jobs` threads (each tree has its own
  seed, so the fit does not depend on the thread count) and then predict in
  one thread: sklearn adds the trees' predictions in the order threads finish,
  which changes the last bits of the sum from run to run. With this, the
  same config on the same data gives bit-identical predictions and metrics.
"""

from __future__ import annotations

import importlib.util
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_common.config import ModelConfig
from alphaswarm_common.errors import InvalidArgument

__all__ = [
    "FIT_CHUNKS",
    "LIGHTGBM_STOPPING_ROUNDS",
    "MODEL_TYPES",
    "FitProgress",
    "build_model",
    "fit_model",
    "refit_overrides",
]

FitProgress = Callable[[float, str], None]
"""Called during a fit with the fraction done (0 to 1) and a message."""

FIT_CHUNKS = 10
"""How many progress reports a fit that can report inside itself makes (forest chunks, boosting rounds)."""

LIGHTGBM_STOPPING_ROUNDS = 50
"""Boosting rounds without improvement on the valid segment after which lightgbm stops."""

BUDGET_CHUNKS = 20
"""Under a time budget, boosting grows in chunks of about `budget / BUDGET_CHUNKS` seconds each."""

BUDGETED_TYPES = frozenset({"hist_gradient_boosting", "lightgbm", "mlp", "random_forest", "extra_trees"})
"""Model types that can stop on `model_cfg.time_budget_seconds` (they grow step by step)."""


FOREST_DEFAULTS: Mapping[str, Any] = {
    "n_estimators": 100,
    "max_samples": 0.2,
    "bootstrap": True,
    "max_features": 0.33,
    "min_samples_leaf": 100,
    "n_jobs": -1,
}
"""Defaults of `random_forest` and `extra_trees`: sized to finish in well under a minute on the shipped
panel on two cores (docs/models.md). Each tree sees a bootstrap sample of 20% of the training rows and a
third of the features per split; leaves of at least 100 rows suit noisy return labels."""


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
        FOREST_DEFAULTS,
        "random forest (bootstrap samples of 20% of the rows, a third of the features per split)",
    ),
    "extra_trees": ModelType(
        _sk("sklearn.ensemble", "ExtraTreesRegressor"),
        True,
        FOREST_DEFAULTS,
        "extremely randomised trees (bootstrap samples of 20% of the rows, a third of the features per split)",
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

if importlib.util.find_spec("lightgbm") is not None:  # optional extra `alphaswarm[lightgbm]`
    MODEL_TYPES["lightgbm"] = ModelType(
        _sk("lightgbm", "LGBMRegressor"),
        True,
        {
            "n_estimators": 1000,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 50,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "verbose": -1,
        },
        "LightGBM gradient boosting (early-stopped on the valid segment)",
    )


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
    if cfg.time_budget_seconds is not None and cfg.type not in BUDGETED_TYPES:
        raise InvalidArgument(
            f"{cfg.type} fits in one step and cannot stop on a time budget; "
            f"models that can: {', '.join(sorted(BUDGETED_TYPES & set(MODEL_TYPES)))}",
            field="model_cfg.time_budget_seconds",
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
        bad = next((p for p in cfg.params if p in str(exc)), None)
        raise InvalidArgument(
            str(exc), field=f"model_cfg.params.{bad}" if bad else "model_cfg.params"
        ) from exc
    return Pipeline([("scaler", StandardScaler()), ("model", estimator)])


def _parts(model: Any) -> tuple[Any, Any]:
    steps = dict(model.steps)
    return steps["scaler"], steps["model"]


def fit_model(
    model: Any,
    cfg: ModelConfig,
    x: np.ndarray,
    y: np.ndarray,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    *,
    on_progress: FitProgress | None = None,
) -> dict[str, Any]:
    """Fit a `build_model` pipeline on `(x, y)`, early-stopping on `(x_valid, y_valid)` where the model can.

    Returns what the fit found, for the run's params: `early_stopping`
    (`"valid"`, `"internal_split"` or `"none"`) and, for boosting, `n_iter`.
    See the module docstring for the rules.

    `on_progress(fraction, message)` is called as the fit advances: forests
    grow their trees in `FIT_CHUNKS` chunks (`warm_start`; every tree keeps the
    seed a one-shot fit gives it, so the forest is the same), lightgbm reports
    every `1/FIT_CHUNKS` of its rounds, other models report when the fit ends.
    """
    report = on_progress or (lambda _fraction, _message: None)
    scaler, est = _parts(model)
    has_valid = x_valid is not None and y_valid is not None and len(y_valid) > 0
    info: dict[str, Any] = {"early_stopping": "none"}
    name = type(est).__name__
    budget = _Budget(cfg.time_budget_seconds)
    if name == "HistGradientBoostingRegressor":
        wanted = cfg.params.get("early_stopping", True)
        use_valid = has_valid and wanted not in (False, "False", "false")
        est.set_params(early_stopping=bool(use_valid))
        xs = scaler.fit_transform(x)
        val = {"X_val": scaler.transform(x_valid), "y_val": y_valid} if use_valid else {}
        if use_valid:
            info["early_stopping"] = "valid"
        if budget.seconds is None:
            est.fit(xs, y, **val)
        else:
            _grow_on_budget(
                est,
                lambda: est.fit(xs, y, **val),
                budget,
                report,
                cumulative=True,
                unit="boosting round",
            )
        info["n_iter"] = int(est.n_iter_)
        return info | budget.info()
    if name == "LGBMRegressor" and has_valid:
        import lightgbm

        xs = scaler.fit_transform(x)
        xv = scaler.transform(x_valid)
        # lightgbm >= 4.6 takes the validation set as eval_X/eval_y (eval_set is deprecated there).
        if "eval_X" in inspect.signature(est.fit).parameters:
            valid_kwargs: dict[str, Any] = {"eval_X": (xv,), "eval_y": (y_valid,)}
        else:
            valid_kwargs = {"eval_set": [(xv, y_valid)]}
        every = max(1, int(est.n_estimators) // FIT_CHUNKS)

        def rounds(env: Any) -> None:
            done = env.iteration + 1
            if done % every == 0:
                report(done / env.end_iteration, f"boosting round {done}/{env.end_iteration}")
            if budget.spent():
                budget.stopped = True
                best = env.evaluation_result_list or []
                raise lightgbm.callback.EarlyStopException(env.iteration, best)

        est.fit(
            xs,
            y,
            callbacks=[lightgbm.early_stopping(LIGHTGBM_STOPPING_ROUNDS, verbose=False), rounds],
            **valid_kwargs,
        )
        info.update(early_stopping="valid", n_iter=int(est.best_iteration_ or est.n_estimators))
        report(1.0, f"boosting stopped after {info['n_iter']} rounds")
        return info | budget.info()
    if name == "LGBMRegressor" and budget.seconds is not None:
        raise InvalidArgument(
            "lightgbm stops on a time budget only with a valid segment to early-stop on",
            field="model_cfg.time_budget_seconds",
        )
    if name in ("RandomForestRegressor", "ExtraTreesRegressor") and not est.warm_start:
        _fit_forest_in_chunks(scaler, est, x, y, report, budget)
        est.set_params(n_jobs=1)  # a fixed summation order over the trees: bit-identical predictions
        if budget.stopped:
            info["n_estimators"] = len(est.estimators_)
        return info | budget.info()
    if name == "MLPRegressor" and budget.seconds is not None:
        xs = scaler.fit_transform(x)
        info["n_iter"] = _grow_on_budget(
            est, lambda: est.fit(xs, y), budget, report, cumulative=False, unit="epoch"
        )
    else:
        model.fit(x, y)
        report(1.0, f"fitted {name}")
    if getattr(est, "early_stopping", False) is True:
        info["early_stopping"] = "internal_split"
    if name in ("RandomForestRegressor", "ExtraTreesRegressor"):
        est.set_params(n_jobs=1)  # a fixed summation order over the trees: bit-identical predictions
    return info | budget.info()


class _Budget:
    """The fit's time budget: started when the fit starts, `spent()` once it has run out."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.stopped = False

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - self.elapsed()

    def spent(self) -> bool:
        return self.seconds is not None and self.left() <= 0

    def info(self) -> dict[str, Any]:
        return {"stopped_by": "time_budget"} if self.stopped else {}


def _grow_on_budget(
    est: Any,
    fit: Callable[[], Any],
    budget: _Budget,
    report: FitProgress,
    *,
    cumulative: bool,
    unit: str,
) -> int:
    """Grow `est` (warm-started) by `max_iter` steps in chunks until `max_iter`, its own stopping
    rule, or the budget. Each chunk is sized from the time per step measured so far to last about
    `budget / BUDGET_CHUNKS` seconds (never past what is left). `cumulative`: `max_iter` counts every
    step so far (boosting rounds) rather than the steps of one call (MLP epochs, whose `n_iter_`
    counts the call's own). Returns the steps grown in all."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    assert budget.seconds is not None
    total = int(est.max_iter)
    chunk_seconds = budget.seconds / BUDGET_CHUNKS
    grown, step = 0, 1
    est.set_params(warm_start=True)
    try:
        while grown < total:
            step = min(step, total - grown)
            est.set_params(max_iter=grown + step if cumulative else step)
            t0 = time.monotonic()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=ConvergenceWarning)  # a chunk is not the whole fit
                fit()
            took = time.monotonic() - t0
            done = int(est.n_iter_) if cumulative else grown + int(est.n_iter_)
            report(done / total, f"{unit} {done}/{total}")
            if done < grown + step:  # stopped by its own rule (early stopping, convergence)
                break
            grown = done
            if budget.spent():
                budget.stopped = grown < total
                break
            step = max(1, int(min(chunk_seconds, budget.left()) / max(took / step, 1e-6)))
        else:
            done = grown
    finally:
        est.set_params(warm_start=False, max_iter=total)
    return done


def _fit_forest_in_chunks(
    scaler: Any, est: Any, x: np.ndarray, y: np.ndarray, report: FitProgress, budget: _Budget | None = None
) -> None:
    """Grow the forest's `n_estimators` trees in `FIT_CHUNKS` warm-started steps, stopping
    after a step once the time budget (if any) is spent.

    With an integer `random_state`, sklearn derives tree `i`'s seed from the
    same sequence whether the trees are grown at once or in steps, so the
    forest equals a one-shot fit."""
    total = int(est.n_estimators)
    xs = scaler.fit_transform(x)
    sizes = sorted({max(1, total * k // FIT_CHUNKS) for k in range(1, FIT_CHUNKS + 1)})
    est.set_params(warm_start=True)
    try:
        for grown in sizes:
            est.set_params(n_estimators=grown)
            est.fit(xs, y)
            report(grown / total, f"grew {grown}/{total} trees")
            if budget is not None and budget.spent() and grown < total:
                budget.stopped = True
                break
    finally:
        est.set_params(warm_start=False, n_estimators=len(getattr(est, "estimators_", ())) or total)


def refit_overrides(model: Any) -> dict[str, Any]:
    """Hyperparameters that pin a fitted model's capacity for refits without a valid segment."""
    _, est = _parts(model)
    name = type(est).__name__
    if name == "HistGradientBoostingRegressor":
        return {"max_iter": int(est.n_iter_), "early_stopping": False}
    if name == "LGBMRegressor" and getattr(est, "best_iteration_", None):
        return {"n_estimators": int(est.best_iteration_)}
    return {}


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
