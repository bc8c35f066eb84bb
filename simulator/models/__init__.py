"""Online models and the registry that builds them from a scenario.

>>> from simulator.config import ModelConfig
>>> build_model(ModelConfig(kind="centroid-classifier", window_size=10), n_classes=3)
CentroidClassifier(n_classes=3, window_size=10, window_policy='average-out', seed=0)
"""

from __future__ import annotations

from simulator.config import ModelConfig
from simulator.models.centroid import CentroidClassifier, CentroidDetector, WhiteBoxResponder


def build_model(config: ModelConfig, n_classes: int, seed: int = 0):
    """The model a scenario's ``[model]`` section names."""
    if config.kind == "centroid-detector":
        return CentroidDetector(
            config.window_size, config.window_policy, config.radius, config.radius_quantile, config.learn, seed
        )
    if config.kind == "centroid-classifier":
        return CentroidClassifier(n_classes, config.window_size, config.window_policy, seed)
    raise ValueError(f"model.kind: unknown model {config.kind!r}")


def warmup_size(config: ModelConfig, n_classes: int) -> int:
    """Clean events that fill the model's window(s) before the stream starts."""
    if config.warmup is not None:
        return config.warmup
    per_window = config.window_size
    return per_window * n_classes if config.kind == "centroid-classifier" else per_window


__all__ = ["CentroidClassifier", "CentroidDetector", "WhiteBoxResponder", "build_model", "warmup_size"]
