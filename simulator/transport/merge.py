"""Merge events from several topics back into the one order of the merged stream.

Every event carries its position in the merged stream (its id: ids are
``0 .. n_events - 1``). :class:`Merger` buffers what each topic delivers and
releases the longest run of consecutive ids from the next expected one, so
the learner sees exactly the embedded order however the topics interleave.
An id already released (a redelivery after a restart or a producer retry) is
dropped, so nothing is learned twice.

It also knows where to resume: per topic, the offset of the earliest message
that still holds an unreleased event (or, with none buffered, the offset after
the last message consumed). A checkpoint that stores these offsets with the
model state loses nothing and learns nothing twice when replayed.

>>> import numpy as np
>>> from simulator.events import EventBatch, Truth
>>> def part(ids):
...     batch = EventBatch.from_arrays(np.zeros((len(ids), 1)), [0] * len(ids))
...     batch = EventBatch(np.array(ids), np.array(ids), batch.x, batch.y, batch.source)
...     return batch, Truth.clean(len(ids))
>>> merger = Merger(n_streams=2)
>>> merger.add(1, *part([1, 4]), offsets=np.array([0, 1]))
>>> merger.pop() is None  # id 0 has not arrived
True
>>> merger.add(0, *part([0, 2, 3]), offsets=np.array([5, 6, 6]))
>>> batch, truth, streams = merger.pop()
>>> batch.ids.tolist(), streams.tolist(), merger.next_id
([0, 1, 2, 3, 4], [0, 1, 0, 0, 1], 5)
>>> merger.add(0, *part([3, 5]), offsets=np.array([6, 7]))  # 3 is a redelivery
>>> merger.pop()[0].ids.tolist(), merger.duplicates
([5], 1)
"""

from __future__ import annotations

import numpy as np

from simulator.events import EventBatch, Truth


class Merger:
    """Reorder buffer over ``n_streams`` topics, releasing ids from ``next_id`` on."""

    def __init__(self, n_streams: int, next_id: int = 0, consumed: list[int] | None = None):
        self.n_streams = n_streams
        self.next_id = next_id
        self.duplicates = 0
        self.skipped = 0
        # per stream: offset after the last message consumed
        self.consumed = list(consumed) if consumed is not None else [0] * n_streams
        self._parts: list[tuple[EventBatch, Truth, np.ndarray, np.ndarray]] = []
        self._buffered = 0

    @property
    def buffered(self) -> int:
        """Events received but not yet released."""
        return self._buffered

    def add(self, stream: int, batch: EventBatch, truth: Truth, offsets: np.ndarray) -> None:
        """Buffer events of ``stream``; ``offsets`` gives each event's message offset."""
        keep = batch.ids >= self.next_id
        if not keep.all():
            self.duplicates += int((~keep).sum())
            batch, truth, offsets = batch.select(keep), truth.select(keep), offsets[keep]
        if len(batch):
            streams = np.full(len(batch), stream, dtype=np.int8)
            self._parts.append((batch, truth, np.asarray(offsets, dtype=np.int64), streams))
            self._buffered += len(batch)

    def mark_consumed(self, stream: int, next_offset: int) -> None:
        """Every message of ``stream`` before ``next_offset`` has been read."""
        self.consumed[stream] = max(self.consumed[stream], next_offset)

    def pop(self) -> tuple[EventBatch, Truth, np.ndarray] | None:
        """The consecutive events from ``next_id`` on, with the stream of each; None if none."""
        if not self._parts or min(int(part[0].ids.min()) for part in self._parts) != self.next_id:
            return None
        batch, truth, offsets, streams = self._collect()
        self._parts = [(batch, truth, offsets, streams)]
        broken = np.flatnonzero(batch.ids - self.next_id != np.arange(len(batch)))
        stop = int(broken[0]) if broken.size else len(batch)
        head, tail = slice(0, stop), slice(stop, None)
        if stop < len(batch):
            self._parts = [(batch.select(tail), truth.select(tail), offsets[tail], streams[tail])]
        else:
            self._parts = []
        self._buffered = len(batch) - stop
        self.next_id += stop
        return batch.select(head), truth.select(head), streams[head]

    def skip_gap(self) -> int:
        """Give up on missing ids: move ``next_id`` to the earliest buffered id; returns how many."""
        if not self._parts:
            return 0
        first = int(min(part[0].ids.min() for part in self._parts))
        skipped = max(first - self.next_id, 0)
        self.next_id += skipped
        self.skipped += skipped
        return skipped

    def resume_offsets(self) -> list[int]:
        """Per stream: where a restart must read from so that no buffered event is lost."""
        resume = list(self.consumed)
        for _batch, _truth, offsets, streams in self._parts:
            for stream in range(self.n_streams):
                mine = offsets[streams == stream]
                if mine.size:
                    resume[stream] = min(resume[stream], int(mine.min()))
        return resume

    def ahead(self) -> list[int]:
        """Per stream: buffered events, to pause a topic that runs too far ahead."""
        counts = [0] * self.n_streams
        for part in self._parts:
            counts_part = np.bincount(part[3], minlength=self.n_streams)
            counts = [a + int(b) for a, b in zip(counts, counts_part)]
        return counts

    def _collect(self) -> tuple[EventBatch, Truth, np.ndarray, np.ndarray]:
        """All buffered events in id order, duplicates and released ids dropped."""
        if len(self._parts) == 1:
            batch, truth, offsets, streams = self._parts[0]
        else:
            batches, truths, offsets_list, streams_list = zip(*self._parts)
            batch, truth = EventBatch.concatenate(batches), Truth.concatenate(truths)
            offsets, streams = np.concatenate(offsets_list), np.concatenate(streams_list)
        ids = batch.ids
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            _, first = np.unique(ids, return_index=True)  # sorted ids, first occurrence of each
            self.duplicates += len(ids) - len(first)
            batch, truth, offsets, streams = batch.select(first), truth.select(first), offsets[first], streams[first]
        return batch, truth, offsets, streams
