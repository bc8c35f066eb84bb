"""Online centroid models: an anomaly detector and a nearest-centroid classifier.

Both learn test-then-train, event by event, with exact per-event semantics
in a compiled inner loop (see :mod:`poisonsim.models.window`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = CentroidDetector(window_size=50, window_policy="fifo", radius_quantile=0.9)
>>> det.learn_many(rng.normal(size=(50, 2)))
>>> round(det.radius_, 2) > 0, bool(det.predict_one(np.array([10.0, 10.0])))
(True, True)
>>> clf = CentroidClassifier(n_classes=2, window_size=20)
>>> clf.learn_many(np.r_[rng.normal(-3, 1, (20, 2)), rng.normal(3, 1, (20, 2))], [0] * 20 + [1] * 20)
>>> clf.predict_many(np.array([[-3.0, -3.0], [3.0, 3.0]])).tolist()
[0, 1]
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

import numpy as np
from numba import njit, types
from numba.core.types import WrapperAddressProtocol
from numba.experimental.function_type import _get_wrapper_address
from numba.extending import typeof_impl

from poisonsim.models.base import AttackerHook, Model
from poisonsim.models.inputs import check_features, check_labels
from poisonsim.models.options import FROZEN, LEARNED, OUTSIDE, OVER_QUOTA, WindowOptions, copy_or_none
from poisonsim.models.window import (
    AVERAGE_OUT,
    COUNT,
    MEAN,
    MERGED,
    NOT_LEARNED,
    POLICY_CODES,
    guarded_learn,
    new_window,
    squared_distance,
)
from poisonsim.registry import MODELS, Key

# a white-box attacker's rule(center, radius, params, out), as the detector's kernel calls it at its turns
RULE_SIGNATURE = types.void(types.float64[::1], types.float64, types.float64[::1], types.float64[::1])
_RULE_TYPE = types.FunctionType(RULE_SIGNATURE)


@njit(cache=True)
def _no_rule(center: np.ndarray, radius: float, params: np.ndarray, out: np.ndarray) -> None:
    """The rule where no white-box attacker takes turns (never called)."""


_NO_PARAMS = np.zeros(0)


class _RuleAddress(WrapperAddressProtocol):
    """An attacker's compiled rule passed by address, typed by :data:`RULE_SIGNATURE` alone: the detector's
    kernel's signature then names no particular rule, so numba's disk cache keeps it between processes."""

    def __init__(self, rule):
        self._address = _get_wrapper_address(rule, RULE_SIGNATURE)

    def __wrapper_address__(self) -> int:
        return self._address

    def signature(self):
        return RULE_SIGNATURE


@typeof_impl.register(_RuleAddress)
def _typeof_rule_address(value, context):
    return _RULE_TYPE  # made once: numba would build the type anew at every call of the kernel


@cache
def _rule_address(rule) -> _RuleAddress:
    return _RuleAddress(rule)


class CentroidModel(WindowOptions, Model):
    """Shared input checks, the window policy and the window defenses' options of both centroid models.

    The options (:meth:`configure`, see :class:`~poisonsim.models.options.WindowOptions`)
    act inside the compiled per-event loop.
    """

    n_features_: int | None = None

    def _check_x(self, X: np.ndarray) -> np.ndarray:
        return check_features(X, self.n_features_)

    def _check_policy(self) -> int:
        if self.window_policy not in POLICY_CODES:
            raise ValueError(f"window_policy: expected one of {', '.join(POLICY_CODES)}; got {self.window_policy!r}")
        if not isinstance(self.window_size, int) or self.window_size < 1:
            raise ValueError(f"window_size: expected an integer >= 1, got {self.window_size!r}")
        return POLICY_CODES[self.window_policy]

    @property
    def warmup_events(self) -> int:
        """Clean events that fill the window(s) before the stream starts."""
        if self.warmup is not None:
            return self.warmup
        return self.window_size * len(self.window_counts)


WindowSize = Annotated[int, Key("n: points per window (per class for the classifier)", ge=1, le=1_000_000)]
WindowPolicy = Annotated[str, Key("which point leaves a full window", choices=tuple(POLICY_CODES))]
Warmup = Annotated[
    int | None, Key("clean events that fill the window(s) first (default: all windows full)", ge=1, le=10**8)
]
DETECTOR_EXAMPLES = [{"window_size": 20, "window_policy": p} for p in POLICY_CODES]


@MODELS.register("centroid-detector", examples=DETECTOR_EXAMPLES)
class CentroidDetector(CentroidModel):
    """Alarm when ``||x - c|| > r``; learn accepted points (or all) into one window.

    Until the window has filled (the trusted warm-up) every point is accepted.
    Then ``r`` is ``radius``, or with ``radius=None`` the ``radius_quantile``
    of the stored points' distances to ``c``.
    """

    offers = frozenset({"window", "centroid-state", "alarms"})

    def __init__(
        self,
        window_size: WindowSize = 100,
        window_policy: WindowPolicy = "average-out",
        radius: Annotated[float | None, Key("alarm radius r (default: calibrated)", gt=0)] = None,
        radius_quantile: Annotated[float, Key("r = this quantile of warm-up distances", gt=0, le=1)] = 0.95,
        learn: Annotated[str, Key("learn accepted points only, or all", choices=("accepted", "all"))] = "accepted",
        warmup: Warmup = None,
        seed: int = 0,
    ):
        self.window_size = window_size
        self.window_policy = window_policy
        self.radius = radius
        self.radius_quantile = radius_quantile
        self.learn = learn
        self.warmup = warmup
        self.seed = seed
        self._policy = self._check_policy()
        if learn not in ("accepted", "all"):
            raise ValueError(f'learn: expected "accepted" or "all", got {learn!r}')
        self._rng = np.random.default_rng(seed)
        self.radius_ = 0.0  # known once the window has filled
        self._learn_radius: float | None = None  # outlier rejection: learn within this many radii
        self._center = self._window = self._state = None

    def configure(self, *, learn_radius: float | None = None, **options) -> None:
        """As :meth:`CentroidModel.configure`; ``learn_radius``: learn only points within this many radii
        (1.0 is ``learn="accepted"``; it overrides ``learn="all"``)."""
        if learn_radius is not None:
            if not learn_radius > 0:
                raise ValueError(f"learn_radius: expected a number > 0, got {learn_radius!r}")
            self._learn_radius = float(learn_radius)
        super().configure(**options)

    def _window_arrays(self):
        if self._center is None:
            return None, None, None
        return self._window[None], self._center[None], self._state[None]

    @property
    def _learn_factor(self) -> float:
        if self._learn_radius is not None:
            return self._learn_radius
        return -1.0 if self.learn == "all" else 1.0

    @property
    def center(self) -> np.ndarray:
        """The current centroid (a copy)."""
        return np.array(self._center)

    @property
    def centers(self) -> np.ndarray:
        """The centroid as the one row of a window model's centroids (a copy)."""
        return self.center[None]

    @property
    def window_counts(self) -> np.ndarray:
        """Points learned so far, per window (one window here)."""
        return np.array([0 if self._state is None else self._state[COUNT]], dtype=np.int64)

    @property
    def is_ready(self) -> bool:
        """True once the window has filled and the radius is known."""
        return self._state is not None and self._state[COUNT] >= self.window_size and self.radius_ > 0

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Alarms: True where a point lies outside the sphere."""
        X = self._check_x(X)
        if self._center is None or not self.is_ready:
            return np.zeros(X.shape[0], dtype=bool)
        return ((X - self._center) ** 2).sum(axis=1) > self.radius_**2

    def learn_many(self, X: np.ndarray, Y=None) -> None:
        self.process_many(X)

    def process_many(
        self, X: np.ndarray, Y=None, hook: AttackerHook | None = None, sources=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Test-then-train each event in order; returns ``(alarms, slots)``.

        ``X`` rows a white-box attacker's ``hook`` fills in are written back
        into ``X``, so the caller sees what was delivered. ``sources``: the
        events' public producer ids (a source quota reads them; default 0).
        """
        X = self._check_x(X)
        if self._center is None:
            self.n_features_ = X.shape[1]
            self._center, self._window, self._state = new_window(self.window_size, X.shape[1])
            self._new_guard(1)
        m = X.shape[0]
        self._sources = self._check_sources(sources, m)
        self.refusals_ = np.zeros(m, dtype=np.int8)
        alarms = np.zeros(m, dtype=bool)
        slots = np.full(m, NOT_LEARNED, dtype=np.int64)
        uniforms = self._rng.random(m)
        hook = hook or AttackerHook(np.zeros(m, dtype=np.bool_), _no_rule, _NO_PARAMS)
        start = 0
        if not self.is_ready:  # a filling window accepts everything; then the radius is calibrated
            start = min(m, max(self.window_size - int(self._state[COUNT]), 0))
            self._run(X, uniforms, hook, alarms, slots, 0, start, radius=0.0)
            if self._state[COUNT] >= self.window_size:
                self._calibrate()
        self._run(X, uniforms, hook, alarms, slots, start, m, radius=self.radius_)
        return alarms, slots

    def _run(self, X, uniforms, hook: AttackerHook, alarms, slots, lo, hi, radius) -> None:
        if hi <= lo:
            return
        state = (self._center, self._window, self._state, self._policy, radius, self._learn_factor, uniforms)
        judged = (
            alarms,
            slots,
            self._sources,
            self._slot_sources[0],
            self._shares[0],
            *self._guard_args(),
            self.refusals_,
        )
        _detector_kernel(X, lo, hi, *state, hook.rows, _rule_address(hook.rule), hook.params, *judged)

    def _calibrate(self) -> None:
        if self.radius is not None:
            self.radius_ = float(self.radius)
            return
        dist = np.sqrt(((self._window - self._center) ** 2).sum(axis=1))
        self.radius_ = float(np.quantile(dist, self.radius_quantile))
        if self.radius_ <= 0:
            raise ValueError("radius: calibration gave r = 0 (all warm-up points identical); set model.radius")

    def get_state(self) -> dict:
        """Mutable state: numpy arrays and plain values (copies), for a checkpoint."""
        return {
            "n_features": self.n_features_,
            "radius": self.radius_,
            "center": copy_or_none(self._center),
            "window": copy_or_none(self._window),
            "state": copy_or_none(self._state),
            "rng": self._rng.bit_generator.state,
            "learn_radius": self._learn_radius,
            **self._guard_state(),
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""
        self.n_features_ = state["n_features"]
        self._learn_radius = state.get("learn_radius")
        self._set_guard_state(state)
        self.radius_ = float(state["radius"])
        self._center = copy_or_none(state["center"], np.float64)
        self._window = copy_or_none(state["window"], np.float64)
        self._state = copy_or_none(state["state"], np.int64)
        self._rng.bit_generator.state = state["rng"]


@MODELS.register("centroid-classifier", examples=[{"window_size": 10, "window_policy": p} for p in POLICY_CODES])
class CentroidClassifier(CentroidModel):
    """Nearest centroid over one sliding window per class."""

    offers = frozenset({"window", "classes"})

    def __init__(
        self,
        n_classes: int = 2,
        window_size: WindowSize = 100,
        window_policy: WindowPolicy = "fifo",
        warmup: Warmup = None,
        seed: int = 0,
    ):
        self.n_classes = n_classes
        self.window_size = window_size
        self.window_policy = window_policy
        self.warmup = warmup
        self.seed = seed
        self._policy = self._check_policy()
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes: expected an integer >= 1, got {n_classes!r}")
        self._rng = np.random.default_rng(seed)
        self._radii = np.zeros(n_classes)  # outlier rejection: learn within radii[c] of centroid c (0: all)
        self._centers = self._windows = self._states = None

    def configure(self, *, learn_radii: np.ndarray | None = None, **options) -> None:
        """As :meth:`CentroidModel.configure`; ``learn_radii``: learn a point of class c only within
        ``learn_radii[c]`` of centroid c (0: no limit)."""
        if learn_radii is not None:
            radii = np.asarray(learn_radii, dtype=np.float64)
            if radii.shape != (self.n_classes,) or not (np.isfinite(radii) & (radii >= 0)).all():
                raise ValueError(f"learn_radii: expected {self.n_classes} finite numbers >= 0")
            self._radii = radii.copy()
        super().configure(**options)

    def _window_arrays(self):
        return self._windows, self._centers, self._states

    @property
    def centers(self) -> np.ndarray:
        """Centroids, one row per class (a copy)."""
        return np.array(self._centers)

    @property
    def window_counts(self) -> np.ndarray:
        """Points learned so far, per class window."""
        if self._states is None:
            return np.zeros(self.n_classes, dtype=np.int64)
        return self._states[:, COUNT].copy()

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        X = self._check_x(X)
        if self._centers is None:
            return np.zeros(X.shape[0], dtype=np.int64)
        d2 = (X**2).sum(1)[:, None] - 2 * X @ self._centers.T + (self._centers**2).sum(1)[None, :]
        d2[:, self._states[:, COUNT] == 0] = np.inf  # a class never seen is never predicted
        return d2.argmin(axis=1)

    def learn_many(self, X: np.ndarray, Y=None) -> None:
        self.process_many(X, Y)

    def process_many(self, X: np.ndarray, Y, hook=None, sources=None) -> tuple[np.ndarray, np.ndarray]:
        """Test-then-train each event in order; returns ``(predictions, slots)``."""
        if hook is not None:
            raise ValueError("hook: the classifier offers no white-box attacker hook")
        X = self._check_x(X)
        Y = check_labels(Y, X.shape[0], self.n_classes)
        if self._centers is None:
            self.n_features_ = X.shape[1]
            self._centers = np.zeros((self.n_classes, X.shape[1]))
            self._windows = np.zeros((self.n_classes, self.window_size, X.shape[1]))
            self._states = np.zeros((self.n_classes, 3), dtype=np.int64)
            self._new_guard(self.n_classes)
        m = X.shape[0]
        sources = self._check_sources(sources, m)
        self.refusals_ = np.zeros(m, dtype=np.int8)
        predictions = np.zeros(m, dtype=np.int64)
        slots = np.full(m, NOT_LEARNED, dtype=np.int64)
        _classifier_kernel(
            X,
            Y,
            self._centers,
            self._windows,
            self._states,
            self._policy,
            self._rng.random(m),
            predictions,
            slots,
            self._radii,
            sources,
            self._slot_sources,
            self._shares,
            *self._guard_args(),
            self.refusals_,
        )
        return predictions, slots

    def get_state(self) -> dict:
        """Mutable state: numpy arrays and plain values (copies), for a checkpoint."""
        return {
            "n_features": self.n_features_,
            "centers": copy_or_none(self._centers),
            "windows": copy_or_none(self._windows),
            "states": copy_or_none(self._states),
            "rng": self._rng.bit_generator.state,
            "learn_radii": self._radii.copy(),
            **self._guard_state(),
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""
        self.n_features_ = state["n_features"]
        self._centers = copy_or_none(state["centers"], np.float64)
        self._windows = copy_or_none(state["windows"], np.float64)
        self._states = copy_or_none(state["states"], np.int64)
        self._rng.bit_generator.state = state["rng"]
        self._radii = np.array(state.get("learn_radii", np.zeros(self.n_classes)), dtype=np.float64)
        self._set_guard_state(state)


@njit(cache=True)
def _detector_kernel(
    X,
    lo,
    hi,
    center,
    window,
    state,
    policy,
    radius,
    learn_factor,
    uniforms,
    rows,
    rule,
    params,
    alarms,
    slots,
    sources,
    slot_source,
    shares,
    estimator,
    trim,
    quota,
    frozen,
    refusals,
):
    """Judge, then learn, events ``lo`` to ``hi``. ``learn_factor``: learn only points within this many radii
    (< 0: learn all). At the white-box attacker's turns (``rows``) its ``rule`` first fills the turn's row from
    the public state (centroid, radius) it sees now. ``rule`` comes by address (:class:`_RuleAddress`), so one
    compiled loop, kept in numba's disk cache, serves every rule."""
    d = X.shape[1]
    x = np.empty(d)
    n = window.shape[0]
    # average-out with its window full and no window defense only moves the mean (learn's own arithmetic,
    # written out here). Through guarded_learn an event costs ~60 ns instead of ~10: numba takes and drops a
    # reference (an atomic NRT call) on each array an inlined helper receives, and its pruning of those calls
    # fails once a helper stores into an array ahead of a loop inside a branch; the other policies still pay it.
    mean_only = policy == AVERAGE_OUT and estimator == MEAN and quota >= 1.0 and state[COUNT] >= n
    for i in range(lo, hi):
        if rows[i]:
            rule(center, radius, params, x)
            for j in range(d):  # element by element: a slice assignment compiles numba's shape checks (seconds)
                X[i, j] = x[j]
        for j in range(d):
            x[j] = X[i, j]
        d2 = squared_distance(x, center)
        alarms[i] = radius > 0 and d2 > radius * radius
        if frozen:
            refusals[i] = FROZEN
        elif radius > 0 and learn_factor >= 0 and d2 > (learn_factor * radius) ** 2:
            refusals[i] = OUTSIDE
        elif mean_only:
            for j in range(d):
                center[j] += (x[j] - center[j]) / n
            slots[i] = MERGED
            refusals[i] = LEARNED
        else:
            slots[i] = guarded_learn(
                center, window, state, policy, x, uniforms[i], estimator, trim, sources[i], quota, slot_source, shares
            )
            refusals[i] = OVER_QUOTA if slots[i] == NOT_LEARNED else LEARNED


@njit(cache=True)
def _classifier_kernel(
    X,
    Y,
    centers,
    windows,
    states,
    policy,
    uniforms,
    predictions,
    slots,
    radii,
    sources,
    slot_sources,
    shares,
    estimator,
    trim,
    quota,
    frozen,
    refusals,
):
    k, d = centers.shape
    x = np.empty(d)
    for i in range(X.shape[0]):
        for j in range(d):
            x[j] = X[i, j]
        best, best_d2 = 0, np.inf
        for c in range(k):
            if states[c, COUNT] > 0:
                d2 = squared_distance(x, centers[c])
                if d2 < best_d2:
                    best, best_d2 = c, d2
        predictions[i] = best
        c = Y[i]
        if frozen:
            refusals[i] = FROZEN
        elif radii[c] > 0 and squared_distance(x, centers[c]) > radii[c] * radii[c]:
            refusals[i] = OUTSIDE
        else:
            slots[i] = guarded_learn(
                centers[c],
                windows[c],
                states[c],
                policy,
                x,
                uniforms[i],
                estimator,
                trim,
                sources[i],
                quota,
                slot_sources[c],
                shares[c],
            )
            refusals[i] = OVER_QUOTA if slots[i] == NOT_LEARNED else LEARNED
