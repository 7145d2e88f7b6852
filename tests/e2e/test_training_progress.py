"""Training progress end to end: the trainer's milestones reach the run's event stream as
`training` `running` events between `training started` and `training done`."""

from __future__ import annotations

import pytest

from alphaswarm.embedded import EmbeddedStack
from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment
from tests.e2e.conftest import STAGES, small_run

pytestmark = pytest.mark.e2e


def test_training_milestones_stream_between_started_and_done(stack: EmbeddedStack) -> None:
    doc = small_run(
        run_name="e2e-training-progress",
        model_cfg={
            "type": "random_forest",
            "params": {"n_estimators": 20, "max_depth": 3, "min_samples_leaf": 200},
            "name": "e2e-progress-forest",
        },
    )
    result = AlphaBacktestExperiment.from_config(
        doc, settings=stack.settings, gateway_addr=stack.gateway_addr
    ).run()
    assert result.status == "succeeded", result.error
    events = result.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # gap-free

    training = [e for e in events if e.stage == "training"]
    assert training[0].status == "started" and training[-1].status == "done"
    running = training[1:-1]
    assert {e.status for e in running} == {"running"}
    steps = [e.data["step"] for e in running]
    for milestone in ("dataset_loaded", "features_built", "labels_built", "fitted", "model_logged"):
        assert milestone in steps
    assert steps.index("dataset_loaded") < steps.index("fitted") < steps.index("model_logged")
    assert steps.count("fitting") >= 10  # "fitting" then one event per chunk of trees
    assert any(e.message == "grew 20/20 trees" for e in running)

    # pct moves forward within the stage, inside the training share of the run
    pcts = [e.pct for e in training]
    assert pcts == sorted(pcts)
    registering = next(e for e in events if e.stage == "registering")
    assert training[0].pct < running[0].pct and running[-1].pct <= registering.pct
    # the training events sit between accepted and registering: the stage order is unchanged
    order = [e.stage for i, e in enumerate(events) if i == 0 or events[i - 1].stage != e.stage]
    assert order == STAGES
