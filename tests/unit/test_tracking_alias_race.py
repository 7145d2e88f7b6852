"""Moving a model alias that another writer moves at the same instant: MLflow's SQL store reports
the write that lost as "expected to update 1 row(s); 0 were matched" or as a duplicate alias key;
the tracker writes again instead of failing the registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alphaswarm_common.tracking import Tracker

pytestmark = pytest.mark.unit
LOST = "UPDATE statement on table 'registered_model_aliases' expected to update 1 row(s); 0 were matched."


class _Racing:
    """The MLflow client, whose first `failures` alias writes lose a race (or fail otherwise)."""

    def __init__(self, client: Any, failures: int, message: str = LOST) -> None:
        self._client = client
        self.failures = failures
        self.message = message
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow.exceptions import MlflowException

        self.calls += 1
        if self.calls <= self.failures:
            raise MlflowException(self.message)
        self._client.set_registered_model_alias(name, alias, version)


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "art").as_uri())
    t.client.create_registered_model("alias-race")
    t.client.create_model_version("alias-race", source=(tmp_path / "model").as_uri())
    return t


DUPLICATE = (
    "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
    '"registered_model_alias_pk"'
)


@pytest.mark.parametrize("message", [LOST, DUPLICATE])
def test_a_lost_alias_write_is_written_again(tracker: Tracker, message: str) -> None:
    racing = _Racing(tracker.client, failures=2, message=message)
    tracker._client = racing
    tracker.set_model_alias("alias-race", "champion", "1")
    assert racing.calls == 3
    assert str(racing._client.get_model_version_by_alias("alias-race", "champion").version) == "1"


def test_other_alias_errors_still_fail(tracker: Tracker) -> None:
    from mlflow.exceptions import MlflowException

    tracker._client = _Racing(tracker.client, failures=1, message="BAD_REQUEST: something else")
    with pytest.raises(MlflowException, match="something else"):
        tracker.set_model_alias("alias-race", "champion", "1")
