"""The embedded stack's start-up holds the garbage collector off and freezes what it built:
the collector is enabled again afterwards (only if it was), nested start-ups re-enable it once,
an error still restores it, objects made during the start-up are out of later collections until
the stack stops."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from alphaswarm.embedded import startup_gc

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_during_the_start_up_and_on_after() -> None:
    gc.enable()
    gc.unfreeze()
    with startup_gc():
        assert not gc.isenabled()
        built = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)


def test_nested_start_ups_enable_the_collector_once_at_the_outermost_exit() -> None:
    gc.enable()
    with startup_gc():
        with startup_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    with startup_gc():
        pass
    assert not gc.isenabled()


def test_a_stopped_stack_gives_its_objects_back_to_the_collector() -> None:
    from alphaswarm.embedded import EmbeddedStack
    from alphaswarm_common.settings import Settings

    with startup_gc():
        _ = [[i] for i in range(1000)]
    assert gc.get_freeze_count() > 0
    EmbeddedStack(Settings()).stop()  # nothing started: stopping only releases what was frozen
    assert gc.get_freeze_count() == 0


def test_a_failed_start_up_enables_the_collector_again() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), startup_gc():
        raise RuntimeError("a service did not start")
    assert gc.isenabled()
