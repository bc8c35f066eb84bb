"""Backdoor triggers: plain callables that copy their input, then stamp it.

A patch trigger (BadNets) sets a square of pixels in one corner to a value;
a blend trigger mixes a pattern in with weight alpha. Inputs that are not
square images get the patch on their first or last ``size * size`` features.

>>> import numpy as np
>>> x = np.zeros((1, 16), dtype=np.float32)
>>> PatchTrigger(side=4, size=2, position="bottom-right")(x).reshape(4, 4).astype(int).tolist()
[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
>>> float(x.sum())  # the input is untouched
0.0
>>> BlendTrigger(pattern=np.ones(16, dtype=np.float32), alpha=0.25)(x)[0, :2].tolist()
[0.25, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


@dataclass(frozen=True)
class PatchTrigger:
    """BadNets: a ``size`` x ``size`` patch of ``value`` in a corner."""

    side: int | None
    size: int = 2
    position: str = "bottom-right"
    value: float = 1.0

    def indices(self, n_features: int) -> np.ndarray:
        return patch_indices(n_features, self.side, self.size, self.position)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32)
        out[:, self.indices(out.shape[1])] = self.value
        return out


@dataclass(frozen=True)
class BlendTrigger:
    """Blended: ``x' = (1 - alpha) x + alpha pattern``."""

    pattern: np.ndarray = field(repr=False)
    alpha: float = 0.2

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return ((1 - self.alpha) * x + self.alpha * self.pattern).astype(np.float32)


def make_pattern(kind: str, n_features: int, side: int | None, rng: np.random.Generator, pool_x: np.ndarray) -> np.ndarray:
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
