"""poisonsim's drift monitors against river's own: the same alarms on every value, and no river.drift import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from poisonsim.defenses.drift import BINARY_MONITORS, new_monitor

RIVER_BINARY = {"ddm": "DDM", "eddm": "EDDM", "hddm-a": "HDDMA", "hddm-w": "HDDMW"}


def error_stream(seed: int) -> list[float]:
    """Errors at a rate that changes every 600 values, up and down, from 2% to 60%."""
    rng = np.random.default_rng(seed)
    rates = np.repeat(rng.uniform(0.02, 0.6, 12), 600)
    return (rng.random(len(rates)) < rates).astype(float).tolist()


def alarms(monitor, values: list[float]) -> list[int]:
    found = []
    for i, value in enumerate(values):
        monitor.update(value)
        if monitor.drift_detected:
            found.append(i)
    return found


@pytest.mark.parametrize("kind", sorted(BINARY_MONITORS))
@pytest.mark.parametrize("seed", [4, 23])
def test_each_error_monitor_raises_river_s_alarms_value_for_value(kind, seed):
    from river.drift import binary

    values = error_stream(seed)
    expected = alarms(getattr(binary, RIVER_BINARY[kind])(), values)
    assert alarms(new_monitor(kind, seed=0), values) == expected and len(expected) >= 2


@pytest.mark.parametrize("seed", [4, 23, 31])
def test_adwin_raises_river_s_alarms_value_for_value(seed):
    from river.drift import ADWIN

    rng = np.random.default_rng(seed)
    values = (np.repeat(rng.uniform(0, 1, 12), 500) + rng.normal(0, 0.2, 6000)).tolist()
    expected = alarms(ADWIN(), values)
    assert alarms(new_monitor("adwin", seed=0), values) == expected and len(expected) >= 3


def test_no_drift_monitor_imports_river_s_drift_package():
    """river.drift imports scikit-learn through its datasets: about a second of every run that watched with one."""
    code = (
        "import sys\nfrom poisonsim.defenses.drift import WATCHED, new_monitor\n"
        "for kind in WATCHED:\n    new_monitor(kind, seed=1).update(1.0)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('river.drift', 'sklearn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
