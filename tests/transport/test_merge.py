"""The merge of two topics back into the embedded order, and the offsets a restart resumes from (no broker)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonsim.config import Scenario
from poisonsim.events import EventBatch, Truth
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.world import World
from poisonsim.transport.merge import Merger

SCENARIO = Scenario.from_dict(
    {
        "seed": 2,
        "stream": {"n_events": 3000},
        "evaluation": {"every": 500},
        "attack": {"kind": "centroid-shift", "rate": 0.3, "start": 300},
    }
)


def _stream(scenario):
    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    batch = EventBatch.concatenate([b for b, _ in parts])
    truth = Truth.concatenate([t for _, t in parts])
    return batch, truth


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_any_interleaving_of_the_two_topics_gives_the_embedded_result(seed):
    """Topics arrive in random chunks, in random turns, with redeliveries: the learner sees the embedded order."""
    rng = np.random.default_rng(seed)
    batch, truth = _stream(SCENARIO)
    topic_rows = [np.flatnonzero(~truth.is_poison), np.flatnonzero(truth.is_poison)]
    cursors, learner, merger = [0, 0], Learner(World.build(SCENARIO)), Merger(2)
    while any(c < len(rows) for c, rows in zip(cursors, topic_rows)):
        stream = int(rng.integers(0, 2))
        rows = topic_rows[stream]
        if cursors[stream] >= len(rows):
            continue
        lo = max(cursors[stream] - int(rng.integers(0, 5)), 0)  # a few redelivered
        hi = min(cursors[stream] + int(rng.integers(1, 400)), len(rows))
        chunk = rows[lo:hi]
        merger.add(stream, batch.select(chunk), truth.select(chunk), offsets=np.arange(lo, hi))
        merger.mark_consumed(stream, hi)
        cursors[stream] = hi
        while (ready := merger.pop()) is not None:
            learner.feed(ready[0], ready[1])
    assert merger.next_id == 3000 and merger.buffered == 0
    assert learner.evaluator.rows == run(SCENARIO).timeseries


def test_resume_offsets_point_at_the_first_message_with_an_unlearned_event():
    batch, truth = _stream(SCENARIO)
    merger = Merger(2)
    benign = np.flatnonzero(~truth.is_poison)[:400]  # the attacker starts at 300
    merger.add(0, batch.select(benign), truth.select(benign), offsets=np.arange(400) // 2)  # 2 events a message
    merger.mark_consumed(0, 200)
    while merger.pop() is not None:
        pass
    first_missing = merger.next_id  # an attack event the benign topic does not have
    assert truth.is_poison[first_missing] and first_missing >= 300
    held = int((benign >= first_missing).sum())
    assert merger.buffered == held and merger.resume_offsets() == [(400 - held) // 2, 0]
    assert merger.buffered_bytes == held * (batch.x.itemsize * batch.n_features + 40)


def test_duplicates_are_dropped_and_counted():
    batch, truth = _stream(SCENARIO)
    rows = np.r_[0:10, 5:15, 3:4]
    merger = Merger(1)
    merger.add(0, batch.select(rows), truth.select(rows), offsets=rows)
    got = merger.pop()[0]
    assert got.ids.tolist() == list(range(15)) and merger.duplicates == 6


def test_a_gap_can_be_skipped_explicitly():
    batch, truth = _stream(SCENARIO)
    merger = Merger(1)
    rows = np.r_[0:5, 8:12]
    merger.add(0, batch.select(rows), truth.select(rows), offsets=rows)
    assert merger.pop()[0].ids.tolist() == [0, 1, 2, 3, 4] and merger.pop() is None
    assert merger.skip_gap() == 3 and merger.skipped == 3
    assert merger.pop()[0].ids.tolist() == [8, 9, 10, 11]
