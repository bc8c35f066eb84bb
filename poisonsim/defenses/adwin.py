"""ADWIN (Bifet & Gavaldà 2007): river's compiled engine, without importing river's drift package.

``river.drift`` imports river's drift datasets, and with them
``river.stream`` and scikit-learn: about a second of every run whose
defense watches with ADWIN. river's ``drift.ADWIN`` is a thin wrapper of a
compiled helper (``river._river_rust.drift.AdaptiveWindowing``); this module
wraps the same helper, so it gives river's alarms by construction (a test
holds it to them). A river without that helper (older versions compiled
ADWIN elsewhere) gets ``river.drift.ADWIN`` itself.

>>> adwin = new_adwin()
>>> [i for i, x in enumerate([0.0] * 500 + [1.0] * 100) if adwin.update(x)]
[511]
"""

from __future__ import annotations

try:
    from river._river_rust.drift import AdaptiveWindowing
except ImportError:  # pragma: no cover - an older river
    AdaptiveWindowing = None

from poisonsim.defenses.fresh_after_alarm import FreshAfterAlarm


class ADWIN(FreshAfterAlarm):
    """river's ADWIN, its keys and defaults, on river's compiled adaptive window."""

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        self.delta, self.clock, self.max_buckets = delta, clock, max_buckets
        self.min_window_length, self.grace_period = min_window_length, grace_period
        self._reset()

    def _reset(self) -> None:
        self._window = AdaptiveWindowing(
            delta=self.delta,
            clock=self.clock,
            max_buckets=self.max_buckets,
            min_window_length=self.min_window_length,
            grace_period=self.grace_period,
        )

    def _alarm(self, x: float) -> bool:
        return self._window.update(x)


def new_adwin():
    """An ADWIN with river's defaults: this module's where river's compiled helper is there, else river's."""
    if AdaptiveWindowing is None:  # pragma: no cover - an older river
        from river.drift import ADWIN as RiverADWIN

        return RiverADWIN()
    return ADWIN()
