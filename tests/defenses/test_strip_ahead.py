"""STRIP's ``judge = "ahead"``: at each calibration the judge is the served net trained further on the recent
stream, so a backdoor the served net half knows, the judge knows; what it learns from is what the served net
learns, labels and all, never which event is poison.

Real torch nets on the 8x8 digits: a served CNN that learned clean digits, then a recent stream in which a
share of the events carry a corner patch and the label 0 (BadNets) that the served net has not yet learned.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.attacks.triggers import PatchTrigger
from poisonsim.defenses.base import DefenderKnowledge
from poisonsim.defenses.strip import Strip
from poisonsim.events import EventBatch
from poisonsim.models.neural import NeuralClassifier
from poisonsim.sources import Digits

TARGET = 0


@pytest.fixture(scope="module")
def digits():
    return Digits().load(np.random.default_rng(3))


@pytest.fixture(scope="module")
def trigger(digits):
    return PatchTrigger(size=2).fit(digits.test_x, 8, np.random.default_rng(0))


def served(digits) -> NeuralClassifier:
    model = NeuralClassifier(
        n_classes=10, n_features=64, architecture="cnn", image_side=8, hidden=32, batch_size=32, device="cpu", seed=0
    )
    model.learn_many(*digits.sample(np.random.default_rng(1), 1500))
    return model


def fitted(digits, model, judge: str, mode: str = "flag") -> Strip:
    knowledge = DefenderKnowledge(*digits.sample(np.random.default_rng(5), 400), n_classes=10)
    strip = Strip(overlays=16, superimpose="additive", scale="union", every=1000, judge=judge, mode=mode)
    return strip.fit(knowledge, model, np.random.default_rng(7))


def recent_stream(digits, trigger, events: int = 1000, poison: float = 0.1) -> list[EventBatch]:
    """Clean digits with a share ``poison`` stamped and relabelled the target, in batches of 100."""
    rng = np.random.default_rng(2)
    x, y = digits.sample(rng, events)
    stamped = rng.random(events) < poison
    x[stamped], y[stamped] = trigger(x[stamped]), TARGET
    return [EventBatch.from_arrays(x[i : i + 100], y[i : i + 100], first_id=i) for i in range(0, events, 100)]


def triggered_others(digits, trigger) -> np.ndarray:
    return trigger(digits.test_x[digits.test_y != TARGET])


def test_the_ahead_judge_knows_the_backdoor_the_served_net_is_only_learning(digits, trigger):
    model = served(digits)
    ahead, snapshot = fitted(digits, model, "ahead"), fitted(digits, model, "snapshot")
    for batch in recent_stream(digits, trigger):
        ahead.inspect(batch, model), snapshot.inspect(batch, model)  # the served net does not learn them here
    for strip in (ahead, snapshot):
        strip.update(None, None, None, model, 1000)  # the scheduled calibration
    x = triggered_others(digits, trigger)
    assert (model.predict_many(x) == TARGET).mean() < 0.2  # the served net: no backdoor yet
    assert (snapshot.snapshot_.predict_many(x) == TARGET).mean() < 0.2
    assert (ahead.snapshot_.predict_many(x) == TARGET).mean() > 0.6  # the judge learned it (measured 0.78)
    assert ahead.flag(x, model).mean() > snapshot.flag(x, model).mean() + 0.4  # measured 0.75 against 0.09
    clean = digits.test_x[digits.test_y != TARGET]
    assert ahead.flag(clean, model).mean() <= 0.03  # calibrated on the judge itself (frr 0.01; measured 0.007)


def test_the_judge_learns_the_last_ahead_events_and_in_drop_mode_only_what_was_let_through(digits, trigger):
    model = served(digits)
    strip = fitted(digits, model, "ahead", mode="drop")
    strip.ahead_events = 250
    strip.recent_x_, strip.recent_y_ = strip.recent_x_[:250], strip.recent_y_[:250]
    kept = []
    for batch in recent_stream(digits, trigger, events=400):
        flagged = strip.inspect(batch, model)
        kept.append(batch.select(~flagged))
    x = np.concatenate([b.x for b in kept])[-250:]
    order = np.r_[strip.recent_seen_ % 250 : 250, 0 : strip.recent_seen_ % 250]  # the ring, oldest first
    assert strip.recent_seen_ == sum(len(b) for b in kept) and np.array_equal(strip.recent_x_[order], x)


def test_the_ahead_judge_and_its_recent_events_survive_a_state_round_trip(digits, trigger):
    model = served(digits)
    strip = fitted(digits, model, "ahead")
    for batch in recent_stream(digits, trigger, events=300):
        strip.inspect(batch, model)
    strip.update(None, None, None, model, 1000)
    restored = fitted(digits, model, "ahead")
    restored.set_state(strip.get_state(), model)
    x = triggered_others(digits, trigger)
    assert np.array_equal(restored.score(x, model), strip.score(x, model))
    assert restored.recent_seen_ == 300 and np.array_equal(restored.recent_x_[:300], strip.recent_x_[:300])
