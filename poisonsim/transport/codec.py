"""Versioned binary encoding of events for Kafka, and its dead-letter reasons.

A message value is a 12-byte header followed by ``m`` packed event records::

    header  magic b"PS" | version u8 | flags u8 | n_features u32 | n_events u32
    record  id i64 | ts i64 | y i32 | source i16 | x float32[n_features] [| pin u64]

all little-endian. Bit 0 of ``flags`` (:data:`PINNED`) says the records end
with ``pin``, the content hash seen at vetting (split-view references); a
codec built with ``pinned=True`` reads and writes only such messages, the
others only messages without. Ground truth never enters the value: it travels in the
``truth`` header as a version byte and a bitmap, two bits per event
(``is_poison``, ``is_adaptive``), least significant bit first.

:meth:`Codec.decode` refuses anything malformed with a :class:`DecodeError`
whose ``reason`` is one of :data:`REASONS` (a bounded set, so it can label a
metric). :meth:`Codec.decode_many` decodes a whole poll of messages at once
with vectorised fast paths, and hands every suspect message to
:meth:`Codec.decode` so that it is classified the same way.

>>> import numpy as np
>>> from poisonsim.events import EventBatch, Truth
>>> codec = Codec(n_features=2, n_classes=2, n_events=100)
>>> batch = EventBatch.from_arrays(np.ones((3, 2)), [0, 1, 0], first_id=7)
>>> truth = Truth(np.array([False, True, False]), np.zeros(3, dtype=bool))
>>> messages = codec.encode(batch, truth, events_per_message=2)
>>> [(len(value), len(bits)) for value, bits in messages]
[(72, 2), (42, 2)]
>>> got, got_truth = codec.decode(*messages[0])
>>> got.ids.tolist(), got_truth.is_poison.tolist()
([7, 8], [False, True])
>>> codec.decode(messages[0][0][:20], messages[0][1])
Traceback (most recent call last):
...
poisonsim.transport.codec.DecodeError: truncated: 20 bytes, expected 72 for 2 events
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisonsim.events import EventBatch, Truth

MAGIC = b"PS"
VERSION = 1
TRUTH_VERSION = 1
TRUTH_HEADER = "truth"
PINNED = 1  # header flag: records carry the vetted content hash
HEADER = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("n_features", "<u4"), ("n_events", "<u4")])
DEFAULT_MAX_BYTES = 1_000_000  # Kafka's default message.max.bytes

DECODE_REASONS = (
    "empty",
    "truncated",
    "trailing_bytes",
    "bad_magic",
    "bad_version",
    "dimension",
    "oversized",
    "non_finite",
    "bad_label",
    "bad_id",
    "bad_source",
    "bad_truth",
)
RECEIVER_REASONS = (  # refused before decoding, by the receiver, or by the merge
    "unreadable",  # the client library could not parse the record
    "bad_header",  # a header without a value, or repeated
    "bad_signature",  # unsigned, or signed with another key
    "conflict",  # an id already held with other content
)
REASONS = DECODE_REASONS + RECEIVER_REASONS


class DecodeError(ValueError):
    """A message that does not decode; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def record_dtype(n_features: int, pinned: bool = False) -> np.dtype:
    """One packed event record (with the vetted content hash when ``pinned``)."""
    fields = [("id", "<i8"), ("ts", "<i8"), ("y", "<i4"), ("source", "<i2"), ("x", "<f4", (n_features,))]
    return np.dtype(fields + [("pin", "<u8")] if pinned else fields)


@dataclass(frozen=True)
class Decoded:
    """What :meth:`Codec.decode_many` returns: events, their truth, and refusals.

    ``message`` gives, per event, the index of the message it came from;
    ``errors`` lists ``(message index, DecodeError)`` for refused messages.
    """

    batch: EventBatch
    truth: Truth
    message: np.ndarray
    errors: list[tuple[int, DecodeError]]


@dataclass(frozen=True)
class Codec:
    """Encoder and validating decoder for one scenario's events.

    ``n_classes``, ``n_events`` and ``n_sources`` bound labels, ids and source ids (``None``: unchecked);
    ``max_bytes`` bounds a message; ``pinned``: events carry their vetted content hash.
    """

    n_features: int
    n_classes: int | None = None
    n_events: int | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    pinned: bool = False
    n_sources: int | None = None

    @property
    def record(self) -> np.dtype:
        return record_dtype(self.n_features, self.pinned)

    @property
    def flags(self) -> int:
        return PINNED if self.pinned else 0

    def message_dtype(self, m: int) -> np.dtype:
        return np.dtype([("header", HEADER), ("records", self.record, (m,))])

    def max_events_per_message(self) -> int:
        return (self.max_bytes - HEADER.itemsize) // self.record.itemsize

    # -- encoding -------------------------------------------------------------

    def encode(self, batch: EventBatch, truth: Truth, events_per_message: int = 1) -> list[tuple[bytes, bytes]]:
        """``(value, truth header)`` per message, ``events_per_message`` events each."""
        if batch.n_features != self.n_features:
            raise ValueError(f"batch: expected {self.n_features} features, got {batch.n_features}")
        if (batch.pin is not None) != self.pinned:
            raise ValueError(
                f"batch: {'no' if batch.pin is None else 'a'} content pin, but the codec was built "
                f"with pinned={self.pinned}"
            )
        k, n = int(events_per_message), len(batch)
        if not 1 <= k <= self.max_events_per_message():
            raise ValueError(
                f"events_per_message: expected 1..{self.max_events_per_message()} "
                f"(messages of at most {self.max_bytes} bytes), got {events_per_message}"
            )
        full = n // k
        out = self._encode_uniform(batch.select(slice(0, full * k)), truth.select(slice(0, full * k)), k)
        if n > full * k:
            rest = slice(full * k, n)
            out += self._encode_uniform(batch.select(rest), truth.select(rest), n - full * k)
        return out

    def _encode_uniform(self, batch: EventBatch, truth: Truth, m: int) -> list[tuple[bytes, bytes]]:
        n_messages = len(batch) // m
        if n_messages == 0:
            return []
        messages = np.zeros(n_messages, dtype=self.message_dtype(m))
        header = messages["header"]
        header["magic"], header["version"], header["flags"] = MAGIC, VERSION, self.flags
        header["n_features"], header["n_events"] = self.n_features, m
        records, shape = messages["records"], (n_messages, m)  # a strided view: assign, never reshape
        records["id"], records["ts"] = batch.ids.reshape(shape), batch.ts.reshape(shape)
        records["y"], records["source"] = batch.y.reshape(shape), batch.source.reshape(shape)
        records["x"] = batch.x.reshape(n_messages, m, self.n_features)
        if self.pinned:
            records["pin"] = batch.pin.reshape(shape)
        size = messages.dtype.itemsize
        values = messages.tobytes()
        bits = _pack_truth(truth, n_messages, m)
        width = bits.shape[1]
        bits = bits.tobytes()
        return [(values[i * size : (i + 1) * size], bits[i * width : (i + 1) * width]) for i in range(n_messages)]

    # -- decoding -------------------------------------------------------------

    def decode(self, value: bytes | None, truth_bits: bytes | None) -> tuple[EventBatch, Truth]:
        """One message; raises :class:`DecodeError` naming the reason."""
        if not value:
            raise DecodeError("empty", "no bytes")
        if len(value) > self.max_bytes:
            raise DecodeError("oversized", f"{len(value)} bytes, at most {self.max_bytes}")
        if len(value) < HEADER.itemsize:
            raise DecodeError("truncated", f"{len(value)} bytes, shorter than the {HEADER.itemsize}-byte header")
        header = np.frombuffer(value, dtype=HEADER, count=1)[0]
        if header["magic"] != MAGIC:
            raise DecodeError("bad_magic", f"starts with {bytes(value[:2])!r}, expected {MAGIC!r}")
        if header["version"] != VERSION:
            raise DecodeError("bad_version", f"version {header['version']}, this consumer reads {VERSION}")
        if header["n_features"] != self.n_features:
            raise DecodeError("dimension", f"{header['n_features']} features, expected {self.n_features}")
        if header["flags"] != self.flags:
            raise DecodeError(
                "dimension",
                f"flags {header['flags']}: records {'without' if self.pinned else 'with'} "
                f"content pins, expected flags {self.flags}",
            )
        m = int(header["n_events"])
        if m == 0:
            raise DecodeError("empty", "header says 0 events")
        expected = HEADER.itemsize + m * self.record.itemsize
        if expected > self.max_bytes:
            raise DecodeError("oversized", f"header says {m} events ({expected} bytes), at most {self.max_bytes}")
        if len(value) < expected:
            raise DecodeError("truncated", f"{len(value)} bytes, expected {expected} for {m} events")
        if len(value) > expected:
            raise DecodeError("trailing_bytes", f"{len(value)} bytes, expected {expected} for {m} events")
        records = np.frombuffer(value, dtype=self.record, count=m, offset=HEADER.itemsize)
        self._check_records(records)
        return _batch(records, self.n_features), _unpack_truth(truth_bits, m)

    def _check_records(self, records: np.ndarray) -> None:
        if not np.isfinite(records["x"]).all():
            raise DecodeError("non_finite", "features contain NaN or infinity")
        y, ids = records["y"], records["id"]
        if self.n_classes is not None and ((y < 0) | (y >= self.n_classes)).any():
            raise DecodeError("bad_label", f"labels {y.min()}..{y.max()}, expected 0..{self.n_classes - 1}")
        if self.n_events is not None and ((ids < 0) | (ids >= self.n_events)).any():
            raise DecodeError("bad_id", f"ids {ids.min()}..{ids.max()}, expected 0..{self.n_events - 1}")
        source = records["source"]
        if self.n_sources is not None and ((source < 0) | (source >= self.n_sources)).any():
            raise DecodeError(
                "bad_source", f"source ids {source.min()}..{source.max()}, expected 0..{self.n_sources - 1}"
            )

    def decode_many(self, values: list[bytes | None], truths: list[bytes | None]) -> Decoded:
        """Decode a list of messages; refused ones are listed in ``errors``, never raised."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (value, bits) in enumerate(zip(values, truths)):
            groups.setdefault((len(value) if value else 0, len(bits) if bits else 0), []).append(i)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        errors: list[tuple[int, DecodeError]] = []
        for (size, width), index in groups.items():
            slow = self._decode_group(values, truths, index, size, width, parts)
            for i in slow:
                try:
                    batch, truth = self.decode(values[i], truths[i])
                except DecodeError as exc:
                    errors.append((i, exc))
                    continue
                parts.append((_records_of(batch), _truth_matrix(truth), np.full(len(batch), i, dtype=np.int64)))
        errors.sort(key=lambda item: item[0])
        if not parts:
            records, flags = np.zeros(0, dtype=self.record), np.zeros((0, 2), dtype=bool)
            message = np.zeros(0, np.int64)
        else:
            records = np.concatenate([p[0] for p in parts])
            flags = np.concatenate([p[1] for p in parts])
            message = np.concatenate([p[2] for p in parts])
        truth = Truth(np.ascontiguousarray(flags[:, 0]), np.ascontiguousarray(flags[:, 1]))
        return Decoded(_batch(records, self.n_features), truth, message, errors)

    def _decode_group(self, values, truths, index, size, width, parts) -> list[int]:
        """Vectorised decode of same-size messages; returns the indices left to :meth:`decode`."""
        record_size = self.record.itemsize
        m, rest = divmod(size - HEADER.itemsize, record_size)
        if size > self.max_bytes or m < 1 or rest or width != 1 + (2 * m + 7) // 8:
            return index
        messages = np.frombuffer(b"".join([values[i] for i in index]), dtype=self.message_dtype(m))
        bits = np.frombuffer(b"".join([truths[i] for i in index]), dtype=np.uint8).reshape(len(index), width)
        header, records = messages["header"], messages["records"]
        good = (
            (header["magic"] == MAGIC)
            & (header["version"] == VERSION)
            & (header["n_features"] == self.n_features)
            & (header["n_events"] == m)
            & (bits[:, 0] == TRUTH_VERSION)
            & (header["flags"] == self.flags)
            & np.isfinite(records["x"]).reshape(len(index), -1).all(axis=1)
        )
        if self.n_classes is not None:
            good &= ((records["y"] >= 0) & (records["y"] < self.n_classes)).all(axis=1)
        if self.n_events is not None:
            good &= ((records["id"] >= 0) & (records["id"] < self.n_events)).all(axis=1)
        if self.n_sources is not None:
            good &= ((records["source"] >= 0) & (records["source"] < self.n_sources)).all(axis=1)
        if m % 4:  # padding bits of the bitmap must be zero
            good &= (bits[:, -1] >> (2 * m % 8)) == 0
        index = np.asarray(index)
        if good.any():
            flags = np.unpackbits(bits[good, 1:], axis=1, count=2 * m, bitorder="little").reshape(-1, 2)
            parts.append((records[good].reshape(-1), flags.astype(bool), np.repeat(index[good], m)))
        return index[~good].tolist()


def _batch(records: np.ndarray, n_features: int) -> EventBatch:
    """An :class:`EventBatch` of fresh, writable, native arrays."""
    x = np.ascontiguousarray(records["x"], dtype=np.float32).reshape(len(records), n_features)
    return EventBatch(
        ids=records["id"].astype(np.int64),
        ts=records["ts"].astype(np.int64),
        x=x.copy() if not x.flags.writeable else x,
        y=records["y"].astype(np.int64),
        source=records["source"].astype(np.int16),
        pin=records["pin"].astype(np.uint64) if "pin" in records.dtype.names else None,
    )


def _records_of(batch: EventBatch) -> np.ndarray:
    records = np.empty(len(batch), dtype=record_dtype(batch.n_features, batch.pin is not None))
    records["id"], records["ts"], records["y"] = batch.ids, batch.ts, batch.y
    records["source"], records["x"] = batch.source, batch.x
    if batch.pin is not None:
        records["pin"] = batch.pin
    return records


def _truth_matrix(truth: Truth) -> np.ndarray:
    return np.stack([truth.is_poison, truth.is_adaptive], axis=1)


def _pack_truth(truth: Truth, n_messages: int, m: int) -> np.ndarray:
    """Per message: the version byte, then 2 bits per event (poison, adaptive)."""
    flags = _truth_matrix(truth).reshape(n_messages, 2 * m)
    packed = np.packbits(flags, axis=1, bitorder="little")
    return np.concatenate([np.full((n_messages, 1), TRUTH_VERSION, dtype=np.uint8), packed], axis=1)


def _unpack_truth(bits: bytes | None, m: int) -> Truth:
    width = 1 + (2 * m + 7) // 8
    if bits is None:
        raise DecodeError("bad_truth", f"no {TRUTH_HEADER!r} header")
    if len(bits) != width or bits[0] != TRUTH_VERSION:
        raise DecodeError("bad_truth", f"{TRUTH_HEADER!r} header of {len(bits)} bytes, expected {width} (version 1)")
    raw = np.frombuffer(bits, dtype=np.uint8, offset=1)
    if m % 4 and raw[-1] >> (2 * m % 8):
        raise DecodeError("bad_truth", "bitmap padding bits set")
    flags = np.unpackbits(raw, count=2 * m, bitorder="little").reshape(m, 2).astype(bool)
    return Truth(np.ascontiguousarray(flags[:, 0]), np.ascontiguousarray(flags[:, 1]))
