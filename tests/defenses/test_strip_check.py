"""STRIP's ``check``: between calibrations, trusted inputs re-scored on the current net; too many flagged for an
FRR of ``frr`` recalibrates at once, and a net that has not moved does not.

The overlay figures are planted (each input's entropy read from its first
feature, shifted by how far the "net" has moved), so the check's decision
is the only thing under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.defenses import strip
from poisonsim.defenses.base import DefenderKnowledge
from poisonsim.models.neural import NeuralClassifier

SHIFT = {"bits": 0.0}  # how far the planted net has moved since calibration: every entropy drops by this much


@pytest.fixture
def defense(monkeypatch):
    monkeypatch.setattr(strip, "strip_entropy", lambda model, x, bg, how, own_share, median: x[:, 0] - SHIFT["bits"])
    SHIFT["bits"] = 0.0
    clean = np.random.default_rng(0).uniform(1.0, 2.0, size=(1000, 4)).astype(np.float32)
    knowledge = DefenderKnowledge(clean, np.zeros(1000, dtype=np.int64), n_classes=2)
    model = NeuralClassifier(n_classes=2, n_features=4, device="cpu")
    return strip.Strip(overlays=8, every=1000, check=100).fit(knowledge, model, np.random.default_rng(1)), model


def test_a_check_recalibrates_only_when_the_trusted_inputs_frr_has_moved(defense):
    defense, model = defense
    threshold = defense.threshold_
    for position in (100, 200, 300):  # the net as calibrated: about 0.5% of trusted inputs flagged, no recalibration
        defense.update(None, None, None, model, position)
    assert (defense.checks_, defense.check_recalibrations_, defense.calibrations_) == (3, 0, 1)
    SHIFT["bits"] = 0.05  # 5% of the uniform(1, 2) entropies fall under the old threshold
    defense.update(None, None, None, model, 400)
    assert (defense.checks_, defense.check_recalibrations_, defense.calibrations_) == (4, 1, 2)
    assert defense.threshold_ == pytest.approx(threshold - 0.05, abs=0.01)  # the threshold follows the net
    defense.update(None, None, None, model, 500)  # recalibrated: the next check finds the FRR back at frr
    assert (defense.checks_, defense.check_recalibrations_) == (5, 1)
    assert defense.report()["check_recalibrations"] == 1


def test_the_schedule_takes_the_place_of_a_check_that_falls_on_it(defense):
    defense, model = defense
    SHIFT["bits"] = 0.05
    defense.update(None, None, None, model, 1000)  # a scheduled calibration: no check on top of it
    assert (defense.checks_, defense.calibrations_, defense._next_check) == (0, 2, 1100)
