"""The learner process: merge the two topics, learn test-then-train, evaluate, export, checkpoint.

It rebuilds the scenario's :class:`~poisonsim.pipeline.world.World` from the scenario
file (so it knows the model's warm-up and the white-box attacker's target),
reads the scenario's partition of the benign and attack topics, merges them
back into the embedded order (:class:`~poisonsim.transport.merge.Merger`) and feeds a
:class:`~poisonsim.pipeline.learner.Learner`. Messages that do not decode go to the
dead-letter topic.

Delivery is at least once and learning exactly once: a checkpoint holds the
model and evaluator state together with the offsets it reflects (per topic,
the first message holding an event not yet learned); it is written atomically
every ``--checkpoint-interval`` seconds and on SIGTERM, and only then are the
offsets committed to the consumer group. A restart (after a crash or kill -9)
loads the checkpoint, seeks to its offsets and drops redelivered events it has
already learned, so it ends with the same model and metrics as a run that was
never interrupted.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.results import RunResult
from poisonsim.pipeline.world import World
from poisonsim.services import checkpoint
from poisonsim.services.exporter import STREAMS, ConsumerMetrics, LearnerCollector, scenario_info
from poisonsim.transport import kafka as kafka_io
from poisonsim.transport.codec import Codec
from poisonsim.transport.merge import Merger
from poisonsim.transport.signing import Signer

log = logging.getLogger("consume")


@dataclass
class LearnerOptions:
    topics: tuple[str, str]  # benign, attack
    dead_letter_topic: str
    group_id: str | None
    checkpoint_path: Path
    checkpoint_interval_s: float = 5.0
    fresh: bool = False
    stall_s: float = 5.0
    gap_timeout_s: float = 0.0  # 0: wait for a missing event forever
    max_buffered_bytes: int = 256 * 2**20  # events held for the merge, at most (a topic running ahead is paused)
    partitions: int = 1
    signer: Signer | None = None  # verifies every record; None: records are not checked


class LearnerProcess:
    """One scenario's learner over Kafka."""

    def __init__(self, scenario, settings: kafka_io.KafkaSettings, options: LearnerOptions, registry, stop):
        self.scenario, self.settings, self.options, self.stop = scenario, settings, options, stop
        self.key = kafka_io.scenario_key(scenario)
        self.world = World.build(scenario)
        self.learner = Learner(self.world)
        self.n_events = scenario.stream.n_events
        self.codec = Codec(
            self.world.source.n_features,
            self.world.source.n_classes,
            self.n_events,
            pinned=self.world.pins_content,
            n_sources=self.world.n_source_ids,
        )
        self.metrics = ConsumerMetrics(registry)
        self.collector = LearnerCollector(scenario.model.kind, registry)
        scenario_info(registry, scenario, self.key.decode(), "learner")
        self.merger = Merger(2)
        self.last_id = [-1, -1]  # per topic: the id of the last event read from it
        self.counts = {"events": [0, 0], "dead_letters": {}}  # what the checkpoint carries over to the metrics
        self.dead_letters: kafka_io.DeadLetters | None = None
        self._withheld: dict[str, int] = {}  # dead letters withheld past the rate, as the metrics have them
        self._started: float | None = None
        self._restore()
        self.collector.update(self.learner)

    # -- checkpoint ---------------------------------------------------------------------

    def _restore(self) -> None:
        path = self.options.checkpoint_path
        if checkpoint.remove_stale(path):
            log.info("removed temporary files of an interrupted checkpoint write next to %s", path)
        if self.options.fresh and path.exists():
            log.info("--fresh: ignoring the checkpoint %s", path)
            return
        if not path.exists():
            log.info("no checkpoint at %s: starting from the beginning of the topics", path)
            return
        state = checkpoint.load(path)
        if state.get("scenario_key") != self.key.decode() or list(state.get("topics", [])) != list(self.options.topics):
            raise checkpoint.CheckpointError(
                f"{path} is for scenario {state.get('scenario_key')} on topics {state.get('topics')}, not "
                f"{self.key.decode()} on {list(self.options.topics)}; use --fresh or another --checkpoint-dir"
            )
        try:
            self.learner.set_state(state["learner"])
            self.merger = Merger(2, next_id=int(state["next_id"]), consumed=[int(o) for o in state["offsets"]])
            self.counts = {
                "events": [int(n) for n in state["counters"]["events"]],
                "dead_letters": {str(k): int(v) for k, v in state["counters"]["dead_letters"].items()},
            }
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise checkpoint.CheckpointError(
                f"{path}: the right format, but not a learner state of this scenario "
                f"({type(exc).__name__}: {exc}); use --fresh"
            ) from None
        for stream, n in zip(STREAMS, self.counts["events"]):
            self.metrics.events.labels(stream=stream).inc(n)
        for reason, n in self.counts["dead_letters"].items():
            self.metrics.dead_letters.labels(reason=reason).inc(n)
        log.info("resumed from %s: stream position %d, offsets %s", path, self.merger.next_id, state["offsets"])

    def save_checkpoint(self) -> None:
        if self.dead_letters is not None:
            self.dead_letters.flush()  # what the offsets skip must be in the dead-letter topic first
        offsets = self.merger.resume_offsets()
        state = {
            "scenario_key": self.key.decode(),
            "topics": list(self.options.topics),
            "next_id": self.merger.next_id,
            "offsets": offsets,
            "learner": self.learner.get_state(),
            "counters": self.counts,
        }
        checkpoint.save(self.options.checkpoint_path, state)
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_time.set_to_current_time()
        self.receiver.commit(offsets, metadata=f"{self.key.decode()}@{self.merger.next_id}")

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> RunResult | None:
        """Consume until the stream is complete (returns the result) or a stop (returns None)."""
        options = self.options
        if self.merger.next_id < self.n_events:
            counts = kafka_io.ensure_topics(
                self.settings, [*options.topics, options.dead_letter_topic], options.partitions, self.stop
            )
            self.dead_letters = kafka_io.DeadLetters(self.settings, options.dead_letter_topic)
            self.receiver = kafka_io.EventReceiver(
                self.settings,
                list(options.topics),
                self.key,
                self.codec,
                counts,
                self.dead_letters,
                options.group_id,
                options.signer,
            )
            self.receiver.seek(self.merger.resume_offsets())
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in self.receiver.partitions)
            log.info("%s: consuming %s from stream position %d", self.key.decode(), where, self.merger.next_id)
            try:
                self._loop()
                self.save_checkpoint()
            finally:
                self.receiver.close()
                self.dead_letters.close()
        if self.merger.next_id < self.n_events:
            log.info("stopped at stream position %d; checkpoint written", self.merger.next_id)
            return None
        evaluator = self.learner.evaluator
        if not evaluator.rows or evaluator.rows[-1]["events"] != evaluator.events:
            evaluator.evaluate()  # events were skipped over a gap: the last step still gets a row
        elapsed = time.monotonic() - self._started if self._started is not None else 0.0
        return self.learner.result(elapsed)  # as an embedded run ends: scores and the end-of-run analysis too

    def _loop(self) -> None:
        options, merger = self.options, self.merger
        gc.freeze()  # what lives for the whole run (world, clients) is kept out of the collector's way
        self._started = last_checkpoint = last_arrival = last_release = last_lag = time.monotonic()
        stalled_since: float | None = None
        paused = [False, False]
        while merger.next_id < self.n_events and not self.stop():
            received = self.receiver.poll(timeout_ms=200)
            now = time.monotonic()
            if received:
                began = time.perf_counter()
                arrived = self._ingest(received)
                released = self._feed()
                self.metrics.processing.observe(time.perf_counter() - began)
                if arrived:
                    last_arrival = now
                    if stalled_since is not None:
                        log.warning("events arriving again after %.1f s", now - stalled_since)
                        stalled_since = None
                        self.metrics.stalled.set(0)
                if released:
                    last_release = now
            paused = self._flow_control(paused)
            if not received and now - last_arrival > options.stall_s and stalled_since is None:
                stalled_since = last_arrival
                self.metrics.stalled.set(1)
                log.warning(
                    "no events for %.0f s at stream position %d of %d: waiting (broker unreachable "
                    "or producers not running)",
                    now - last_arrival,
                    merger.next_id,
                    self.n_events,
                )
            if merger.buffered and now - last_release > max(options.gap_timeout_s, 10.0):
                self._gap(now - last_release, paused)
                last_release = now
            if now - last_lag > 1.0:
                self._update_lag()
                last_lag = now
            if now - last_checkpoint > options.checkpoint_interval_s:
                self.save_checkpoint()
                last_checkpoint = now
        self._update_lag()

    def _update_lag(self) -> None:
        for stream, lag in zip(STREAMS, self.receiver.lag()):
            if lag is not None:
                self.metrics.lag.labels(stream=stream).set(lag)

    def _ingest(self, received: list[kafka_io.Received]) -> int:
        arrived = 0
        for part in received:
            batch, truth = part.decoded.batch, part.decoded.truth
            before = self.merger.duplicates
            self.merger.add(part.stream, batch, truth, part.offsets)
            self.merger.mark_consumed(part.stream, part.next_offset)
            self.metrics.duplicates.inc(self.merger.duplicates - before)
            if len(batch):
                self.last_id[part.stream] = int(batch.ids[-1])
            if part.ignored:
                self.metrics.ignored.inc(part.ignored)
            for reason, n in part.dead.items():
                self._count_dead_letter(reason, n)
            arrived += len(batch)
        self._dead_letter_conflicts()
        self._count_withheld()
        return arrived

    def _count_dead_letter(self, reason: str, n: int = 1) -> None:
        self.metrics.dead_letters.labels(reason=reason).inc(n)
        self.counts["dead_letters"][reason] = self.counts["dead_letters"].get(reason, 0) + n

    def _dead_letter_conflicts(self) -> None:
        """Each copy of an id that arrived twice with different content: not learned, dead-lettered."""
        for event_id, stream, offset in self.merger.conflicts:
            topic = self.options.topics[stream]
            record = kafka_io.RecordAt(topic, self.receiver.partition_of(stream), offset, key=self.key)
            self.receiver.dead_letter(
                record, "conflict", f"event {event_id} arrived twice with different content; neither is learned"
            )
            self._count_dead_letter("conflict")
        self.merger.conflicts.clear()

    def _count_withheld(self) -> None:
        """The dead letters withheld past the topic's rate since the last call, into the metrics."""
        for reason, n in self.dead_letters.withheld.items():
            self.metrics.withheld.labels(reason=reason).inc(n - self._withheld.get(reason, 0))
        self._withheld = dict(self.dead_letters.withheld)

    def _feed(self) -> int:
        released = 0
        before, skipped = self.merger.duplicates, self.merger.skipped
        while (ready := self.merger.pop()) is not None:
            batch, truth, _topics = ready
            self.learner.feed(batch, truth)
            # by the stream an event belongs to (benign or attack: ground truth), not the topic it came on
            for i, n in enumerate(np.bincount(truth.is_poison.astype(np.int64), minlength=2).tolist()):
                if n:
                    self.metrics.events.labels(stream=STREAMS[i]).inc(n)
                    self.counts["events"][i] += n
            released += len(batch)
        self.metrics.duplicates.inc(self.merger.duplicates - before)
        self.metrics.skipped.inc(self.merger.skipped - skipped)  # conflicting ids given up as the merge passed them
        self.metrics.buffered.set(self.merger.buffered)
        if released:
            self.collector.update(self.learner)
        return released

    def _flow_control(self, paused: list[bool]) -> list[bool]:
        """Pause or resume topics as :func:`pause_plan` says."""
        held = self.merger.buffered_bytes
        want = pause_plan(paused, self.last_id, self.merger.next_id, held, self.options.max_buffered_bytes)
        for stream in range(2):
            if want[stream] != paused[stream]:
                self.receiver.pause(stream, want[stream])
                log.info(
                    "%s %s: %d events (%.0f MiB) held for the merge",
                    "pausing" if want[stream] else "resuming",
                    self.options.topics[stream],
                    self.merger.buffered,
                    held / 2**20,
                )
                paused[stream] = want[stream]
        return paused

    def _gap(self, waited: float, paused: list[bool]) -> None:
        """The next event has not come for a while although later ones have."""
        lags = self.receiver.lag()
        caught_up = all(lag == 0 for lag in lags)  # a paused topic with lag may still hold the id
        if self.options.gap_timeout_s and caught_up:
            skipped = self.merger.skip_gap()
            self.metrics.skipped.inc(skipped)
            log.error(
                "gave up on %d missing event(s) before id %d after %.0f s (--gap-timeout)",
                skipped,
                self.merger.next_id,
                waited,
            )
            self._feed()
        else:
            log.warning(
                "waiting %.0f s for event %d (%d later events buffered; lag %s)",
                waited,
                self.merger.next_id,
                self.merger.buffered,
                lags,
            )


def pause_plan(paused: list[bool], last_ids: list[int], next_id: int, held: int, cap: int) -> list[bool]:
    """Which topics to pause: over ``cap`` bytes held, those read past ``next_id``; never all, never one that may hold it.

    Each topic delivers its ids in increasing order, so a topic whose last id
    is below the next one needed may still hold it and keeps being read; if
    every topic is past it, the one furthest behind is read. Below half the
    cap every topic is read; in between, nothing changes.

    >>> pause_plan([False, False], [900, 120], next_id=100, held=300, cap=256)  # benign far ahead
    [True, False]
    >>> pause_plan([False, False], [900, 5000], next_id=100, held=300, cap=256)  # both past: the one behind is read
    [False, True]
    >>> pause_plan([True, False], [900, 120], next_id=100, held=200, cap=256), pause_plan([True, False], [900, 120], 100, 100, 256)
    ([True, False], [False, False])
    >>> pause_plan([True, False], [90, 120], next_id=100, held=200, cap=256)  # it may hold the next id: read it
    [False, False]
    """
    may_hold = [last < next_id for last in last_ids]
    if held > cap:
        want = [not m for m in may_hold]
        if all(want):
            want[min(range(len(want)), key=lambda s: last_ids[s])] = False
        return want
    if held < cap // 2:
        return [False] * len(paused)
    return [p and not m for p, m in zip(paused, may_hold)]
