"""STRIP's ``judge = "snapshot"``: inputs are judged by the net the threshold was calibrated on until the next
calibration, whatever the served net learns meanwhile; the snapshot survives a checkpoint, pruned units and all.

Real torch nets on the 8x8 digits; the served net is trained between the
calibrations so that a live judge would see it move.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.defenses.base import DefenderKnowledge
from poisonsim.defenses.pruning import prune_units, pruned_layer, unit_mask
from poisonsim.defenses.strip import Strip
from poisonsim.models.neural import NeuralClassifier
from poisonsim.services import checkpoint
from poisonsim.sources import Digits


@pytest.fixture(scope="module")
def digits():
    return Digits().load(np.random.default_rng(3))


def served(digits, seed: int = 0) -> NeuralClassifier:
    model = NeuralClassifier(
        n_classes=10, n_features=64, architecture="cnn", image_side=8, hidden=32, batch_size=32, device="cpu", seed=seed
    )
    model.learn_many(*digits.sample(np.random.default_rng(seed), 600))
    return model


def fitted(digits, model, judge: str) -> Strip:
    knowledge = DefenderKnowledge(*digits.sample(np.random.default_rng(5), 300), n_classes=10)
    return Strip(overlays=8, superimpose="additive", every=1000, judge=judge).fit(
        knowledge, model, np.random.default_rng(7)
    )


def learn_more(digits, model, seed: int) -> None:
    model.learn_many(*digits.sample(np.random.default_rng(seed), 800))


def test_a_snapshot_judges_with_the_calibrated_net_until_a_new_one_is_calibrated(digits):
    model = served(digits)
    snapshot, live = fitted(digits, model, "snapshot"), fitted(digits, model, "live")
    x = digits.test_x[:200]
    before = snapshot.score(x, model)
    assert before.tolist() == live.score(x, model).tolist()  # one net so far: the same judge
    learn_more(digits, model, seed=11)
    assert snapshot.score(x, model).tolist() == before.tolist()  # the served net moved, the judge did not
    assert np.abs(live.score(x, model) - before).mean() > 0.01  # a live judge moves with it
    snapshot.update(None, None, None, model, 1000)  # the scheduled calibration hands over to the net as it is now
    assert snapshot.calibrations_ == 2
    assert snapshot.score(x, model).tolist() == live.score(x, model).tolist()


@pytest.mark.parametrize("pruned_before", [[], [4, 8, 12]])
def test_a_snapshot_comes_back_from_a_checkpoint_with_the_units_pruned_when_it_was_taken(
    digits, tmp_path, pruned_before
):
    model = served(digits)
    if pruned_before:
        prune_units(model.net, pruned_before)
    defense = fitted(digits, model, "snapshot")
    prune_units(model.net, range(0, 32, 2))  # pruned on the served net after the snapshot: not in the judge
    learn_more(digits, model, seed=12)
    x = digits.test_x[:200]
    expected = defense.score(x, model)
    checkpoint.save(tmp_path / "ck.npz", {"model": model.get_state(), "strip": defense.get_state()})
    state = checkpoint.load(tmp_path / "ck.npz")

    restored_model = served(digits, seed=1)  # other weights; the checkpoint puts the served net back
    restored_model.set_state(state["model"])
    restored = fitted(digits, restored_model, "snapshot")
    restored.set_state(state["strip"], restored_model)
    prune_units(restored_model.net, range(0, 32, 2))  # fine-pruning puts its mask back after STRIP's state
    assert restored.score(x, restored_model).tolist() == expected.tolist()
    judge = pruned_layer(restored.snapshot_.net)  # pruned as the served net was when the snapshot was taken
    assert (
        np.flatnonzero(judge.unit_mask.numpy() == 0).tolist() == pruned_before
        if pruned_before
        else unit_mask(judge) is None
    )


def test_a_check_on_a_snapshot_watches_the_served_net(digits):
    model = served(digits)
    defense = fitted(digits, model, "snapshot")
    defense.check = 100
    defense.update(None, None, None, model, 100)  # the served net is the snapshot's: no new calibration
    assert (defense.checks_, defense.check_recalibrations_) == (1, 0)
    with_all_overlays_sure = defense.threshold_
    defense.threshold_ = np.inf  # a threshold every served score is under: the served net has drifted
    defense.update(None, None, None, model, 200)
    assert (defense.checks_, defense.check_recalibrations_, defense.calibrations_) == (2, 1, 2)
    assert defense.threshold_ == with_all_overlays_sure  # the same net calibrated again: the same threshold
