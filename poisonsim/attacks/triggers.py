"""Backdoor triggers, a concept of their own: each kind registered once, chosen in ``[attack.trigger]``.

A trigger is fitted to the attacker's pool (the image side, a pattern drawn
from it), then called on a batch: it copies the batch and stamps it. A patch
(BadNets) sets a square of pixels in one corner to a value; a blend mixes a
pattern in with weight alpha. Inputs that are not square images get the
patch on their first or last ``size * size`` features. :meth:`Trigger.region`
is where the trigger writes: the evaluator scores explanations and
reconstructed triggers against it; no model or defense reads it.

>>> import numpy as np
>>> x = np.zeros((1, 16), dtype=np.float32)
>>> patch = PatchTrigger(size=2).fit(x, image_side=4, rng=None)
>>> patch(x).reshape(4, 4).astype(int).tolist()
[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
>>> float(x.sum()), patch.region(16).tolist()  # the input is untouched
(0.0, [10, 11, 14, 15])
>>> blend = BlendTrigger(pattern="checkerboard", alpha=0.25).fit(x, image_side=4, rng=None)
>>> blend(x)[0, :2].tolist()
[0.0, 0.25]
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import numpy as np

from poisonsim.base import Estimator
from poisonsim.registry import TRIGGERS, Key

PatchSize = Annotated[int, Key("side of the square patch, in pixels", ge=1, le=1024)]
PatchPosition = Annotated[str, Key("patch corner", choices=("bottom-right", "bottom-left", "top-right", "top-left"))]
PatchValue = Annotated[float, Key("patch intensity", ge=0, le=1)]


class Trigger(Estimator):
    """Base: :meth:`fit` completes the trigger for the data; calling it stamps a copy of its input."""

    kind: str = ""

    def fit(self, pool_x: np.ndarray, image_side: int | None, rng: np.random.Generator | None) -> Trigger:
        """Complete the trigger for inputs like ``pool_x`` (the attacker's own); returns ``self``."""
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def region(self, n_features: int) -> np.ndarray:
        """Flat indices of the features the trigger writes (every feature unless it is local)."""
        return np.arange(n_features)


def fresh_trigger(spec: Trigger | str | dict[str, Any], owner: object = None) -> Trigger:
    """An unfitted trigger from a built one (cloned), a kind name, or a table.

    A table without ``kind`` means the default trigger of ``owner`` (the
    attack whose ``trigger`` parameter it is), else a patch.

    >>> fresh_trigger({"size": 3})
    PatchTrigger(size=3, position='bottom-right', value=1.0)
    """
    if isinstance(spec, Trigger):
        return spec.clone()
    default = inspect.signature(type(owner)).parameters["trigger"].default if owner is not None else "patch"
    return TRIGGERS.build_spec(spec, default)


def patch_indices(n_features: int, side: int | None, size: int, position: str) -> np.ndarray:
    """Flat feature indices a patch covers."""
    if side is None:
        k = min(size * size, n_features)
        return np.arange(n_features - k, n_features) if position.startswith("bottom") else np.arange(k)
    if size > side:
        raise ValueError(f"trigger.size: a {size}x{size} patch does not fit a {side}x{side} image")
    rows = range(side - size, side) if position.startswith("bottom") else range(size)
    cols = range(side - size, side) if position.endswith("right") else range(size)
    return np.array([r * side + c for r in rows for c in cols])


@TRIGGERS.register("patch", examples=[{"size": 1}, {"position": "top-left", "value": 0.5}])
class PatchTrigger(Trigger):
    """BadNets: a square patch of one value in a corner."""

    def __init__(self, size: PatchSize = 2, position: PatchPosition = "bottom-right", value: PatchValue = 1.0):
        self.size = size
        self.position = position
        self.value = value

    def fit(self, pool_x, image_side, rng) -> PatchTrigger:
        self.side_ = image_side
        self.indices_ = patch_indices(np.shape(pool_x)[1], image_side, self.size, self.position)
        return self

    def region(self, n_features: int) -> np.ndarray:
        return patch_indices(n_features, self.side_, self.size, self.position)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32)
        out[:, self.region(out.shape[1])] = self.value
        return out


@TRIGGERS.register("blend", examples=[{"pattern": "noise", "alpha": 0.3}, {"pattern": "image"}])
class BlendTrigger(Trigger):
    """Blended: a pattern mixed in, x' = (1 - alpha) x + alpha pattern."""

    def __init__(
        self,
        pattern: Annotated[str, Key("blend pattern", choices=("checkerboard", "noise", "image"))] = "checkerboard",
        alpha: Annotated[float, Key("x' = (1 - alpha) x + alpha pattern", gt=0, le=1)] = 0.2,
    ):
        self.pattern = pattern
        self.alpha = alpha

    def fit(self, pool_x, image_side, rng) -> BlendTrigger:
        self.pattern_ = make_pattern(self.pattern, np.shape(pool_x)[1], image_side, rng, pool_x)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return ((1 - self.alpha) * x + self.alpha * self.pattern_).astype(np.float32)


def make_pattern(
    kind: str, n_features: int, side: int | None, rng: np.random.Generator, pool_x: np.ndarray
) -> np.ndarray:
    """A blend pattern: a checkerboard, uniform noise, or an image from the attacker's pool."""
    if kind == "checkerboard":
        if side is None:
            return (np.arange(n_features) % 2).astype(np.float32)
        return ((np.arange(side)[:, None] + np.arange(side)[None, :]) % 2).astype(np.float32).ravel()
    if kind == "noise":
        return rng.uniform(0.0, 1.0, size=n_features).astype(np.float32)
    if kind == "image":
        return np.asarray(pool_x[rng.integers(0, len(pool_x))], dtype=np.float32).copy()
    raise ValueError(f'trigger.pattern: expected "checkerboard", "noise" or "image", got {kind!r}')
