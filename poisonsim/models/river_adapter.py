"""A poisonsim model as a river classifier, so river's own tools run it as they run theirs.

Every model takes river's dict rows in ``learn_one`` / ``predict_one``;
river's evaluation also checks the model's type (``river.base.Classifier``),
which :class:`RiverClassifier` gives it. It passes river's own estimator
checks (``river.checks``) with a centroid classifier, but for rows whose
features come and go (the model's width is fixed by its first row).

>>> from river import datasets, evaluate, metrics
>>> from poisonsim.models import CentroidClassifier
>>> model = RiverClassifier(CentroidClassifier(n_classes=2, window_size=50))
>>> score = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
>>> bool(score.get() > 0.8)
True
"""

from __future__ import annotations

from river import base


class RiverClassifier(base.Classifier):
    """``model`` (a poisonsim classifier) behind river's classifier interface."""

    def __init__(self, model):
        self.model = model

    @classmethod
    def _unit_test_params(cls):
        from poisonsim.models import CentroidClassifier

        yield {"model": CentroidClassifier(n_classes=2, window_size=20)}

    def _unit_test_skips(self) -> set[str]:
        # the width is fixed by the first row: a feature it lacked is refused, so rows that drop features at
        # random (these checks' first row among them) do not apply
        return {"check_emerging_features", "check_disappearing_features", "check_radically_disappearing_features"}

    def learn_one(self, x: dict, y) -> None:
        self.model.learn_one(x, y)

    def predict_one(self, x: dict):
        return self.model.predict_one(x)

    def predict_proba_one(self, x: dict) -> dict:
        """The net's class probabilities when it offers them, else all weight on the predicted class; every label
        seen so far is a key."""
        labels = self.model.labels_ or list(range(self.model.n_classes or 0))
        if "probabilities" in self.model.offers:
            proba = self.model.predict_proba_many(self.model._row(x))[0]
            return {label: float(p) for label, p in zip(labels, proba)}
        predicted = self.predict_one(x)
        return {label: float(label == predicted) for label in {*labels, predicted}}
