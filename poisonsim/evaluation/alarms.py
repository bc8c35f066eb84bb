"""Drift alarms against the truth: detection delay, false alarms, missed attacks.

A defense with drift detectors says where each fired (``Defense.alarms()``:
events into the stream, the event that fired included). Only the evaluator
knows where the attack began; it scores the alarms here:

- ``false_alarms``: alarms before the attack's first event (all of them on a
  clean stream), and ``false_alarms_per_10k``: per 10,000 of those clean
  events (an always-firing detector: 10,000);
- ``detection_delay``: events from the attack's first event to the first alarm
  at or after it (1: the first poison event itself fired); ``missed``: an
  attack ran and nothing fired after it began; ``attack_alarms_per_10k``:
  alarms from the attack's start on, per 10,000 events (what provoking
  bursts aim to raise);
- ``displacement_at_alarm``: for a detector model, how far its centroid had
  moved toward ``A`` (radii) when that first alarm fired.

>>> alarm_figures([300, 12_050, 12_400], attack_start=10_000, events=50_000)
{'alarms': 3, 'false_alarms': 1, 'false_alarms_per_10k': 1.0, 'detection_delay': 2050, 'missed': False, \
'attack_alarms_per_10k': 0.5}
>>> alarm_figures([], attack_start=None, events=20_000)["false_alarms_per_10k"]
0.0
"""

from __future__ import annotations

import numpy as np

PER = 10_000  # false alarms are counted per this many clean events


def alarm_figures(positions, attack_start: int | None, events: int) -> dict:
    """Figures of one detector's alarm ``positions`` (events into the stream, 1-based) in a stream of
    ``events``, whose attack began at event index ``attack_start`` (``None``: a clean stream)."""
    positions = np.asarray(positions, dtype=np.int64)
    clean = events if attack_start is None else attack_start
    false = int((positions <= clean).sum())
    figures = {
        "alarms": int(len(positions)),
        "false_alarms": false,
        "false_alarms_per_10k": PER * false / clean if clean else None,
    }
    if attack_start is not None:
        after = positions[positions > attack_start]
        figures["detection_delay"] = int(after[0] - attack_start) if len(after) else None
        figures["missed"] = not len(after)
        attacked = events - attack_start
        figures["attack_alarms_per_10k"] = PER * len(after) / attacked if attacked > 0 else None
    return figures


def first_alarm_after(positions, attack_start: int | None) -> int | None:
    """The first alarm at or after the attack's first event (``None``: none yet, or no attack)."""
    if attack_start is None:
        return None
    after = [p for p in positions if p > attack_start]
    return after[0] if after else None
