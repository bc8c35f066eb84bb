"""Online models; each kind registers itself in :data:`poisonsim.registry.MODELS` where it is written.

>>> from poisonsim.config import Scenario
>>> s = Scenario.from_dict({"model": {"kind": "centroid-classifier", "window_size": 10}})
>>> build_model(s.model, n_classes=3)
CentroidClassifier(n_classes=3, window_size=10, window_policy='fifo', warmup=None, seed=0)
"""

from __future__ import annotations

from poisonsim.models.base import Model
from poisonsim.models.centroid import CentroidClassifier, CentroidDetector


def build_model(section, n_classes: int, seed: int = 0, n_features: int | None = None, image_side: int | None = None):
    """The model a scenario's ``[model]`` section names, for a source of ``n_classes`` classes."""
    return section.build(n_classes=n_classes, n_features=n_features, image_side=image_side, seed=seed)


__all__ = ["CentroidClassifier", "CentroidDetector", "Model", "build_model"]
