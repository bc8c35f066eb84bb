"""STRIP's ``scale = "union"``: three scores, each input flagged when any is in its calibrated low tail.

The overlay figures are planted (each input's entropy and own-class share
read from its features, whatever the overlays) so that each of the three
scores alone is the one that can catch one kind of input, and the FRR bound
can be checked on many fresh clean inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.defenses import strip
from poisonsim.defenses.base import DefenderKnowledge
from poisonsim.models.neural import NeuralClassifier


def _planted(model, x, backgrounds, how, own_share=False, median=False):
    return x[:, :2].astype(float) if own_share else x[:, 0].astype(float)


def _clean(rng: np.random.Generator, m: int) -> np.ndarray:
    """Class 0: entropy 1-2 bits, a share of 0.5-0.9 leaves it; class 1 keeps its overlays (the sink class)."""
    cls = rng.integers(0, 2, m)
    entropy = np.where(cls == 0, rng.uniform(1.0, 2.0, m), rng.uniform(0.1, 0.2, m))
    share = np.where(cls == 0, rng.uniform(0.5, 0.9, m), rng.uniform(0.01, 0.05, m))
    return np.column_stack([entropy, share, cls, np.zeros(m)]).astype(np.float32)


@pytest.fixture
def fitted(monkeypatch):
    monkeypatch.setattr(strip, "strip_entropy", _planted)
    model = NeuralClassifier(n_classes=2, n_features=4, device="cpu")
    model.predict_many = lambda X: np.asarray(X)[:, 2].astype(np.int64)  # the class is planted too
    clean = _clean(np.random.default_rng(0), 1000)
    knowledge = DefenderKnowledge(clean, clean[:, 2].astype(np.int64), n_classes=2)
    defenses = {
        scale: strip.Strip(overlays=8, scale=scale).fit(knowledge, model, np.random.default_rng(1))
        for scale in strip.SCALES
    }
    return defenses, model


def test_union_flags_what_any_of_its_three_scores_flags(fitted):
    defenses, model = fitted
    suspects = np.array(
        [
            [0.05, 0.001, 1, 0],  # below every clean input's entropy: the pooled score's catch
            [0.5, 0.7, 0, 0],  # class 0, entropy low for class 0 only (above the sink class's)
            [1.5, 0.05, 0, 0],
        ],
        dtype=np.float32,
    )  # class 0, entropy normal, overlays kept: the share's
    flags = {scale: d.flag(suspects, model).tolist() for scale, d in defenses.items()}
    assert flags == {"pooled": [True, False, False], "per-class": [True, True, False], "union": [True, True, True]}


def test_union_keeps_the_frr_bound_over_its_three_tails(fitted):
    defenses, model = fitted
    fresh = _clean(np.random.default_rng(2), 20_000)
    for scale, defense in defenses.items():
        assert defense.flag(fresh, model).mean() <= 0.01, scale  # frr 0.01 with 90% confidence
    union = defenses["union"]
    assert 0 < union.threshold_ <= 0.01  # a tail share: the three tails share the budget


def test_union_state_round_trip_restores_its_scores(fitted):
    defenses, model = fitted
    union = defenses["union"]
    fresh = _clean(np.random.default_rng(3), 200)
    before, state = union.score(fresh, model), union.get_state()
    union.references_, union.center_, union.threshold_ = None, None, None
    union.set_state(state, model)
    assert np.array_equal(union.score(fresh, model), before) and union.threshold_ == state["threshold"]


def _sure_class(rng: np.random.Generator, m: int) -> np.ndarray:
    """Class 0 as above; class 1 a class the net is sure of: nearly every entropy at one value, a few spread out."""
    x = _clean(rng, m)
    sure = x[:, 2] == 1
    x[sure, 0] = np.where(
        rng.random(sure.sum()) < 0.9, 5e-4 + 1e-7 * rng.random(sure.sum()), rng.uniform(0.0, 0.01, sure.sum())
    )
    return x


def test_robust_class_spreads_keep_a_sure_class_from_hiding_a_trigger(monkeypatch):
    monkeypatch.setattr(strip, "strip_entropy", _planted)
    model = NeuralClassifier(n_classes=2, n_features=4, device="cpu")
    model.predict_many = lambda X: np.asarray(X)[:, 2].astype(np.int64)
    clean = _sure_class(np.random.default_rng(0), 1000)
    knowledge = DefenderKnowledge(clean, clean[:, 2].astype(np.int64), n_classes=2)
    defenses = {
        robust: strip.Strip(overlays=8, scale="per-class", robust=robust).fit(
            knowledge, model, np.random.default_rng(1)
        )
        for robust in (False, True)
    }
    assert defenses[False].spread_[1] < 1e-3 < 0.1 < defenses[True].spread_[1]  # a MAD near 0, and shrunk
    trigger = np.array([[0.3, 0.7, 0, 0]], dtype=np.float32)  # class 0 at a third of its lowest clean entropy
    assert defenses[True].flag(trigger, model).tolist() == [True]
    assert defenses[False].flag(trigger, model).tolist() == [False]  # the sure class's hairs set the threshold
    fresh = _sure_class(np.random.default_rng(2), 20_000)
    for defense in defenses.values():
        assert defense.flag(fresh, model).mean() <= 0.01  # the FRR bound holds either way
