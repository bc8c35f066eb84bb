"""The dead-letter topic: every record the learner refuses, with why and where it came from; never fatal.

A dead letter keeps the original value (cut to :data:`MAX_VALUE_BYTES`, its
size then in ``original-size``), the refused record's ``truth`` header when it
is one, and headers ``reason`` (one of :data:`~poisonsim.transport.codec.REASONS`),
``detail``, ``source-topic``, ``source-partition`` and ``source-offset``.
Publishing one is retried; one that still fails is counted in
:attr:`DeadLetters.failed` and logged, and the learner goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 900_000  # under the producer's and the broker's default 1 MB limits, headers included
ATTEMPTS = 3


@dataclass(frozen=True)
class RecordAt:
    """A record known only by where it was (one the client library could not parse, a copy in a conflict)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""
    headers: list = field(default_factory=list)


def dead_letter_headers(record, reason: str, detail: str, truth_header: str) -> tuple[bytes, list]:
    """The value and headers of ``record``'s dead letter (value cut to :data:`MAX_VALUE_BYTES`)."""
    value = record.value if isinstance(record.value, bytes) else b""
    headers = [("reason", reason.encode()), ("detail", detail.encode("utf-8", "replace")[:1000]),
               ("source-topic", record.topic.encode()), ("source-partition", str(record.partition).encode()),
               ("source-offset", str(record.offset).encode())]  # fmt: skip
    if len(value) > MAX_VALUE_BYTES:
        headers.append(("original-size", str(len(value)).encode()))
        value = value[:MAX_VALUE_BYTES]
    truths = [v for k, v in (record.headers or []) if k == truth_header and isinstance(v, bytes)]
    if len(truths) == 1 and len(truths[0]) < 10_000:
        headers.append((truth_header, truths[0]))
    return value, headers


class DeadLetters:
    """Publishes dead letters to ``topic``; a publish that keeps failing is counted and skipped."""

    def __init__(self, settings, topic: str, truth_header: str = "truth"):
        from kafka import KafkaProducer

        from poisonsim.transport.kafka import retry

        self.topic, self.truth_header = topic, truth_header
        self.failed = 0
        config = {**settings.client_config(), "acks": "all", "linger_ms": 5, "delivery_timeout_ms": 600_000}
        self.producer = retry(lambda: KafkaProducer(**config), "connecting the dead-letter producer")
        self._futures: list = []

    def send(self, record, reason: str, detail: str) -> bool:
        """Queue ``record``'s dead letter; False (counted, logged) when it cannot be published."""
        value, headers = dead_letter_headers(record, reason, detail, self.truth_header)
        key = record.key if isinstance(record.key, bytes) and len(record.key) < 10_000 else None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._futures.append(self.producer.send(self.topic, value, key=key, headers=headers))
                return True
            except Exception as exc:  # noqa: BLE001 - a dead letter must never stop the learner
                log.warning("dead letter for %s[%s]@%s not published (attempt %d/%d): %s: %s", record.topic,
                            record.partition, record.offset, attempt, ATTEMPTS, type(exc).__name__, exc)  # fmt: skip
        self.failed += 1
        log.error("dead letter for %s[%s]@%s skipped after %d attempts (reason %s)", record.topic, record.partition,
                  record.offset, ATTEMPTS, reason)  # fmt: skip
        return False

    def flush(self) -> None:
        """Wait for every queued dead letter; count (and log) the ones the broker refused."""
        self.producer.flush()
        refused = [f for f in self._futures if f.failed()]
        for future in refused:
            log.error("a dead letter was refused by the broker: %s", future.exception)
        self.failed += len(refused)
        self._futures = []

    def close(self) -> None:
        self.flush()
        self.producer.close()
