"""Services save nothing for a caller that is gone (cancelled, or past its deadline)."""

from __future__ import annotations

import pytest

from alphaswarm_common.errors import Timeout
from alphaswarm_common.grpc_server import ensure_caller_waiting


class Context:
    def __init__(self, active: bool, remaining: float | None) -> None:
        self.active = active
        self.remaining = remaining

    def is_active(self) -> bool:
        return self.active

    def time_remaining(self) -> float | None:
        return self.remaining


def test_a_waiting_caller_lets_the_save_go_on() -> None:
    ensure_caller_waiting(Context(True, 12.0), "the backtest")
    ensure_caller_waiting(Context(True, None), "the backtest")  # no deadline
    ensure_caller_waiting(None, "the backtest")  # an in-process call


@pytest.mark.parametrize(("active", "remaining"), [(False, 10.0), (True, 0.0), (True, -1.0)])
def test_a_cancelled_or_expired_caller_stops_the_save(active: bool, remaining: float) -> None:
    with pytest.raises(Timeout, match="the backtest not saved"):
        ensure_caller_waiting(Context(active, remaining), "the backtest")
