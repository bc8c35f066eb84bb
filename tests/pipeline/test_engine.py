"""The consumer side gives the same result however a transport cuts the stream."""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.config import Scenario
from poisonsim.events import EventBatch, Truth
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.world import World


def _concat(parts):
    batches, truths = zip(*parts)
    return EventBatch.concatenate(list(batches)), Truth.concatenate(list(truths))


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "stream": {"n_events": 5000},
            "attack": {"kind": "centroid-shift", "rate": 0.3},
            "model": {"window_policy": "random-out"},
        },
        {
            "stream": {"source": "digits", "n_events": 5000},
            "model": {"kind": "centroid-classifier", "window_size": 30},
            "attack": {"kind": "label-flip", "rate": 0.2},
        },
    ],
)
def test_learner_is_independent_of_batch_boundaries(overrides):
    scenario = Scenario.from_dict({"seed": 5, "evaluation": {"every": 700}} | overrides)
    reference = run(scenario)

    world = World.build(scenario)
    stream = world.stream()
    batch, truth = _concat([stream.next_batch(size) for size in world.batch_sizes()])
    learner = Learner(world)
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, 5000), size=40, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, 5000]):
        learner.feed(batch.select(slice(lo, hi)), truth.select(slice(lo, hi)))
    assert learner.evaluator.rows == reference.timeseries
    assert len(reference.timeseries) == 9  # the start, every 700 events, and the last one


@pytest.mark.parametrize(
    "overrides",
    [
        {"attack": {"kind": "centroid-shift", "rate": 0.3}},  # a white-box attacker: its turns need no truth
        {
            "stream": {"source": "digits"},
            "model": {"kind": "centroid-classifier", "window_size": 30},
            "attack": {"kind": "label-flip", "rate": 0.2},
            "defense": [{"kind": "outlier-rejection"}],
        },
    ],
)
def test_the_model_and_defenses_never_read_ground_truth(overrides):
    """Feed the learner inverted truth: only the evaluator's counts change, never what the model learned.

    ``is_adaptive`` stays: it is the white-box attacker's own record of its events, which it writes at delivery.
    """
    scenario = Scenario.from_dict(
        {"seed": 8, "stream": {"n_events": 3000}, "evaluation": {"every": 1000}}
        | overrides
        | {"stream": {**overrides.get("stream", {}), "n_events": 3000}}
    )
    learners = []
    for invert in (False, True):
        world = World.build(scenario)
        stream, learner = world.stream(), Learner(world)
        for size in world.batch_sizes():
            batch, truth = stream.next_batch(size)
            learner.feed(batch, Truth(~truth.is_poison, truth.is_adaptive) if invert else truth)
        learners.append(learner)
    honest, lied_to = (learner.model.get_state() for learner in learners)
    for key in honest:
        assert np.array_equal(np.asarray(honest[key], dtype=object), np.asarray(lied_to[key], dtype=object)), key
    assert learners[0].evaluator.rows[-1]["clean_accuracy"] == learners[1].evaluator.rows[-1]["clean_accuracy"]
    assert learners[0].evaluator.poison_events != learners[1].evaluator.poison_events  # the lie did reach the evaluator


def test_services_that_share_a_results_directory_check_it_at_once(tmp_path):
    """The learner and the detector of one scenario may be given the same ``--out``; their write checks must
    not take each other's probe file away (each has a name of its own)."""
    from concurrent.futures import ThreadPoolExecutor

    from poisonsim.pipeline.results import check_out

    out = tmp_path / "shared"
    with ThreadPoolExecutor(8) as pool:
        assert all(path == out for path in pool.map(lambda _: check_out(out), range(400)))
    assert list(out.iterdir()) == []  # no probe left behind
