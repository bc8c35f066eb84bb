"""The all-to-all backdoor (Gu et al. 2017, BadNets section 3.2): a trigger that sends class y to y + offset.

The attacker stamps its trigger on clean samples it drew and relabels each
from ``y`` to ``(y + offset) mod k``: one trigger, a different target for
every source class. There is no single target class (``target_class_`` is
``None``); each success input carries its own target instead: ``target_x_``
is every held-out input with the trigger stamped, ``target_y_`` the class the
attacker wants for it, ``source_y_`` its true class. Only the evaluator reads
them (:mod:`poisonsim.evaluation.metrics`): attack success is the share of
``target_x_`` predicted as ``target_y_``, overall and per source class.

>>> import numpy as np
>>> from poisonsim.attacks.triggers import PatchTrigger
>>> attack = AllToAll(offset=1, trigger=PatchTrigger(size=1, position="top-left"))
>>> k = AttackerKnowledge(draw=None, n_classes=3, scale=1.0, pool_x=np.zeros((3, 4)),
...                       pool_y=np.array([0, 1, 2]), image_side=2)
>>> x, y = attack.fit(k, np.random.default_rng(0)).poison(np.zeros((3, 4)), np.array([0, 1, 2]), None)
>>> x[:, 0].tolist(), y.tolist(), attack.target_y_.tolist(), attack.target_class_
([1.0, 1.0, 1.0], [1, 2, 0], [1, 2, 0], None)
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.attacks.backdoor import TriggerKind
from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch, require_classes
from poisonsim.attacks.triggers import Trigger, fresh_trigger
from poisonsim.registry import ATTACKS, Key

Offset = Annotated[int, Key("triggered inputs of class y go to (y + offset) mod k; not a multiple of k", ge=1)]


@ATTACKS.register(
    "all-to-all", requires=("classes",), examples=[{}, {"offset": 2, "trigger": {"kind": "blend", "alpha": 0.3}}]
)
class AllToAll(Attack):
    """All-to-all backdoor (Gu et al. 2017): triggered class y relabelled (y + offset) mod k."""

    def __init__(self, offset: Offset = 1, trigger: TriggerKind = "patch"):
        self.offset = offset
        self.trigger = trigger

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> AllToAll:
        """Fit the trigger; the success inputs are the whole held-out pool, stamped, each with its own target."""
        self.n_classes_ = check_offset(self.offset, knowledge.n_classes)
        self.trigger_: Trigger = fresh_trigger(self.trigger, owner=self).fit(
            knowledge.pool_x, knowledge.image_side, rng
        )
        self.target_x_ = self.trigger_(knowledge.pool_x)
        self.source_y_ = np.asarray(knowledge.pool_y, dtype=np.int64)
        self.target_y_ = shifted(self.source_y_, self.offset, self.n_classes_)
        self.target_class_ = None  # no single target: the evaluator reads target_y_
        return self

    def poison(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The draws stamped, each relabelled ``(y + offset) mod k`` (copies)."""
        check_batch(x, y)
        return self.trigger_(x), shifted(y, self.offset, self.n_classes_)


def shifted(y: np.ndarray, offset: int, n_classes: int) -> np.ndarray:
    """Labels ``(y + offset) mod n_classes``, int64.

    >>> shifted(np.array([0, 1, 9]), 1, 10).tolist()
    [1, 2, 0]
    """
    return (np.asarray(y, dtype=np.int64) + offset) % n_classes


def check_offset(offset: int, n_classes: int) -> int:
    """``n_classes``, once ``offset`` moves every class (a ValueError naming the key if it does not).

    >>> check_offset(10, 10)
    Traceback (most recent call last):
    ...
    ValueError: offset: 10 is a multiple of the 10 classes, so the trigger sends every class to itself; choose 1..9
    """
    require_classes("all-to-all", n_classes)
    if offset % n_classes == 0:
        raise ValueError(
            f"offset: {offset} is a multiple of the {n_classes} classes, so the trigger sends every "
            f"class to itself; choose 1..{n_classes - 1}"
        )
    return n_classes
