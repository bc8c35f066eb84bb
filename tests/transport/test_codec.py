"""The binary event encoding: exact round trips, and every malformed message refused with its reason."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poisonsim.events import EventBatch, Truth
from poisonsim.transport.codec import DECODE_REASONS, HEADER, Codec, DecodeError

D = 3
CODEC = Codec(n_features=D, n_classes=4, n_events=10_000, max_bytes=4096, n_sources=2)


def make(n: int, seed: int = 0, first_id: int = 0) -> tuple[EventBatch, Truth]:
    rng = np.random.default_rng(seed)
    batch = EventBatch.from_arrays(
        rng.normal(size=(n, D)), rng.integers(0, 4, n), first_id=first_id, source=rng.integers(0, 2, n)
    )
    return batch, Truth(rng.random(n) < 0.3, rng.random(n) < 0.2)


def assert_same(got: tuple[EventBatch, Truth], want: tuple[EventBatch, Truth]) -> None:
    for field in ("ids", "ts", "x", "y", "source"):
        a, b = getattr(got[0], field), getattr(want[0], field)
        assert a.dtype == b.dtype and np.array_equal(a, b), field
    assert np.array_equal(got[1].is_poison, want[1].is_poison)
    assert np.array_equal(got[1].is_adaptive, want[1].is_adaptive)


@pytest.mark.parametrize("per_message", [1, 3, 4, 7, 100])
def test_round_trip_is_exact_for_any_events_per_message(per_message):
    batch, truth = make(250)
    messages = CODEC.encode(batch, truth, per_message)
    assert len(messages) == -(-250 // per_message)
    decoded = CODEC.decode_many([v for v, _ in messages], [t for _, t in messages])
    assert decoded.errors == []
    assert_same((decoded.batch, decoded.truth), (batch, truth))
    assert decoded.message.tolist() == [i // per_message for i in range(250)]
    one_by_one = [CODEC.decode(v, t) for v, t in messages]
    assert_same(one_by_one[0], (batch.select(slice(0, per_message)), truth.select(slice(0, per_message))))


def test_payload_is_compact_float32_and_holds_no_ground_truth():
    batch, truth = make(50)
    value, _ = CODEC.encode(batch, truth, 50)[0]
    assert len(value) == HEADER.itemsize + 50 * (8 + 8 + 4 + 2 + 4 * D)
    flipped = Truth(~truth.is_poison, ~truth.is_adaptive)
    assert CODEC.encode(batch, flipped, 50)[0][0] == value  # truth lives in the header only
    assert CODEC.encode(batch, flipped, 50)[0][1] != CODEC.encode(batch, truth, 50)[0][1]


def test_encode_refuses_bad_arguments():
    batch, truth = make(4)
    with pytest.raises(
        ValueError, match=r"events_per_message: expected 1..120 \(messages of at most 4096 bytes\), got 0"
    ):
        CODEC.encode(batch, truth, 0)
    with pytest.raises(ValueError, match="events_per_message"):
        CODEC.encode(batch, truth, 10_000)
    with pytest.raises(ValueError, match="batch: expected 2 features, got 3"):
        Codec(2).encode(batch, truth)


def _valid(m: int = 2) -> tuple[bytearray, bytes]:
    value, bits = CODEC.encode(*make(m, seed=1), events_per_message=m)[0]
    return bytearray(value), bits


def _set_record(value: bytearray, field: str, row: int, number) -> bytearray:
    records = np.frombuffer(value, dtype=CODEC.record, offset=HEADER.itemsize).copy()
    records[field][row] = number
    return value[: HEADER.itemsize] + bytearray(records.tobytes())


MALFORMED = {
    "empty": lambda v, t: (b"", t),
    "truncated": lambda v, t: (v[:-1], t),
    "trailing_bytes": lambda v, t: (v + b"\x00", t),
    "bad_magic": lambda v, t: (b"XX" + v[2:], t),
    "bad_version": lambda v, t: (v[:2] + bytes([9]) + v[3:], t),
    "dimension": lambda v, t: (v[:4] + struct.pack("<I", D + 1) + v[8:], t),
    "oversized": lambda v, t: (v + bytes(5000), t),
    "non_finite": lambda v, t: (_set_record(v, "x", 1, np.nan), t),
    "bad_label": lambda v, t: (_set_record(v, "y", 0, 4), t),
    "bad_id": lambda v, t: (_set_record(v, "id", 0, -1), t),
    "bad_source": lambda v, t: (_set_record(v, "source", 1, 5000), t),
    "bad_truth": lambda v, t: (v, None),
}


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_each_malformation_is_refused_with_its_reason(reason):
    value, bits = MALFORMED[reason](*_valid())
    with pytest.raises(DecodeError) as raised:
        CODEC.decode(bytes(value), bits)
    assert raised.value.reason == reason
    decoded = CODEC.decode_many([bytes(value), bytes(_valid()[0])], [bits, _valid()[1]])
    assert [(i, e.reason) for i, e in decoded.errors] == [(0, reason)] and len(decoded.batch) == 2


def test_every_reason_has_a_malformation():
    assert set(MALFORMED) == set(DECODE_REASONS)


def test_infinity_and_bad_truth_bitmaps_are_refused():
    value, bits = _valid(3)
    assert CODEC.decode(bytes(value), bits)
    for number in (np.inf, -np.inf):
        with pytest.raises(DecodeError, match="non_finite"):
            CODEC.decode(bytes(_set_record(bytearray(value), "x", 2, number)), bits)
    for bad in (bits[:-1], bits + b"\x00", bytes([2]) + bits[1:], bits[:-1] + bytes([bits[-1] | 0x80])):
        with pytest.raises(DecodeError, match="bad_truth"):
            CODEC.decode(bytes(value), bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.none(), st.binary(max_size=300)), bits=st.one_of(st.none(), st.binary(max_size=4)))
def test_arbitrary_bytes_never_crash_the_decoder(value, bits):
    try:
        batch, truth = CODEC.decode(value, bits)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS
        decoded = CODEC.decode_many([value], [bits])
        assert [e.reason for _, e in decoded.errors] == [exc.reason] and len(decoded.batch) == 0
    else:
        assert np.isfinite(batch.x).all() and len(batch) == len(truth.is_poison) >= 1


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_messages_are_refused_or_decode_identically_in_bulk(data):
    """A fuzzer: flip, cut or extend valid messages; bulk and single decoding always agree."""
    messages = CODEC.encode(
        *make(12, seed=data.draw(st.integers(0, 100))), events_per_message=data.draw(st.integers(1, 4))
    )
    values, truths = [bytearray(v) for v, _ in messages], [t for _, t in messages]
    for _ in range(data.draw(st.integers(0, 6))):
        i = data.draw(st.integers(0, len(values) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "extend", "drop_truth"]))
        if action == "flip" and values[i]:
            j = data.draw(st.integers(0, len(values[i]) - 1))
            values[i][j] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            values[i] = values[i][: data.draw(st.integers(0, len(values[i])))]
        elif action == "extend":
            values[i] += data.draw(st.binary(min_size=1, max_size=40))
        elif action == "drop_truth":
            truths[i] = None
    values = [bytes(v) for v in values]
    bulk = CODEC.decode_many(values, truths)
    errors = {}
    for i, (v, t) in enumerate(zip(values, truths)):
        try:
            CODEC.decode(v, t)
        except DecodeError as exc:
            errors[i] = exc.reason
    assert {i: e.reason for i, e in bulk.errors} == errors
    assert sorted(set(bulk.message.tolist())) == [i for i in range(len(values)) if i not in errors]
