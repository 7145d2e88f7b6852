"""How fitted models are serialised and read back: skops with a fixed list of trusted types.

The trainer logs every model with MLflow's sklearn flavour in the `skops`
format (`skops.io`), which stores a model as data (a schema of
constructors and arrays) rather than as a pickle: loading it builds only
types that the loader trusts and never runs code the file carries. The
list of trusted types is fixed here, beside the model zoo it serves
(`TRUSTED_TYPES`: skops' own defaults, which cover numpy, scipy and the
scikit-learn estimators, plus the few inner types of trees, boosting,
neural networks and LightGBM). The list an artifact's `MLmodel` file
declares is ignored: a crafted model could list anything there.

`read_model_format` reads an artifact folder's `MLmodel` with `yaml.safe_load`
(no object construction); `check_loadable` refuses any format but `skops`
and any type outside `TRUSTED_TYPES` (from the file's schema, nothing is
built); `load_skops_model` runs it before building the model.
The registry calls it only on a private copy of artifact bytes it has
verified against its signed record (`alphaswarm_registry.trust`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaswarm_common.errors import FailedPrecondition

__all__ = [
    "SERIALIZATION_FORMAT",
    "TRUSTED_TYPES",
    "ArtifactFormat",
    "check_loadable",
    "load_skops_model",
    "read_model_format",
]

SERIALIZATION_FORMAT = "skops"
"""The only serialisation the registry loads."""

TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMRegressor",
)
"""Types beyond skops' defaults that the model zoo's fitted pipelines contain."""


@dataclass(frozen=True)
class ArtifactFormat:
    """What an artifact folder's `MLmodel` says about the sklearn flavour."""

    serialization_format: str
    model_file: str


def read_model_format(folder: str | Path, *, label: str) -> ArtifactFormat:
    """The serialisation format and model file of an MLflow sklearn artifact folder.

    `FailedPrecondition` (`MODEL_NOT_TRUSTED`) when the folder has no readable
    `MLmodel`, no sklearn flavour, or a model file outside the folder.
    """
    import yaml

    root = Path(folder)
    try:
        meta = yaml.safe_load((root / "MLmodel").read_text(encoding="utf-8"))
        flavor = meta["flavors"]["sklearn"]
        fmt = str(flavor.get("serialization_format") or "pickle")
        name = str(flavor["pickled_model"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise FailedPrecondition(
            f"{label} is not an MLflow scikit-learn model (no readable MLmodel with a sklearn flavour)",
            reason="MODEL_NOT_TRUSTED",
        ) from exc
    target = (root / name).resolve()
    if root.resolve() not in target.parents:
        raise FailedPrecondition(
            f"{label} names a model file outside its artifact folder", reason="MODEL_NOT_TRUSTED"
        )
    return ArtifactFormat(fmt, name)


def check_loadable(folder: str | Path, *, label: str, field: str | None = None) -> ArtifactFormat:
    """The artifact's format, after checking it is a skops file of `TRUSTED_TYPES` only (nothing is built).

    `MODEL_NOT_TRUSTED` (naming `field`) for another format, an unreadable
    skops file or a type outside `TRUSTED_TYPES`.
    """
    import skops.io

    fmt = read_model_format(folder, label=label)
    if fmt.serialization_format != SERIALIZATION_FORMAT:
        raise FailedPrecondition(
            f"{label} is serialised as {fmt.serialization_format!r}; only {SERIALIZATION_FORMAT!r} models "
            "(which cannot run code when loaded) are registered and served",
            field=field,
            reason="MODEL_NOT_TRUSTED",
        )
    try:
        found = skops.io.get_untrusted_types(file=str(Path(folder) / fmt.model_file))
    except Exception as exc:
        raise FailedPrecondition(
            f"{label} is not a readable skops model ({type(exc).__name__})",
            field=field,
            reason="MODEL_NOT_TRUSTED",
        ) from exc
    extra = sorted(set(found) - set(TRUSTED_TYPES))
    if extra:
        raise FailedPrecondition(
            f"{label} contains types the registry does not load: {', '.join(extra[:5])}",
            field=field,
            reason="MODEL_NOT_TRUSTED",
        )
    return fmt


def load_skops_model(folder: str | Path, *, label: str) -> Any:
    """The model of a verified artifact folder, built by skops from `TRUSTED_TYPES` only.

    `MODEL_NOT_TRUSTED` as `check_loadable`, `MODEL_LOAD_FAILED` when skops
    cannot build the model.
    """
    import skops.io

    fmt = check_loadable(folder, label=label)
    try:
        return skops.io.load(str(Path(folder) / fmt.model_file), trusted=list(TRUSTED_TYPES))
    except Exception as exc:
        raise FailedPrecondition(
            f"{label} cannot be loaded: {type(exc).__name__}: {exc}", reason="MODEL_LOAD_FAILED"
        ) from exc
