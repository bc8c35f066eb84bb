"""``drift-reset``: a drift monitor (a river drift detector) over a per-event signal resets or freezes learning on alarm.

Signals, per event as delivered (a white-box attacker fills its points in
while the model runs, so they are read after it), against the centroids as
they were when the unit started:

- ``distance``: detector, ``||x - c|| / r``; classifier, distance to the
  centroid of the event's label over that class's median trusted distance;
- ``confidence``: detector, ``max(0, 1 - ||x - c|| / r)``; classifier,
  ``(d2 - d1) / (d2 + d1)`` with ``d1 <= d2`` the two nearest centroids.

Monitors (``monitor``): river's ``ADWIN``, ``PageHinkley`` and ``KSWIN`` (river's defaults,
fresh after each alarm), each as river computes it but none imported from ``river.drift``
(:mod:`poisonsim.defenses.adwin`, ``page_hinkley``, ``kswin``, ``error_monitors``). Actions, taken at the end of the unit (64 events)
in which the alarm fires:

- ``reset``: the windows go back to the last trusted state, one that is at
  least ``every`` events old (states are promoted every ``every`` events
  without an alarm; the first is the state the stream found);
- ``freeze``: the model stops learning (it still predicts) until ``every``
  events pass without an alarm.

Flags: the events from an alarm to the end of its unit, and every event
seen while frozen. ``report()`` gives the alarms and where they fired
(events into the stream) and the learning resets threw away; the evaluator
reads the alarms against the attack's start (detection delay, false alarms
per 10,000 clean events).

``drift-watch`` acts on nothing: it feeds every monitor at once, river's on
the chosen signal (ADWIN, PageHinkley, KSWIN), river's binary ones on the
error signal (DDM, EDDM, HDDM_A, HDDM_W: the detector flagged the event, or
the classifier got its label wrong), and the trivial baselines (never,
always, every ``period`` events), for ``poisonsim drift-bench``.

>>> DriftReset(monitor="page-hinkley")
DriftReset(monitor='page-hinkley', signal='distance', action='reset', every=500)
"""

from __future__ import annotations

from array import array
from typing import Annotated

import numpy as np

from poisonsim.defenses.adwin import new_adwin
from poisonsim.defenses.base import DefenderKnowledge, Defense, Every, MonitorKind, Signal
from poisonsim.defenses.error_monitors import DDM, EDDM, HDDMA, HDDMW
from poisonsim.defenses.kswin import KSWIN
from poisonsim.defenses.page_hinkley import PageHinkley
from poisonsim.defenses.window import restore_window, window_model
from poisonsim.events import EventBatch
from poisonsim.registry import DEFENSES, Key

# river's drift detectors, by name, each as river computes it (tests hold them to river's alarms) but none
# imported from river.drift, which imports scikit-learn: about a second of every run that watches with one
MONITORS = ("adwin", "page-hinkley", "kswin")  # on a number
BINARY_MONITORS = {"ddm": DDM, "eddm": EDDM, "hddm-a": HDDMA, "hddm-w": HDDMW}  # on 0 / 1
BASELINES = ("never", "always", "periodic")  # trivial monitors a real one has to beat
MAX_ALARMS_REPORTED = 100


class Baseline:
    """A trivial drift monitor: ``never`` fires, ``always`` fires on every value, ``periodic`` every ``period``.

    >>> periodic = Baseline("periodic", period=3)
    >>> [periodic.update(v) or periodic.drift_detected for v in range(7)]
    [False, False, True, False, False, True, False]
    """

    def __init__(self, kind: str, period: int = 1000):
        self.kind, self.period, self.seen, self.drift_detected = kind, period, 0, False

    def update(self, value: float) -> None:
        self.seen += 1
        self.drift_detected = self.kind == "always" or (self.kind == "periodic" and self.seen % self.period == 0)


def new_monitor(kind: str, seed: int, period: int = 1000):
    """A fresh monitor of ``kind``: one of river's detectors (KSWIN seeded), or a :class:`Baseline`."""
    if kind in BASELINES:
        return Baseline(kind, period)
    if kind == "page-hinkley":  # river's tests with river's defaults
        return PageHinkley()
    if kind == "kswin":
        return KSWIN(seed=seed)
    if kind == "adwin":
        return new_adwin()
    return BINARY_MONITORS[kind]()


class DriftMonitor:
    """A drift monitor: a river drift detector, or a trivial baseline, that keeps what it was fed, so a checkpoint can
    replay it (river's detectors hold no plain state to save).

    >>> monitor = DriftMonitor("page-hinkley", seed=0)
    >>> alarms = [monitor.update(v) for v in [0.0] * 200 + [5.0] * 50]
    >>> any(alarms[:200]), any(alarms[200:])
    (False, True)
    >>> again = DriftMonitor("page-hinkley", 0, monitor.fed())  # the saved one, fed again
    >>> again.fed().tolist() == monitor.fed().tolist()
    True
    """

    def __init__(self, kind: str, seed: int, fed=(), period: int = 1000):
        self._river = new_monitor(kind, seed, period)
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


def class_scales(knowledge: DefenderKnowledge, model) -> np.ndarray:
    """Per class, the median trusted distance to its centroid (a classifier's distance unit; 1 for a model
    with one centroid and radius: its radius is the unit)."""
    if "centroid-state" in model.offers:
        return np.ones(1)
    d = np.linalg.norm(knowledge.clean_x - model.centers[knowledge.clean_y], axis=1)
    scale = np.array(
        [
            np.median(d[knowledge.clean_y == c]) if (knowledge.clean_y == c).any() else 1.0
            for c in range(knowledge.n_classes)
        ]
    )
    scale[~(scale > 0)] = 1.0
    return scale


def window_signal(signal: str, batch: EventBatch, model, scale: np.ndarray, centers: np.ndarray | None = None):
    """``distance`` or ``confidence`` (see the module's docstring) of each event of ``batch``, against
    ``centers`` (default: the model's now); ``scale``: :func:`class_scales`."""
    x = np.asarray(batch.x, dtype=np.float64)
    if "centroid-state" in model.offers:
        center = model.center if centers is None else centers[0]
        ratio = np.linalg.norm(x - center, axis=1) / (model.radius_ if model.radius_ > 0 else 1.0)
        return ratio if signal == "distance" else np.maximum(0.0, 1.0 - ratio)
    centers = model.centers if centers is None else centers
    d = np.sqrt(np.maximum(((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2), 0.0))
    d[:, model.window_counts == 0] = np.inf
    if signal == "distance":
        own = d[np.arange(len(x)), batch.y]
        return np.where(np.isfinite(own), own / scale[batch.y], 0.0)
    two = np.sort(d, axis=1)[:, :2] if d.shape[1] > 1 else np.c_[d, d]
    total = two[:, 0] + two[:, 1]
    return np.where(np.isfinite(total) & (total > 0), (two[:, 1] - two[:, 0]) / np.where(total > 0, total, 1), 0.0)


@DEFENSES.register(
    "drift-reset",
    requires=("window",),
    examples=[{"every": 50}, {"monitor": "page-hinkley", "action": "freeze", "every": 50}],
)
class DriftReset(Defense):
    """Reset or freeze the window when the drift monitor fires on the chosen signal.

    It flags the events from the alarm on (and, frozen, every event the window did not learn)."""

    offers = frozenset({"flags-events"})

    def __init__(
        self,
        monitor: MonitorKind = "adwin",
        signal: Signal = "distance",
        action: Annotated[str, Key("on alarm", choices=("reset", "freeze"))] = "reset",
        every: Every = 500,
    ):
        self.monitor = monitor
        self.signal = signal
        self.action = action
        self.every = every

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> DriftReset:
        model = window_model(model, "drift-reset")
        self.scale_ = class_scales(knowledge, model)
        self.alarm_events_: list[int] = []
        self.seed_ = int(rng.integers(2**31))  # KSWIN samples its reference window: seeded from the defender's stream
        self.monitor_ = self._new_monitor()
        self.trusted_state_ = self.candidate_state_ = model.get_state()
        self.trusted_at_ = self.candidate_at_ = 0
        self.resets_ = self.frozen_events_ = self.undone_events_ = self.last_reset_at_ = 0
        self.quiet_since_ = 0  # events into the stream at the last alarm (or the start)
        self.saved_at_ = self.restored_from_ = None  # for the evaluator's window mirror
        return self

    def _new_monitor(self, fed=()) -> DriftMonitor:
        return DriftMonitor(self.monitor, self.seed_ + len(self.alarm_events_), fed)

    def signal_values(self, batch: EventBatch, model, centers: np.ndarray | None = None) -> np.ndarray:
        """The watched signal for each event of ``batch``, against ``centers`` (default: the model's now)."""
        return window_signal(self.signal, batch, model, self.scale_, centers)

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Keep the centroids as the unit finds them (the signal is read in :meth:`update`)."""
        self._centers = model.centers
        self._was_frozen = model.frozen
        return None

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        self.saved_at_ = self.restored_from_ = None
        first = position - len(batch)  # events into the stream before this unit
        alarm = None
        for i, value in enumerate(self.signal_values(batch, model, self._centers)):
            if self.monitor_.update(float(value)):
                alarm = i if alarm is None else alarm
                self.alarm_events_.append(first + i + 1)
        flags = np.full(len(batch), self._was_frozen)
        self.frozen_events_ += int(flags.sum())
        if alarm is not None:
            flags[alarm:] = True
            self.quiet_since_ = position
            self.monitor_ = self._new_monitor()
            if self.action == "reset":
                restore_window(model, self.trusted_state_)
                # learning the reset throws away, each event counted once (an earlier reset may have undone some)
                self.undone_events_ += position - max(self.trusted_at_, self.last_reset_at_)
                self.last_reset_at_ = position
                self.candidate_state_, self.candidate_at_ = self.trusted_state_, self.trusted_at_
                self.resets_ += 1
                self.restored_from_ = self.trusted_at_
            else:
                model.configure(frozen=True)
        elif model.frozen and position - self.quiet_since_ >= self.every:
            model.configure(frozen=False)
        if (
            position // self.every != (position - len(batch)) // self.every
            and position - self.quiet_since_ >= self.every
        ):
            self.trusted_state_, self.trusted_at_ = self.candidate_state_, self.candidate_at_
            self.candidate_state_, self.candidate_at_ = model.get_state(), position
            self.saved_at_ = position
        return flags

    def get_state(self) -> dict:
        return {
            "fed": self.monitor_.fed(),
            "alarm_events": list(self.alarm_events_),
            "trusted": [self.trusted_state_, self.trusted_at_],
            "candidate": [self.candidate_state_, self.candidate_at_],
            "counts": [self.resets_, self.frozen_events_, self.quiet_since_, self.undone_events_, self.last_reset_at_],
        }

    def set_state(self, state: dict, model) -> None:
        self.alarm_events_ = list(state["alarm_events"])
        self.monitor_ = self._new_monitor(state["fed"])
        self.trusted_state_, self.trusted_at_ = state["trusted"]
        self.candidate_state_, self.candidate_at_ = state["candidate"]
        (self.resets_, self.frozen_events_, self.quiet_since_, self.undone_events_, self.last_reset_at_) = state[
            "counts"
        ]

    def alarms(self) -> dict[str, list[int]]:
        return {"": self.alarm_events_}

    def report(self) -> dict:
        return {
            "alarms": len(self.alarm_events_),
            "alarm_events": self.alarm_events_[:MAX_ALARMS_REPORTED],
            "resets": self.resets_,
            "events_undone": self.undone_events_,
            "frozen_events": self.frozen_events_,
        }


WATCHED = (*MONITORS, *BINARY_MONITORS, *BASELINES)


@DEFENSES.register("drift-watch", requires=("window",), examples=[{}, {"signal": "confidence", "period": 100}])
class DriftWatch(Defense):
    """Every drift monitor (river's and the trivial baselines) watching the stream at once; acts on nothing (a benchmark)."""

    def __init__(
        self,
        signal: Signal = "distance",
        period: Annotated[int, Key("the periodic baseline fires every this many events", ge=1)] = 1000,
    ):
        self.signal = signal
        self.period = period

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> DriftWatch:
        model = window_model(model, "drift-watch")
        self.scale_ = class_scales(knowledge, model)
        self.seed_ = int(rng.integers(2**31))
        self._replay(np.empty(0), np.empty(0))
        self.alarm_events_: dict[str, list[int]] = {kind: [] for kind in WATCHED}
        return self

    def _replay(self, values: np.ndarray, errors: np.ndarray) -> None:
        """Fresh monitors fed the two signals so far (kept once for all of them, for a checkpoint)."""
        self.monitors_ = {kind: new_monitor(kind, self.seed_, self.period) for kind in WATCHED}
        self._values, self._errors = array("d", values.tolist()), array("d", errors.tolist())
        for kind, monitor in self.monitors_.items():
            for value in self._errors if kind in BINARY_MONITORS else self._values:
                monitor.update(value)

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Keep the centroids as the unit finds them (the signal is read in :meth:`update`)."""
        self._centers = model.centers
        return None

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        first = position - len(batch)
        values = window_signal(self.signal, batch, model, self.scale_, self._centers).tolist()
        wrong = np.asarray(predictions, dtype=bool) if "alarms" in model.offers else predictions != batch.y
        errors = wrong.astype(np.float64).tolist()
        self._values.extend(values)
        self._errors.extend(errors)
        for kind, monitor in self.monitors_.items():
            fed = errors if kind in BINARY_MONITORS else values
            alarms = self.alarm_events_[kind]
            for i, value in enumerate(fed):
                monitor.update(value)
                if monitor.drift_detected:
                    alarms.append(first + i + 1)
        return None

    def alarms(self) -> dict[str, list[int]]:
        """Every monitor's alarms (the evaluator scores them; read, do not change)."""
        return self.alarm_events_

    def get_state(self) -> dict:
        return {
            "values": np.frombuffer(self._values, dtype=np.float64).copy(),
            "errors": np.frombuffer(self._errors, dtype=np.float64).copy(),
            "alarm_events": {kind: list(events) for kind, events in self.alarm_events_.items()},
        }

    def set_state(self, state: dict, model) -> None:
        self._replay(np.asarray(state["values"], dtype=np.float64), np.asarray(state["errors"], dtype=np.float64))
        self.alarm_events_ = {kind: list(events) for kind, events in state["alarm_events"].items()}
