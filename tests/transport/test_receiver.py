"""The receiver's screening of records before decoding (no broker: records built as kafka-python returns them).

A null header value cannot be sent with kafka-python's producer (it writes
an empty value instead); other clients can, so it is screened here.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from kafka.consumer.fetcher import ConsumerRecord

from poisonsim.events import EventBatch, Truth
from poisonsim.transport.codec import TRUTH_HEADER, Codec
from poisonsim.transport.dead_letters import DeadLetters, RefusalLog, TokenBucket
from poisonsim.transport.receiver import EventReceiver
from poisonsim.transport.signing import SIGNATURE_HEADER, Signer

KEY = b"scenario-0123"
TOPIC = "t"
CODEC = Codec(n_features=2, n_classes=2, n_events=100)


class Collected:
    """Dead letters, kept instead of published."""

    def __init__(self):
        self.sent = []

    def send(self, record, reason, detail):
        self.sent.append((record.offset, reason))

    def send_many(self, records, reason, detail):
        for r in records:
            self.send(r, reason, detail)


def receiver(signer=None) -> tuple[EventReceiver, Collected]:
    dead = Collected()
    r = EventReceiver.__new__(EventReceiver)  # no consumer: only the decoding path is exercised
    r.key, r.codec, r.dead_letters, r.signer, r.refusals = KEY, CODEC, dead, signer, RefusalLog()
    return r, dead


def record(offset: int, value, headers, key: bytes = KEY, topic: str = TOPIC) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, -1, offset, 0, 0, key, value, headers, None, 0, 0, 0)


def message(event_id: int) -> tuple[bytes, bytes]:
    batch = EventBatch.from_arrays(np.ones((1, 2)), [1], first_id=event_id)
    return CODEC.encode(batch, Truth.clean(1), 1)[0]


def test_null_repeated_and_missing_headers_are_dead_letters_and_the_rest_decodes():
    r, dead = receiver()
    value, bits = message(3)
    records = [
        record(0, value, [(TRUTH_HEADER, None)]),
        record(1, value, [(TRUTH_HEADER, bits), (TRUTH_HEADER, bits)]),
        record(2, value, [("x", None), (TRUTH_HEADER, bits)]),
        record(3, None, [(TRUTH_HEADER, bits)]),
        record(4, value, [(TRUTH_HEADER, bits)]),
        record(5, value, [(TRUTH_HEADER, bits)], key=b"another-scenario"),
    ]
    got = r._decode(0, records)
    assert dead.sent == [(0, "bad_header"), (1, "bad_header"), (2, "bad_header"), (3, "empty")]
    assert got.decoded.batch.ids.tolist() == [3] and got.offsets.tolist() == [4]
    assert got.ignored == 1 and got.next_offset == 6 and got.dead == {"bad_header": 3, "empty": 1}


def test_with_a_key_only_records_signed_with_it_for_their_own_topic_decode():
    signer = Signer(b"k" * 32)
    r, dead = receiver(signer)
    value, bits = message(7)
    good = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, signer.sign(KEY, TOPIC, value, bits))]
    forged_truth = [(TRUTH_HEADER, bytes([bits[0], bits[1] ^ 1])), good[1]]
    other = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, Signer(b"o" * 32).sign(KEY, TOPIC, value, bits))]
    reordered = [good[1], good[0]]
    elsewhere = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, signer.sign(KEY, "attack", value, bits))]
    got = r._decode(
        0,
        [
            record(0, value, [(TRUTH_HEADER, bits)]),
            record(1, value, forged_truth),
            record(2, value, other),
            record(3, value, good),
            record(4, value, reordered),
            record(5, value, elsewhere),
        ],
    )
    assert dead.sent == [(0, "bad_signature"), (1, "bad_signature"), (2, "bad_signature"), (5, "bad_signature")]
    assert got.offsets.tolist() == [3, 4]  # header order does not matter; a record signed for another topic: refused


class Producer:
    """A dead-letter producer that keeps what it is sent."""

    def __init__(self):
        self.sent = []

    def send(self, topic, value, key=None, headers=None):
        self.sent.append(dict(headers)["source-offset"])


def test_a_flood_of_forged_records_is_counted_whole_logged_once_and_written_at_the_bucket_s_rate():
    signer, lines = Signer(b"k" * 32), []
    r, _ = receiver(signer)
    r.refusals = RefusalLog(lambda *a: lines.append(a[0] % a[1:]))
    r.dead_letters = DeadLetters.__new__(DeadLetters)  # no broker: its producer keeps what it is sent
    r.dead_letters.topic, r.dead_letters.truth_header, r.dead_letters.failed = "dead", TRUTH_HEADER, 0
    r.dead_letters.withheld, r.dead_letters._futures = Counter(), []
    r.dead_letters._bucket, r.dead_letters.producer = TokenBucket(rate=0, burst=1_000, clock=lambda: 0.0), Producer()
    value, bits = message(7)
    good = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, signer.sign(KEY, TOPIC, value, bits))]
    forged = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, b"\0" * 32)]
    got = r._decode(0, [record(i, value, forged) for i in range(2_500)] + [record(2_500, value, good)])
    assert got.dead == {"bad_signature": 2_500} and got.offsets.tolist() == [2_500]
    assert r.dead_letters.producer.sent == [str(i).encode() for i in range(1_000)]  # the burst, in order
    assert r.dead_letters.withheld == {"bad_signature": 1_500}
    r.refusals.flush()
    assert lines == [
        "dead letter: t[0] offset 0: bad_signature: signature does not match",
        "2499 more dead letters in the last 0 s: bad_signature 2499",
    ]


class SlowProbe:
    """A probe consumer: ``benign`` holds an unparseable record; ``attack`` has nothing yet (a poll waits it out)."""

    def __init__(self):
        self.waited_ms = 0
        self.tp = None

    def assign(self, tps):
        (self.tp,) = tps

    def seek(self, tp, offset):
        pass

    def poll(self, timeout_ms):
        from kafka.errors import CorruptRecordError

        if self.tp.topic == "benign":
            raise CorruptRecordError("header name is not UTF-8")
        self.waited_ms += timeout_ms
        return {}


def test_an_unparseable_record_is_found_without_waiting_out_an_empty_partition():
    """Partitions are read in turn a little at a time: the empty one (read first) costs 0.2 s, not the timeout."""
    from kafka import TopicPartition

    r, _ = receiver()
    r._probe = SlowProbe()
    attack, benign = TopicPartition("attack", 0), TopicPartition("benign", 0)
    assert r._find_unreadable({attack: 5, benign: 7}) == benign
    assert r._probe.waited_ms == 200
    assert r._find_unreadable({attack: 5}, timeout_s=0.5) is None  # nothing unparseable anywhere
