"""Online models and the registry that builds them from a scenario.

>>> from simulator.config import NEURAL_KINDS, ModelConfig
>>> build_model(ModelConfig(kind="centroid-classifier", window_size=10), n_classes=3)
CentroidClassifier(n_classes=3, window_size=10, window_policy='average-out', seed=0)
"""

from __future__ import annotations

from simulator.config import NEURAL_KINDS, ModelConfig
from simulator.models.centroid import CentroidClassifier, CentroidDetector, WhiteBoxResponder


def build_model(
    config: ModelConfig, n_classes: int, seed: int = 0, n_features: int | None = None, image_side: int | None = None
):
    """The model a scenario's ``[model]`` section names."""
    if config.kind == "centroid-detector":
        return CentroidDetector(
            config.window_size, config.window_policy, config.radius, config.radius_quantile, config.learn, seed
        )
    if config.kind == "centroid-classifier":
        return CentroidClassifier(n_classes, config.window_size, config.window_policy, seed)
    if config.kind in NEURAL_KINDS:
        from simulator.models.neural import NeuralClassifier

        return NeuralClassifier(
            n_classes, n_features, config.kind, image_side, config.hidden, config.batch_size, config.lr,
            config.optimizer, config.momentum, config.replay, config.replay_batch, config.device, seed,
        )  # fmt: skip
    raise ValueError(f"model.kind: unknown model {config.kind!r}")


def warmup_size(config: ModelConfig, n_classes: int) -> int:
    """Clean events that fill the model's window(s) before the stream starts."""
    if config.kind in NEURAL_KINDS:
        return config.pretrain_events
    if config.warmup is not None:
        return config.warmup
    per_window = config.window_size
    return per_window * n_classes if config.kind == "centroid-classifier" else per_window


__all__ = ["CentroidClassifier", "CentroidDetector", "WhiteBoxResponder", "build_model", "warmup_size"]
