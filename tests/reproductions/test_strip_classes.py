"""STRIP for every target class on MNIST, pooled and per-class thresholds (benchmarks/strip_classes.py).

Seeds 1-4, BadNets (3x3 patch, rho 0.05, 12,000 events) to each of the ten
classes; STRIP fitted at the end of the stream on the same net under both
scales. What holds: both keep the held-out FRR at the 1% they are calibrated
for, and per-class STRIP's FAR averages 0.047 over classes and seeds, most
classes at 0.013-0.029. What does not (README): FAR <= 0.05 for every class
(per-class: target 8 at 0.175, 2 at 0.097, 0 at 0.074), and per-class is not
better than pooled in every seed: the mean gain, 0.141 -> 0.047, is mostly
one seed (4) where clean 8s set the pooled threshold for every class (paired
gains 0.028, 0.026, -0.014, 0.337).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.strip_classes import over_classes
from conftest import margin

pytestmark = pytest.mark.slow


def test_per_class_scale_cuts_strip_far_over_target_classes_at_the_same_frr():
    figures = over_classes("mnist", (1, 2, 3, 4))
    assert figures["attack_success"].mean() >= 0.95  # a backdoor that fires is what STRIP is judged on
    for scale in ("pooled", "per-class"):
        frr = figures[f"{scale}_frr"].mean(axis=1)  # per seed, over the ten nets
        assert frr.mean() - margin(frr) <= 0.01
    per_class = figures["per-class_far"].mean(axis=1)
    assert per_class.mean() + margin(per_class) <= 0.08
    assert np.median(figures["per-class_far"].mean(axis=0)) <= 0.03  # most classes: FAR a few percent
