"""Greedy centroid-shift against an online centroid detector (Kloft & Laskov 2012).

The attacker wants an attack point ``A`` accepted. Each of its points lies on
the current boundary toward ``A``: ``x_i = c_i + r (A - c_i) / ||A - c_i||``,
so it is always accepted and drags the centroid as far as one point can.
This is a perfect-knowledge (white-box) attacker: it sees ``c_i`` at its
turn, so its points are filled in when delivered (it offers ``white-box``).

With ``adaptive = true`` it also listens to what the system answers: after
each unit of events in which some of its points were refused (an outlier
rejection inside the boundary, a quota), or in which the detector flagged
more than ``alarm_budget`` of the attacker's own clean draws sent to it as
queries (a defense that resets on false alarms is near), it shortens its
step to ``STEP_BACK`` of what it was; after a unit with neither it lengthens
it by ``STEP_UP`` of the radius, up to the boundary. Against a defense that
refuses what lies beyond a fixed share of the radius it settles just inside
it.

>>> import numpy as np
>>> out = np.empty(2)
>>> boundary_point(np.zeros(2), np.array([3.0, 4.0]), 1.0, out)
>>> out.tolist()
[0.6000000000000001, 0.8]
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from numba import njit

from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch
from poisonsim.models.base import AttackerHook
from poisonsim.registry import ATTACKS, Key

# the attacker aims this share inside the radius, so float32 rounding of its
# point never pushes it out of the sphere
ATTACKER_MARGIN = 1e-5


@njit(cache=True)
def boundary_point(center: np.ndarray, target: np.ndarray, radius: float, out: np.ndarray) -> None:
    """Write ``c + radius (A - c) / ||A - c||`` into ``out`` (``A`` itself when closer)."""
    norm = 0.0
    for j in range(center.shape[0]):
        norm += (target[j] - center[j]) ** 2
    norm = np.sqrt(norm)
    step = 1.0 if norm <= radius else radius / norm
    for j in range(center.shape[0]):
        out[j] = center[j] + step * (target[j] - center[j])


STEP_BACK = 0.8  # adaptive: the step after a unit with a refusal, as a share of the step before
STEP_UP = 0.01  # adaptive: added to the step (radii) after a unit with every point learned
QUERIES = 256  # adaptive with an alarm budget: its own clean draws it asks the detector about


@njit(cache=True)
def greedy_rule(center: np.ndarray, radius: float, params: np.ndarray, out: np.ndarray) -> None:
    """The attacker's turn: toward ``A = params[:-1]``, ``params[-1]`` radii from the centroid (1: the
    boundary), aimed just inside."""
    d = center.shape[0]
    boundary_point(center, params[:d], radius * params[d] * (1.0 - ATTACKER_MARGIN), out)


def attack_point(
    knowledge: AttackerKnowledge, target_point, target_distance: float, rng: np.random.Generator, kind: str
) -> np.ndarray:
    """``A``: ``target_point`` when given, else ``target_distance`` radii from c0 in a random direction."""
    if knowledge.center is None or not knowledge.radius:
        raise ValueError(f"{kind}: needs a detector's centroid and radius to aim at")
    d = knowledge.center.shape[0]
    if target_point is not None:
        if len(target_point) != d:
            raise ValueError(f"target_point: expected {d} numbers, got {len(target_point)}")
        return np.asarray(target_point, dtype=np.float64)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    return knowledge.center + target_distance * knowledge.radius * direction


@ATTACKS.register("centroid-shift", requires=("centroid-state",), examples=[{"target_distance": 2.0}])
class CentroidShift(Attack):
    """Move a detector's centroid toward ``A`` with points on its boundary.

    ``A`` is ``target_point`` when given, else a point ``target_distance``
    radii from the initial centroid in a random direction.
    """

    offers = frozenset({"white-box"})

    def __init__(
        self,
        target_point: Annotated[tuple[float, ...] | None, Key("attack point A (default: drawn)")] = None,
        target_distance: Annotated[float, Key("A this many radii from c0 when not given", gt=0, le=1e6)] = 3.0,
        adaptive: Annotated[
            bool, Key("shorten the step when points are refused, lengthen it when all are learned")
        ] = False,
        alarm_budget: Annotated[
            float,
            Key(
                "adaptive: also shorten it while more than this share of its own clean queries is flagged (1: never)",
                ge=0,
                le=1,
            ),
        ] = 1.0,
    ):
        self.target_point = target_point
        self.target_distance = target_distance
        self.adaptive = adaptive
        self.alarm_budget = alarm_budget
        self.step_ = 1.0  # radii from the centroid

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> CentroidShift:
        target = attack_point(knowledge, self.target_point, self.target_distance, rng, "centroid-shift")
        self.target_x_ = target[None, :]
        self.step_ = 1.0
        self.queries_ = knowledge.draw(rng, QUERIES)[0] if self.adaptive and self.alarm_budget < 1 else None
        self.report_ = {"target_distance_radii": float(np.linalg.norm(target - knowledge.center) / knowledge.radius)}
        return self

    def hook(self, rows: np.ndarray) -> AttackerHook:
        """The attacker's turns at ``rows`` (its own events): the greedy rule, aimed at ``A``."""
        return AttackerHook(rows, greedy_rule, np.append(self.target_x_[0].astype(np.float64), self.step_))

    def feedback(self, accepted: np.ndarray, query) -> None:
        """Adaptive: a refusal, or its clean queries flagged over the budget, shortens the step; else it grows."""
        if not self.adaptive or not len(accepted):
            return
        noticed = self.queries_ is not None and float(np.mean(query(self.queries_))) > self.alarm_budget
        self.step_ = self.step_ * STEP_BACK if noticed or not accepted.all() else min(1.0, self.step_ + STEP_UP)

    def get_state(self) -> dict:
        return {"step": self.step_} if self.adaptive else {}

    def set_state(self, state: dict) -> None:
        self.step_ = float(state.get("step", 1.0))

    def poison(self, x, y, rng):
        """Placeholders (``A``) for points the attacker places at delivery."""
        check_batch(x, y)
        return np.repeat(self.target_x_.astype(np.float32), len(x), axis=0), np.zeros(len(x), dtype=np.int64)
