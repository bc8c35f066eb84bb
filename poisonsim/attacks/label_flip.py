"""Indiscriminate label flipping: correct inputs, wrong labels.

The attacker draws clean samples and relabels them by one of three rules:
``cyclic`` (``y -> (y + 1) mod k``), ``random`` (any other label) or
``farthest`` (the class whose mean, estimated from the attacker's own draws,
lies farthest from ``x``: the flip that drags a centroid furthest).

>>> import numpy as np
>>> flip = LabelFlip(flip="cyclic")
>>> flip.n_classes_ = 3
>>> flip.poison(np.zeros((3, 1)), np.array([0, 1, 2]), np.random.default_rng(0))[1].tolist()
[1, 2, 0]
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch, require_classes
from poisonsim.registry import ATTACKS, Key

RULES = ("cyclic", "random", "farthest")
ESTIMATE_DRAWS = 2_000


@ATTACKS.register("label-flip", examples=[{"flip": rule} for rule in RULES])
class LabelFlip(Attack):
    """Indiscriminate label flipping: the attacker's own draws with a wrong label."""

    def __init__(self, flip: Annotated[str, Key("new label rule", choices=RULES)] = "farthest"):
        self.flip = flip

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> LabelFlip:
        require_classes("label-flip", knowledge.n_classes)
        self.n_classes_ = knowledge.n_classes
        x, y = knowledge.draw(rng, ESTIMATE_DRAWS)
        means = np.zeros((self.n_classes_, x.shape[1]))
        for c in range(self.n_classes_):
            if (y == c).any():
                means[c] = x[y == c].mean(axis=0)
        self.class_means_ = means
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        k = self.n_classes_
        y = np.asarray(y, dtype=np.int64)
        if self.flip == "cyclic":
            flipped = (y + 1) % k
        elif self.flip == "random":
            flipped = (y + rng.integers(1, k, size=len(y))) % k
        else:
            d2 = ((x[:, None, :] - self.class_means_[None, :, :]) ** 2).sum(axis=2)
            flipped = d2.argmax(axis=1)
        return np.array(x, dtype=np.float32), flipped.astype(np.int64)
