"""The Page-Hinkley test (Page 1954) on a stream of numbers, as river's ``drift.PageHinkley`` computes it.

The ``page-hinkley`` drift monitor of the drift defenses, and the
exporter's test on each evaluation step's prequential error. It is written
here, 30 lines, because importing river's drift detectors imports river's
datasets and with them scikit-learn, scipy and pandas: 1.5 s of every
learner's start-up. A test holds it to river's alarms, value for value.

Two-sided, with a fading mean: ``up`` sums ``x - mean - delta`` and
``down`` sums ``x - mean + delta`` (each faded by ``alpha``); after
``min_instances`` values it alarms when ``up`` rose ``threshold`` above its
lowest or ``down`` fell ``threshold`` below its highest. After an alarm it
starts afresh with the next value.

>>> test = PageHinkley(min_instances=5, threshold=3.0)
>>> [i for i, x in enumerate([0.0] * 20 + [1.0] * 10) if test.update(x)]
[23]
"""

from __future__ import annotations

from poisonsim.defenses.fresh_after_alarm import FreshAfterAlarm


class PageHinkley(FreshAfterAlarm):
    def __init__(
        self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0, alpha: float = 1 - 0.0001
    ):
        self.min_instances, self.delta, self.threshold, self.alpha = min_instances, delta, threshold, alpha
        self._reset()

    def _reset(self) -> None:
        self._n, self._mean = 0, 0.0
        self._up, self._down = 0.0, 0.0
        self._lowest_up, self._highest_down = float("inf"), -1.0

    def _alarm(self, x: float) -> bool:
        self._n += 1
        self._mean += (1 / self._n) * (x - self._mean)
        deviation = x - self._mean
        self._up = self.alpha * self._up + deviation - self.delta
        self._down = self.alpha * self._down + deviation + self.delta
        self._lowest_up = min(self._lowest_up, self._up)
        self._highest_down = max(self._highest_down, self._down)
        return self._n >= self.min_instances and (
            self._up - self._lowest_up > self.threshold or self._highest_down - self._down > self.threshold
        )
