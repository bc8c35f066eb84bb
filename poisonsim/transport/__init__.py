"""How batches of events move from producers to consumers.

The embedded run uses :class:`InMemoryTransport`;
:class:`~poisonsim.transport.kafka_transport.KafkaTransport` moves the same batches
through a broker (``run(scenario, transport=...)`` takes either). A receive
may return part of what was sent; the caller receives until it has it all.
Ground truth travels beside each batch (a Kafka header there), never inside it.

>>> from poisonsim.events import EventBatch, Truth
>>> import numpy as np
>>> t = InMemoryTransport()
>>> t.send("events", EventBatch.from_arrays(np.zeros((2, 1)), [0, 0]), Truth.clean(2))
>>> batch, truth = t.receive("events")
>>> len(batch), t.receive("events")
(2, None)
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Protocol

from poisonsim.events import EventBatch, Truth


class Transport(Protocol):
    """Two verbs: send a batch with its truth to a topic, receive the next events of a topic (None: none)."""

    def send(self, topic: str, batch: EventBatch, truth: Truth) -> None: ...

    def receive(self, topic: str) -> tuple[EventBatch, Truth] | None: ...


class InMemoryTransport:
    """A FIFO queue per topic, in one process."""

    def __init__(self) -> None:
        self._queues: dict[str, deque] = defaultdict(deque)

    def send(self, topic: str, batch: EventBatch, truth: Truth) -> None:
        self._queues[topic].append((batch, truth))

    def receive(self, topic: str) -> tuple[EventBatch, Truth] | None:
        queue = self._queues[topic]
        return queue.popleft() if queue else None
