"""What every model, attack and defense shares: parameters from ``__init__``.

As in river, parameters are defined once, in ``__init__``, and stored under
the same names; ``clone()`` and ``repr()`` are derived from that signature.

>>> class Thing(Estimator):
...     def __init__(self, size: int = 3, seed: int = 0):
...         self.size = size
...         self.seed = seed
>>> Thing(size=5)
Thing(size=5, seed=0)
>>> Thing(size=5).clone(size=7)
Thing(size=7, seed=0)
"""

from __future__ import annotations

import inspect
from typing import Any


class Estimator:
    """Base with ``clone``, ``params`` and a signature-derived ``repr``; ``offers``: what the kind can do
    (tags of :data:`poisonsim.capabilities.CAPABILITIES`)."""

    offers: frozenset[str] = frozenset()

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    @property
    def params(self) -> dict[str, Any]:
        """The constructor arguments this object was built with."""
        return {name: getattr(self, name) for name in self._param_names()}

    def clone(self, **changes: Any) -> Estimator:
        """A fresh, untrained copy with the same (or changed) parameters."""
        return type(self)(**{**self.params, **changes})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
