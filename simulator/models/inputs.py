"""Input checks every model shares: clear errors that name the argument.

>>> check_features([[1.0, 2.0]], n_features=2).shape
(1, 2)
>>> check_features([[1.0, float("nan")]], n_features=2)
Traceback (most recent call last):
...
ValueError: X: contains NaN or infinity
>>> check_labels([0, 3], m=2, n_classes=3)
Traceback (most recent call last):
...
ValueError: Y: labels must lie in [0, 3), got 0..3
"""

from __future__ import annotations

import numpy as np


def check_features(X, n_features: int | None) -> np.ndarray:
    """``X`` as a 2-d array of finite numbers with ``n_features`` columns (any, when None)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-d array (events x features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X: expected {n_features} features, got {X.shape[1]}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X: expected numbers, got dtype {X.dtype}")
    if not np.isfinite(X).all():
        raise ValueError("X: contains NaN or infinity")
    return X


def check_labels(Y, m: int, n_classes: int) -> np.ndarray:
    """``Y`` as ``m`` int64 labels in ``[0, n_classes)``."""
    Y = None if Y is None else np.asarray(Y)
    if Y is None or Y.shape != (m,) or not np.issubdtype(Y.dtype, np.integer):
        raise ValueError(f"Y: expected {m} integer labels, got {None if Y is None else f'shape {Y.shape} dtype {Y.dtype}'}")
    if m and (Y.min() < 0 or Y.max() >= n_classes):
        raise ValueError(f"Y: labels must lie in [0, {n_classes}), got {Y.min()}..{Y.max()}")
    return Y.astype(np.int64)
