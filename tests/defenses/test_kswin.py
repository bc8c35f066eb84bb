"""poisonsim's KSWIN against river's: the same p-value and the same alarms on every value."""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.defenses.drift import new_monitor
from poisonsim.defenses.kswin import KSWIN, ks_exact_p_value


@pytest.mark.parametrize("seed", [5, 17, 40])
def test_kswin_gives_river_s_p_values_and_alarms_value_for_value(seed):
    """Noisy levels that jump up and down, then integers (ties between the two samples), with river's
    defaults and a looser alpha: every p-value equal as a float, every alarm at the same value."""
    from river.drift import KSWIN as RiverKSWIN

    rng = np.random.default_rng(seed)
    levels = np.repeat(rng.uniform(0, 1, 10), 300)
    series = [*(levels + rng.normal(0, 0.3, len(levels))).tolist(), *rng.integers(0, 3, 1500).astype(float).tolist()]
    for settings in ({}, {"alpha": 0.05, "window_size": 60, "stat_size": 20}):
        ours, river = KSWIN(seed=seed, **settings), RiverKSWIN(seed=seed, **settings)
        alarms, river_alarms, p_values, river_p_values = [], [], [], []
        for i, value in enumerate(series):
            if ours.update(value):
                alarms.append(i)
            river.update(value)
            if river.drift_detected:
                river_alarms.append(i)
            p_values.append(ours.p_value)
            river_p_values.append(float(river.p_value))
        assert alarms == river_alarms and len(alarms) >= 3
        assert p_values == river_p_values


def test_the_exact_p_value_is_scipy_s():
    from scipy import stats

    rng = np.random.default_rng(3)
    for shift in (0.0, 0.3, 0.8, 2.0):
        a, b = rng.normal(0, 1, 30), rng.normal(shift, 1, 30)
        expected = stats.ks_2samp(a, b, method="exact")
        steps = round(expected.statistic * 30)
        assert ks_exact_p_value(30, steps) == expected.pvalue


def test_the_kswin_monitor_is_ours_and_imports_no_river_drift_detector():
    assert isinstance(new_monitor("kswin", seed=1), KSWIN)


def test_a_nan_in_either_sample_gives_no_verdict_as_river_s():
    from river.drift import KSWIN as RiverKSWIN

    values = [0.0] * 150 + [float("nan")] + [0.0] * 40 + [3.0] * 150
    ours, river = KSWIN(seed=2), RiverKSWIN(seed=2)
    for value in values:
        ours.update(value)
        river.update(value)
        assert ours.drift_detected == river.drift_detected
        assert (ours.p_value != ours.p_value and river.p_value != river.p_value) or ours.p_value == river.p_value
