"""Provoking bursts (after Korycki & Krawczyk 2023, adversarial concept drift): false alarms on demand.

A drift-guarded learner answers an alarm by resetting its windows
(``drift-reset``), freezing, or pruning (``fine-pruning when = "drift"``).
An attacker who can send a short burst of outlying events now and then makes
the drift detector fire on each burst, so the defender keeps throwing away
what it learned (denial of learning) for a small poisoning budget. The
outliers need no knowledge of the model's state: points ``distance`` times
the typical distance from the mean of their class (the attacker estimates
both from its own clean draws), in random directions, with their own label.
Send them in bursts: ``schedule = "bursts"`` on the stream channel.

>>> import numpy as np
>>> from poisonsim.sources import Blobs
>>> src = Blobs(n_classes=1, n_features=2).load(np.random.default_rng(0))
>>> from poisonsim.pipeline.stream import attacker_knowledge
>>> attack = Provoke(distance=4.0).fit(attacker_knowledge(src), np.random.default_rng(1))
>>> x, y = attack.poison(*src.sample(np.random.default_rng(2), 3), np.random.default_rng(3))
>>> bool(np.allclose(np.linalg.norm(x - attack.class_means_[y], axis=1), 4.0 * attack.spread_[y], rtol=1e-5))
True
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch
from poisonsim.registry import ATTACKS, Key

ESTIMATE_DRAWS = 2_000


@ATTACKS.register("provoke", examples=[{"distance": 3.0}])
class Provoke(Attack):
    """Outliers that make a drift detector fire: points far from their class mean, with their own label."""

    def __init__(
        self,
        distance: Annotated[
            float, Key("how far from the class mean, in the class's median distances", gt=0, le=1e6)
        ] = 4.0,
    ):
        self.distance = distance

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> Provoke:
        x, y = knowledge.draw(rng, ESTIMATE_DRAWS)
        x = np.asarray(x, dtype=np.float64)
        self.class_means_ = np.zeros((knowledge.n_classes, x.shape[1]))
        self.spread_ = np.ones(knowledge.n_classes)
        for c in range(knowledge.n_classes):
            if (y == c).any():
                self.class_means_[c] = x[y == c].mean(axis=0)
                spread = float(np.median(np.linalg.norm(x[y == c] - self.class_means_[c], axis=1)))
                self.spread_[c] = spread if spread > 0 else 1.0
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        y = np.asarray(y, dtype=np.int64)
        direction = rng.standard_normal(np.shape(x))
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        points = self.class_means_[y] + self.distance * self.spread_[y][:, None] * direction
        return points.astype(np.float32), y
