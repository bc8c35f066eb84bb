"""The merged stream: benign events with the attacker's mixed in.

Benign events come from the source; at the attacker's turns (see
:class:`~poisonsim.attacks.schedule.Schedule`) the attacker draws clean
samples of its own and poisons them. Each batch comes with its ground truth.

The stream is made in fixed blocks, each from the same random streams in
the same order, and handed out in whatever sizes the caller asks for: the
events do not depend on the evaluation cadence, the batch size or how a
transport packs them. A block is :data:`BLOCK` events from a stored pool
(digits, MNIST, river's sets) and :data:`DRAWN_BLOCK` from a distribution
(``Source.stream_pool_size`` None: blobs), whose events cost so little to
make and to learn (a centroid detector, a few features) that numpy's cost
per call would otherwise dominate the run.

Every event carries a public source id. Benign traffic spreads over
``benign_sources`` ids; the attacker spreads its events over ``identities``
ids, which are ids that also carry benign traffic (``identity_pool =
"shared"``: compromised or look-alike accounts) or ids of its own that
nothing benign uses (``"own"``: a careless attacker, whose ids betray it).

>>> import numpy as np
>>> from poisonsim.attacks import LabelFlip, Schedule
>>> from poisonsim.sources import Blobs
>>> src = Blobs(n_classes=2).load(np.random.default_rng(0))
>>> attack = LabelFlip("cyclic").fit(attacker_knowledge(src), np.random.default_rng(1))
>>> stream = MergedStream(src, attack, Schedule(rate=0.5), seed=2)
>>> batch, truth = stream.next_batch(1000)
>>> len(batch), bool(0.45 < truth.is_poison.mean() < 0.55), int(batch.ids[-1])
(1000, True, 999)
>>> bool(np.isin(batch.source[truth.is_poison], batch.source[~truth.is_poison]).all())  # shared ids
True
"""

from __future__ import annotations

import numpy as np

from poisonsim.attacks import Attack, AttackerKnowledge, Schedule
from poisonsim.events import EventBatch, Truth
from poisonsim.models.window import MAX_SOURCES
from poisonsim.pipeline.content import content_hash
from poisonsim.sources import Source

BLOCK = 256  # events made at a time from a stored pool, whatever the batch sizes asked for
DRAWN_BLOCK = 4096  # from a distribution (see above)
IDENTITY_POOLS = ("shared", "own")


def attacker_knowledge(source: Source, center=None, radius=None, model=None, rate=None) -> AttackerKnowledge:
    """What the attacker is granted: its own draws, the held-out pool, the detector's c0 and r,
    for a neural victim a copy of it as it starts (or its untrained architecture), and its own share of
    the stream."""
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
        rate=rate,
    )


def source_id_count(benign_sources: int, identities: int, identity_pool: str) -> int:
    """Public source ids a stream uses: the benign ones, and the attacker's own when it has its own."""
    return benign_sources + (identities if identity_pool == "own" else 0)


class MergedStream:
    """Produces consecutive batches of the merged stream, reproducibly from ``seed``."""

    def __init__(
        self,
        source: Source,
        attack: Attack,
        schedule: Schedule,
        seed: int | np.random.SeedSequence,
        split_view: bool = False,
        benign_sources: int = 1,
        identities: int = 1,
        identity_pool: str = "shared",
    ):
        if identity_pool not in IDENTITY_POOLS:
            raise ValueError(f'attack.identity_pool: expected "shared" or "own", got {identity_pool!r}')
        if identity_pool == "shared" and identities > benign_sources:
            raise ValueError(
                f"attack.identities: {identities} shared ids need stream.benign_sources >= "
                f"{identities}, got {benign_sources}"
            )
        if source_id_count(benign_sources, identities, identity_pool) > MAX_SOURCES:
            raise ValueError(
                f"stream.benign_sources, attack.identities: at most {MAX_SOURCES} source ids in all, "
                f"got {benign_sources} benign and {identities} of the attacker's own"
            )
        self.source = source
        self.attack = attack
        self.schedule = schedule
        self.split_view = split_view  # events carry the content hash seen at vetting; turns swap content after it
        seq = np.random.SeedSequence(seed) if isinstance(seed, int) else seed
        benign, mix, attacker, ids = seq.spawn(4)
        self._benign_rng = np.random.default_rng(benign)
        self._mix_rng = np.random.default_rng(mix)
        self._attacker_rng = np.random.default_rng(attacker)
        self._ids_rng = np.random.default_rng(ids)
        self.benign_sources = benign_sources
        if identity_pool == "shared":
            self.identities = np.sort(self._ids_rng.choice(benign_sources, size=identities, replace=False))
        else:
            self.identities = np.arange(benign_sources, benign_sources + identities)
        self.block = BLOCK if source.stream_pool_size is not None else DRAWN_BLOCK
        self.position = 0  # events handed out
        self.attacker_events = 0  # attacker events made (blocks ahead of position included)
        self._made = 0  # events made
        self._ready: list[tuple[EventBatch, Truth]] = []  # made, not yet handed out
        self._white_box = "white-box" in attack.offers

    def next_batch(self, m: int) -> tuple[EventBatch, Truth]:
        """The next ``m`` events of the stream and their ground truth."""
        while self._made < self.position + m:
            self._ready.append(self._make_block())
        batch = EventBatch.concatenate([b for b, _ in self._ready])
        truth = Truth.concatenate([t for _, t in self._ready])
        rest = slice(m, len(batch))  # the ready events start at self.position
        self._ready = [(batch.select(rest), truth.select(rest))] if m < len(batch) else []
        self.position += m
        return batch.select(slice(0, m)), truth.select(slice(0, m))

    def _make_block(self) -> tuple[EventBatch, Truth]:
        m = self.block
        turns = self.schedule.turns(self._mix_rng, self._made, m, self.attacker_events)
        n_attack = int(turns.sum())
        benign = ~turns
        x = np.empty((m, self.source.n_features), dtype=np.float32)
        y = np.empty(m, dtype=np.int64)
        x[benign], y[benign] = self.source.sample(self._benign_rng, m - n_attack)
        pin = None
        if n_attack:
            clean_x, clean_y = self.source.sample(self._attacker_rng, n_attack)
            if self.split_view:  # what the vetting stage saw: the attacker's clean draws at its turns
                vetted_x, vetted_y = x.copy(), y.copy()
                vetted_x[turns], vetted_y[turns] = clean_x, clean_y
                pin = content_hash(vetted_x, vetted_y)
            x[turns], y[turns] = self.attack.poison(clean_x, clean_y, self._attacker_rng)
        elif self.split_view:
            pin = content_hash(x, y)
        source = self._ids_rng.integers(0, self.benign_sources, size=m)
        source[turns] = self.identities[self._ids_rng.integers(0, len(self.identities), size=n_attack)]
        batch = EventBatch.from_arrays(x, y, first_id=self._made, source=source, pin=pin)
        adaptive = turns if self._white_box else np.zeros(m, dtype=bool)
        self._made += m
        self.attacker_events += n_attack
        return batch, Truth(is_poison=turns, is_adaptive=adaptive)
