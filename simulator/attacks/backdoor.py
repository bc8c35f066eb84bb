"""Backdoors by data poisoning: BadNets (patch) and Blended triggers.

The attacker stamps its trigger on clean samples it drew and relabels them
to ``target_class``. Success is measured on held-out inputs of the other
classes with the trigger stamped: the share predicted as the target.

>>> from typing import Annotated

import numpy as np
>>> attack = BadNets(target_class=0, size=1, position="top-left")
>>> k = AttackerKnowledge(draw=None, n_classes=2, scale=1.0, pool_x=np.zeros((4, 4)),
...                       pool_y=np.array([0, 1, 1, 0]), image_side=2)
>>> x, y = attack.fit(k, np.random.default_rng(0)).poison(np.zeros((1, 4)), np.ones(1), None)
>>> x.tolist(), y.tolist(), attack.target_x_.shape
([[1.0, 0.0, 0.0, 0.0]], [0], (2, 4))
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from simulator.attacks.base import Attack, AttackerKnowledge, check_batch, non_target  # noqa: F401
from simulator.attacks.base import PatchPosition, PatchSize, PatchValue, TargetClass
from simulator.registry import ATTACKS, Key
from simulator.attacks.triggers import BlendTrigger, PatchTrigger, make_pattern


class TriggerAttack(Attack):
    """Base: stamp, relabel; ``trigger_`` is built in :meth:`fit`."""

    target_class: int

    def build_trigger(self, knowledge: AttackerKnowledge, rng: np.random.Generator):
        raise NotImplementedError

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> TriggerAttack:
        others = non_target(knowledge, self.target_class)
        self.trigger_ = self.build_trigger(knowledge, rng)
        self.target_x_ = self.trigger_(others)
        self.target_class_ = self.target_class
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        return self.trigger_(x), np.full(len(x), self.target_class, dtype=np.int64)


@ATTACKS.register("badnets", examples=[{"target_class": 2, "size": 1}, {"position": "top-left", "value": 0.5}])
class BadNets(TriggerAttack):
    """Gu et al. 2017: a small patch of fixed pixels."""

    def __init__(self, target_class: TargetClass = 0, size: PatchSize = 2, position: PatchPosition = "bottom-right",
                 value: PatchValue = 1.0):  # fmt: skip
        self.target_class = target_class
        self.size = size
        self.position = position
        self.value = value

    def build_trigger(self, knowledge, rng) -> PatchTrigger:
        trigger = PatchTrigger(knowledge.image_side, self.size, self.position, self.value)
        trigger.indices(knowledge.pool_x.shape[1])  # refuses a patch that does not fit
        return trigger


@ATTACKS.register("blended", examples=[{"pattern": "noise", "alpha": 0.3}, {"pattern": "image"}])
class Blended(TriggerAttack):
    """Chen et al. 2017: a pattern blended in with weight alpha."""

    def __init__(
        self,
        target_class: TargetClass = 0,
        pattern: Annotated[str, Key("blend pattern", choices=("checkerboard", "noise", "image"), table="trigger")]
        = "checkerboard",
        alpha: Annotated[float, Key("x' = (1 - alpha) x + alpha pattern", gt=0, le=1, table="trigger")] = 0.2,
    ):  # fmt: skip
        self.target_class = target_class
        self.pattern = pattern
        self.alpha = alpha

    def build_trigger(self, knowledge, rng) -> BlendTrigger:
        n_features = knowledge.pool_x.shape[1]
        return BlendTrigger(make_pattern(self.pattern, n_features, knowledge.image_side, rng, knowledge.pool_x), self.alpha)
