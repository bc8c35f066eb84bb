"""The consumer side gives the same result however a transport cuts the stream."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config import Scenario
from simulator.events import EventBatch, Truth
from simulator.pipeline.engine import Learner, World, run


def _concat(parts):
    batches, truths = zip(*parts)
    batch = EventBatch(*(np.concatenate([getattr(b, f) for b in batches]) for f in ("ids", "ts", "x", "y", "source")))
    truth = Truth(*(np.concatenate([getattr(t, f) for t in truths]) for f in ("is_poison", "is_adaptive")))
    return batch, truth


@pytest.mark.parametrize(
    "overrides",
    [
        {"stream": {"n_events": 5000}, "attack": {"kind": "centroid-shift", "rate": 0.3},
         "model": {"window_policy": "random-out"}},
        {"stream": {"source": "digits", "n_events": 5000}, "model": {"kind": "centroid-classifier", "window_size": 30},
         "attack": {"kind": "label-flip", "rate": 0.2}},
    ],
)  # fmt: skip
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
