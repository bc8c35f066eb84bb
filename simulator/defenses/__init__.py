"""Defenses, one module per family, and the registry that builds them by kind.

>>> from simulator.config import DefenseConfig
>>> [type(d).__name__ for d in build_defenses(())]
[]
"""

from __future__ import annotations

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


__all__ = ["REGISTRY", "TRUSTED_EVENTS", "Defense", "DefenderKnowledge", "build_defenses"]
