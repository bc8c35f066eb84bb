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
        raise ValueError(
            f"Y: expected {m} integer labels, got {None if Y is None else f'shape {Y.shape} dtype {Y.dtype}'}"
        )
    if m and (Y.min() < 0 or Y.max() >= n_classes):
        raise ValueError(f"Y: labels must lie in [0, {n_classes}), got {Y.min()}..{Y.max()}")
    return Y.astype(np.int64)


class OneAtATime:
    """``learn_one`` / ``predict_one`` for river's rows as well as arrays (mixed into every model kind).

    A dict row is read in the feature order of the first dict the model saw
    (a feature a row lacks reads 0, as in river's sparse rows; a feature the
    first row did not have is an error: the model's width is fixed); labels
    that are not integers (river's ``True``/``False``, class names)
    are numbered in the order first seen, ``False`` before ``True``, and
    ``predict_one`` answers in the caller's labels.

    >>> from poisonsim.models.centroid import CentroidClassifier
    >>> clf = CentroidClassifier(n_classes=2, window_size=2)
    >>> for x, y in [({"a": 0.0, "b": 0.1}, "no"), ({"a": 5.0, "b": 5.1}, "yes")] * 2:
    ...     clf.learn_one(x, y)
    >>> clf.predict_one({"b": 4.0, "a": 6.0}), clf.predict_one([0.2, 0.0])
    ('yes', 'no')
    """

    feature_names_: tuple | None = None
    labels_: list | None = None  # the caller's labels, by class number (None: integer labels, used as they are)
    n_classes: int | None = None  # a classifier's number of classes (None: not a classifier)

    def learn_one(self, x, y=None) -> None:
        self.learn_many(self._row(x), None if y is None else [self._class_of(y)])

    def predict_one(self, x):
        prediction = self.predict_many(self._row(x))[0]
        if self.labels_ is not None and 0 <= int(prediction) < len(self.labels_):
            return self.labels_[int(prediction)]
        return np.asarray(prediction).item()

    def _row(self, x) -> np.ndarray:
        if isinstance(x, dict):
            if self.feature_names_ is None:
                self.feature_names_ = tuple(x)
            known = set(self.feature_names_)
            unknown = [name for name in x if name not in known]
            if unknown:
                raise ValueError(
                    f"x: feature(s) {', '.join(map(str, unknown[:5]))} not in the first row learned "
                    f"({len(known)} features: the model's width is fixed by it)"
                )
            return np.array([[float(x.get(name, 0.0)) for name in self.feature_names_]])
        return np.asarray(x, dtype=np.float64)[None, :]

    def _class_of(self, y) -> int:
        if isinstance(y, (int, np.integer)) and not isinstance(y, (bool, np.bool_)) and self.labels_ is None:
            return int(y)
        if self.labels_ is None:
            self.labels_ = [False, True] if isinstance(y, (bool, np.bool_)) else []
        if y not in self.labels_:
            limit = self.n_classes
            if limit is not None and len(self.labels_) >= limit:
                raise ValueError(f"y: {y!r} would be class {len(self.labels_) + 1} of a model of {limit} classes")
            self.labels_.append(y)
        return self.labels_.index(y)
