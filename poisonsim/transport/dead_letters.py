"""The dead-letter topic: the records the learner refuses, with why and where they came from; never fatal.

A dead letter keeps the original value (cut to :data:`MAX_VALUE_BYTES`, its
size then in ``original-size``), the refused record's ``truth`` header when it
is one, and headers ``reason`` (one of :data:`~poisonsim.transport.codec.REASONS`),
``detail``, ``source-topic``, ``source-partition`` and ``source-offset``.
Publishing one is retried; one that still fails is counted in
:attr:`DeadLetters.failed` and logged, and the learner goes on.

Refusals cost little, so that a flood of bad records cannot multiply a
run's time or fill a disk: every refused record is counted (the consumer's
``poisonsim_dead_letters_total``), but at most :data:`PUBLISH_BURST` dead
letters are written at once and :data:`PUBLISH_PER_S` a second after that
(the rest counted in :attr:`DeadLetters.withheld`, by reason), and the log
gets, per :data:`LOG_INTERVAL_S`, the first refusal of each reason in full
and one line with how many more (:class:`RefusalLog`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 900_000  # under the producer's and the broker's default 1 MB limits, headers included
ATTEMPTS = 3
PUBLISH_BURST = 1_000  # dead letters written at once before the rate applies
PUBLISH_PER_S = 100.0  # dead letters written a second, on average, once the burst is spent
LOG_INTERVAL_S = 10.0  # refusals logged one by one: the first of each reason per interval


class TokenBucket:
    """At most ``burst`` at once and ``rate`` a second on average.

    >>> now = [0.0]
    >>> bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    >>> [bucket.take() for _ in range(4)]
    [True, True, True, False]
    >>> now[0] = 1.0  # a second later: two more
    >>> [bucket.take() for _ in range(3)]
    [True, True, False]
    >>> now[0] = 3.0
    >>> bucket.take_up_to(5), bucket.take_up_to(5)  # refilled to the burst, no more
    (3, 0)
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        return self.take_up_to(1) == 1

    def take_up_to(self, n: int) -> int:
        """As many of ``n`` as the bucket allows now (taken)."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        taken = min(n, int(self._tokens))
        self._tokens -= taken
        return taken


class RefusalLog:
    """Log lines for refused records, bounded: per ``interval_s`` the first refusal of each reason in full,
    then one line with how many more of each (at the interval's end, or at :meth:`flush`).

    >>> now, lines = [0.0], []
    >>> refusals = RefusalLog(lambda *a: lines.append(a[0] % a[1:]), interval_s=10, clock=lambda: now[0])
    >>> for offset in range(5):
    ...     refusals.refused(RecordAt("t", 0, offset), "bad_signature", "no signature")
    >>> now[0] = 10.0
    >>> refusals.tick()
    >>> lines
    ['dead letter: t[0] offset 0: bad_signature: no signature', '4 more dead letters in the last 10 s: bad_signature 4']
    """

    def __init__(
        self,
        write: Callable[..., None] = log.warning,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.write, self.interval_s, self.clock = write, interval_s, clock
        self._more: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._since = clock()

    def refused(self, record, reason: str, detail: str, n: int = 1) -> None:
        """``n`` refused records for one reason, ``record`` the first of them."""
        if reason in self._logged:
            self._more[reason] += n
        else:
            self._logged.add(reason)
            self.write(
                "dead letter: %s[%s] offset %d: %s: %s", record.topic, record.partition, record.offset, reason, detail
            )
            if n > 1:
                self._more[reason] += n - 1
        self.tick()

    def tick(self) -> None:
        """Close the interval if it is over."""
        if self.clock() - self._since >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """The interval's line of counts (if any were held back), and a new interval."""
        if self._more:
            counts = ", ".join(f"{reason} {n}" for reason, n in sorted(self._more.items()))
            self.write(
                "%d more dead letters in the last %.0f s: %s",
                sum(self._more.values()),
                self.clock() - self._since,
                counts,
            )
        self._more.clear()
        self._logged.clear()
        self._since = self.clock()


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
    headers = [
        ("reason", reason.encode()),
        ("detail", detail.encode("utf-8", "replace")[:1000]),
        ("source-topic", record.topic.encode()),
        ("source-partition", str(record.partition).encode()),
        ("source-offset", str(record.offset).encode()),
    ]
    if len(value) > MAX_VALUE_BYTES:
        headers.append(("original-size", str(len(value)).encode()))
        value = value[:MAX_VALUE_BYTES]
    truths = [v for k, v in (record.headers or []) if k == truth_header and isinstance(v, bytes)]
    if len(truths) == 1 and len(truths[0]) < 10_000:
        headers.append((truth_header, truths[0]))
    return value, headers


class DeadLetters:
    """Publishes dead letters to ``topic`` at a bounded rate (see the module); a publish that keeps failing is
    counted and skipped."""

    def __init__(
        self, settings, topic: str, truth_header: str = "truth", rate: float = PUBLISH_PER_S, burst: int = PUBLISH_BURST
    ):
        from kafka import KafkaProducer

        from poisonsim.transport.kafka import retry

        self.topic, self.truth_header = topic, truth_header
        self.failed = 0
        self.withheld: Counter[str] = Counter()  # refused records past the rate, by reason: counted, not written
        self._bucket = TokenBucket(rate, burst)
        config = {**settings.client_config(), "acks": "all", "linger_ms": 5, "delivery_timeout_ms": 600_000}
        self.producer = retry(lambda: KafkaProducer(**config), "connecting the dead-letter producer")
        self._futures: list = []

    def send_many(self, records: list, reason: str, detail: str) -> None:
        """Queue the dead letters of ``records``, all refused for one reason, as far as the rate allows."""
        allowed = self._bucket.take_up_to(len(records))
        if allowed < len(records):
            self.withheld[reason] += len(records) - allowed
        for record in records[:allowed]:
            self._publish(record, reason, detail)

    def send(self, record, reason: str, detail: str) -> bool:
        """Queue ``record``'s dead letter; False when it is withheld (past the rate) or cannot be published
        (counted, logged)."""
        if not self._bucket.take():
            self.withheld[reason] += 1
            return False
        return self._publish(record, reason, detail)

    def _publish(self, record, reason: str, detail: str) -> bool:
        value, headers = dead_letter_headers(record, reason, detail, self.truth_header)
        key = record.key if isinstance(record.key, bytes) and len(record.key) < 10_000 else None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._futures.append(self.producer.send(self.topic, value, key=key, headers=headers))
                return True
            except Exception as exc:  # noqa: BLE001 - a dead letter must never stop the learner
                log.warning(
                    "dead letter for %s[%s]@%s not published (attempt %d/%d): %s: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    attempt,
                    ATTEMPTS,
                    type(exc).__name__,
                    exc,
                )
        self.failed += 1
        log.error(
            "dead letter for %s[%s]@%s skipped after %d attempts (reason %s)",
            record.topic,
            record.partition,
            record.offset,
            ATTEMPTS,
            reason,
        )
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
