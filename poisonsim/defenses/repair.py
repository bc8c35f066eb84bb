"""When to repair a net: once at an event, or on drift alarms (shared by fine-pruning and neural-cleanse).

A :class:`ScheduledRepair` is a defense that changes the model now and then;
the subclass says *how* (:meth:`ScheduledRepair.repair`), this base says *when*:

- ``when = "once"``: one repair at event ``at`` (default: the stream's end);
- ``when = "drift"``: a drift monitor (``monitor``: a river drift detector) watches each event's
  signal, read before the net learns the event (test-then-train), and a
  repair follows an alarm that says the signal got worse, at most once per
  ``every`` events (the cool-down). Signals, as ``drift-reset``'s for a net:
  ``distance``, the cross-entropy of the event's label under the net
  (mislabelled poison raises it: alarm on a rise), and ``confidence``, the top
  probability minus the runner-up (alarm on a drop). The monitor starts
  fresh after each alarm and after each repair; an alarm whose recent signal
  is better than before (the net still improving) only restarts it.

Every repair's figures are kept (``repairs_``, each with its ``event``), and
the schedule's state goes into checkpoints (:meth:`ScheduledRepair.get_state`).

>>> class Count(ScheduledRepair):
...     def repair(self, model, position):
...         return {"units": 0}
>>> from poisonsim.defenses.base import DefenderKnowledge
>>> defense = Count(at=5).fit(DefenderKnowledge(np.zeros((2, 1)), np.zeros(2), 2), None, np.random.default_rng(0))
>>> defense.update(None, None, None, None, 8)
>>> defense.repairs_
[{'event': 8, 'units': 0}]
"""

from __future__ import annotations

from abc import abstractmethod
from collections import deque

import numpy as np

from poisonsim.defenses.base import DefenderKnowledge, Defense, event_to_act_at
from poisonsim.defenses.drift import DriftMonitor
from poisonsim.events import EventBatch

RECENT = 64  # events whose mean signal an alarm compares with the events before them
SIGNALS = {"distance": 1.0, "confidence": -1.0}  # sign: +1 a rise is worse, -1 a drop is worse


class ScheduledRepair(Defense):
    """Base of defenses that repair the model once at ``at`` or on drift alarms; subclasses give :meth:`repair`."""

    def __init__(self, at=None, when: str = "once", monitor: str = "adwin", signal: str = "distance", every: int = 500):
        self.at = at
        self.when = when
        self.monitor = monitor
        self.signal = signal
        self.every = every
        self.check_schedule()

    def check_schedule(self) -> None:
        """A clear error for schedule keys that do not go together (each key alone is checked by its Key)."""
        if self.when == "drift" and self.at is not None:
            name = self.kind or type(self).__name__
            raise ValueError(f'at: {name} repairs at drift alarms with when = "drift"; leave `at` unset')

    @abstractmethod
    def repair(self, model, position: int) -> dict:
        """Repair ``model`` in place at stream position ``position``; the repair's figures (plain values)."""

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> ScheduledRepair:
        self.model_ = model
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self.at_ = event_to_act_at(self.at, knowledge)
        self.rng_ = rng
        self.repairs_: list[dict] = []
        self.alarm_events_: list[int] = []
        if self.when == "drift":
            self.seed_ = int(rng.integers(2**31))  # KSWIN samples its reference window: seeded, as in drift-reset
            self.due_ = False  # an alarm waits out the cool-down, then repairs
            self.restarts_ = 0
            self._restart_monitor()
        return self

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Read the watched signal before the net learns the batch."""
        if self.when == "drift":
            self._read = (batch.ids, self.signal_values(batch, model))
        return None

    def signal_values(self, batch: EventBatch, model) -> np.ndarray:
        """The watched signal for each event of ``batch`` under the net as it is now."""
        if self.signal == "distance":
            return model.losses_many(batch.x, batch.y)
        top = np.sort(model.predict_proba_many(batch.x), axis=1)[:, -2:]
        return (top[:, -1] - top[:, 0]).astype(np.float64)

    def update(self, batch, predictions, slots, model, position: int) -> None:
        if self.when == "once":
            if not self.repairs_ and self.at_ is not None and position >= self.at_:
                self._repair_now(model, position)
            return
        first, (ids, values) = position - len(batch), self._read
        if len(ids) != len(batch):  # a gate before us kept some events from the net
            values = values[np.isin(ids, batch.ids)]
        for i, value in enumerate(values):
            alarm = self.monitor_.update(float(value))
            self._recent.append(float(value))
            self._total += float(value)
            self._count += 1
            if alarm:
                if self._got_worse():
                    self.due_ = True
                    self.alarm_events_.append(first + i + 1)
                self._restart_monitor()
        if self.due_ and (not self.repairs_ or position - self.repairs_[-1]["event"] >= self.every):
            self._repair_now(model, position)
            self.due_ = False
            self._restart_monitor()  # the repaired net reads the signal afresh

    def trusted_accuracy(self, model) -> float:
        """The model's accuracy on the defender's trusted sample (a repair's before and after)."""
        return float((model.predict_many(self.clean_x_) == self.clean_y_).mean())

    def _repair_now(self, model, position: int) -> dict:
        figures = {"event": position, **self.repair(model, position)}
        self.repairs_.append(figures)
        return figures

    def _got_worse(self) -> bool:
        """Is the mean signal of the last events worse than that of the events before them?"""
        recent = float(np.mean(self._recent))
        if self._count <= len(self._recent):
            return False
        before = (self._total - recent * len(self._recent)) / (self._count - len(self._recent))
        return SIGNALS[self.signal] * (recent - before) > 0

    def _restart_monitor(self, fed=()) -> None:
        seed, self.restarts_ = self.seed_ + self.restarts_, self.restarts_ + 1
        self.monitor_ = DriftMonitor(self.monitor, seed, fed)
        self._recent: deque = deque(maxlen=RECENT)
        self._total, self._count = 0.0, 0

    def alarms(self) -> dict[str, list[int]]:
        return {"": self.alarm_events_} if self.when == "drift" else {}

    def report(self) -> dict:
        """Every repair; with ``when = "once"`` the first repair's ``trusted_*`` figures and ``at_event``;
        with ``when = "drift"`` the alarms."""
        figures: dict = {"repairs": [dict(r) for r in self.repairs_]}
        if self.when == "once" and self.repairs_:
            first = self.repairs_[0]
            figures.update({k: v for k, v in first.items() if k.startswith("trusted_")}, at_event=first["event"])
        if self.when == "drift":
            figures.update(alarms=len(self.alarm_events_), alarm_events=self.alarm_events_[:100])
        return figures

    def get_state(self) -> dict:
        state = {
            "repairs": [dict(r) for r in self.repairs_],
            "alarm_events": list(self.alarm_events_),
            "rng": self.rng_.bit_generator.state,
        }
        if self.when == "drift":
            state["drift"] = {
                "fed": self.monitor_.fed(),
                "recent": list(self._recent),
                "total": self._total,
                "count": self._count,
                "due": self.due_,
                "restarts": self.restarts_,
            }
        return state

    def set_state(self, state: dict, model) -> None:
        self.repairs_, self.alarm_events_ = [dict(r) for r in state["repairs"]], list(state["alarm_events"])
        self.rng_.bit_generator.state = state["rng"]
        if self.when == "drift":
            saved = state["drift"]
            self.restarts_ = saved["restarts"] - 1
            self._restart_monitor(saved["fed"])
            self._recent.extend(saved["recent"])
            self._total, self._count, self.due_ = saved["total"], saved["count"], saved["due"]
