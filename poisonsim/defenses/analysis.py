"""Activation analysis: which class looks like it holds a backdoor.

Poison relabelled to a class is a sub-population of that class whose
last-hidden-layer activations do not look like the class's clean ones (the
observation behind spectral signatures, Tran et al. 2018, and activation
clustering, Chen et al. 2018). At event ``at`` (default: the end) the
defense embeds the most recent events the net learned, grouped by the
labels they carried, and scores each class by the share of them lying
farther from the class's clean mean activation than 99% of the defender's
own clean examples of that class. A clean class scores about 0.01; a class
that took poison scores about its poisoned share. The top class is the
suspect; every score is in the summary.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> clean = rng.normal(size=(500, 8))
>>> round(outlier_share(rng.normal(size=(300, 8)), clean), 2) <= 0.03
True
>>> mixed = np.r_[rng.normal(size=(200, 8)), rng.normal(size=(100, 8)) + 4.0]
>>> round(outlier_share(mixed, clean), 2)
0.34
"""

from __future__ import annotations

import copy

import numpy as np

from poisonsim.defenses.base import At, DefenderKnowledge, Defense, event_to_act_at, require
from poisonsim.registry import DEFENSES

RECENT_EVENTS = 4_000  # learned events kept for the analysis
MIN_PER_CLASS = 20
CLEAN_QUANTILE = 0.99


def outlier_share(activations: np.ndarray, clean: np.ndarray) -> float:
    """Share of ``activations`` farther from the clean mean than 99% of ``clean``."""
    center = clean.mean(axis=0)
    radius = np.quantile(np.linalg.norm(clean - center, axis=1), CLEAN_QUANTILE)
    return float((np.linalg.norm(activations - center, axis=1) > radius).mean())


@DEFENSES.register("activation-analysis", requires=("embeddings",), examples=[{"at": 150}])
class ActivationAnalysis(Defense):
    """Per class, the share of learned events whose embedding lies far from the class's clean mean."""

    def __init__(self, at: At = None):
        self.at = at

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> ActivationAnalysis:
        require(model, "activation-analysis", "embeddings")
        self.at_ = event_to_act_at(self.at, knowledge)
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self._x = np.empty((0, knowledge.clean_x.shape[1]), dtype=np.float32)
        self._y = np.empty(0, dtype=np.int64)
        self.figures_: dict = {}
        return self

    def get_state(self) -> dict:
        return {"x": self._x.copy(), "y": self._y.copy(), "figures": copy.deepcopy(self.figures_)}

    def set_state(self, state: dict, model) -> None:
        self._x = np.asarray(state["x"], dtype=np.float32).reshape(-1, self.clean_x_.shape[1])
        self._y, self.figures_ = np.asarray(state["y"], dtype=np.int64), copy.deepcopy(state["figures"])

    def update(self, batch, predictions, slots, model, position: int):
        if self.figures_:
            return None
        self._x = np.concatenate([self._x, batch.x])[-RECENT_EVENTS:]
        self._y = np.concatenate([self._y, batch.y])[-RECENT_EVENTS:]
        if self.at_ is not None and position >= self.at_:
            self.figures_ = self.analyse(model)
            self.figures_["at_event"] = position
        return None

    def analyse(self, model) -> dict:
        """Per-class outlier shares of the recent events, and the suspect class."""
        recent, clean = model.embed_many(self._x), model.embed_many(self.clean_x_)
        scores = {
            str(c): outlier_share(recent[self._y == c], clean[self.clean_y_ == c])
            for c in np.unique(self._y).tolist()
            if (self._y == c).sum() >= MIN_PER_CLASS and (self.clean_y_ == c).sum() >= MIN_PER_CLASS
        }
        suspect = max(scores, key=scores.get) if scores else None
        return {"class_scores": scores, "suspect_class": None if suspect is None else int(suspect)}

    def report(self) -> dict:
        return dict(self.figures_)
