"""Reading the stream topics: decode, screen, verify, and dead-letter what is refused, never crash.

:class:`EventReceiver` reads the scenario's partition of each topic (or what
its group assigns), keeps the scenario's records, refuses before decoding a
record with a header without a value or repeated, without a value, or (with
a signing key) unsigned or wrongly signed, decodes the rest
(:mod:`poisonsim.transport.codec`), and sends every refused record to the
dead-letter topic with its reason. A record the client library itself cannot
parse (kafka-python raises ``CorruptRecordError`` out of ``poll``, for
example on a header name that is not UTF-8) is found by reading each
partition's next record alone, dead-lettered as ``unreadable`` and skipped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from poisonsim.transport.codec import TRUTH_HEADER, Codec, Decoded
from poisonsim.transport.dead_letters import DeadLetters, RecordAt, RefusalLog
from poisonsim.transport.signing import SIGNATURE_HEADER, Signer

if TYPE_CHECKING:
    from poisonsim.transport.kafka import KafkaSettings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0  # how long the receiver looks for the record the client library cannot parse
PROBE_FIRST_WAIT_MS, PROBE_LONGEST_WAIT_MS = 200, 2000  # one partition's turn: the first, the longest


@dataclass
class Received:
    """One topic's share of a poll: decoded events, each with its message offset."""

    stream: int
    decoded: Decoded
    offsets: np.ndarray
    next_offset: int
    ignored: int
    dead: Counter[str]  # records refused, by reason


class EventReceiver:
    """Reads stream topics and decodes them, keeping only the scenario's events.

    With ``partitions`` (each topic's partition count) it reads the
    scenario's partition of each topic by manual assignment, from offsets the
    caller gives (:meth:`seek`); without, it joins ``group_id`` and reads
    whatever the group assigns (a detector scales with partitions that way).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topics: list[str],
        key: bytes,
        codec: Codec,
        partitions: dict[str, int] | None,
        dead_letters: DeadLetters | None,
        group_id: str | None = None,
        signer: Signer | None = None,
        **consumer_config,
    ):
        from kafka import KafkaConsumer, TopicPartition

        from poisonsim.transport.kafka import partition_for, retry

        self.key, self.codec, self.dead_letters, self.group_id = key, codec, dead_letters, group_id
        self.settings, self.signer, self._probe = settings, signer, None
        self.refusals = RefusalLog(log.warning)
        # small fetches keep the topics interleaved (a broker may fill a fetch with one partition first),
        # so the merge buffers little
        config = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": 20_000,
            "fetch_max_bytes": 1024 * 1024,
            "max_partition_fetch_bytes": max(512 * 1024, codec.max_bytes),
            "fetch_max_wait_ms": 200,
            **consumer_config,
        }
        if partitions is None:  # a group member: short session timeouts, so that it joins (and rejoins) quickly
            config = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 600, **config}
        self.consumer = retry(
            lambda: KafkaConsumer(**settings.client_config(), group_id=group_id, **config), "connecting the consumer"
        )
        self._stream = {topic: i for i, topic in enumerate(topics)}
        if partitions is None:
            self.partitions = []
            self.consumer.subscribe(topics)
        else:
            self.partitions = [TopicPartition(t, partition_for(key, partitions[t])) for t in topics]
            self.consumer.assign(self.partitions)

    def seek(self, offsets: list[int]) -> None:
        for tp, offset in zip(self.partitions, offsets):
            self.consumer.seek(tp, offset)

    def poll(self, timeout_ms: int) -> list[Received]:
        from kafka.errors import CorruptRecordError

        self.refusals.tick()
        try:
            fetched = self.consumer.poll(timeout_ms=timeout_ms)
        except CorruptRecordError as exc:  # a record the client library cannot parse: skip it, dead-lettered
            return [self._skip_unreadable(exc)]
        return [self._decode(self._stream[tp.topic], records) for tp, records in fetched.items()]

    def _decode(self, stream: int, records: list) -> Received:
        key, unsigned = self.key, self.signer is None
        mine = [r for r in records if r.key == key]
        screened, truths, refused, forged = [], [], [], []
        for r in mine:
            headers = r.headers or []
            if (
                unsigned
                and len(headers) == 1
                and headers[0][0] == TRUTH_HEADER
                and type(headers[0][1]) is bytes
                and type(r.value) is bytes
            ):  # the common cases, checked inline
                screened.append(r)
                truths.append(headers[0][1])
            elif (
                not unsigned
                and len(headers) == 2
                and headers[0][0] == TRUTH_HEADER
                and headers[1][0] == SIGNATURE_HEADER
                and type(r.value) is bytes
                and type(headers[0][1]) is bytes
                and type(headers[1][1]) is bytes
            ):
                if self.signer.verify(key, r.topic, r.value, headers[0][1], headers[1][1]):
                    screened.append(r)
                    truths.append(headers[0][1])
                else:  # the usual shape, a wrong tag: refused without screening (and verifying) again
                    forged.append(r)
            elif reason := self._screen(r):
                self.dead_letter(r, *reason)
                refused.append(reason)
            else:
                screened.append(r)
                truths.append(_truth_header(headers))
        if forged:  # counted, logged and dead-lettered together: a flood of them costs little more than its parse
            self.dead_letter_many(forged, "bad_signature", "signature does not match")
        decoded = self.codec.decode_many([r.value for r in screened], truths)
        for i, error in decoded.errors:
            self.dead_letter(screened[i], error.reason, error.detail)
        offsets = np.array([r.offset for r in screened], dtype=np.int64)[decoded.message]
        dead = Counter(reason for reason, _ in refused)
        dead.update(error.reason for _, error in decoded.errors)
        if forged:
            dead["bad_signature"] += len(forged)
        return Received(stream, decoded, offsets, records[-1].offset + 1, len(records) - len(mine), dead)

    def _screen(self, record) -> tuple[str, str] | None:
        """Why ``record`` is refused before decoding (reason, detail), or None."""
        headers = record.headers or []
        if any(not isinstance(v, bytes) for _, v in headers):
            return "bad_header", "a header without a value"
        names = [k for k, _ in headers]
        if len(set(names)) != len(names):
            return "bad_header", f"repeated headers {sorted(n for n in set(names) if names.count(n) > 1)}"
        if not isinstance(record.value, bytes):
            return "empty", "no value"
        if self.signer is not None:
            tag = dict(headers).get(SIGNATURE_HEADER)
            if not self.signer.verify(self.key, record.topic, record.value, _truth_header(headers), tag):
                return "bad_signature", "no signature" if tag is None else "signature does not match"
        return None

    def dead_letter(self, record, reason: str, detail: str) -> None:
        """Log (in aggregate) and publish (at a bounded rate) the refusal of ``record``."""
        self.refusals.refused(record, reason, detail)
        if self.dead_letters is not None:
            self.dead_letters.send(record, reason, detail)

    def dead_letter_many(self, records: list, reason: str, detail: str) -> None:
        """:meth:`dead_letter` for several records refused for one reason."""
        self.refusals.refused(records[0], reason, detail, len(records))
        if self.dead_letters is not None:
            self.dead_letters.send_many(records, reason, detail)

    def _skip_unreadable(self, exc: Exception) -> Received:
        """Find the partition whose next record the client cannot parse, dead-letter it and seek past it."""
        positions = {tp: self.consumer.position(tp) for tp in sorted(self.consumer.assignment())}
        tp = self._find_unreadable(positions)
        if tp is None:
            raise exc  # not a record of ours: a real error
        offset = positions[tp]
        self.dead_letter(RecordAt(tp.topic, tp.partition, offset), "unreadable", str(exc))
        self.consumer.seek(tp, offset + 1)
        empty = self.codec.decode_many([], [])
        return Received(self._stream[tp.topic], empty, np.zeros(0, np.int64), offset + 1, 0, Counter(unreadable=1))

    def _find_unreadable(self, positions: dict, timeout_s: float = PROBE_TIMEOUT_S):
        """The partition whose record at its position makes the client raise, or None.

        Each partition is read alone, in turn, for a short while (doubled each round), so a partition with
        nothing to read yet costs a fifth of a second, not the whole timeout.
        """
        left, wait_ms = dict(positions), PROBE_FIRST_WAIT_MS
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for tp, offset in list(left.items()):
                verdict = self._probe_at(tp, offset, wait_ms)
                if verdict:
                    return tp
                if verdict is False:  # a record the client reads: not this partition
                    del left[tp]
            wait_ms = min(2 * wait_ms, PROBE_LONGEST_WAIT_MS)
        return None

    def _probe_at(self, tp, offset: int, wait_ms: int) -> bool | None:
        """Whether the record at ``offset`` makes the client raise (read alone by a probe consumer); None:
        nothing came within ``wait_ms``."""
        from kafka import KafkaConsumer
        from kafka.errors import CorruptRecordError

        if self._probe is None:
            self._probe = KafkaConsumer(
                **self.settings.client_config(), group_id=None, enable_auto_commit=False, max_poll_records=1
            )
        self._probe.assign([tp])
        self._probe.seek(tp, offset)
        try:
            return False if self._probe.poll(timeout_ms=wait_ms) else None
        except CorruptRecordError:
            return True

    def lag(self) -> list[int | None]:
        """Messages behind the end of each partition read (None until known)."""
        lags = []
        for tp in self.partitions or sorted(self.consumer.assignment()):
            high = self.consumer.highwater(tp)
            lags.append(None if high is None else max(high - self.consumer.position(tp), 0))
        return lags

    def partition_of(self, stream: int) -> int:
        """The partition read for ``stream`` (manual assignment)."""
        return self.partitions[stream].partition

    def pause(self, stream: int, paused: bool) -> None:
        tp = self.partitions[stream]
        (self.consumer.pause if paused else self.consumer.resume)(tp)

    def commit(self, offsets: list[int] | None = None, metadata: str = "") -> None:
        """Commit ``offsets`` (per assigned partition), or the positions reached, to the group."""
        if self.group_id is None:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        try:
            if offsets is None:
                self.consumer.commit()
            else:
                marks = {tp: OffsetAndMetadata(o, metadata, -1) for tp, o in zip(self.partitions, offsets)}
                self.consumer.commit(marks)
        except KafkaError as exc:
            log.warning("offset commit failed (%s); the checkpoint still holds them", exc)

    def close(self) -> None:
        self.refusals.flush()
        if self._probe is not None:
            self._probe.close()
        self.consumer.close(autocommit=False)


def _truth_header(headers) -> bytes | None:
    for name, value in headers or ():
        if name == TRUTH_HEADER:
            return value
    return None
