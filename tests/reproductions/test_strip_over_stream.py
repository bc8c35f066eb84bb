"""STRIP as the ready scenario ships it, over the learning stream (benchmarks/strip_over_stream.py).

``scenarios/strip_badnets.toml`` on the 8x8 digits, 10,000 events, probed
every 500 events at positions STRIP does not know, on seeds and target
classes that the documentation's table (seeds 101-102, every class) does
not use: the attack success behind STRIP averaged over the stream, and
the share of clean stream events it flags, each as a mean over the runs
with a margin from their spread (two standard errors). Measured with four
trusted digits per background: 0.029 behind STRIP (runs 0.011-0.042; with
three, 0.036 and one run at 0.056) and 0.61% of clean events flagged; the
bound on the first leaves 0.005 over the 0.05 aimed at for another CPU's
kernels.
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
    assert behind.mean() + margin(behind) <= 0.055  # measured 0.029 (2 s.e. 0.011; runs 0.011-0.042)
    assert flagged.mean() + margin(flagged) <= 0.02  # measured 0.61% (2 s.e. 0.29%)
    assert flagged.max() <= 0.02  # every run, not only on average (measured at most 1.02%)
