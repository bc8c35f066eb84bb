"""Merge events from several topics back into the one order of the merged stream.

Every event carries its position in the merged stream (its id: ids are
``0 .. n_events - 1``). :class:`Merger` buffers what each topic delivers and
releases the longest run of consecutive ids from the next expected one, so
the learner sees exactly the embedded order however the topics interleave.
An id already released or already held (a redelivery after a restart, a
producer retry, a flood repeating one id) is dropped, so nothing is learned
twice and nothing is held twice. Two copies of one held id that differ (in
features, label, time, source or ground truth) are a *conflict*: neither is
learned, the id is given up, and :attr:`Merger.conflicts` says where each
copy came from, for the dead-letter topic. What it holds is counted in bytes
(:attr:`Merger.buffered_bytes`), so a caller can bound it.

It also knows where to resume: per topic, the offset of the earliest message
that still holds an unreleased event (or, with none buffered, the offset after
the last message consumed). A checkpoint that stores these offsets with the
model state loses nothing and learns nothing twice when replayed.

>>> import numpy as np
>>> from poisonsim.events import EventBatch, Truth
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
>>> forged = part([7])
>>> forged[0].x[:] = 9.0
>>> merger.add(1, *part([7]), offsets=np.array([2]))
>>> merger.add(0, *forged, offsets=np.array([8]))  # id 7 again, other features
>>> merger.add(0, *part([6, 8]), offsets=np.array([9, 9]))
>>> merger.pop()[0].ids.tolist(), merger.conflicts, merger.skipped
([6, 8], [(7, 1, 2), (7, 0, 8)], 1)
"""

from __future__ import annotations

import numpy as np

from poisonsim.events import EventBatch, Truth

EVENT_OVERHEAD_BYTES = 40  # id, ts, label, source, offset, stream and truth flags of one held event


class Merger:
    """Reorder buffer over ``n_streams`` topics, releasing ids from ``next_id`` on."""

    def __init__(self, n_streams: int, next_id: int = 0, consumed: list[int] | None = None):
        self.n_streams = n_streams
        self.next_id = next_id
        self.duplicates = 0
        self.skipped = 0
        self.conflicts: list[tuple[int, int, int]] = []  # (id, stream, offset) of each copy of a conflicting id
        # per stream: offset after the last message consumed
        self.consumed = list(consumed) if consumed is not None else [0] * n_streams
        self._parts: list[tuple[EventBatch, Truth, np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self._bytes = 0
        self._held: np.ndarray | None = np.zeros(0, np.int64)  # sorted ids held (None: to recompute)
        self._void: set[int] = set()  # conflicting ids given up

    @property
    def buffered(self) -> int:
        """Events received but not yet released."""
        return self._buffered

    @property
    def buffered_bytes(self) -> int:
        """Memory the held events take, approximately."""
        return self._bytes

    def add(self, stream: int, batch: EventBatch, truth: Truth, offsets: np.ndarray) -> None:
        """Buffer events of ``stream``; ``offsets`` gives each event's message offset."""
        offsets = np.asarray(offsets, dtype=np.int64)
        keep = batch.ids >= self.next_id
        if len(batch) > 1 and not (batch.ids[1:] > batch.ids[:-1]).all():  # ids repeated within the part
            _, first, inverse = np.unique(batch.ids, return_index=True, return_inverse=True)
            twin, rows = first[inverse], np.arange(len(batch))  # each row's first copy
            differs = (twin != rows) & keep & ~_same_rows(batch, truth, rows, twin)
            for row in np.flatnonzero(differs):
                self._conflict(int(batch.ids[row]), (stream, int(offsets[twin[row]])), (stream, int(offsets[row])))
            keep &= twin == rows
        held = self._held_ids()
        if held.size:
            again = keep & _isin_sorted(batch.ids, held)
            for row in np.flatnonzero(again):
                self._check_held_copy(batch, truth, offsets, stream, int(row))
            keep &= ~again
        if self._void:
            keep &= ~np.isin(batch.ids, np.fromiter(self._void, np.int64))
        if not keep.all():
            self.duplicates += int((~keep).sum())
            batch, truth, offsets = batch.select(keep), truth.select(keep), offsets[keep]
        if len(batch):
            streams = np.full(len(batch), stream, dtype=np.int8)
            self._parts.append((batch, truth, offsets, streams))
            self._buffered += len(batch)
            self._bytes += batch.x.nbytes + EVENT_OVERHEAD_BYTES * len(batch)
            if self._held is not None:  # two sorted runs: a stable sort merges them in linear time
                self._held = np.sort(np.concatenate([self._held, np.sort(batch.ids)]), kind="stable")

    def mark_consumed(self, stream: int, next_offset: int) -> None:
        """Every message of ``stream`` before ``next_offset`` has been read."""
        self.consumed[stream] = max(self.consumed[stream], next_offset)

    def pop(self) -> tuple[EventBatch, Truth, np.ndarray] | None:
        """The consecutive events from ``next_id`` on (given-up ids passed over), with the stream of each; None if none."""
        runs = []
        while True:
            self._pass_void()
            run = self._pop_run()
            if run is None:
                break
            runs.append(run)
        if len(runs) <= 1:
            return runs[0] if runs else None
        batches, truths, streams = zip(*runs)
        return EventBatch.concatenate(batches), Truth.concatenate(truths), np.concatenate(streams)

    def _pop_run(self) -> tuple[EventBatch, Truth, np.ndarray] | None:
        if not self._parts or min(int(part[0].ids.min()) for part in self._parts) != self.next_id:
            return None
        batch, truth, offsets, streams = self._collect()
        expected = self.next_id + np.arange(len(batch))
        broken = np.flatnonzero(batch.ids != expected)
        stop = int(broken[0]) if broken.size else len(batch)
        head, tail = slice(0, stop), slice(stop, None)
        self._parts = (
            [(batch.select(tail), truth.select(tail), offsets[tail], streams[tail])] if stop < len(batch) else []
        )
        self._buffered = len(batch) - stop
        self._bytes = sum(p[0].x.nbytes + EVENT_OVERHEAD_BYTES * len(p[0]) for p in self._parts)
        self.next_id += stop
        if self._held is not None:
            self._held = self._held[np.searchsorted(self._held, self.next_id) :]
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

    def _held_ids(self) -> np.ndarray:
        if self._held is None:
            self._held = (
                np.sort(np.concatenate([p[0].ids for p in self._parts])) if self._parts else np.zeros(0, np.int64)
            )
        return self._held

    def _check_held_copy(self, batch, truth, offsets, stream: int, row: int) -> None:
        """A copy of a held id: the same event is a duplicate, other content a conflict."""
        event_id = int(batch.ids[row])
        for held, held_truth, held_offsets, streams in self._parts:
            at = np.flatnonzero(held.ids == event_id)[:1]
            if at.size:
                pair = EventBatch.concatenate([held.select(at), batch.select([row])])
                pair_truth = Truth.concatenate([held_truth.select(at), truth.select([row])])
                if not _same_rows(pair, pair_truth, np.array([0]), np.array([1]))[0]:
                    self._conflict(
                        event_id, (int(streams[at[0]]), int(held_offsets[at[0]])), (stream, int(offsets[row]))
                    )
                return

    def _conflict(self, event_id: int, first: tuple[int, int], second: tuple[int, int]) -> None:
        """Two copies of ``event_id`` (stream, offset each) differ: neither is learned, the id is given up."""
        self.conflicts += [(event_id, *first), (event_id, *second)]
        self._void.add(event_id)
        self._drop(event_id)

    def _drop(self, event_id: int) -> None:
        """Remove a held id (a conflict: neither copy is learned)."""
        for i, (batch, truth, offsets, streams) in enumerate(self._parts):
            keep = batch.ids != event_id
            if not keep.all():
                self._parts[i] = (batch.select(keep), truth.select(keep), offsets[keep], streams[keep])
                self._buffered -= int((~keep).sum())
                self._bytes -= batch.x[~keep].nbytes + EVENT_OVERHEAD_BYTES * int((~keep).sum())
        self._parts = [p for p in self._parts if len(p[0])]
        self._held = None

    def _pass_void(self) -> None:
        while self.next_id in self._void:
            self._void.discard(self.next_id)
            self.next_id += 1
            self.skipped += 1

    def _collect(self) -> tuple[EventBatch, Truth, np.ndarray, np.ndarray]:
        """All buffered events in id order (each id is held once)."""
        if len(self._parts) == 1:
            batch, truth, offsets, streams = self._parts[0]
        else:
            batches, truths, offsets_list, streams_list = zip(*self._parts)
            batch, truth = EventBatch.concatenate(batches), Truth.concatenate(truths)
            offsets, streams = np.concatenate(offsets_list), np.concatenate(streams_list)
        ids = batch.ids
        if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():
            order = np.argsort(ids, kind="stable")
            batch, truth, offsets, streams = batch.select(order), truth.select(order), offsets[order], streams[order]
        return batch, truth, offsets, streams


def _isin_sorted(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    at = np.searchsorted(sorted_ids, values).clip(max=len(sorted_ids) - 1)
    return sorted_ids[at] == values


def _same_rows(batch: EventBatch, truth: Truth, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair of rows ``a[i]``, ``b[i]``: whether the two events are the same in every field."""
    same = (batch.x[a] == batch.x[b]).all(axis=1) & (batch.y[a] == batch.y[b]) & (batch.ts[a] == batch.ts[b])
    same &= (batch.source[a] == batch.source[b]) & (truth.is_poison[a] == truth.is_poison[b])
    same &= truth.is_adaptive[a] == truth.is_adaptive[b]
    if batch.pin is not None:
        same &= batch.pin[a] == batch.pin[b]
    return same
