"""Attacks, one module per family, and the registry that builds them by kind.

>>> from simulator.config import AttackConfig
>>> build_attack(AttackConfig(kind="label-flip", rate=0.3, flip="cyclic"))
LabelFlip(flip='cyclic')
"""

from __future__ import annotations

from simulator.attacks.backdoor import BadNets, Blended
from simulator.attacks.base import Attack, AttackerKnowledge
from simulator.attacks.centroid_shift import CentroidShift
from simulator.attacks.label_flip import LabelFlip
from simulator.attacks.schedule import FrontRunning, Schedule
from simulator.attacks.targeted import Targeted
from simulator.config import AttackConfig


class NoAttack(Attack):
    """The clean baseline: the attacker never gets a turn."""

    def poison(self, x, y, rng):
        raise RuntimeError("no attack: poison() is never called")


def build_attack(config: AttackConfig) -> Attack:
    """The attack a scenario's ``[attack]`` section names."""
    if config.kind == "none":
        return NoAttack()
    if config.kind == "label-flip":
        return LabelFlip(flip=config.flip)
    if config.kind == "targeted":
        return Targeted(config.target_class, config.target_point, config.target_count, config.spread)
    if config.kind == "centroid-shift":
        return CentroidShift(config.target_point, config.target_distance)
    trigger = config.trigger
    if config.kind == "badnets":
        return BadNets(config.target_class, trigger.size, trigger.position, trigger.value)
    if config.kind == "blended":
        return Blended(config.target_class, trigger.pattern, trigger.alpha)
    if config.kind == "gradient-alignment":
        from simulator.attacks.gradient_alignment import GradientAlignment

        return GradientAlignment(config.target_class, config.target_count, config.poisons, config.eps,
                                 config.steps, config.restarts, config.supplier_events)  # fmt: skip
    if config.kind == "malicious-training":
        from simulator.attacks.supply_chain import MaliciousTraining

        return MaliciousTraining(config.target_class, trigger.size, trigger.position, trigger.value,
                                 config.supplier_events, config.poison_weight)  # fmt: skip
    if config.kind == "malicious-architecture":
        from simulator.attacks.supply_chain import MaliciousArchitecture

        return MaliciousArchitecture(config.target_class, trigger.size, trigger.position, trigger.value,
                                     config.supplier_events)  # fmt: skip
    raise ValueError(f"attack.kind: unknown attack {config.kind!r}")


def build_schedule(config: AttackConfig, snapshot_every: int = 0) -> Schedule | FrontRunning:
    """The attacker's turns: by rate, bursts before each snapshot, or at the share of references it controls."""
    if config.channel == "front-running":
        return FrontRunning(snapshot_every, config.burst_size, config.lead, config.start, config.budget)
    if config.channel == "split-view":
        return Schedule(config.controlled_share, config.start, config.budget)
    return Schedule(config.rate, config.start, config.budget, config.schedule, config.burst_length)


__all__ = [
    "Attack",
    "AttackerKnowledge",
    "BadNets",
    "Blended",
    "CentroidShift",
    "FrontRunning",
    "LabelFlip",
    "NoAttack",
    "Schedule",
    "Targeted",
    "build_attack",
    "build_schedule",
]
