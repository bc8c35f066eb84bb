"""Fine-pruning (Liu et al. 2018): prune dormant neurons, then fine-tune on clean data.

Backdoor behaviour tends to live in neurons that clean inputs leave dormant.
At event ``at`` (default: the end of the stream) the defense ranks the units
of the net's last feature layer (the last convolution's channels, as in the
paper, or an MLP's last hidden layer) by their mean activation on the
defender's trusted clean sample, prunes the least active in steps of 5% of
the layer as long as clean accuracy on that sample stays within ``margin``
of where it started, then fine-tunes the pruned net on the clean sample. A
pruned unit has its weights and bias set to 0, so it stays silent under
further online learning (ReLU passes no gradient at 0).

>>> import torch
>>> from simulator.models.nets import build_net
>>> net = build_net("cnn", 64, 10, 16, 8)
>>> prune_units(net, [0, 3])
>>> mean_activations(net, torch.rand(20, 64))[[0, 3]].tolist()
[0.0, 0.0]
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from simulator.config import DefenseConfig
from simulator.defenses.base import DefenderKnowledge, Defense
from simulator.models.nets import train_offline

STEP_SHARE = 0.05  # of the layer's units, pruned per step
FINE_TUNE_EPOCHS = 10
FINE_TUNE_LR = 1e-3


def last_feature_layer(net: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The last convolution (else the last hidden linear layer) of ``net.features``, and the ReLU after it."""
    layers = list(net.features)
    index = max(i for i, m in enumerate(layers) if isinstance(m, (nn.Conv2d, nn.Linear)))
    if any(isinstance(m, nn.Conv2d) for m in layers):
        index = max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d))
    return layers[index], layers[index + 1]


def mean_activations(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean activation of each unit (channel) of the pruned layer on ``x``."""
    _, relu = last_feature_layer(net)
    seen = []
    handle = relu.register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    out = seen[0]
    return out.mean(dim=tuple(d for d in range(out.dim()) if d != 1)).cpu().numpy()


def prune_units(net: nn.Module, units) -> None:
    """Silence units (channels) of the pruned layer: weights and bias to 0."""
    layer, _ = last_feature_layer(net)
    with torch.no_grad():
        layer.weight[list(units)] = 0.0
        layer.bias[list(units)] = 0.0


def units_to_prune(net: nn.Module, x: torch.Tensor, y: np.ndarray, margin: float) -> list[int]:
    """The most dormant units whose removal keeps accuracy on ``(x, y)`` within ``margin`` of the start."""
    order = np.argsort(mean_activations(net, x), kind="stable")

    def accuracy(candidate: nn.Module) -> float:
        candidate.eval()
        with torch.no_grad():
            return float((candidate(x).argmax(dim=1).cpu().numpy() == y).mean())

    base = accuracy(net)
    step = max(1, int(round(STEP_SHARE * len(order))))
    chosen: list[int] = []
    for k in range(step, len(order), step):
        candidate = copy.deepcopy(net)
        prune_units(candidate, order[:k])
        if base - accuracy(candidate) > margin:
            break
        chosen = order[:k].tolist()
    return chosen


class FinePruning(Defense):
    def __init__(self, margin: float = 0.03, at: int | None = None):
        self.margin = margin
        self.at = at

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> FinePruning:
        if not hasattr(model, "embed_many"):
            raise ValueError("fine-pruning: needs a neural model (model.kind = \"mlp\" or \"cnn\")")
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self.at_ = self.at if self.at is not None else knowledge.n_events
        self.rng_ = rng
        self.figures_: dict = {}
        return self

    def update(self, batch, predictions, slots, model, position: int):
        if not self.figures_ and self.at_ is not None and position >= self.at_:
            self.figures_ = self.repair(model)
            self.figures_["at_event"] = position
        return None

    def repair(self, model) -> dict:
        """Prune and fine-tune ``model`` in place; returns what it did, on the trusted sample."""
        net = model.net
        before = self._accuracy(model)
        pruned = units_to_prune(net, model._tensor(self.clean_x_), self.clean_y_, self.margin)
        prune_units(net, pruned)
        after_pruning = self._accuracy(model)
        train_offline(net, self.clean_x_, self.clean_y_, self.rng_, FINE_TUNE_EPOCHS, lr=FINE_TUNE_LR)
        model._optimizer = model._make_optimizer()  # old moments would revive pruned weights
        return {
            "units": int(last_feature_layer(net)[0].weight.shape[0]),
            "units_pruned": len(pruned),
            "trusted_accuracy_before": before,
            "trusted_accuracy_pruned": after_pruning,
            "trusted_accuracy_after": self._accuracy(model),
        }

    def report(self) -> dict:
        return dict(self.figures_)

    def _accuracy(self, model) -> float:
        return float((model.predict_many(self.clean_x_) == self.clean_y_).mean())


def register(registry: dict) -> None:
    def build(config: DefenseConfig) -> FinePruning:
        if config.when != "once":
            raise ValueError('defense.when: fine-pruning runs "once" (at defense.at, default the end); '
                             f"got {config.when!r}")  # fmt: skip
        return FinePruning(config.margin, config.at)

    registry["fine-pruning"] = build
