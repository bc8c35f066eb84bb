"""Split-view: content swapped after vetting reaches the model unless it is pinned to the vetted hash.

Seeds 1-8; the attack success is asserted on its mean over the seeds with a
margin of two standard errors (conftest.margin).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import margin

from poisonsim.config import ConfigError, Scenario
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.world import World

SEEDS = range(1, 9)
SHARE = 0.2
N_EVENTS = 6_000


def _scenario(seed: int, pin: bool, kind: str = "targeted") -> Scenario:
    target = {"target_class": 3, "target_count": 1} if kind == "targeted" else {}  # label-flip takes no target
    return Scenario.from_dict(
        {
            "seed": seed,
            "stream": {"source": "digits", "n_events": N_EVENTS, "n_test": 500},
            "model": {"kind": "centroid-classifier", "window_size": 50, "window_policy": "fifo", "pin_content": pin},
            "attack": {"kind": kind, "channel": "split-view", "controlled_share": SHARE, "start": 1_000, **target},
            "evaluation": {"every": 1_000},
        }
    )


@pytest.mark.parametrize("kind", ["targeted", "label-flip"])
def test_without_pinning_swapped_content_reaches_the_model_at_the_attackers_share(kind):
    success, share = [], []
    for seed in SEEDS:
        result = run(_scenario(seed, pin=False, kind=kind))
        s = result.summary
        assert s["refused_content"] == 0
        assert s["poison_passed_vetting"] == s["poison_events_total"] == s["poison_reached_model"]
        # 5,000 references after start at share 0.2: 1,000 expected, binomial sd ~28
        assert abs(s["poison_reached_model"] - SHARE * 5_000) < 4 * 28, s["poison_reached_model"]
        share.append(s["poison_reached_model"] / 5_000)
        if kind == "targeted":  # the share of evaluation rows after the start in which X' is called a 3
            success.append(np.mean([r["attack_success_rate"] for r in result.timeseries if r["events"] > 1_000]))
    assert abs(np.mean(share) - SHARE) + margin(share) <= 0.01  # seeds 1-8, targeted: 0.202 (0.190-0.214)
    if kind == "targeted":  # seeds 1-8: 0.95 (0.8-1; X' back to its class at the last row of seeds 2 and 8)
        assert np.mean(success) - margin(success) >= 0.8, success
    print(
        f"\n{kind}: poison reached the model at share {np.mean(share):.3f} ({min(share):.3f}-{max(share):.3f})"
        + (f", X' a 3 in {np.mean(success):.2f} of the rows after the start" if success else ""),
        end="",
    )


@pytest.mark.parametrize("kind", ["targeted", "label-flip"])
def test_with_pinning_no_swapped_content_reaches_the_model_and_every_refusal_is_counted(kind):
    for seed in SEEDS:
        open_ = run(_scenario(seed, pin=False, kind=kind)).summary
        pinned = run(_scenario(seed, pin=True, kind=kind)).summary
        assert pinned["poison_passed_vetting"] == open_["poison_passed_vetting"] > 0  # same stream, same swaps
        assert pinned["poison_reached_model"] == 0
        assert pinned["refused_content"] == pinned["refused_poison"] == pinned["poison_passed_vetting"]
        assert pinned["events_total"] == N_EVENTS  # refused events still count as stream events
        assert pinned["dropped_events"] == 0  # refused is not dropped by a defense: counted apart
        if kind == "targeted":
            assert pinned["attack_success_rate"] == 0.0


def test_vetting_saw_clean_content_and_nothing_marks_the_attackers_references():
    world = World.build(_scenario(1, pin=False))
    batch, truth = world.stream().next_batch(N_EVENTS)
    from poisonsim.pipeline.content import content_hash

    swapped = content_hash(batch.x, batch.y) != batch.pin
    assert np.array_equal(swapped, truth.is_poison)  # exactly the attacker's references changed after vetting
    assert np.isin(batch.source[truth.is_poison], batch.source[~truth.is_poison]).all()  # ids benign users share


def test_split_view_without_pinning_is_the_stream_attack_at_the_same_share():
    split = World.build(_scenario(2, pin=False)).stream().next_batch(3_000)[0]
    stream = Scenario.from_dict(
        {
            **_scenario(2, pin=False).to_dict(),
            "attack": {"kind": "targeted", "rate": SHARE, "start": 1_000, "target_class": 3, "target_count": 1},
        }
    )
    mixed = World.build(stream).stream().next_batch(3_000)[0]
    assert np.array_equal(split.x, mixed.x) and np.array_equal(split.y, mixed.y)
    assert mixed.pin is None


def test_split_view_keys_are_checked():
    with pytest.raises(ConfigError, match="model.pin_content"):
        Scenario.from_dict({"model": {"pin_content": True}})
    with pytest.raises(ConfigError, match="attack.controlled_share"):
        Scenario.from_dict({"attack": {"kind": "targeted", "controlled_share": 0.2}})
    with pytest.raises(ConfigError, match="attack.rate"):
        Scenario.from_dict({"attack": {"kind": "targeted", "channel": "split-view", "rate": 0.2}})


def test_the_codec_carries_the_pins_and_refuses_a_layout_it_was_not_built_for():
    from poisonsim.transport.codec import Codec, DecodeError

    world = World.build(_scenario(1, pin=True))
    batch, truth = world.stream().next_batch(2_000)
    codec = Codec(world.source.n_features, world.source.n_classes, N_EVENTS, pinned=True)
    messages = codec.encode(batch, truth, events_per_message=7)
    decoded = codec.decode_many(*zip(*messages))
    assert not decoded.errors and np.array_equal(decoded.batch.pin, batch.pin)
    assert np.array_equal(decoded.batch.x, batch.x) and np.array_equal(decoded.truth.is_poison, truth.is_poison)
    plain = Codec(world.source.n_features, world.source.n_classes, N_EVENTS)
    with pytest.raises(DecodeError, match="content pins"):
        plain.decode(*messages[0])
    assert {e.reason for _, e in plain.decode_many(*zip(*messages)).errors} == {"dimension"}
    with pytest.raises(ValueError, match="pinned"):
        plain.encode(batch, truth)
