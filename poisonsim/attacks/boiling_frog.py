"""Boiling frog (after Rubinstein et al., IMC 2009): move a centroid detector slowly enough that no drift
detector watching it fires.

The greedy centroid-shift attacker (:mod:`poisonsim.attacks.centroid_shift`)
puts every point on the boundary: the distance of events to the centroid, the
signal a drift detector watches, jumps from its clean mean (about half a
radius) toward 1 and ADWIN or PageHinkley fire within a few hundred events.
The frog keeps that signal's mean where it was (not its whole distribution:
KSWIN, which compares distributions, still sees it). At each of its turns
it reads the centroid ``c`` (white-box, as the greedy attacker does),
estimates from its own clean draws the mean distance ``m(c)`` benign events
now have to ``c``, and puts its point toward ``A`` at the distance that keeps
the stream's mean distance at its clean value ``m0``::

    s = (m0 - (1 - rho) m(c)) / rho        (rho: the attacker's share of the stream)

times one of the clean distances over their mean (picked by the centroid's
coordinates, so its points spread like benign ones, not on one sphere), capped at ``step`` radii. As the centroid
moves away, benign events drift outward and the frog steps shorter; it
stalls where ``s`` reaches 0 (``m(c) = m0 / (1 - rho)``). It trades speed
for silence: its displacement before the first alarm is the figure to set
against the greedy attacker's.

>>> import numpy as np
>>> draws = np.array([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.5], [0.0, -0.5]])  # half a radius from c0 = 0: m0 = 0.5
>>> params = frog_params(np.array([3.0, 0.0]), np.zeros(2), 1.0, rho=0.5, draws=draws, step=1.0)
>>> out = np.empty(2)
>>> frog_rule(np.zeros(2), 1.0, params, out)  # at c0: s = (0.5 - 0.5 * 0.5) / 0.5 = 0.5, toward A
>>> out.round(6).tolist()
[0.5, 0.0]
>>> frog_rule(np.array([0.25, 0.0]), 1.0, params, out)  # benign events now farther: a shorter step
>>> float(np.linalg.norm(out - [0.25, 0.0]).round(3))
0.47
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np
from numba import njit

from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch
from poisonsim.attacks.centroid_shift import ATTACKER_MARGIN, attack_point
from poisonsim.defenses.base import DEFENSE_UNIT
from poisonsim.models.base import AttackerHook
from poisonsim.registry import ATTACKS, Key

DRAWS = 2_048  # the attacker's own clean draws it estimates benign distances from
CALIBRATION = 8_192  # clean draws it runs a copy of the model on, to learn the clean level of the signal

# params layout: [A (d), rho, step, m0, draws (n x d), draw distances (n)]
_RHO, _STEP, _M0, _HEAD = 0, 1, 2, 3


def frog_params(
    target: np.ndarray,
    center: np.ndarray,
    radius: float,
    rho: float,
    draws: np.ndarray,
    step: float,
    m0: float | None = None,
) -> np.ndarray:
    """The rule's parameters: the attack point, the share, the step cap, the clean mean distance ``m0``
    (in radii; default: the draws' mean distance to ``center``) and the draws with their distances to
    ``center``, flat in one array."""
    distances = np.linalg.norm(draws - center, axis=1) / radius
    m0 = float(distances.mean()) if m0 is None else m0
    head = np.array([rho, step * (1.0 - ATTACKER_MARGIN), m0])
    return np.concatenate([target, head, draws.ravel(), distances]).astype(np.float64)


@njit(cache=True)
def frog_rule(center: np.ndarray, radius: float, params: np.ndarray, out: np.ndarray) -> None:
    """The frog's turn: toward ``A`` at the distance that keeps the stream's mean distance at ``m0``."""
    d = center.shape[0]
    head = params[d:]
    rho, step, m0 = head[_RHO], head[_STEP], head[_M0]
    n = (head.shape[0] - _HEAD) // (d + 1)
    draws = head[_HEAD : _HEAD + n * d]
    spread = head[_HEAD + n * d :]
    now = 0.0  # mean distance of the attacker's clean draws to the centroid as it is now, in radii
    for i in range(n):
        s2 = 0.0
        for j in range(d):
            s2 += (draws[i * d + j] - center[j]) ** 2
        now += np.sqrt(s2)
    now /= n * radius
    s = (m0 - (1.0 - rho) * now) / rho
    # spread like the clean distances: which one, picked by the centroid's coordinates (the rule keeps no
    # state of its own, so a run resumed from a checkpoint places the same points)
    total = 0.0
    for j in range(d):
        total += center[j]
    k = int(abs(total) * 1e6) % n
    s = s * spread[k] / m0 if m0 > 0 else 0.0
    s = min(max(s, 0.0), step)
    norm = 0.0
    for j in range(d):
        norm += (params[j] - center[j]) ** 2
    norm = np.sqrt(norm)
    scale = 0.0 if norm == 0 else min(1.0, s * radius / norm)
    for j in range(d):
        out[j] = center[j] + scale * (params[j] - center[j])


def mean_distance(x: np.ndarray, center: np.ndarray, radius: float) -> float:
    """Mean distance of ``x`` to ``center``, in radii."""
    return float(np.linalg.norm(np.asarray(x, dtype=np.float64) - center, axis=1).mean() / radius)


def clean_level(model, draws: np.ndarray, radius: float) -> float:
    """The mean distance (radii) a drift detector sees on a clean stream: clean draws against a copy of the
    model's centroid as it moves on them, read as the defender reads it (against the centroid at the start
    of each unit of ``DEFENSE_UNIT`` events); above the distance to a fixed centroid, as the centroid
    jitters."""
    model = copy.deepcopy(model)
    distances = []
    for lo in range(0, len(draws) - DEFENSE_UNIT + 1, DEFENSE_UNIT):
        chunk = draws[lo : lo + DEFENSE_UNIT]
        distances.append(np.linalg.norm(chunk - model.center, axis=1) / radius)
        model.process_many(chunk.astype(np.float32))
    return float(np.concatenate(distances).mean())


@ATTACKS.register("boiling-frog", requires=("centroid-state",), examples=[{"target_distance": 2.0}, {"step": 0.5}])
class BoilingFrog(Attack):
    """Move a detector's centroid toward ``A`` while the distances a drift detector watches keep their clean mean.

    ``A`` is ``target_point`` when given, else a point ``target_distance``
    radii from the initial centroid in a random direction. The attacker knows
    its own share of the stream (its channel's rate) and draws its own clean
    events to estimate where benign ones fall.
    """

    offers = frozenset({"white-box"})

    def __init__(
        self,
        target_point: Annotated[tuple[float, ...] | None, Key("attack point A (default: drawn)")] = None,
        target_distance: Annotated[float, Key("A this many radii from c0 when not given", gt=0, le=1e6)] = 3.0,
        step: Annotated[float, Key("longest step from the centroid, in radii", gt=0, le=1)] = 1.0,
    ):
        self.target_point = target_point
        self.target_distance = target_distance
        self.step = step

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> BoilingFrog:
        target = attack_point(knowledge, self.target_point, self.target_distance, rng, "boiling-frog")
        if not knowledge.rate:
            raise ValueError("boiling-frog: needs its share of the stream (attack.rate > 0 on the stream channel)")
        d = knowledge.center.shape[0]
        draws, _ = knowledge.draw(rng, DRAWS)
        center, radius = np.asarray(knowledge.center, dtype=np.float64), float(knowledge.radius)
        m0 = None
        if knowledge.model is not None:  # the signal's clean level, minus what the rule's own draws say at c0
            calibration = np.asarray(knowledge.draw(rng, CALIBRATION)[0], dtype=np.float64)
            jitter = clean_level(knowledge.model, calibration, radius) - mean_distance(calibration, center, radius)
            m0 = mean_distance(draws, center, radius) + jitter
        self.params_ = frog_params(
            target, center, radius, float(knowledge.rate), np.asarray(draws, dtype=np.float64), self.step, m0
        )
        self.target_x_ = target[None, :]
        self.report_ = {
            "target_distance_radii": float(np.linalg.norm(target - knowledge.center) / knowledge.radius),
            "clean_mean_distance_radii": float(self.params_[d + _M0]),
        }
        return self

    def hook(self, rows: np.ndarray) -> AttackerHook:
        """The frog's turns at ``rows``: :func:`frog_rule`, aimed at ``A``."""
        return AttackerHook(rows, frog_rule, self.params_)

    def poison(self, x, y, rng):
        """Placeholders (``A``) for points the frog places at delivery."""
        check_batch(x, y)
        return np.repeat(self.target_x_.astype(np.float32), len(x), axis=0), np.zeros(len(x), dtype=np.int64)
