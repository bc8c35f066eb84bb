"""Backdoors by data poisoning: BadNets (patch) and Blended triggers.

The attacker stamps its trigger on clean samples it drew and relabels them
to ``target_class``. Success is measured on held-out inputs of the other
classes with the trigger stamped: the share predicted as the target. The
trigger is a kind of its own (:mod:`poisonsim.attacks.triggers`): BadNets
and Blended differ in the one they stamp by default.

>>> import numpy as np
>>> from poisonsim.attacks.triggers import PatchTrigger
>>> attack = BadNets(target_class=0, trigger=PatchTrigger(size=1, position="top-left"))
>>> k = AttackerKnowledge(draw=None, n_classes=2, scale=1.0, pool_x=np.zeros((4, 4)),
...                       pool_y=np.array([0, 1, 1, 0]), image_side=2)
>>> x, y = attack.fit(k, np.random.default_rng(0)).poison(np.zeros((1, 4)), np.ones(1), None)
>>> x.tolist(), y.tolist(), attack.target_x_.shape
([[1.0, 0.0, 0.0, 0.0]], [0], (2, 4))
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np

from poisonsim.attacks.base import Attack, AttackerKnowledge, TargetClass, check_batch, non_target
from poisonsim.attacks.triggers import Trigger, fresh_trigger
from poisonsim.registry import ATTACKS, TRIGGERS, Key

TriggerKind = Annotated[Any, Key("the trigger stamped on poison (poisonsim kinds trigger)", kinds=TRIGGERS)]


class TriggerAttack(Attack):
    """Base: stamp, relabel; the fitted trigger is ``trigger_``."""

    target_class: int
    trigger: Trigger | str | dict

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> TriggerAttack:
        others = non_target(knowledge, self.target_class)
        self.trigger_ = fresh_trigger(self.trigger, owner=self).fit(knowledge.pool_x, knowledge.image_side, rng)
        self.target_x_ = self.trigger_(others)
        self.target_class_ = self.target_class
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        return self.trigger_(x), np.full(len(x), self.target_class, dtype=np.int64)


@ATTACKS.register(
    "badnets", examples=[{"target_class": 2, "trigger": {"size": 1}}, {"trigger": {"kind": "blend", "alpha": 0.5}}]
)
class BadNets(TriggerAttack):
    """Gu et al. 2017: a small patch of fixed pixels."""

    def __init__(self, target_class: TargetClass = 0, trigger: TriggerKind = "patch"):
        self.target_class = target_class
        self.trigger = trigger


@ATTACKS.register("blended", examples=[{"trigger": {"pattern": "noise", "alpha": 0.3}}, {"trigger": "patch"}])
class Blended(TriggerAttack):
    """Chen et al. 2017: a pattern blended in with weight alpha."""

    def __init__(self, target_class: TargetClass = 0, trigger: TriggerKind = "blend"):
        self.target_class = target_class
        self.trigger = trigger
