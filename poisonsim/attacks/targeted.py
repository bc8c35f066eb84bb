"""Targeted dirty-label poisoning: points near X' labelled c.

The attacker wants its targets X' (inputs of other classes) classified as
class ``c``. It emits copies of X' with light noise (``spread`` times the
data's feature scale) carrying label ``c``.

>>> from typing import Annotated

import numpy as np
>>> attack = Targeted(target_class=1, target_point=(0.0, 0.0), spread=0.0)
>>> k = AttackerKnowledge(draw=None, n_classes=2, scale=1.0, pool_x=np.zeros((1, 2)), pool_y=np.zeros(1))
>>> x, y = attack.fit(k, np.random.default_rng(0)).poison(np.ones((2, 2)), np.zeros(2), np.random.default_rng(0))
>>> x.tolist(), y.tolist()
([[0.0, 0.0], [0.0, 0.0]], [1, 1])
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.attacks.base import Attack, AttackerKnowledge, TargetClass, TargetCount, TargetPoint, check_batch
from poisonsim.registry import ATTACKS, Key


@ATTACKS.register("targeted", examples=[{"target_class": 1, "target_count": 3, "spread": 0.1}])
class Targeted(Attack):
    """Targeted dirty-label poison: noisy copies of targets X' labelled c."""

    def __init__(
        self,
        target_class: TargetClass = 0,
        target_point: TargetPoint = None,
        target_count: TargetCount = 10,
        spread: Annotated[float, Key("noise around X', as a share of the data's scale", ge=0, le=100)] = 0.05,
    ):
        self.target_class = target_class
        self.target_point = target_point
        self.target_count = target_count
        self.spread = spread

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> Targeted:
        if not 0 <= self.target_class < knowledge.n_classes:
            raise ValueError(f"target_class: expected a class in [0, {knowledge.n_classes}), got {self.target_class}")
        d = knowledge.pool_x.shape[1]
        if self.target_point is not None:
            if len(self.target_point) != d:
                raise ValueError(f"target_point: expected {d} numbers, got {len(self.target_point)}")
            targets = np.asarray(self.target_point, dtype=np.float64)[None, :]
        else:
            others = np.flatnonzero(knowledge.pool_y != self.target_class)
            if others.size == 0:
                raise ValueError("targeted: no held-out event of another class to target")
            pick = rng.choice(others, size=min(self.target_count, others.size), replace=False)
            targets = knowledge.pool_x[pick].astype(np.float64)
        self.target_x_ = targets
        self.target_class_ = self.target_class
        self.noise_ = self.spread * knowledge.scale
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        which = rng.integers(0, self.target_x_.shape[0], size=len(x))
        points = self.target_x_[which] + self.noise_ * rng.standard_normal((len(x), self.target_x_.shape[1]))
        return points.astype(np.float32), np.full(len(x), self.target_class, dtype=np.int64)
