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


# neural-net defenses: runtime detection, isolation and unlearning, model analysis and repair
from simulator.defenses import analysis as _analysis  # noqa: E402
from simulator.defenses import drift as _drift  # noqa: E402  (window defenses and drift alarms)
from simulator.defenses import isolation as _isolation  # noqa: E402
from simulator.defenses import pruning as _pruning  # noqa: E402
from simulator.defenses import strip as _strip  # noqa: E402
from simulator.defenses import window as _window  # noqa: E402

for _module in (_strip, _isolation, _pruning, _analysis, _window, _drift):
    _module.register(REGISTRY)

__all__ = ["REGISTRY", "TRUSTED_EVENTS", "Defense", "DefenderKnowledge", "build_defenses"]
