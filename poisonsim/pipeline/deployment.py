"""Deployment: snapshots of the live model, published on a schedule, served in its place.

Every ``every`` events (K) the learner copies its model; serving uses the
latest deployed copy. Two defenses against an attacker who times its poison
to the schedule (front-running):

- ``jitter`` j: each interval is drawn uniformly from ``[K(1-j), K(1+j)]``
  with a defender-side generator the attacker does not know;
- ``quarantine`` q: a snapshot waits q events before deployment; it is
  vetoed when the defenses flagged more than ``veto_flags`` events between
  the previous snapshot and the end of its quarantine (the events it learned
  from and the evidence that came after).

Snapshot times are event counts, so they do not depend on how a transport
cut the stream: the learner splits its batches at :meth:`Deployment.until_next`.

>>> import numpy as np
>>> d = Deployment(model=[0], every=3, rng=np.random.default_rng(0))
>>> for events in range(1, 8):
...     d.advance([events], events)
>>> d.model, d.counts()
([6], {'snapshots_taken': 2, 'snapshots_deployed': 2, 'snapshots_vetoed': 0, 'snapshots_pending': 0})
>>> q = Deployment(model=[0], every=3, quarantine=2, veto_flags=0, rng=np.random.default_rng(0))
>>> q.advance([3], 3); q.observe_flags(1); q.advance([5], 5); q.model, q.counts()["snapshots_vetoed"]
([0], 1)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np


@dataclass
class _Pending:
    deploy_at: int  # event count at which the snapshot is deployed, unless vetoed
    model: object
    flags: int  # evidence so far: flags since the previous snapshot


class Deployment:
    """Holds the deployed model; call :meth:`advance` after every processed unit of events."""

    def __init__(
        self, model, every: int, rng: np.random.Generator, jitter: float = 0.0, quarantine: int = 0, veto_flags: int = 0
    ):
        self.every = every
        self.jitter = jitter
        self.quarantine = quarantine
        self.veto_flags = veto_flags
        self.rng = rng
        self.model = copy.deepcopy(model)  # what the stream finds deployed
        self.next_snapshot = self._interval()
        self.pending: list[_Pending] = []
        self.flags_since_snapshot = 0
        self.taken = self.deployed = self.vetoed = 0

    def _interval(self) -> int:
        if self.jitter == 0:
            return self.every
        low, high = self.every * (1 - self.jitter), self.every * (1 + self.jitter)
        return max(1, round(self.rng.uniform(low, high)))

    def until_next(self, events: int) -> int:
        """Events until the next snapshot or deployment (the learner cuts its units there)."""
        due = [self.next_snapshot, *(p.deploy_at for p in self.pending)]
        return max(1, min(due) - events)

    def observe_flags(self, n_flagged: int) -> None:
        """Defense flags raised on the events just processed: evidence against pending snapshots."""
        self.flags_since_snapshot += n_flagged
        for pending in self.pending:
            pending.flags += n_flagged

    def advance(self, model, events: int) -> None:
        """After ``events`` events: take a snapshot when due, deploy (or veto) those whose quarantine ended."""
        if events >= self.next_snapshot:
            self.taken += 1
            snapshot = _Pending(events + self.quarantine, copy.deepcopy(model), self.flags_since_snapshot)
            self.flags_since_snapshot = 0
            self.next_snapshot = events + self._interval()
            self.pending.append(snapshot)
        while self.pending and self.pending[0].deploy_at <= events:
            snapshot = self.pending.pop(0)
            if self.quarantine and snapshot.flags > self.veto_flags:
                self.vetoed += 1
            else:
                self.deployed += 1
                self.model = snapshot.model

    def get_state(self) -> dict:
        """Deployed and pending snapshots (their models' own state), schedule and counts, for a checkpoint."""
        return {
            "model": self.model.get_state(),
            "pending": [
                {"deploy_at": p.deploy_at, "model": p.model.get_state(), "flags": p.flags} for p in self.pending
            ],
            "next_snapshot": self.next_snapshot,
            "flags_since_snapshot": self.flags_since_snapshot,
            "counts": [self.taken, self.deployed, self.vetoed],
            "rng": self.rng.bit_generator.state,
        }

    def set_state(self, state: dict, template) -> None:
        """Restore :meth:`get_state`; ``template`` is a model of the same scenario to copy and fill."""

        def model(model_state):
            restored = copy.deepcopy(template)
            restored.set_state(model_state)
            return restored

        self.model = model(state["model"])
        self.pending = [_Pending(int(p["deploy_at"]), model(p["model"]), int(p["flags"])) for p in state["pending"]]
        self.next_snapshot, self.flags_since_snapshot = int(state["next_snapshot"]), int(state["flags_since_snapshot"])
        self.taken, self.deployed, self.vetoed = (int(v) for v in state["counts"])
        self.rng.bit_generator.state = state["rng"]

    def counts(self) -> dict[str, int]:
        return {
            "snapshots_taken": self.taken,
            "snapshots_deployed": self.deployed,
            "snapshots_vetoed": self.vetoed,
            "snapshots_pending": len(self.pending),
        }
