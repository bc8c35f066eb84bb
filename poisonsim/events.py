"""Events travel in batches: a struct of arrays, with ground truth beside it.

An event has an ``id``, a logical timestamp ``ts``, a float32 feature vector
``x``, an integer label ``y`` and the integer id of the ``source`` (producer)
that emitted it. Whether an event is poison is *not* part of the batch: it
travels in a separate :class:`Truth` that only the evaluator reads, so no
model or defense can cheat by looking at it.

>>> import numpy as np
>>> batch = EventBatch.from_arrays(np.zeros((3, 2)), [0, 1, 0], first_id=10)
>>> batch.ids.tolist(), batch.x.dtype.name, len(batch)
([10, 11, 12], 'float32', 3)
>>> batch.x.shape
(3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BENIGN_SOURCE = 0  # the source id of a batch built without one


@dataclass(frozen=True)
class EventBatch:
    """Consecutive events of one stream; everything a learner may read."""

    ids: np.ndarray  # int64, shape (m,)
    ts: np.ndarray  # int64 logical time (event index in the merged stream)
    x: np.ndarray  # float32, shape (m, d)
    y: np.ndarray  # int64, shape (m,)
    source: np.ndarray  # int16 producer id, shape (m,)
    pin: np.ndarray | None = None  # split-view: uint64 content hash seen at vetting (None: not vetted)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def select(self, rows: slice | np.ndarray) -> EventBatch:
        """The events at ``rows`` (views for a slice)."""
        pin = None if self.pin is None else self.pin[rows]
        return EventBatch(self.ids[rows], self.ts[rows], self.x[rows], self.y[rows], self.source[rows], pin)

    @classmethod
    def concatenate(cls, batches: list[EventBatch]) -> EventBatch:
        """The events of ``batches``, in order (the first batch itself when there is one)."""
        if len(batches) == 1:
            return batches[0]
        pin = None if batches[0].pin is None else np.concatenate([b.pin for b in batches])
        return cls(
            *(np.concatenate([getattr(b, f) for b in batches]) for f in ("ids", "ts", "x", "y", "source")), pin=pin
        )

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray | list[int],
        *,
        first_id: int = 0,
        source: np.ndarray | int = BENIGN_SOURCE,
        pin: np.ndarray | None = None,
    ) -> EventBatch:
        """Build a batch with consecutive ids starting at ``first_id``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        m = x.shape[0]
        ids = np.arange(first_id, first_id + m, dtype=np.int64)
        src = np.broadcast_to(np.asarray(source, dtype=np.int16), (m,)).copy()
        pin = None if pin is None else np.asarray(pin, dtype=np.uint64)
        return cls(ids=ids, ts=ids.copy(), x=x, y=np.asarray(y, dtype=np.int64), source=src, pin=pin)


@dataclass(frozen=True)
class Truth:
    """Ground truth for a batch, row for row: for the evaluator only.

    ``is_poison`` marks events the attacker emitted. ``is_adaptive`` marks the
    attacker events whose features a white-box attacker chooses only when the
    event is delivered, after seeing the model's state at that moment (the
    perfect-knowledge attacker of Kloft & Laskov); the batch carries a
    placeholder for them until then. It is the attacker's own record of its
    events, read by the attacker's delivery hook, never by a model or defense.
    """

    is_poison: np.ndarray  # bool, shape (m,)
    is_adaptive: np.ndarray  # bool, shape (m,)

    def select(self, rows: slice | np.ndarray) -> Truth:
        return Truth(self.is_poison[rows], self.is_adaptive[rows])

    @classmethod
    def concatenate(cls, truths: list[Truth]) -> Truth:
        """The rows of ``truths``, in order."""
        if len(truths) == 1:
            return truths[0]
        return cls(np.concatenate([t.is_poison for t in truths]), np.concatenate([t.is_adaptive for t in truths]))

    @classmethod
    def clean(cls, m: int) -> Truth:
        return cls(np.zeros(m, dtype=bool), np.zeros(m, dtype=bool))
