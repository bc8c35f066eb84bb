"""Options of the centroid models that the window defenses switch on.

They act inside the compiled per-event loop (:func:`~poisonsim.models.window.guarded_learn`):
a robust centroid estimate, a per-source quota, a learning radius (set by the
models themselves), and a freeze that stops learning while predictions go on.
After ``process_many``, ``refusals_`` says why each event was not learned:
``LEARNED`` (0: it was), ``OUTSIDE`` the learning radius, ``OVER_QUOTA``, ``FROZEN``.
All of it is part of the models' ``get_state``.
"""

from __future__ import annotations

import numpy as np

from poisonsim.models.window import COUNT, ESTIMATOR_CODES, MAX_SOURCES, robust_center

LEARNED, OUTSIDE, OVER_QUOTA, FROZEN = 0, 1, 2, 3
# get_state keys that are options, not window contents (a window reset keeps them)
OPTION_KEYS = ("estimator", "trim", "quota", "frozen", "learn_radius", "learn_radii")

__all__ = ["FROZEN", "LEARNED", "OPTION_KEYS", "OUTSIDE", "OVER_QUOTA", "WindowOptions", "copy_or_none"]


class WindowOptions:
    """Mixin of both centroid models: the options, their checks and their state."""

    refusals_: np.ndarray = np.zeros(0, dtype=np.int8)  # last process_many: why each event was not learned
    _estimator, _trim, _quota, _frozen = "mean", 0.0, 1.0, False
    _slot_sources = _shares = None  # per window: source of each stored point, share of each source

    @property
    def needs_sources(self) -> bool:
        """True when ``process_many`` should be given the events' public source ids."""
        return self._quota < 1.0

    @property
    def frozen(self) -> bool:
        return self._frozen

    def configure(
        self,
        *,
        estimator: str | None = None,
        trim: float | None = None,
        quota: float | None = None,
        frozen: bool | None = None,
    ) -> None:
        """Switch window defenses on or off (``None`` leaves an option as it is)."""
        if estimator is not None:
            if estimator not in ESTIMATOR_CODES:
                raise ValueError(f"estimator: expected one of {', '.join(ESTIMATOR_CODES)}; got {estimator!r}")
            if estimator != "mean" and self.window_policy == "infinite":
                raise ValueError(
                    f"model.window_policy: a robust centroid ({estimator}) needs stored points; 'infinite' keeps none"
                )
            self._estimator = estimator
        if trim is not None:
            if not 0 <= trim < 0.5:
                raise ValueError(f"trim: expected 0 <= trim < 0.5, got {trim!r}")
            self._trim = float(trim)
        if quota is not None:
            if not 0 < quota <= 1:
                raise ValueError(f"quota: expected 0 < quota <= 1, got {quota!r}")
            self._quota = float(quota)
        if frozen is not None:
            self._frozen = bool(frozen)
        self._recenter()

    def _recenter(self) -> None:
        """After an estimator change: the centroid from the stored points."""
        windows, centers, states = self._window_arrays()
        if windows is None or self._estimator == "mean":
            return
        for k in range(windows.shape[0]):
            robust_center(centers[k], windows[k], int(states[k, COUNT]), ESTIMATOR_CODES[self._estimator], self._trim)

    def _new_guard(self, n_windows: int) -> None:
        self._slot_sources = np.zeros((n_windows, self.window_size), dtype=np.int64)
        self._shares = np.zeros((n_windows, MAX_SOURCES))

    def _check_sources(self, sources, m: int) -> np.ndarray:
        if sources is None:
            return np.zeros(m, dtype=np.int64)
        sources = np.asarray(sources, dtype=np.int64)
        if sources.shape != (m,) or (m and (sources.min() < 0 or sources.max() >= MAX_SOURCES)):
            raise ValueError(f"sources: expected {m} source ids in [0, {MAX_SOURCES})")
        return sources

    def _guard_args(self) -> tuple:
        return ESTIMATOR_CODES[self._estimator], self._trim, self._quota, self._frozen

    def _guard_state(self) -> dict:
        return {
            "estimator": self._estimator,
            "trim": self._trim,
            "quota": self._quota,
            "frozen": self._frozen,
            "slot_sources": copy_or_none(self._slot_sources),
            "shares": copy_or_none(self._shares),
        }

    def _set_guard_state(self, state: dict) -> None:
        self._estimator, self._trim = state.get("estimator", "mean"), float(state.get("trim", 0.0))
        self._quota, self._frozen = float(state.get("quota", 1.0)), bool(state.get("frozen", False))
        self._slot_sources = copy_or_none(state.get("slot_sources"), np.int64)
        self._shares = copy_or_none(state.get("shares"), np.float64)


def copy_or_none(array, dtype=None):
    """A writable copy (the compiled kernels update windows in place)."""
    return None if array is None else np.array(array, dtype=dtype)
