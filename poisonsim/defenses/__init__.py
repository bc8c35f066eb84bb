"""Defenses, one module per family; each kind registers itself in :data:`poisonsim.registry.DEFENSES`."""

from __future__ import annotations

from poisonsim.defenses.base import TRUSTED_EVENTS, DefenderKnowledge, Defense

__all__ = ["TRUSTED_EVENTS", "Defense", "DefenderKnowledge"]
