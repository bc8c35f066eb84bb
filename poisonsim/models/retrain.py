"""Periodic retraining from scratch: a data lake, and the schedule and training of each retrain.

The production pattern of a neural victim: it learns online between
retrains, and every ``retrain_every`` events a new net is trained from
scratch on what the model has collected (the *data lake*: every event it
learned, pre-training included, or the last ``lake_size``). This is the
threat model of Witches' Brew (Geiping et al. 2021): the victim is trained
from scratch on a data set that holds the poisons.

When retraining happens: at the end of pre-training (``pretrain_events``
learned; the stream starts with a net trained from scratch on the
pre-training data) and then after every ``retrain_every`` events, i.e.
whenever the events learned reach ``pretrain_events + k * retrain_every``
(k >= 0, never at 0 events). An event is predicted before it joins the
lake, so the event that completes an interval is predicted by the old net.

Each retrain is a pure function of ``(retrain seed, retrain count, lake)``:
fresh weights from a torch seed and a shuffling generator both drawn from
``SeedSequence([seed, count])``, a fresh optimiser of the model's own kind
and learning rate, ``retrain_epochs`` shuffled epochs of ``batch_size``
mini-batches (the last one may be smaller; :func:`~poisonsim.models.nets.train_offline`). The online learner's own state
(replay buffer and its generator) neither feeds nor is touched by a retrain;
its pending mini-batch is dropped (those events are in the lake). A retrain
starts over from our own architecture, so it discards whatever changed the
weights before it (a supplied module, a defense's pruning or unlearning), and
a defense's flooding applies to the online steps only.

>>> lake = DataLake(n_features=2, size=3)
>>> lake.add(np.arange(8, dtype=np.float32).reshape(4, 2), np.array([0, 1, 2, 3]))
>>> lake.rows()[1].tolist(), lake.seen
([1, 2, 3], 4)
>>> next_retrain(0, pretrain=100, every=50), next_retrain(100, pretrain=100, every=50)
(100, 150)
"""

from __future__ import annotations

import numpy as np

INITIAL_CAPACITY = 1024


def next_retrain(learned: int, pretrain: int, every: int) -> int:
    """The event count at which the next retrain falls, after ``learned`` events (0 < result)."""
    if learned < pretrain:
        return pretrain
    return pretrain + ((learned - pretrain) // every + 1) * every


class DataLake:
    """Every event added (``size = 0``) or the last ``size``, in arrival order."""

    def __init__(self, n_features: int, size: int = 0):
        self.n_features = n_features
        self.size = size
        capacity = size or INITIAL_CAPACITY
        self._x = np.empty((capacity, n_features), dtype=np.float32)
        self._y = np.empty(capacity, dtype=np.int64)
        self.seen = 0  # events ever added (a bounded lake keeps the last ``size`` of them)

    def __len__(self) -> int:
        return min(self.seen, self.size) if self.size else self.seen

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Append events (a bounded lake forgets its oldest)."""
        m = len(y)
        if not self.size:
            if self.seen + m > len(self._y):
                capacity = max(2 * len(self._y), self.seen + m)
                self._x = np.concatenate(
                    [self._x[: self.seen], np.empty((capacity - self.seen, self.n_features), dtype=np.float32)]
                )
                self._y = np.concatenate([self._y[: self.seen], np.empty(capacity - self.seen, dtype=np.int64)])
            self._x[self.seen : self.seen + m], self._y[self.seen : self.seen + m] = x, y
            self.seen += m
            return
        if m > self.size:  # only the last ``size`` can stay
            self.seen += m - self.size
            x, y, m = x[-self.size :], y[-self.size :], self.size
        slots = (self.seen + np.arange(m)) % self.size
        self._x[slots], self._y[slots] = x, y
        self.seen += m

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The kept events, oldest first (copies)."""
        if not self.size or self.seen <= self.size:
            return self._x[: self.seen].copy(), self._y[: self.seen].copy()
        order = (self.seen + np.arange(self.size)) % self.size
        return self._x[order], self._y[order]

    def get_state(self) -> dict:
        x, y = self.rows()
        return {"x": x, "y": y, "seen": self.seen}

    def set_state(self, state: dict) -> None:
        x = np.array(state["x"], dtype=np.float32).reshape(-1, self.n_features)
        y = np.array(state["y"], dtype=np.int64)
        self.__init__(self.n_features, self.size)
        self.add(x, y)
        self.seen = int(state["seen"])
        if self.size and self.seen > self.size:  # the ring starts where the restored count says
            order = (self.seen + np.arange(self.size)) % self.size
            self._x[order], self._y[order] = x, y


def retrain_rngs(seed: int, count: int) -> tuple[int, np.random.Generator]:
    """The torch seed of the fresh weights and the shuffling generator of retrain number ``count``."""
    weights, shuffle = np.random.SeedSequence([seed, count]).spawn(2)
    return int(weights.generate_state(1)[0]), np.random.default_rng(shuffle)
