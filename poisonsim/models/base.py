"""What the learner asks of every model, declared once with its defaults.

A model learns test-then-train: :meth:`Model.process_many` predicts each
event with the current state, then learns it. What a model offers to
attacks and defenses is stated in its ``offers`` (``window``, ``alarms``,
``centroid-state``, ``classes``, ``torch-net``, ``probabilities``,
``embeddings``, ``losses``: :mod:`poisonsim.capabilities`); a kind that needs
one says so when it is registered (``requires``), and the scenario is
checked once, up front. The hooks each capability promises are declared
below with their defaults.

A white-box attacker's turn (:class:`AttackerHook`) is the attacker reading
the model's public state at that moment (centroid and radius) and writing
its input with its own compiled rule; the model only hands over control at
the rows the attacker named and never learns why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from poisonsim.base import Estimator
from poisonsim.models.inputs import OneAtATime

NORMS = ("none", "batch")  # what a net may put after each hidden layer: nothing, or batch norm


@dataclass(frozen=True)
class AttackerHook:
    """Rows a white-box attacker fills in when they are delivered, with ``rule(center, radius, params, out)``:
    a numba ``njit`` function of float64 arrays (C-contiguous) and a float64 radius that writes ``out`` and
    returns nothing."""

    rows: np.ndarray  # bool mask over the batch: the attacker's own turns
    rule: Callable  # a numba-compiled function
    params: np.ndarray


class Model(OneAtATime, Estimator):
    """Base of every model kind: the hooks the learner calls, with their defaults; ``learn_one`` and
    ``predict_one`` take river's dict rows too (:class:`~poisonsim.models.inputs.OneAtATime`)."""

    kind: str = ""
    needs_sources: bool = False  # True: process_many wants the events' public producer ids (now, under its options)
    # "centroid-state": the centroid and radius a white-box attacker reads
    center: np.ndarray | None = None
    radius_: float = 0.0
    # "window": the window defenses' view of the model (see poisonsim.models.options)
    refusals_: np.ndarray | None = None  # after process_many: why each event was not learned (None: not a window)
    frozen: bool = False
    # "torch-net": the net (a torch.nn.Module) and the device it runs on
    net = None
    device_ = None

    @property
    def warmup_events(self) -> int:
        """Clean events learned before the stream starts."""
        return 0

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def learn_many(self, X: np.ndarray, Y=None) -> None:
        self.process_many(X, Y)

    def process_many(
        self, X: np.ndarray, Y=None, hook: AttackerHook | None = None, sources: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Test-then-train each event in order; returns ``(predictions, slots)`` (slots: window models)."""
        raise NotImplementedError

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """``probabilities``: each row's class probabilities."""
        raise NotImplementedError(f"{type(self).__name__} offers no probabilities")

    def embed_many(self, X: np.ndarray) -> np.ndarray:
        """``embeddings``: each row's penultimate-layer activations."""
        raise NotImplementedError(f"{type(self).__name__} offers no embeddings")

    def losses_many(self, X: np.ndarray, Y) -> np.ndarray:
        """``losses``: each row's training loss under the model as it is."""
        raise NotImplementedError(f"{type(self).__name__} offers no losses")

    def start_from(self, supplied, how: str | None = None) -> None:
        """``torch-net``: start from a model an attacker supplied (``supplies-model``) instead of pre-training."""
        raise NotImplementedError(f"{type(self).__name__} cannot start from a supplied model")

    @property
    def centers(self) -> np.ndarray:
        """``window``: the centroid of each window, one row per window."""
        raise NotImplementedError(f"{type(self).__name__} offers no windows")

    @property
    def window_counts(self) -> np.ndarray:
        """``window``: points learned so far, per window."""
        raise NotImplementedError(f"{type(self).__name__} offers no windows")

    def configure(self, **options) -> None:
        """``window``: switch the window defenses' options (see :class:`~poisonsim.models.options.WindowOptions`)."""
        raise NotImplementedError(f"{type(self).__name__} offers no windows")

    def get_state(self) -> dict:
        """Mutable state: numpy arrays and plain values (copies), for a checkpoint."""
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""
        raise NotImplementedError
