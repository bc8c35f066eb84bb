"""Drift monitors on a stream of errors (1: the model got the event wrong, 0: right), as river's computes them.

The binary monitors of ``drift-watch`` and ``poisonsim drift-bench``, each
river's ``drift.binary`` detector with its defaults (only the drift alarm;
warnings are not kept), written on river's running statistics so that the
figures are river's to the last bit (a test holds every alarm to river's).
river's own are not imported: ``river.drift`` imports river's drift
datasets, and with them scikit-learn, about a second of every such run.

- :class:`DDM` (Gama et al. 2004): alarm when the error rate plus its
  standard deviation exceeds its lowest value by three of that lowest
  standard deviation (after 30 values);
- :class:`EDDM` (Baena-García et al. 2006): on the distances between
  consecutive errors, alarm when their mean plus two standard deviations
  falls under 0.9 of its highest (after 30 values and 30 errors);
- :class:`HDDMA` (Frías-Blanco et al. 2015, A-test): alarm when the mean
  error since a cut point rose by more than a Hoeffding bound (confidence
  0.001) above the mean up to it;
- :class:`HDDMW` (the same, W-test): the same on exponentially weighted
  means (lambda 0.05), with McDiarmid's bound.

After an alarm each starts afresh with the next value.

>>> ddm = DDM()
>>> errors = [0.0, 0.0, 0.0, 1.0] * 100 + [1.0] * 50
>>> [i for i, x in enumerate(errors) if ddm.update(x)]
[423]
"""

from __future__ import annotations

import copy
import math

from river import stats

from poisonsim.defenses.fresh_after_alarm import FreshAfterAlarm


class DDM(FreshAfterAlarm):
    def __init__(self, warm_start: int = 30, drift_threshold: float = 3.0):
        self.warm_start, self.drift_threshold = warm_start, drift_threshold
        self._reset()

    def _reset(self) -> None:
        self._rate = stats.Mean()
        self._lowest = (math.inf, 0.0, 0.0)  # (rate + sd, rate, sd) where rate + sd was lowest

    def _alarm(self, error: float) -> bool:
        self._rate.update(error)
        rate, n = self._rate.get(), self._rate.n
        sd = math.sqrt(rate * (1 - rate) / n)
        if n <= self.warm_start:
            return False
        if rate + sd <= self._lowest[0]:
            self._lowest = (rate + sd, rate, sd)
        _, lowest_rate, lowest_sd = self._lowest
        return rate + sd > lowest_rate + self.drift_threshold * lowest_sd


class EDDM(FreshAfterAlarm):
    def __init__(self, warm_start: int = 30, beta: float = 0.9):
        self.warm_start, self.beta = warm_start, beta
        self._reset()

    def _reset(self) -> None:
        self._distances = stats.Var()  # between consecutive errors
        self._seen = self._errors = self._last_error = 0
        self._highest = -1.0  # highest mean distance plus two standard deviations

    def _alarm(self, error: float) -> bool:
        self._seen += 1
        if error != 1:
            return False
        self._errors += 1
        self._distances.update(self._seen - self._last_error)
        self._last_error = self._seen
        if self._seen <= self.warm_start:
            return False
        level = self._distances.mean.get() + 2 * self._distances.get() ** 0.5
        if level > self._highest:
            self._highest = level
            return False
        return self._errors > self.warm_start and level / self._highest < self.beta


class HDDMA(FreshAfterAlarm):
    def __init__(self, drift_confidence: float = 0.001):
        self.drift_confidence = drift_confidence
        self._reset()

    def _reset(self) -> None:
        self._all = stats.Mean()
        self._cut: tuple[float, float] | None = None  # (count, mean) of the values up to the cut point

    def _bound(self, n: float) -> float:
        """Hoeffding's bound on a mean of ``n`` values in [0, 1]."""
        return math.sqrt(1.0 / (2 * n) * math.log(1.0 / self.drift_confidence))

    def _alarm(self, error: float) -> bool:
        self._all.update(error)
        n, mean = self._all.n, self._all.get()
        if self._cut is None or self._cut[1] + self._bound(self._cut[0]) >= mean + self._bound(n):
            self._cut = (n, mean)
        cut_n, cut_mean = self._cut
        if cut_n == n:
            return False
        m = (n - cut_n) / cut_n * (1.0 / n)
        return mean - cut_mean >= math.sqrt(m / 2 * math.log(2.0 / self.drift_confidence))


class _Weighted:
    """An exponentially weighted mean and its bound's coefficient (sum of the squared weights)."""

    def __init__(self, lambda_: float):
        self.mean = stats.EWMean(lambda_)
        self.started = False
        self.coefficient = 1.0
        self._squares = (lambda_ * lambda_, (1 - lambda_) ** 2)

    def update(self, x: float) -> None:
        self.mean.update(x)
        self.started = True
        self.coefficient = self._squares[0] + self._squares[1] * self.coefficient


class HDDMW(FreshAfterAlarm):
    def __init__(self, drift_confidence: float = 0.001, lambda_: float = 0.05):
        self.drift_confidence, self.lambda_ = drift_confidence, lambda_
        self._reset()

    def _reset(self) -> None:
        self._all = _Weighted(self.lambda_)
        self._before = _Weighted(self.lambda_)  # up to the cut point
        self._after = _Weighted(self.lambda_)  # since it
        self._cut = math.inf

    def _bound(self, coefficient: float) -> float:
        """McDiarmid's bound for weights whose squares sum to ``coefficient``."""
        return math.sqrt(coefficient * math.log(1 / self.drift_confidence) / 2)

    def _alarm(self, error: float) -> bool:
        self._all.update(error)
        level = self._all.mean.get() + self._bound(self._all.coefficient)
        if level < self._cut:
            self._cut = level
            self._before, self._after = copy.deepcopy(self._all), _Weighted(self.lambda_)
        else:
            self._after.update(error)
        return (
            self._before.started
            and self._after.started
            and self._after.mean.get() - self._before.mean.get()
            > self._bound(self._before.coefficient + self._after.coefficient)
        )
