"""KSWIN (Raab et al. 2020) on a stream of numbers, as river's ``drift.KSWIN`` computes it, without scipy.

The ``kswin`` drift monitor of the drift defenses. river's runs scipy's
two-sample Kolmogorov-Smirnov test on every value, about a millisecond of
argument checking each, most of a drift-guarded centroid run; this one
computes the same exact test in pure Python. A test holds it to river's
p-values and alarms, value for value.

A sliding window of ``window_size`` values; once it is full, each value
compares the last ``stat_size`` values with as many drawn at random (a
``random.Random(seed)``, as river draws them) from the rest, and alarms when
the exact two-sided test's p-value is at most ``alpha`` and the statistic
above 0.1. After an alarm it starts afresh, its random draws too.

>>> test = KSWIN(alpha=0.0001, seed=42)
>>> values = [0.0, 1.0] * 500 + [5.0, 6.0, 7.0] * 100
>>> [i for i, x in enumerate(values) if test.update(x)]
[1016]
"""

from __future__ import annotations

import collections
import itertools
import math
import random

from poisonsim.defenses.fresh_after_alarm import FreshAfterAlarm


def ks_statistic_steps(sample: list[float], other: list[float]) -> int:
    """The two-sided Kolmogorov-Smirnov statistic of two samples of one size n, times n: the largest gap
    between their counts of values at most v, over every value v of either (read once all values equal to v
    are counted).

    >>> ks_statistic_steps([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]), ks_statistic_steps([1.0, 1.0], [1.0, 2.0])
    (1, 1)
    """
    merged = sorted([(v, 1) for v in sample] + [(v, -1) for v in other])
    gap = widest = 0
    for (value, step), (following, _) in zip(merged, [*merged[1:], (math.nan, 0)]):
        gap += step
        if following != value:
            widest = max(widest, abs(gap))
    return widest


def ks_exact_p_value(n: int, steps: int) -> float:
    """P(D >= steps / n) for two samples of size n from one distribution: the share of lattice paths from
    (0, 0) to (n, n) that leave the band |x - y| < steps (Hodges 1957), in scipy's order of operations.

    >>> round(ks_exact_p_value(30, 12), 6)
    0.015643
    """
    if steps == 0:
        return 1.0
    outside = 0.0
    for k in range(n // steps, -1, -1):
        term = 1.0
        for j in range(steps):
            term = (n - k * steps - j) * term / (n + k * steps + j + 1)
        outside = term * (1.0 - outside)
    return min(max(2 * outside, 0.0), 1.0)


class KSWIN(FreshAfterAlarm):
    def __init__(self, alpha: float = 0.005, window_size: int = 100, stat_size: int = 30, seed: int | None = None):
        if not 0 <= alpha <= 1 or window_size < stat_size or stat_size < 1:
            raise ValueError(f"KSWIN: expected 0 <= alpha <= 1 and 1 <= stat_size <= window_size, got {locals()}")
        self.alpha, self.window_size, self.stat_size, self.seed = alpha, window_size, stat_size, seed
        self._reset()

    def _reset(self) -> None:
        self.p_value = 0.0
        self.window: collections.deque = collections.deque(maxlen=self.window_size)
        self._rng = random.Random(self.seed)
        self._nans = 0  # NaNs in the window: only then are the samples searched for one

    def _alarm(self, x: float) -> bool:
        if len(self.window) == self.window_size and self.window[0] != self.window[0]:
            self._nans -= 1  # the NaN about to leave
        self.window.append(x)
        self._nans += x != x
        if len(self.window) < self.window_size:
            return False
        older = self.window_size - self.stat_size
        drawn = [self.window[i] for i in self._rng.sample(range(older), self.stat_size)]
        recent = list(itertools.islice(self.window, older, self.window_size))
        if self._nans and any(v != v for v in itertools.chain(drawn, recent)):
            self.p_value = math.nan  # as scipy's test: no verdict on a NaN
            return False
        steps = ks_statistic_steps(drawn, recent)
        self.p_value = ks_exact_p_value(self.stat_size, steps)
        return self.p_value <= self.alpha and steps / self.stat_size > 0.1
