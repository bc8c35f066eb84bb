"""``drift-reset``: a river drift detector over a per-event signal resets or freezes learning on alarm.

Signals, per event as delivered (a white-box attacker fills its points in
while the model runs, so they are read after it), against the centroids as
they were when the unit started:

- ``distance``: detector, ``||x - c|| / r``; classifier, distance to the
  centroid of the event's label over that class's median trusted distance;
- ``confidence``: detector, ``max(0, 1 - ||x - c|| / r)``; classifier,
  ``(d2 - d1) / (d2 + d1)`` with ``d1 <= d2`` the two nearest centroids.

Detectors: river's ``ADWIN``, ``PageHinkley`` and ``KSWIN`` (river's defaults,
fresh after each alarm). Actions, taken at the end of the unit (64 events)
in which the alarm fires:

- ``reset``: the windows go back to the last trusted state, one that is at
  least ``every`` events old (states are promoted every ``every`` events
  without an alarm; the first is the state the stream found);
- ``freeze``: the model stops learning (it still predicts) until ``every``
  events pass without an alarm.

Flags: the events from an alarm to the end of its unit, and every event
seen while frozen. ``report()`` gives the alarms and where they fired
(events into the stream), so delay after an attack starts and false alarms on
a clean stream can be read against the schedule.

>>> DriftReset(detector="page-hinkley")
DriftReset(detector='page-hinkley', signal='distance', action='reset', every=500)
"""

from __future__ import annotations

from array import array
from typing import Annotated

import numpy as np
from river import drift

from simulator.defenses.base import Defense, DefenderKnowledge, DriftDetector, Every, Signal, check_choices
from simulator.registry import DEFENSES, Key
from simulator.defenses.window import centroid_model, restore_window
from simulator.events import EventBatch
from simulator.models.centroid import CentroidDetector

DETECTORS = {"adwin": drift.ADWIN, "page-hinkley": drift.PageHinkley, "kswin": drift.KSWIN}
MAX_ALARMS_REPORTED = 100


class DriftMonitor:
    """A river drift detector that keeps what it was fed, so a checkpoint can replay it
    (river's detectors hold no plain state to save).

    >>> detector = DriftMonitor("page-hinkley", seed=0)
    >>> alarms = [detector.update(v) for v in [0.0] * 200 + [5.0] * 50]
    >>> any(alarms[:200]), any(alarms[200:])
    (False, True)
    >>> again = DriftMonitor("page-hinkley", 0, detector.fed())  # the saved one, fed again
    >>> again.fed().tolist() == detector.fed().tolist()
    True
    """

    def __init__(self, kind: str, seed: int, fed=()):
        self._river = drift.KSWIN(seed=seed) if kind == "kswin" else DETECTORS[kind]()
        self._fed = array("d")
        for value in np.asarray(fed, dtype=np.float64).tolist():
            self.update(value)

    def update(self, value: float) -> bool:
        """Feed one value; True when drift is detected."""
        self._river.update(value)
        self._fed.append(value)
        return self._river.drift_detected

    def fed(self) -> np.ndarray:
        """Every value fed so far (a copy)."""
        return np.frombuffer(self._fed, dtype=np.float64).copy()


@DEFENSES.register("drift-reset", requires=("window",),
                   examples=[{"every": 50}, {"detector": "page-hinkley", "action": "freeze", "every": 50}])  # fmt: skip
class DriftReset(Defense):
    """Reset or freeze the window when a drift detector fires on the chosen signal."""

    def __init__(self, detector: DriftDetector = "adwin", signal: Signal = "distance",
                 action: Annotated[str, Key("on alarm", choices=("reset", "freeze"))] = "reset",
                 every: Every = 500):  # fmt: skip
        self.detector = detector
        self.signal = signal
        self.action = action
        self.every = every
        check_choices(detector=(detector, DETECTORS), signal=(signal, ("distance", "confidence")),
                      action=(action, ("reset", "freeze")))  # fmt: skip

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> DriftReset:
        model = centroid_model(model, "drift-reset")
        self.scale_ = np.ones(1)
        if not isinstance(model, CentroidDetector):  # per-class scale: median trusted distance to the centroid
            d = np.linalg.norm(knowledge.clean_x - model.centers[knowledge.clean_y], axis=1)
            self.scale_ = np.array([np.median(d[knowledge.clean_y == c]) if (knowledge.clean_y == c).any() else 1.0
                                    for c in range(knowledge.n_classes)])  # fmt: skip
            self.scale_[~(self.scale_ > 0)] = 1.0
        self.alarm_events_: list[int] = []
        self.seed_ = int(rng.integers(2**31))  # KSWIN samples its reference window: seeded from the defender's stream
        self.detector_ = self._new_detector()
        self.trusted_state_ = self.candidate_state_ = model.get_state()
        self.trusted_at_ = self.candidate_at_ = 0
        self.resets_ = self.frozen_events_ = 0
        self.quiet_since_ = 0  # events into the stream at the last alarm (or the start)
        self.saved_at_ = self.restored_from_ = None  # for the evaluator's window mirror
        return self

    def _new_detector(self, fed=()) -> DriftMonitor:
        return DriftMonitor(self.detector, self.seed_ + len(self.alarm_events_), fed)

    def signal_values(self, batch: EventBatch, model, centers: np.ndarray | None = None) -> np.ndarray:
        """The watched signal for each event of ``batch``, against ``centers`` (default: the model's now)."""
        x = np.asarray(batch.x, dtype=np.float64)
        if isinstance(model, CentroidDetector):
            center = model.center if centers is None else centers[0]
            ratio = np.linalg.norm(x - center, axis=1) / (model.radius_ if model.radius_ > 0 else 1.0)
            return ratio if self.signal == "distance" else np.maximum(0.0, 1.0 - ratio)
        centers = model.centers if centers is None else centers
        d = np.sqrt(np.maximum(((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2), 0.0))
        d[:, model.window_counts == 0] = np.inf
        if self.signal == "distance":
            own = d[np.arange(len(x)), batch.y]
            return np.where(np.isfinite(own), own / self.scale_[batch.y], 0.0)
        two = np.sort(d, axis=1)[:, :2] if d.shape[1] > 1 else np.c_[d, d]
        total = two[:, 0] + two[:, 1]
        return np.where(np.isfinite(total) & (total > 0), (two[:, 1] - two[:, 0]) / np.where(total > 0, total, 1), 0.0)

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Keep the centroids as the unit finds them (the signal is read in :meth:`update`)."""
        self._centers = model.center[None] if isinstance(model, CentroidDetector) else model.centers
        self._was_frozen = model.frozen
        return None

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        self.saved_at_ = self.restored_from_ = None
        first = position - len(batch)  # events into the stream before this unit
        alarm = None
        for i, value in enumerate(self.signal_values(batch, model, self._centers)):
            if self.detector_.update(float(value)):
                alarm = i if alarm is None else alarm
                self.alarm_events_.append(first + i + 1)
        flags = np.full(len(batch), self._was_frozen)
        self.frozen_events_ += int(flags.sum())
        if alarm is not None:
            flags[alarm:] = True
            self.quiet_since_ = position
            self.detector_ = self._new_detector()
            if self.action == "reset":
                restore_window(model, self.trusted_state_)
                self.candidate_state_, self.candidate_at_ = self.trusted_state_, self.trusted_at_
                self.resets_ += 1
                self.restored_from_ = self.trusted_at_
            else:
                model.configure(frozen=True)
        elif model.frozen and position - self.quiet_since_ >= self.every:
            model.configure(frozen=False)
        if position // self.every != (position - len(batch)) // self.every and position - self.quiet_since_ >= self.every:
            self.trusted_state_, self.trusted_at_ = self.candidate_state_, self.candidate_at_
            self.candidate_state_, self.candidate_at_ = model.get_state(), position
            self.saved_at_ = position
        return flags

    def get_state(self) -> dict:
        return {
            "fed": self.detector_.fed(),
            "alarm_events": list(self.alarm_events_),
            "trusted": [self.trusted_state_, self.trusted_at_],
            "candidate": [self.candidate_state_, self.candidate_at_],
            "counts": [self.resets_, self.frozen_events_, self.quiet_since_],
        }

    def set_state(self, state: dict, model) -> None:
        self.alarm_events_ = list(state["alarm_events"])
        self.detector_ = self._new_detector(state["fed"])
        self.trusted_state_, self.trusted_at_ = state["trusted"]
        self.candidate_state_, self.candidate_at_ = state["candidate"]
        self.resets_, self.frozen_events_, self.quiet_since_ = state["counts"]

    def report(self) -> dict:
        return {
            "alarms": len(self.alarm_events_),
            "alarm_events": self.alarm_events_[:MAX_ALARMS_REPORTED],
            "resets": self.resets_,
            "frozen_events": self.frozen_events_,
        }
