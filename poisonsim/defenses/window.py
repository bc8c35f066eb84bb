"""Window defenses of the centroid models: what enters the window, and how its centroid is estimated.

- ``outlier-rejection`` (Kloft & Laskov's defense): learn only points within
  ``radius_factor`` radii of the centroid. The detector has its radius ``r``;
  the classifier gets one per class, the 95 % quantile of the trusted clean
  sample's distances to that class's centroid. Flags the events it refused.
- ``robust-centroid``: the coordinate median or trimmed mean of the stored
  points instead of their mean. Flags nothing (it changes the estimate).
- ``source-quota``: a point is refused while its (public) source holds
  ``quota`` of its window or more. Flags the events it refused.
- ``fpr-reset``: every ``every`` events, measure false alarms on the trusted
  clean sample (detector: alarm rate; classifier: error rate). Within the
  budget ``alpha`` the model state becomes the trusted one; over it, the
  model goes back to the last trusted state and the events of that unit
  are flagged.

The per-event parts run inside the models' compiled loop (switched on by
``fit``), so each event's fate is exact; the models report why they refused
each event (``refusals_``), which is what these defenses flag.

>>> RobustCentroid(estimator="trimmed-mean", trim=0.2)
RobustCentroid(estimator='trimmed-mean', trim=0.2)
"""

from __future__ import annotations

from typing import Annotated

import numpy as np

from poisonsim.defenses.base import DefenderKnowledge, Defense, Every, require
from poisonsim.events import EventBatch
from poisonsim.models.options import OPTION_KEYS, OUTSIDE, OVER_QUOTA
from poisonsim.registry import DEFENSES, Key

CLASS_RADIUS_QUANTILE = 0.95  # classifier outlier rejection: per-class radius from the trusted sample


def window_model(model, kind: str):
    """``model`` if it offers windows, else a clear error naming the defense."""
    require(model, kind, "window")
    return model


class _Refusals(Defense):
    """Flags the events the model refused for one reason."""

    offers = frozenset({"flags-events"})
    reason: int = -1

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        refusals = model.refusals_
        if refusals is None or len(refusals) != len(batch):
            return None
        return refusals == self.reason


@DEFENSES.register("outlier-rejection", requires=("window",), examples=[{}, {"radius_factor": 0.5}])
class OutlierRejection(_Refusals):
    """Learn only points within ``radius_factor`` radii of the centroid."""

    reason = OUTSIDE
    radii_: np.ndarray | None = None  # the learning radius of each window, once fitted

    def __init__(
        self,
        radius_factor: Annotated[float, Key("learn only points within this many radii", gt=0, le=1e6)] = 1.0,
        quantile: Annotated[
            float,
            Key(
                "classifier: a class's radius is this quantile of the trusted sample's distances to its centroid",
                gt=0,
                le=1,
            ),
        ] = CLASS_RADIUS_QUANTILE,
    ):
        self.radius_factor = radius_factor
        self.quantile = quantile

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> OutlierRejection:
        model = window_model(model, "outlier-rejection")
        if "alarms" in model.offers:  # one window, one radius
            model.configure(learn_radius=self.radius_factor)
            self.radii_ = np.array([model.radius_ * self.radius_factor])
            return self
        centers = model.centers
        radii = np.zeros(model.n_classes)
        for c in range(model.n_classes):
            x = knowledge.clean_x[knowledge.clean_y == c]
            if len(x) and model.window_counts[c] > 0:
                radii[c] = np.quantile(np.linalg.norm(x - centers[c], axis=1), self.quantile) * self.radius_factor
        model.configure(learn_radii=radii)
        self.radii_ = radii
        return self

    def report(self) -> dict:
        return {} if self.radii_ is None else {"learn_radius": float(np.mean(self.radii_))}


@DEFENSES.register("robust-centroid", requires=("window",), examples=[{}, {"estimator": "trimmed-mean", "trim": 0.2}])
class RobustCentroid(Defense):
    """Coordinate median or trimmed mean of the window instead of its mean."""

    def __init__(
        self,
        estimator: Annotated[str, Key("centroid estimate", choices=("median", "trimmed-mean"))] = "median",
        trim: Annotated[float, Key("share cut from each end for the trimmed mean", ge=0, lt=0.5)] = 0.1,
    ):
        self.estimator = estimator
        self.trim = trim

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> RobustCentroid:
        window_model(model, "robust-centroid").configure(estimator=self.estimator, trim=self.trim)
        return self


@DEFENSES.register("source-quota", requires=("window",), examples=[{"quota": 0.5}])
class SourceQuota(_Refusals):
    """Refuse a point while its source holds ``quota`` of the window or more."""

    reason = OVER_QUOTA

    def __init__(self, quota: Annotated[float, Key("most share of a window one source may hold", gt=0, le=1)] = 0.2):
        self.quota = quota

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> SourceQuota:
        window_model(model, "source-quota").configure(quota=self.quota)
        return self


@DEFENSES.register("fpr-reset", requires=("window",), examples=[{"every": 50}])
class FprReset(Defense):
    """Back to the last trusted state when false alarms on trusted clean data exceed ``alpha``.

    It flags the events of the unit where it went back."""

    offers = frozenset({"flags-events"})

    def __init__(
        self,
        alpha: Annotated[float, Key("false alarm budget on trusted clean traffic", gt=0, lt=1)] = 0.1,
        every: Every = 500,
    ):
        self.alpha = alpha
        self.every = every

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> FprReset:
        self.model_ = window_model(model, "fpr-reset")
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self.trusted_state_ = model.get_state()
        self.trusted_at_ = 0
        self.resets_ = 0
        self.checks_ = 0
        self.last_rate_ = self.false_alarm_rate(model)
        self.saved_at_ = self.restored_from_ = None  # for the evaluator's window mirror
        return self

    def false_alarm_rate(self, model) -> float:
        """Detector: share of trusted clean points it alarms on; classifier: share it gets wrong."""
        predictions = model.predict_many(self.clean_x_)
        if "alarms" in model.offers:
            return float(np.mean(predictions))
        return float((predictions != self.clean_y_).mean())

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        self.saved_at_ = self.restored_from_ = None
        if position // self.every == (position - len(batch)) // self.every:
            return None  # no check boundary inside this unit
        self.checks_ += 1
        self.last_rate_ = self.false_alarm_rate(model)
        if self.last_rate_ <= self.alpha:
            self.trusted_state_ = model.get_state()
            self.trusted_at_ = self.saved_at_ = position
            return None
        restore_window(model, self.trusted_state_)
        self.resets_ += 1
        self.restored_from_ = self.trusted_at_
        return np.ones(len(batch), dtype=bool)

    def report(self) -> dict:
        return {"resets": self.resets_, "checks": self.checks_, "last_false_alarm_rate": self.last_rate_}

    def get_state(self) -> dict:
        return {
            "trusted_state": self.trusted_state_,
            "trusted_at": self.trusted_at_,
            "resets": self.resets_,
            "checks": self.checks_,
            "last_rate": self.last_rate_,
        }

    def set_state(self, state: dict, model) -> None:
        self.trusted_state_, self.trusted_at_ = state["trusted_state"], state["trusted_at"]
        self.resets_, self.checks_, self.last_rate_ = state["resets"], state["checks"], state["last_rate"]


def restore_window(model, state: dict) -> None:
    """Put a model's windows back to ``state``; its options (set by any defense since) and random
    generator go on as they are, and a robust centroid is re-estimated from the restored points."""
    now = model.get_state()
    model.set_state({**state, **{k: now[k] for k in (*OPTION_KEYS, "rng") if k in now}})
    model.configure()
