"""Kafka transport (kafka-python): connection settings, topics, sending and receiving events.

- :class:`KafkaSettings`: bootstrap servers and security (SASL/TLS passed
  through to kafka-python); secrets never appear in a repr or a log. The
  flags and ``POISONSIM_*`` variables that set them are in :mod:`poisonsim.services.runtime`.
- :func:`scenario_key` and :func:`partition_for`: events are keyed by scenario
  id, and producer and consumer compute the same partition from the key.
- :class:`EventSender`: encodes batches (:mod:`poisonsim.transport.codec`) and sends them
  with ground truth in a header, signed when given a key
  (:mod:`poisonsim.transport.signing`); waits out an unreachable broker, logging it,
  and sends again whatever failed, so nothing is lost once it is back.
- :class:`EventReceiver` (:mod:`poisonsim.transport.receiver`): reads the scenario's partition of each topic from
  given offsets (manual assignment: the consumer's checkpoint owns the
  offsets), decodes, and sends what is refused (malformed, unreadable,
  unsigned) to the dead-letter topic (:mod:`poisonsim.transport.dead_letters`).

>>> [partition_for(b"centroid-shift-0123456789ab", n) for n in (1, 4, 12)]
[0, 2, 10]
>>> KafkaSettings(sasl_password="hunter2")  # secrets are never shown
KafkaSettings(bootstrap_servers='localhost:9092', security_protocol='PLAINTEXT', ...)
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field, fields
from typing import Callable

from poisonsim.config import ConfigError
from poisonsim.events import EventBatch, Truth
from poisonsim.transport.codec import TRUTH_HEADER, Codec
from poisonsim.transport.dead_letters import DeadLetters, RecordAt
from poisonsim.transport.signing import SIGNATURE_HEADER, Signer

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_TOPICS = {"benign": "poisonsim.benign", "attack": "poisonsim.attack", "dead_letter": "poisonsim.dead-letters"}


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the broker; everything kafka-python needs to connect."""

    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)[:2])
        return f"KafkaSettings({shown}, ...)"

    def check(self) -> KafkaSettings:
        """Refuse inconsistent settings before connecting."""
        if not self.bootstrap_servers.strip():
            raise ConfigError("--bootstrap-servers: expected host:port[,host:port...], got an empty string")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"--security-protocol: expected one of {', '.join(SECURITY_PROTOCOLS)}; got {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"--sasl-mechanism: {self.security_protocol} needs one of "
                    f"{', '.join(SASL_MECHANISMS)}; got {self.sasl_mechanism!r}"
                )
            if not self.sasl_username or self.sasl_password is None:
                raise ConfigError(
                    f"{self.security_protocol} needs --sasl-username and a password "
                    "(POISONSIM_SASL_PASSWORD or --sasl-password-file)"
                )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"--{name.replace('_', '-')}: no such file {path!r}")
        return self

    def client_config(self) -> dict:
        """Keyword arguments for any kafka-python client."""
        config = {"bootstrap_servers": self.bootstrap_servers.split(","), "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            config.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if getattr(self, name):
                config[name] = getattr(self, name)
        return config


def scenario_key(scenario) -> bytes:
    """The scenario id events are keyed by: its name and a digest of every resolved value."""
    digest = hashlib.sha256(scenario.to_toml().encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", scenario.name).lstrip(".")[:100]  # it names checkpoint files too
    return f"{name}-{digest}".encode()


def partition_for(key: bytes, n_partitions: int) -> int:
    """The partition kafka-python's default partitioner (murmur2, as Java's) gives ``key``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % n_partitions


def retry(action: Callable, what: str, stop: Callable[[], bool] = lambda: False, deadline_s: float | None = None):
    """Call ``action`` until it succeeds, backing off (0.5 s doubling to 10 s) and logging each failure."""
    from kafka.errors import KafkaError

    wait, started = 0.5, time.monotonic()
    while True:
        try:
            return action()
        except (KafkaError, OSError) as exc:
            if stop() or (deadline_s is not None and time.monotonic() - started > deadline_s):
                raise
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


def ensure_topics(
    settings: KafkaSettings, names: list[str], partitions: int = 1, stop: Callable[[], bool] = lambda: False
) -> dict[str, int]:
    """Create missing topics; returns each topic's partition count (waits for the broker)."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    def create() -> None:
        admin = KafkaAdminClient(**settings.client_config(), client_id="poisonsim-admin")
        try:
            missing = [n for n in dict.fromkeys(names) if n not in set(admin.list_topics())]
            if missing:
                try:
                    admin.create_topics([NewTopic(n, partitions, 1) for n in missing])
                    log.info("created topics %s (%d partition(s))", ", ".join(missing), partitions)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    retry(create, f"creating topics on {settings.bootstrap_servers}", stop)
    consumer = retry(lambda: KafkaConsumer(**settings.client_config(), enable_auto_commit=False), "connecting", stop)
    try:
        counts: dict[str, int] = {}
        while len(counts) < len(set(names)):
            for name in names:
                found = consumer.partitions_for_topic(name)
                if found:
                    counts[name] = len(found)
            if len(counts) < len(set(names)):
                if stop():
                    raise InterruptedError("stopped while waiting for topics")
                time.sleep(0.2)
        return counts
    finally:
        consumer.close()


class EventSender:
    """Sends one stream's events to its topic and partition, keyed by scenario; loses nothing.

    ``send`` queues messages; ``flush`` waits until the broker has them all.
    While it does not answer within ``stall_s``, ``flush`` logs it and keeps
    waiting; messages whose delivery failed (a broker away longer than the
    delivery timeout) are sent again, with backoff. ``on_state(up)`` is told
    when the broker stops and starts answering.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        codec: Codec,
        topic: str,
        key: bytes,
        partition: int,
        events_per_message: int = 1,
        stall_s: float = 2.0,
        on_state: Callable[[bool], None] = lambda up: None,
        on_retry: Callable[[int], None] = lambda n: None,
        signer: Signer | None = None,
        **producer_config,
    ):
        from kafka import KafkaProducer

        self.codec, self.topic, self.key, self.partition, self.signer = codec, topic, key, partition, signer
        self.events_per_message, self.stall_s = events_per_message, stall_s
        self.on_state, self.on_retry = on_state, on_retry
        config = {
            "acks": "all",
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "max_request_size": codec.max_bytes + 4096,
            "delivery_timeout_ms": 600_000,
            **producer_config,
        }
        self.producer = retry(lambda: KafkaProducer(**settings.client_config(), **config), "connecting the producer")
        self._pending: list[tuple[bytes, bytes]] = []
        self._futures: list = []

    @property
    def pending(self) -> int:
        """Messages queued and not yet known to be acknowledged."""
        return len(self._pending)

    def send(self, batch: EventBatch, truth: Truth) -> int:
        """Queue ``batch``; returns the number of messages."""
        from kafka.errors import KafkaTimeoutError

        messages = self.codec.encode(batch, truth, self.events_per_message)
        send, topic, key, partition, futures = self.producer.send, self.topic, self.key, self.partition, self._futures
        sent = 0
        headers = self._headers
        try:  # the fast path: the producer takes every message at once
            for value, bits in messages:
                futures.append(send(topic, value, key=key, partition=partition, headers=headers(value, bits)))
                sent += 1
        except KafkaTimeoutError:
            pass
        self._pending.extend(messages[:sent])
        for value, bits in messages[sent:]:  # the broker is away: one by one, waiting
            self._send_one(value, bits)
        return len(messages)

    def _headers(self, value: bytes, bits: bytes) -> list[tuple[str, bytes]]:
        if self.signer is None:
            return [(TRUTH_HEADER, bits)]
        return [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, self.signer.sign(self.key, self.topic, value, bits))]

    def _send_one(self, value: bytes, bits: bytes) -> None:
        from kafka.errors import KafkaTimeoutError

        wait = 0.5
        while True:
            try:
                future = self.producer.send(
                    self.topic, value, key=self.key, partition=self.partition, headers=self._headers(value, bits)
                )
                break
            except KafkaTimeoutError as exc:  # metadata or buffer space not available in max_block_ms
                log.warning("cannot hand a message to the broker (%s); retrying in %.1f s", exc, wait)
                self.on_state(False)
                time.sleep(wait)
                wait = min(wait * 2, 10.0)
        self._pending.append((value, bits))
        self._futures.append(future)

    def flush(self) -> None:
        """Block until every queued message is acknowledged (sending failed ones again)."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        wait = 0.5
        while self._pending:
            started, stalled = time.monotonic(), False
            while True:
                try:
                    self.producer.flush(timeout=self.stall_s)
                    break
                except KafkaTimeoutError:
                    stalled = True
                    self.on_state(False)
                    log.warning(
                        "broker not acknowledging for %.0f s; %d messages held, still retrying",
                        time.monotonic() - started,
                        len(self._pending),
                    )
            if stalled:
                log.warning("broker acknowledging again after %.1f s", time.monotonic() - started)
            self.on_state(True)
            failed = [i for i, f in enumerate(self._futures) if f.failed()]
            for i in failed:
                exc = self._futures[i].exception
                if not (isinstance(exc, KafkaError) and exc.retriable or isinstance(exc, KafkaTimeoutError)):
                    raise exc
            again = [self._pending[i] for i in failed]
            self._pending, self._futures = [], []
            if again:
                log.warning("%d messages were not delivered in time; sending them again in %.1f s", len(again), wait)
                self.on_retry(len(again))
                time.sleep(wait)
                wait = min(wait * 2, 10.0)
                for value, bits in again:
                    self._send_one(value, bits)

    def close(self) -> None:
        self.flush()
        self.producer.close()


from poisonsim.transport.receiver import EventReceiver, Received  # noqa: E402 (it uses the settings above)

__all__ = [
    "DeadLetters",
    "EventReceiver",
    "EventSender",
    "KafkaSettings",
    "Received",
    "RecordAt",
    "ensure_topics",
    "partition_for",
    "retry",
    "scenario_key",
]
