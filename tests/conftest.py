"""Shared test settings: quiet third-party warnings, mark tests by folder."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mlflow|sqlalchemy|google)\..*")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        for layer in ("unit", "integration", "e2e"):
            if f"/tests/{layer}/" in path and not item.get_closest_marker(layer):
                item.add_marker(getattr(pytest.mark, layer))


def _test_data_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from alphaswarm_common.data import configure_data_roots

    configure_data_roots([Path("data"), tmp_path_factory.getbasetemp()])


@pytest.fixture(scope="module", autouse=True)
def _module_data_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests write their data files under pytest's temporary folder: make it a data root (beside the
    default `./data`), as a deployment would with ALPHASWARM_DATA_ROOTS. A stack a test starts
    installs its own settings' roots for the whole process, so this runs before each module's
    fixtures and (below) before each test."""
    _test_data_roots(tmp_path_factory)


@pytest.fixture(autouse=True)
def _data_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    _test_data_roots(tmp_path_factory)
