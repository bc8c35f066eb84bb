"""STRIP as the ready scenario ships it, over the learning stream (benchmarks/strip_over_stream.py).

``scenarios/strip_badnets.toml`` on the 8x8 digits, 10,000 events, probed
every 500 events at positions STRIP does not know, on seeds and target
classes that the documentation's table (seeds 101-102, every class) does
not use: the attack success behind STRIP averaged over the stream, and
the share of clean stream events it flags, each as a mean over the runs
with a margin from their spread (two standard errors). Measured with the
ahead judge (four trusted digits per background): 0.007 behind STRIP (2 s.e.
0.004; runs 0.001-0.013) and 0.62% of clean events flagged (at most 1.23%).
The snapshot judge it replaced gave 0.029 (2 s.e. 0.011), which the bound
of 0.025 refuses; the aim over the stream is 0.05 for every run.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from conftest import margin

from benchmarks.strip_over_stream import SHIPPED, measure

pytestmark = pytest.mark.slow
RUNS = ((201, 1), (202, 3), (203, 6), (204, 9), (205, 2), (206, 7))  # (seed, target class): the hard 1 and 3 too


def test_the_shipped_strip_holds_attack_success_and_clean_traffic_flagged_over_the_stream():
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(measure, ["digits"] * len(RUNS), [SHIPPED["digits"]] * len(RUNS), *zip(*RUNS)))
    behind = np.array([row["attack_success_behind_mean"] for row in rows])
    flagged = np.array([row["stream_frr"] for row in rows])
    success = np.array([row["attack_success_rate_mean"] for row in rows])
    assert success.mean() - margin(success) >= 0.5  # measured 0.78: the backdoor is learned, there is something to stop
    assert behind.mean() + margin(behind) <= 0.025  # measured 0.007 (2 s.e. 0.004; runs 0.001-0.013)
    assert behind.max() <= 0.05  # every run
    assert flagged.mean() + margin(flagged) <= 0.02  # measured 0.62% (2 s.e. 0.38%)
    assert flagged.max() <= 0.02  # every run, not only on average (measured at most 1.23%)
