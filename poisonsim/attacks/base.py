"""The attacker's side: what it knows, and the shape every attack takes.

An attack is batch in, batch out: :meth:`Attack.poison` turns clean samples
the attacker drew itself into poison, and copies its input. What the threat
model grants the attacker (its own draws from the data distribution, the
detector's initial centroid and radius for a perfect-knowledge attacker, the
held-out pool it picks targets from) comes in an :class:`AttackerKnowledge`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable

import numpy as np

from poisonsim.base import Estimator
from poisonsim.registry import ATTACKS, Key

# keys several attack kinds share
TargetClass = Annotated[int, Key("class c the poison is labelled with / the backdoor sends inputs to", ge=0)]
TargetPoint = Annotated[tuple[float, ...] | None, Key("X' (default: drawn from held-out events of other classes)")]
TargetCount = Annotated[int, Key("targets X' drawn from held-out events of other classes", ge=1, le=100_000)]
SupplierEvents = Annotated[int, Key("attacker's own clean training events (supplier / surrogate)", ge=1, le=10**7)]


@dataclass(frozen=True)
class AttackerKnowledge:
    """What the attacker knows before it starts."""

    draw: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    n_classes: int
    scale: float
    pool_x: np.ndarray  # events the attacker may pick targets X' from
    pool_y: np.ndarray
    center: np.ndarray | None = None  # detector: initial centroid c0
    radius: float | None = None  # detector: radius r
    image_side: int | None = None  # square images: their side, else None
    model: object | None = None  # a copy of the victim as it starts (gray-box), or its untrained template
    rate: float | None = None  # the attacker's own share of the stream (its channel's rate), when it has one


def require_classes(kind: str, n_classes: int) -> None:
    """A clear error when the source has fewer than the two classes attack ``kind`` relabels between.

    >>> require_classes("label-flip", 1)
    Traceback (most recent call last):
    ...
    ValueError: stream: label-flip needs a source of at least 2 classes, this one has 1
    """
    if n_classes < 2:
        raise ValueError(f"stream: {kind} needs a source of at least 2 classes, this one has {n_classes}")


def non_target(knowledge: AttackerKnowledge, target_class: int) -> np.ndarray:
    """Pool inputs of classes other than ``target_class`` (what a trigger should flip)."""
    if not 0 <= target_class < knowledge.n_classes:
        raise ValueError(f"target_class: expected a class in [0, {knowledge.n_classes}), got {target_class}")
    return knowledge.pool_x[knowledge.pool_y != target_class]


class Attack(Estimator):
    """Base: no targets, no adaptivity; subclasses override :meth:`poison`.

    A white-box attack also gives the model a hook for its turns
    (:meth:`hook`): its rule reads the model's public state when each of its
    events is delivered. Any attack hears, after each unit of events, what
    the system answered to its own events (:meth:`feedback`: learned or not)
    and may query the model on inputs of its own choosing, which is all an
    outside attacker sees of a defense; what it keeps from that is its state
    (:meth:`get_state`), checkpointed with the learner.
    """

    kind: str = ""

    # offers "white-box" (it fills in x when delivered), "supplies-model" (the victim starts from its model)
    # or "no-poison" (the clean baseline): poisonsim.capabilities

    target_x_: np.ndarray | None = None  # X' (targeted) or A (centroid-shift), one per row
    target_class_: int | None = None
    target_y_: np.ndarray | None = None  # all-to-all: each success input's own target class (else target_class_)
    source_y_: np.ndarray | None = None  # ... and its true class (success is also scored per source class)
    report_: dict | None = None  # what the attack reports of itself (plain values), for the summary
    trigger_ = None  # a backdoor's fitted trigger (a Trigger), scored against what defenses reconstruct
    supplied_ = None  # "supplies-model": the model it hands the victim

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> Attack:
        """Choose targets from what the attacker knows; returns ``self``."""
        return self

    def poison(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Turn the attacker's clean draws ``(x, y)`` into poison (copies)."""
        raise NotImplementedError

    def hook(self, rows: np.ndarray):
        """A white-box attack's turns at ``rows`` of a delivered batch (an :class:`AttackerHook`)."""
        raise NotImplementedError(f"{type(self).__name__} is not white-box")

    def feedback(self, accepted: np.ndarray, query: Callable[[np.ndarray], np.ndarray]) -> None:
        """What the system answered to the attacker's own events of the last unit, in order (True: learned;
        False: refused or dropped), and ``query``: the model's predictions on inputs the attacker sends it (a
        detector: True for an alarm). Ignored unless the attack adapts to them."""

    def get_state(self) -> dict:
        """What the attacker learned from :meth:`feedback` (plain values), for a checkpoint."""
        return {}

    def set_state(self, state: dict) -> None:
        """Resume from :meth:`get_state`."""


@ATTACKS.register("none", examples=[{}])
class NoAttack(Attack):
    """The clean baseline: the attacker never gets a turn."""

    offers = frozenset({"no-poison"})

    def poison(self, x, y, rng):
        """Copies, unchanged (a clean baseline has no poison)."""
        check_batch(x, y)
        return np.array(x, dtype=np.float32), np.array(y, dtype=np.int64)


def check_batch(x: np.ndarray, y: np.ndarray) -> None:
    """Refuse a batch that is not ``(m, d)`` finite numbers with ``m`` labels."""
    if np.ndim(x) != 2:
        raise ValueError(f"x: expected a 2-d array (events x features), got shape {np.shape(x)}")
    if np.shape(y) != (np.shape(x)[0],):
        raise ValueError(f"y: expected {np.shape(x)[0]} labels, got shape {np.shape(y)}")
    if not np.isfinite(x).all():
        raise ValueError("x: contains NaN or infinity")
