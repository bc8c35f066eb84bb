"""Attacks and injection channels; each kind registers itself where it is written.

>>> from poisonsim.config import Scenario
>>> build_attack(Scenario.from_dict({"attack": {"kind": "label-flip", "rate": 0.3, "flip": "cyclic"}}).attack)
LabelFlip(flip='cyclic')
"""

from __future__ import annotations

from poisonsim.attacks.backdoor import BadNets, Blended
from poisonsim.attacks.base import Attack, AttackerKnowledge, NoAttack
from poisonsim.attacks.centroid_shift import CentroidShift
from poisonsim.attacks.label_flip import LabelFlip
from poisonsim.attacks.schedule import FrontRunning, Schedule
from poisonsim.attacks.targeted import Targeted


def build_attack(section) -> Attack:
    """The attack a scenario's ``[attack]`` section names."""
    return section.build()


def build_schedule(section, snapshot_every: int = 0) -> Schedule | FrontRunning:
    """The attacker's turns, from the section's channel: by rate, bursts before each snapshot, or the share
    of references it controls."""
    return section.build("channel").turns_schedule(snapshot_every)


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
