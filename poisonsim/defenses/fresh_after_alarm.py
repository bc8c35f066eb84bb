"""What every drift monitor of the drift defenses shares, as river's detectors do: after an alarm it starts
afresh with the next value.

A monitor gives :meth:`FreshAfterAlarm._reset` (its state as new) and
:meth:`FreshAfterAlarm._alarm` (one value in, whether it alarms); ``update``
does the rest and keeps the verdict in ``drift_detected``.

>>> class EveryThird(FreshAfterAlarm):
...     def _reset(self):
...         self.seen = 0
...     def _alarm(self, x):
...         self.seen += 1
...         return self.seen == 3
>>> monitor = EveryThird()
>>> monitor._reset()
>>> [i for i in range(7) if monitor.update(0.0)]
[2, 5]
"""

from __future__ import annotations


class FreshAfterAlarm:
    drift_detected = False

    def _reset(self) -> None:
        """The state of a new monitor (called by ``__init__`` and after each alarm)."""
        raise NotImplementedError

    def _alarm(self, x: float) -> bool:
        """Take in one value; whether it sets the alarm off."""
        raise NotImplementedError

    def update(self, x: float) -> bool:
        """Feed one value; True when it sets the alarm off (also in ``drift_detected``)."""
        if self.drift_detected:
            self._reset()
        self.drift_detected = bool(self._alarm(x))
        return self.drift_detected
