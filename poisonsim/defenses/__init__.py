"""Defenses, one module per family; each kind registers itself in :data:`poisonsim.registry.DEFENSES`.

>>> [type(d).__name__ for d in build_defenses(())]
[]
"""

from __future__ import annotations

from poisonsim.defenses.base import TRUSTED_EVENTS, DefenderKnowledge, Defense


def build_defenses(sections) -> list[Defense]:
    """The defenses a scenario's ``[[defense]]`` tables name, in order."""
    return [section.build() for section in sections]


__all__ = ["TRUSTED_EVENTS", "Defense", "DefenderKnowledge", "build_defenses"]
