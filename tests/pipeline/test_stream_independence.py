"""The stream a seed gives does not depend on how it is evaluated, cut or packed.

Same seed, any ``evaluation.every``, any batch size, any events per
message: the same events, the same ground truth, the same source ids.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.config import Scenario
from poisonsim.events import EventBatch, Truth
from poisonsim.pipeline.world import World
from poisonsim.transport.codec import Codec

N_EVENTS = 6_000
SCENARIOS = {
    "badnets on digits": {
        "stream": {"source": "digits"},
        "model": {"kind": "mlp", "pretrain_events": 200},
        "attack": {"kind": "badnets", "rate": 0.05, "start": 700},
    },
    "bursts of label flips on blobs": {
        "stream": {"n_classes": 3},
        "model": {"kind": "centroid-classifier"},
        "attack": {"kind": "label-flip", "rate": 0.2, "schedule": "bursts", "burst_length": 37, "budget": 900},
    },
    "a white-box centroid shift": {"attack": {"kind": "centroid-shift", "rate": 0.3}},
}


def _scenario(case: str, every: int) -> Scenario:
    raw = SCENARIOS[case]
    return Scenario.from_dict(
        {"seed": 41, **raw, "stream": {**raw.get("stream", {}), "n_events": N_EVENTS}, "evaluation": {"every": every}}
    )


def _stream(scenario: Scenario, sizes) -> tuple[EventBatch, Truth]:
    stream = World.build(scenario).stream()
    parts = [stream.next_batch(size) for size in sizes]
    return EventBatch.concatenate([b for b, _ in parts]), Truth.concatenate([t for _, t in parts])


def _same(a: tuple[EventBatch, Truth], b: tuple[EventBatch, Truth]) -> None:
    for field in ("ids", "ts", "x", "y", "source"):
        np.testing.assert_array_equal(getattr(a[0], field), getattr(b[0], field), err_msg=field)
    np.testing.assert_array_equal(a[1].is_poison, b[1].is_poison)
    np.testing.assert_array_equal(a[1].is_adaptive, b[1].is_adaptive)


@pytest.mark.parametrize("case", SCENARIOS)
def test_the_evaluation_cadence_and_batch_sizes_do_not_change_the_stream(case):
    cadences = {every: World.build(_scenario(case, every)).batch_sizes() for every in (100, 3_000)}
    reference = _stream(_scenario(case, 3_000), cadences[3_000])
    _same(reference, _stream(_scenario(case, 100), cadences[100]))
    odd = np.diff(
        np.r_[0, np.sort(np.random.default_rng(5).choice(np.arange(1, N_EVENTS), 60, replace=False)), N_EVENTS]
    )
    _same(reference, _stream(_scenario(case, 3_000), odd))
    _same(reference, _stream(_scenario(case, 3_000), [1] * 300 + [N_EVENTS - 300]))
    assert reference[1].is_poison.sum() > 0


@pytest.mark.parametrize("case", SCENARIOS)
def test_events_per_message_do_not_change_what_the_consumer_reads(case):
    scenario = _scenario(case, 1_000)
    world = World.build(scenario)
    batch, truth = _stream(scenario, world.batch_sizes())
    codec = Codec(world.source.n_features, world.source.n_classes, N_EVENTS)
    read = {}
    for k in (1, 1_000):
        messages = codec.encode(batch, truth, events_per_message=k)
        assert len(messages) == -(-N_EVENTS // k)
        parts = [codec.decode(value, bits) for value, bits in messages]
        read[k] = EventBatch.concatenate([b for b, _ in parts]), Truth.concatenate([t for _, t in parts])
    _same(read[1], read[1_000])
    _same((batch, truth), read[1])


def test_a_defended_run_gives_the_same_results_at_any_evaluation_cadence_it_shares_steps_with():
    """Rows at shared steps agree when the defense's units and the cadences line up (multiples of 64)."""
    from poisonsim.pipeline.engine import run

    base = {
        "seed": 9,
        "stream": {"source": "digits", "n_events": 1_536},
        "model": {"kind": "centroid-classifier", "window_size": 30},
        "attack": {"kind": "label-flip", "rate": 0.3},
        "defense": [{"kind": "outlier-rejection"}],
    }
    coarse = run(Scenario.from_dict({**base, "evaluation": {"every": 768}})).timeseries
    fine = {row["events"]: row for row in run(Scenario.from_dict({**base, "evaluation": {"every": 128}})).timeseries}
    for row in coarse:
        assert row == fine[row["events"]]


@pytest.mark.parametrize("case", SCENARIOS)
def test_by_default_no_source_id_tells_poison_from_clean(case):
    """100 benign ids, the attacker's 10 among them: each attacker id carries benign events too."""
    batch, truth = _stream(_scenario(case, 1_000), [N_EVENTS])
    attacker_ids = np.unique(batch.source[truth.is_poison])
    assert 1 <= len(attacker_ids) <= 10 and len(np.unique(batch.source)) == 100
    assert np.isin(attacker_ids, batch.source[~truth.is_poison]).all()
    careless = _scenario(case, 1_000).replace(["attack.identity_pool='own'", "attack.identities=2"])
    batch, truth = _stream(careless, [N_EVENTS])
    assert set(np.unique(batch.source[truth.is_poison])) <= {100, 101}  # ids nothing benign uses: they betray it
    assert (batch.source[~truth.is_poison] < 100).all()


def test_identities_are_checked_against_the_benign_ids():
    from poisonsim.config import ConfigError

    with pytest.raises(ConfigError, match="attack.identities: 20 shared ids need stream.benign_sources >= 20, got 5"):
        World.build(_scenario("badnets on digits", 1_000).replace(["stream.benign_sources=5", "attack.identities=20"]))
