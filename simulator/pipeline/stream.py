"""The merged stream: benign events with the attacker's mixed in.

Benign events come from the source; at the attacker's turns (see
:class:`~simulator.attacks.schedule.Schedule`) the attacker draws clean
samples of its own and poisons them. Each batch comes with its ground truth.

>>> import numpy as np
>>> from simulator.attacks import LabelFlip, Schedule
>>> from simulator.sources import Blobs
>>> src = Blobs(n_classes=2).load(np.random.default_rng(0))
>>> attack = LabelFlip("cyclic").fit(attacker_knowledge(src), np.random.default_rng(1))
>>> stream = MergedStream(src, attack, Schedule(rate=0.5), seed=2)
>>> batch, truth = stream.next_batch(1000)
>>> len(batch), bool(0.45 < truth.is_poison.mean() < 0.55), int(batch.ids[-1])
(1000, True, 999)
"""

from __future__ import annotations

import numpy as np

from simulator.attacks import Attack, AttackerKnowledge, Schedule
from simulator.events import ATTACKER_SOURCE, BENIGN_SOURCE, EventBatch, Truth
from simulator.pipeline.content import content_hash
from simulator.sources import Source


def attacker_knowledge(source: Source, center=None, radius=None, model=None) -> AttackerKnowledge:
    """What the attacker is granted: its own draws, the held-out pool, the detector's c0 and r,
    and for a neural victim a copy of it as it starts (or its untrained architecture)."""
    return AttackerKnowledge(
        draw=source.sample,
        n_classes=source.n_classes,
        scale=source.scale,
        pool_x=source.test_x,
        pool_y=source.test_y,
        center=center,
        radius=radius,
        image_side=source.image_side,
        model=model,
    )


class MergedStream:
    """Produces consecutive batches of the merged stream, reproducibly from ``seed``."""

    def __init__(self, source: Source, attack: Attack, schedule: Schedule, seed: int | np.random.SeedSequence,
                 split_view: bool = False):  # fmt: skip
        self.source = source
        self.attack = attack
        self.schedule = schedule
        self.split_view = split_view  # events carry the content hash seen at vetting; turns swap content after it
        benign, mix, attacker = np.random.SeedSequence(seed).spawn(3) if isinstance(seed, int) else seed.spawn(3)
        self._benign_rng = np.random.default_rng(benign)
        self._mix_rng = np.random.default_rng(mix)
        self._attacker_rng = np.random.default_rng(attacker)
        self.position = 0
        self.attacker_events = 0

    def next_batch(self, m: int) -> tuple[EventBatch, Truth]:
        turns = self.schedule.turns(self._mix_rng, self.position, m, self.attacker_events)
        n_attack = int(turns.sum())
        x = np.empty((m, self.source.n_features), dtype=np.float32)
        y = np.empty(m, dtype=np.int64)
        x[~turns], y[~turns] = self.source.sample(self._benign_rng, m - n_attack)
        vetted_x, vetted_y = x.copy(), y.copy()  # split-view: what the vetting stage saw (filled below)
        if n_attack:
            clean_x, clean_y = self.source.sample(self._attacker_rng, n_attack)
            vetted_x[turns], vetted_y[turns] = clean_x, clean_y
            x[turns], y[turns] = self.attack.poison(clean_x, clean_y, self._attacker_rng)
        # a split-view attacker's references sit in the benign list: nothing marks them apart
        source = np.where(turns & ~self.split_view, ATTACKER_SOURCE, BENIGN_SOURCE)
        pin = content_hash(vetted_x, vetted_y) if self.split_view else None
        batch = EventBatch.from_arrays(x, y, first_id=self.position, source=source, pin=pin)
        adaptive = turns if self.attack.adaptive else np.zeros(m, dtype=bool)
        self.position += m
        self.attacker_events += n_attack
        return batch, Truth(is_poison=turns, is_adaptive=adaptive)
