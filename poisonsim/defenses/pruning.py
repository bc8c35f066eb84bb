"""Fine-pruning (Liu et al. 2018): prune dormant units, then fine-tune on clean data.

Backdoor behaviour tends to live in units that clean inputs leave dormant.
The pruned units are the inputs of the net's first dense layer after its last
convolution: for the CNN, the last convolution's pooled activations, one unit
per channel and position (an MLP: its last hidden layer). On 8x8 digits whole
channels are all busy on clean inputs, but a corner patch lights up corner
positions that clean digits leave dark. A repair ranks the units by their mean
activation on the defender's trusted clean sample, prunes the least active in
steps of 5% of the layer as long as accuracy on that sample stays within
``margin`` of where the repair started, then fine-tunes the net on the sample.
A pruned unit is masked at the dense layer's input (its weights set to 0 as
well), so neither fine-tuning nor further online learning revives it.

When to repair is :class:`poisonsim.defenses.repair.ScheduledRepair`'s:
``when = "once"``, one repair at event ``at`` (default: the stream's end);
``when = "drift"``, a repair after a drift monitor (``monitor``) on each
event's ``signal`` (``distance``: the cross-entropy of its label under the
net, alarm on a rise; ``confidence``: top probability minus runner-up, alarm
on a drop) says the net got worse, at most once per ``every`` events.
``report()`` gives every repair: its event and accuracy on the trusted
sample before, after pruning and after fine-tuning.

>>> import torch
>>> from poisonsim.models.nets import build_net
>>> net = build_net("cnn", 64, 10, 16, 8)
>>> len(mean_activations(net, torch.rand(20, 64)))  # 32 channels x 4 x 4 positions
512
>>> prune_units(net, [0, 3])
>>> mean_activations(net, torch.rand(20, 64))[[0, 3]].tolist()
[0.0, 0.0]
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np

from poisonsim.defenses.base import At, DefenderKnowledge, Every, MonitorKind, Signal, When, require
from poisonsim.defenses.repair import ScheduledRepair
from poisonsim.lazy import lazy
from poisonsim.registry import DEFENSES, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

STEP_SHARE = 0.05  # of the layer's units, pruned per step
FINE_TUNE_EPOCHS = 20
FINE_TUNE_LR = 1e-3


def pruned_layer(net: nn.Module) -> nn.Linear:
    """The dense layer whose inputs are pruned: the first after the last convolution, else the head."""
    layers = list(net.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    if convs:
        return next(m for m in layers[convs[-1] :] if isinstance(m, nn.Linear))
    return net.head


def _mask_inputs(layer: nn.Linear, args: tuple) -> tuple:
    return (args[0] * layer.unit_mask,)


def unit_mask(layer: nn.Module) -> torch.Tensor | None:
    """A pruned layer's unit mask (0: pruned); ``None`` for a layer that was never pruned (no mask hook on it)."""
    return layer.unit_mask if any(hook is _mask_inputs for hook in layer._forward_pre_hooks.values()) else None


def mean_activations(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """Mean activation of each prunable unit on ``x`` (0 for a pruned unit)."""
    layer, seen = pruned_layer(net), []
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        net.eval()
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return seen[0].mean(dim=0).cpu().numpy()


def prune_units(net: nn.Module, units) -> None:
    """Silence units for good: masked at the dense layer's input, their weights there set to 0."""
    layer, units = pruned_layer(net), list(units)
    if unit_mask(layer) is None:  # a plain attribute and a module-level hook: both survive deepcopy
        layer.unit_mask = torch.ones(layer.in_features, device=layer.weight.device)
        layer.register_forward_pre_hook(_mask_inputs)
    with torch.no_grad():
        layer.unit_mask[units] = 0.0
        layer.weight[:, units] = 0.0


def unprune(layer: nn.Module) -> None:
    """Take a layer's unit mask and its hook off again (a copy of the net from before it was pruned).

    >>> from poisonsim.models.nets import build_net
    >>> net = build_net("mlp", n_features=4, n_classes=3, hidden=8, image_side=None)
    >>> prune_units(net, [0, 1])
    >>> unprune(net.head)
    >>> unit_mask(net.head) is None, len(net.head._forward_pre_hooks), "unit_mask" in vars(net.head)
    (True, 0, False)
    """
    for key, hook in list(layer._forward_pre_hooks.items()):
        if hook is _mask_inputs:
            del layer._forward_pre_hooks[key]
    del layer.unit_mask


def pruned(net: nn.Module) -> np.ndarray:
    """Indices of the units pruned so far."""
    mask = unit_mask(pruned_layer(net))
    return np.empty(0, dtype=np.int64) if mask is None else np.flatnonzero(mask.cpu().numpy() == 0)


def units_to_prune(net: nn.Module, x: torch.Tensor, y: np.ndarray, margin: float) -> list[int]:
    """The most dormant live units whose removal keeps accuracy on ``(x, y)`` within ``margin`` of the start."""
    activations = mean_activations(net, x)
    live = np.setdiff1d(np.arange(len(activations)), pruned(net))
    order = live[np.argsort(activations[live], kind="stable")]

    def accuracy(candidate: nn.Module) -> float:
        candidate.eval()
        with torch.no_grad():
            return float((candidate(x).argmax(dim=1).cpu().numpy() == y).mean())

    base = accuracy(net)
    step = max(1, round(STEP_SHARE * len(activations)))
    chosen: list[int] = []
    for k in range(step, len(order), step):
        candidate = copy.deepcopy(net)
        prune_units(candidate, order[:k])
        if base - accuracy(candidate) > margin:
            break
        chosen = order[:k].tolist()
    return chosen


@DEFENSES.register(
    "fine-pruning", requires=("torch-net", "embeddings"), examples=[{"at": 150}, {"when": "drift", "every": 50}]
)
class FinePruning(ScheduledRepair):
    """Prune dormant units and fine-tune on the trusted sample, once or on drift alarms."""

    kind = "fine-pruning"

    def __init__(
        self,
        margin: Annotated[float, Key("clean accuracy drop allowed while pruning", gt=0, lt=1)] = 0.03,
        at: At = None,
        when: When = "once",
        monitor: MonitorKind = "adwin",
        signal: Signal = "distance",
        every: Every = 500,
    ):
        self.margin = margin
        super().__init__(at=at, when=when, monitor=monitor, signal=signal, every=every)

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> FinePruning:
        require(model, "fine-pruning", "embeddings")
        return super().fit(knowledge, model, rng)

    def repair(self, model, position: int) -> dict:
        """Prune and fine-tune ``model`` in place; returns what it did, on the trusted sample."""
        net = model.net
        before = self.trusted_accuracy(model)
        units = units_to_prune(net, model.to_tensor(self.clean_x_), self.clean_y_, self.margin)
        prune_units(net, units)
        after_pruning = self.trusted_accuracy(model)
        nets.train_offline(net, self.clean_x_, self.clean_y_, self.rng_, FINE_TUNE_EPOCHS, lr=FINE_TUNE_LR)
        model.reset_optimizer()  # fresh moments for the online learner
        figures = {
            "units_pruned": len(units),
            "trusted_accuracy_before": before,
            "trusted_accuracy_pruned": after_pruning,
            "trusted_accuracy_after": self.trusted_accuracy(model),
        }
        self.units_ = int(pruned_layer(net).in_features)
        self.units_pruned_ = len(pruned(net))
        return figures

    def report(self) -> dict:
        figures = super().report()
        if self.repairs_:
            figures.update(units=self.units_, units_pruned=self.units_pruned_)
        return figures

    def get_state(self) -> dict:
        return {"pruned": pruned(self.model_.net), **super().get_state()}

    def set_state(self, state: dict, model) -> None:
        if len(state["pruned"]):
            prune_units(model.net, np.asarray(state["pruned"], dtype=np.int64).tolist())  # the mask, back on the net
        super().set_state(state, model)
        if self.repairs_:
            self.units_, self.units_pruned_ = int(pruned_layer(model.net).in_features), len(pruned(model.net))
