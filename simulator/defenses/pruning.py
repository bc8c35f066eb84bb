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

``when = "once"``: one repair at event ``at`` (default: the stream's end).
``when = "drift"``: a river detector (``detector``) watches each event's
signal, read before the net learns the event (test-then-train), and a
repair follows an alarm that says the signal got worse, at most once per
``every`` events (the cool-down). Signals, as ``drift-reset``'s for a net:

- ``distance``: how far the event lies from its label, the cross-entropy of
  its label under the net; mislabelled poison raises it (alarm on a rise);
- ``confidence``: the top probability minus the runner-up (alarm on a drop).

The detector starts fresh after each alarm; an alarm whose recent signal is
better than before (the net still improving) only restarts it. ``report()``
gives every repair: its event and accuracy on the trusted sample before,
after pruning and after fine-tuning.

>>> import torch
>>> from simulator.models.nets import build_net
>>> net = build_net("cnn", 64, 10, 16, 8)
>>> len(mean_activations(net, torch.rand(20, 64)))  # 32 channels x 4 x 4 positions
512
>>> prune_units(net, [0, 3])
>>> mean_activations(net, torch.rand(20, 64))[[0, 3]].tolist()
[0.0, 0.0]
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Annotated

import numpy as np
import torch
from torch import nn

from simulator.defenses.base import require, At, DefenderKnowledge, Defense, DriftDetector, Every, Signal, check_choices
from simulator.registry import DEFENSES, Key
from simulator.defenses.drift import DETECTORS, DriftMonitor
from simulator.events import EventBatch
from simulator.models.nets import train_offline

STEP_SHARE = 0.05  # of the layer's units, pruned per step
FINE_TUNE_EPOCHS = 20
FINE_TUNE_LR = 1e-3
RECENT = 64  # events whose mean signal an alarm compares with the events before them
SIGNALS = {"distance": 1.0, "confidence": -1.0}  # sign: +1 a rise is worse, -1 a drop is worse


def pruned_layer(net: nn.Module) -> nn.Linear:
    """The dense layer whose inputs are pruned: the first after the last convolution, else the head."""
    layers = list(net.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    if convs:
        return next(m for m in layers[convs[-1] :] if isinstance(m, nn.Linear))
    return net.head


def _mask_inputs(layer: nn.Linear, args: tuple) -> tuple:
    return (args[0] * layer.unit_mask,)


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
    if not hasattr(layer, "unit_mask"):  # a plain attribute and a module-level hook: both survive deepcopy
        layer.unit_mask = torch.ones(layer.in_features, device=layer.weight.device)
        layer.register_forward_pre_hook(_mask_inputs)
    with torch.no_grad():
        layer.unit_mask[units] = 0.0
        layer.weight[:, units] = 0.0


def pruned(net: nn.Module) -> np.ndarray:
    """Indices of the units pruned so far."""
    mask = getattr(pruned_layer(net), "unit_mask", None)
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


@DEFENSES.register("fine-pruning", requires=("torch-net", "embeddings"), examples=[{"at": 150}, {"when": "drift", "every": 50}])
class FinePruning(Defense):
    """Prune dormant units and fine-tune on the trusted sample, once or on drift alarms."""

    def __init__(
        self,
        margin: Annotated[float, Key("clean accuracy drop allowed while pruning", gt=0, lt=1)] = 0.03,
        at: At = None,
        when: Annotated[str, Key("repair once (at `at`), or on drift alarms", choices=("once", "drift"))] = "once",
        detector: DriftDetector = "adwin",
        signal: Signal = "distance",
        every: Every = 500,
    ):  # fmt: skip
        self.margin = margin
        self.at = at
        self.when = when
        self.detector = detector
        self.signal = signal
        self.every = every
        check_choices(when=(when, ("once", "drift")), detector=(detector, DETECTORS), signal=(signal, SIGNALS))
        if when == "drift" and at is not None:
            raise ValueError('defense.at: fine-pruning repairs at drift alarms with when = "drift"; leave `at` unset')

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> FinePruning:
        require(model, "fine-pruning", "embeddings")
        self.model_ = model
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self.at_ = self.at if self.at is not None else knowledge.n_events
        self.rng_ = rng
        self.repairs_: list[dict] = []
        self.alarm_events_: list[int] = []
        if self.when == "drift":
            self.seed_ = int(rng.integers(2**31))  # KSWIN samples its reference window: seeded, as in drift-reset
            self.due_ = False  # an alarm waits out the cool-down, then repairs
            self.restarts_ = 0
            self._restart_detector()
        return self

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Read the watched signal before the net learns the batch."""
        if self.when == "drift":
            self._read = (batch.ids, self.signal_values(batch, model))
        return None

    def signal_values(self, batch: EventBatch, model) -> np.ndarray:
        """The watched signal for each event of ``batch`` under the net as it is now."""
        if self.signal == "distance":
            return model.losses_many(batch.x, batch.y)
        top = np.sort(model.predict_proba_many(batch.x), axis=1)[:, -2:]
        return (top[:, -1] - top[:, 0]).astype(np.float64)

    def update(self, batch, predictions, slots, model, position: int) -> None:
        if self.when == "once":
            if not self.repairs_ and self.at_ is not None and position >= self.at_:
                self.repair(model, position)
            return
        first, (ids, values) = position - len(batch), self._read
        if len(ids) != len(batch):  # a gate before us kept some events from the net
            values = values[np.isin(ids, batch.ids)]
        for i, value in enumerate(values):
            alarm = self.detector_.update(float(value))
            self._recent.append(float(value))
            self._total += float(value)
            self._count += 1
            if alarm:
                if self._got_worse():
                    self.due_ = True
                    self.alarm_events_.append(first + i + 1)
                self._restart_detector()
        if self.due_ and (not self.repairs_ or position - self.repairs_[-1]["event"] >= self.every):
            self.repair(model, position)
            self.due_ = False
            self._restart_detector()  # the repaired net reads the signal afresh

    def _got_worse(self) -> bool:
        """Is the mean signal of the last events worse than that of the events before them?"""
        recent = float(np.mean(self._recent))
        if self._count <= len(self._recent):
            return False
        before = (self._total - recent * len(self._recent)) / (self._count - len(self._recent))
        return SIGNALS[self.signal] * (recent - before) > 0

    def _restart_detector(self, fed=()) -> None:
        seed, self.restarts_ = self.seed_ + self.restarts_, self.restarts_ + 1
        self.detector_ = DriftMonitor(self.detector, seed, fed)
        self._recent: deque = deque(maxlen=RECENT)
        self._total, self._count = 0.0, 0

    def repair(self, model, position: int) -> dict:
        """Prune and fine-tune ``model`` in place; returns (and keeps) what it did, on the trusted sample."""
        net = model.net
        before = self._accuracy(model)
        units = units_to_prune(net, model.to_tensor(self.clean_x_), self.clean_y_, self.margin)
        prune_units(net, units)
        after_pruning = self._accuracy(model)
        train_offline(net, self.clean_x_, self.clean_y_, self.rng_, FINE_TUNE_EPOCHS, lr=FINE_TUNE_LR)
        model.reset_optimizer()  # fresh moments for the online learner
        figures = {
            "event": position,
            "units_pruned": len(units),
            "trusted_accuracy_before": before,
            "trusted_accuracy_pruned": after_pruning,
            "trusted_accuracy_after": self._accuracy(model),
        }
        self.repairs_.append(figures)
        self.units_ = int(pruned_layer(net).in_features)
        self.units_pruned_ = len(pruned(net))
        return figures

    def report(self) -> dict:
        figures: dict = {"repairs": [dict(r) for r in self.repairs_]}
        if self.repairs_:
            figures.update(units=self.units_, units_pruned=self.units_pruned_)
        if self.when == "once" and self.repairs_:
            first = self.repairs_[0]
            figures.update({k: v for k, v in first.items() if k.startswith("trusted_")}, at_event=first["event"])
        if self.when == "drift":
            figures.update(alarms=len(self.alarm_events_), alarm_events=self.alarm_events_[:100])
        return figures

    def get_state(self) -> dict:
        state = {"pruned": pruned(self.model_.net), "repairs": [dict(r) for r in self.repairs_],
                 "alarm_events": list(self.alarm_events_), "rng": self.rng_.bit_generator.state}  # fmt: skip
        if self.when == "drift":
            state["drift"] = {
                "fed": self.detector_.fed(), "recent": list(self._recent),
                "total": self._total, "count": self._count, "due": self.due_, "restarts": self.restarts_,
            }  # fmt: skip
        return state

    def set_state(self, state: dict, model) -> None:
        if len(state["pruned"]):
            prune_units(model.net, np.asarray(state["pruned"], dtype=np.int64).tolist())  # the mask, back on the net
        self.repairs_, self.alarm_events_ = [dict(r) for r in state["repairs"]], list(state["alarm_events"])
        if self.repairs_:
            self.units_, self.units_pruned_ = int(pruned_layer(model.net).in_features), len(pruned(model.net))
        self.rng_.bit_generator.state = state["rng"]
        if self.when == "drift":
            saved = state["drift"]
            self.restarts_ = saved["restarts"] - 1
            self._restart_detector(saved["fed"])
            self._recent.extend(saved["recent"])
            self._total, self._count, self.due_ = saved["total"], saved["count"], saved["due"]

    def _accuracy(self, model) -> float:
        return float((model.predict_many(self.clean_x_) == self.clean_y_).mean())
