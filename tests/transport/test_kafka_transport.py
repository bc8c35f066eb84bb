"""run(scenario, transport=KafkaTransport(...)): the embedded run through a real broker gives the same results."""

from __future__ import annotations

import uuid

import pytest

from poisonsim.config import Scenario
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.results import TIMING_FIELDS
from poisonsim.pipeline.world import World
from poisonsim.transport.codec import Codec
from poisonsim.transport.kafka import KafkaSettings, scenario_key
from poisonsim.transport.kafka_transport import KafkaTransport

CASES = [
    (
        {
            "stream": {"n_events": 3000},
            "attack": {"kind": "centroid-shift", "rate": 0.2, "start": 500},
            "model": {"window_size": 50},
            "evaluation": {"every": 500},
        },
        1,
    ),  # a white-box attacker's turns
    (
        {
            "stream": {"source": "digits", "n_events": 2000},
            "model": {"kind": "centroid-classifier", "window_size": 30},
            "attack": {"kind": "label-flip", "rate": 0.3},
            "evaluation": {"every": 400},
            "defense": [{"kind": "outlier-rejection"}],
        },
        7,
    ),  # seven events per message
]


def _comparable(result):
    return {k: v for k, v in result.summary.items() if k not in TIMING_FIELDS}, result.timeseries


@pytest.mark.parametrize("raw, per_message", CASES)
def test_a_run_over_the_kafka_transport_equals_the_embedded_run(broker, raw, per_message):
    scenario = Scenario.from_dict({"seed": 5, **raw})
    world = World.build(scenario)
    codec = Codec(world.source.n_features, world.source.n_classes, scenario.stream.n_events)
    transport = KafkaTransport(
        KafkaSettings(broker.bootstrap),
        codec,
        scenario_key(scenario),
        prefix=f"t{uuid.uuid4().hex[:10]}.",
        events_per_message=per_message,
    )
    try:
        over_kafka = run(scenario, transport=transport, world=world)
    finally:
        transport.close()
    assert _comparable(over_kafka) == _comparable(run(scenario))
