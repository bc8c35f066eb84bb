"""What the learner asks of every model, declared once with its defaults.

A model learns test-then-train: :meth:`Model.process_many` predicts each
event with the current state, then learns it. What a model offers to
attacks and defenses is stated in :attr:`Model.offers` (``window``,
``centroid-state``, ``classes``, ``torch-net``, ``probabilities``,
``embeddings``, ``losses``); a kind that needs one says so when it is
registered (``requires``), and the scenario is checked once, up front.

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


@dataclass(frozen=True)
class AttackerHook:
    """Rows a white-box attacker fills in when they are delivered, with ``rule(center, radius, params, out)``."""

    rows: np.ndarray  # bool mask over the batch: the attacker's own turns
    rule: Callable  # a numba-compiled function
    params: np.ndarray


class Model(OneAtATime, Estimator):
    """Base of every model kind: the hooks the learner calls, with their defaults; ``learn_one`` and
    ``predict_one`` take river's dict rows too (:class:`~poisonsim.models.inputs.OneAtATime`)."""

    kind: str = ""
    offers: frozenset[str] = frozenset()
    needs_sources: bool = False  # True: process_many wants the events' public producer ids

    @property
    def warmup_events(self) -> int:
        """Clean events learned before the stream starts."""
        return 0

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def learn_many(self, X: np.ndarray, Y=None) -> None:
        self.process_many(X, Y)

    def process_many(self, X: np.ndarray, Y=None, hook: AttackerHook | None = None,
                     sources: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """Test-then-train each event in order; returns ``(predictions, slots)`` (slots: window models)."""
        raise NotImplementedError

    def get_state(self) -> dict:
        """Mutable state: numpy arrays and plain values (copies), for a checkpoint."""
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned."""
        raise NotImplementedError
