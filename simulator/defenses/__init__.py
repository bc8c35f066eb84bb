"""Defenses, one module per family, and the registry that builds them by kind.

>>> from simulator.config import DefenseConfig
>>> [type(d).__name__ for d in build_defenses(())]
[]
"""

from __future__ import annotations

import importlib
from typing import Callable

from simulator.config import DefenseConfig
from simulator.defenses.base import TRUSTED_EVENTS, Defense, DefenderKnowledge

# kind -> constructor from a DefenseConfig; each family module registers its kinds here
REGISTRY: dict[str, Callable[[DefenseConfig], Defense]] = {}


def build_defenses(configs: tuple[DefenseConfig, ...]) -> list[Defense]:
    """The defenses a scenario's ``[[defense]]`` tables name, in order."""
    defenses = []
    for config in configs:
        if config.kind not in REGISTRY:
            raise ValueError(f"defense.kind: {config.kind!r} is not available (known: {', '.join(sorted(REGISTRY))})")
        defense = REGISTRY[config.kind](config)
        defense.kind = config.kind
        defenses.append(defense)
    return defenses


def _on_first_use(module: str, kind: str) -> Callable[[DefenseConfig], Defense]:
    """Build ``kind`` from ``simulator.defenses.<module>``, imported only then (the neural ones need torch)."""

    def build(config: DefenseConfig) -> Defense:
        registry: dict = {}
        importlib.import_module(f"simulator.defenses.{module}").register(registry)
        return registry[kind](config)

    return build


for _module, _kinds in (
    ("window", ("outlier-rejection", "robust-centroid", "source-quota", "fpr-reset")),
    ("drift", ("drift-reset",)),
    ("strip", ("strip",)),
    ("isolation", ("isolation",)),
    ("pruning", ("fine-pruning",)),
    ("analysis", ("activation-analysis",)),
):
    REGISTRY.update({kind: _on_first_use(_module, kind) for kind in _kinds})

__all__ = ["REGISTRY", "TRUSTED_EVENTS", "Defense", "DefenderKnowledge", "build_defenses"]
