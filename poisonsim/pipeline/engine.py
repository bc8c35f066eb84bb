"""Run a scenario embedded: source -> attack -> transport -> model -> evaluator.

Every event is predicted before it is learned (test-then-train). Batches go
through the transport between the producer side (the merged stream) and the
consumer side (model and evaluator), exactly as they would over Kafka.

>>> from poisonsim.config import ConfigError, Scenario
>>> s = Scenario.from_dict({"seed": 1, "stream": {"n_events": 200},
...     "attack": {"kind": "centroid-shift", "rate": 1.0},
...     "model": {"window_size": 100}, "evaluation": {"every": 50}})
>>> result = run(s)
>>> [round(row["displacement_radii"], 4) for row in result.timeseries]
[0.0, 0.5, 1.0, 1.5, 2.0]
"""

from __future__ import annotations

import time
from typing import Callable

from poisonsim.config import Scenario
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.results import RunResult
from poisonsim.pipeline.world import World
from poisonsim.transport import InMemoryTransport, Transport

TOPIC = "events"


def run(
    scenario: Scenario,
    on_progress: Callable[[int], None] | None = None,
    transport: Transport | None = None,
    world: World | None = None,
    observe: Callable[[Learner], None] | None = None,
) -> RunResult:
    """Run ``scenario`` to the end and return its summary and timeseries (from ``world`` when built already);
    ``observe`` sees the learner after every batch (live metrics)."""
    world = world or World.build(scenario)
    stream, learner = world.stream(), Learner(world)
    transport = transport or InMemoryTransport()
    started = time.perf_counter()
    for size in world.batch_sizes():
        transport.send(TOPIC, *stream.next_batch(size))
        pending = size
        while pending:  # a broker may hand a batch back in several parts
            received = transport.receive(TOPIC)
            if received is None:
                raise RuntimeError(f"transport: {pending} events sent on {TOPIC!r} never arrived")
            learner.feed(*received)
            pending -= len(received[0])
        if on_progress:
            on_progress(learner.events)
        if observe:
            observe(learner)
    elapsed = time.perf_counter() - started
    return learner.result(elapsed)
