"""The centroid detector's compiled loop against the window update applied event by event.

Average-out with a full window and no window defense takes a loop of its
own (it only moves the mean); its alarms, slots and centroid must be those
of :func:`~poisonsim.models.window.learn` applied to each accepted event in
turn, bit for bit, on either side of the window filling up, with points
learned only inside the radius or all of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.models import CentroidDetector
from poisonsim.models.window import AVERAGE_OUT, learn, new_window, squared_distance


def _event_by_event(X: np.ndarray, n: int, learn_factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the detector does, one event at a time in Python: fill, calibrate r, then judge and learn."""
    center, window, state = new_window(n, X.shape[1])
    alarms, slots = np.zeros(len(X), dtype=bool), np.full(len(X), -1, dtype=np.int64)
    radius = 0.0
    for i, row in enumerate(X.astype(np.float64)):
        d2 = squared_distance(row, center)
        alarms[i] = radius > 0 and d2 > radius * radius
        if radius == 0 or learn_factor < 0 or d2 <= (learn_factor * radius) ** 2:
            slots[i] = learn(center, window, state, AVERAGE_OUT, row, 0.0)
        if radius == 0 and state[0] >= n:
            radius = float(np.quantile(np.sqrt(((window - center) ** 2).sum(axis=1)), 0.95))
    return alarms, slots, center


@pytest.mark.parametrize(("learn_mode", "learn_factor"), [("accepted", 1.0), ("all", -1.0)])
@pytest.mark.parametrize("split", [None, 30, 37])  # one batch, and the window filling up inside a batch or before
def test_average_out_equals_the_window_update_event_by_event(learn_mode, learn_factor, split):
    rng = np.random.default_rng(20261206)
    X = (rng.standard_normal((4000, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -2.0]).astype(np.float32)
    X[3000:] += 0.8  # drift: more alarms, and a mean that moves
    model = CentroidDetector(window_size=40, window_policy="average-out", learn=learn_mode)
    if split is None:
        alarms, slots = model.process_many(X)
    else:
        parts = [model.process_many(X[:split]), model.process_many(X[split:])]
        alarms, slots = (np.concatenate(column) for column in zip(*parts))
    want_alarms, want_slots, want_center = _event_by_event(X, 40, learn_factor)
    assert 50 < want_alarms.sum() < 3000  # the radius bites: both branches run
    assert np.array_equal(alarms, want_alarms)
    assert np.array_equal(slots, want_slots)
    assert np.array_equal(model.center, want_center)  # bit for bit: the same arithmetic in the same order
