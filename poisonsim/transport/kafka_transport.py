"""The :class:`~poisonsim.transport.Transport` protocol over a Kafka broker.

``run(scenario, transport=KafkaTransport(...))`` sends each batch of the
merged stream to a topic through the broker and learns from what it reads
back: the same codec, truth header and dead letters as the producer and
learner processes, in one process. Each transport topic ``t`` is the Kafka
topic ``prefix + t``, on the scenario's partition (``partitions`` per topic).
"""

from __future__ import annotations

import time

from poisonsim.events import EventBatch, Truth
from poisonsim.transport.codec import Codec
from poisonsim.transport.kafka import (
    DeadLetters,
    EventReceiver,
    EventSender,
    KafkaSettings,
    ensure_topics,
    partition_for,
)


class KafkaTransport:
    """Send batches to Kafka topics and receive them back, in order, for one scenario (``key``)."""

    def __init__(
        self,
        settings: KafkaSettings,
        codec: Codec,
        key: bytes,
        prefix: str = "poisonsim.",
        partitions: int = 1,
        events_per_message: int = 1,
        timeout_s: float = 60.0,
        dead_letter_topic: str | None = None,
        signer=None,
    ):
        self.settings, self.codec, self.key, self.prefix, self.signer = settings, codec, key, prefix, signer
        self.partitions, self.events_per_message, self.timeout_s = partitions, events_per_message, timeout_s
        self.dead_letter_topic = dead_letter_topic
        self._senders: dict[str, EventSender] = {}
        self._receivers: dict[str, EventReceiver] = {}
        self._dead_letters: DeadLetters | None = None

    def send(self, topic: str, batch: EventBatch, truth: Truth) -> None:
        """Hand ``batch`` to the broker and wait until it is acknowledged."""
        sender = self._senders.get(topic) or self._open_sender(topic)
        sender.send(batch, truth)
        sender.flush()

    def receive(self, topic: str) -> tuple[EventBatch, Truth] | None:
        """The next events of ``topic`` that decode (malformed ones go to the dead letters); ``None`` when
        nothing arrives within ``timeout_s``."""
        receiver = self._receivers.get(topic) or self._open_receiver(topic)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            parts = [part.decoded for part in receiver.poll(timeout_ms=200) if len(part.decoded.batch)]
            if parts:
                return EventBatch.concatenate([p.batch for p in parts]), Truth.concatenate([p.truth for p in parts])
        return None

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()
        for receiver in self._receivers.values():
            receiver.close()
        if self._dead_letters is not None:
            self._dead_letters.close()

    def _open_sender(self, topic: str) -> EventSender:
        name = self.prefix + topic
        ensure_topics(self.settings, [name], self.partitions)
        partition = partition_for(self.key, self.partitions)
        self._senders[topic] = EventSender(
            self.settings, self.codec, name, self.key, partition, self.events_per_message, signer=self.signer
        )
        return self._senders[topic]

    def _open_receiver(self, topic: str) -> EventReceiver:
        name = self.prefix + topic
        ensure_topics(self.settings, [name], self.partitions)
        if self.dead_letter_topic and self._dead_letters is None:
            self._dead_letters = DeadLetters(self.settings, self.dead_letter_topic)
        receiver = EventReceiver(
            self.settings, [name], self.key, self.codec, {name: self.partitions}, self._dead_letters, signer=self.signer
        )
        receiver.seek([0])
        self._receivers[topic] = receiver
        return receiver
