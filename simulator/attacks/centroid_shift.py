"""Greedy centroid-shift against an online centroid detector (Kloft & Laskov 2012).

The attacker wants an attack point ``A`` accepted. Each of its points lies on
the current boundary toward ``A``: ``x_i = c_i + r (A - c_i) / ||A - c_i||``,
so it is always accepted and drags the centroid as far as one point can.
This is a perfect-knowledge (white-box) attacker: it sees ``c_i`` at its
turn, so its points are filled in when delivered (:attr:`adaptive`).

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

from simulator.attacks.base import Attack, AttackerKnowledge, check_batch
from simulator.models.base import AttackerHook
from simulator.registry import ATTACKS, Key

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


@njit(cache=True)
def greedy_rule(center: np.ndarray, radius: float, target: np.ndarray, out: np.ndarray) -> None:
    """The attacker's turn: the boundary point toward ``target``, aimed just inside the radius."""
    boundary_point(center, target, radius * (1.0 - ATTACKER_MARGIN), out)


@ATTACKS.register("centroid-shift", requires=("centroid-state",),
                  examples=[{"target_distance": 2.0}])  # fmt: skip
class CentroidShift(Attack):
    """Move a detector's centroid toward ``A`` with points on its boundary.

    ``A`` is ``target_point`` when given, else a point ``target_distance``
    radii from the initial centroid in a random direction.
    """

    adaptive = True

    def __init__(
        self,
        target_point: Annotated[tuple[float, ...] | None, Key("attack point A (default: drawn)")] = None,
        target_distance: Annotated[float, Key("A this many radii from c0 when not given", gt=0, le=1e6)] = 3.0,
    ):
        self.target_point = target_point
        self.target_distance = target_distance

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> CentroidShift:
        if knowledge.center is None or not knowledge.radius:
            raise ValueError("centroid-shift: needs a detector's centroid and radius to aim at")
        d = knowledge.center.shape[0]
        if self.target_point is not None:
            if len(self.target_point) != d:
                raise ValueError(f"target_point: expected {d} numbers, got {len(self.target_point)}")
            target = np.asarray(self.target_point, dtype=np.float64)
        else:
            direction = rng.standard_normal(d)
            direction /= np.linalg.norm(direction)
            target = knowledge.center + self.target_distance * knowledge.radius * direction
        self.target_x_ = target[None, :]
        self.report_ = {"target_distance_radii": float(np.linalg.norm(target - knowledge.center) / knowledge.radius)}
        return self

    def hook(self, rows: np.ndarray) -> AttackerHook:
        """The attacker's turns at ``rows`` (its own events): the greedy rule, aimed at ``A``."""
        return AttackerHook(rows, greedy_rule, self.target_x_[0].astype(np.float64))

    def poison(self, x, y, rng):
        """Placeholders (``A``) for points the attacker places at delivery."""
        check_batch(x, y)
        return np.repeat(self.target_x_.astype(np.float32), len(x), axis=0), np.zeros(len(x), dtype=np.int64)
