"""The judge process: judge every event on a snapshot of the learner's model.

It joins its own consumer group (``poisonsim-judge`` by default), so it
reads the stream independently of the learner and scales with partitions;
it never learns. The model it judges with is the learner's, loaded from the
learner's latest checkpoint (reloaded when that changes) on top of the
scenario's rebuilt world. Verdicts are scored against the ground-truth header
into ``poisonsim_detections_total{role="judge",judge,outcome}``; offsets are committed
after each poll is scored.

What judges (``--judge``): any of the scenario's defenses that offers
``judges-inputs`` (STRIP, or a plug-in's), named by its kind, which hears of
each new snapshot through :meth:`~poisonsim.Defense.new_model` (STRIP
recalibrates its threshold on it; STRIP's ``judge = "ahead"``, which trains
its judge further on the stream the learner learns, judges here with the
snapshot as it is); or ``model``, the model's own alarms, for
a model that offers ``alarms``. A white-box attacker's events are
placeholders until the learner fills them in, so they are not judged here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from poisonsim.combinations import offers
from poisonsim.config import ConfigError, Scenario
from poisonsim.pipeline.world import World
from poisonsim.services import checkpoint
from poisonsim.services.exporter import MODEL_ALARMS, JudgeMetrics, scenario_info
from poisonsim.transport import kafka as kafka_io
from poisonsim.transport.codec import Codec

log = logging.getLogger("judge")


@dataclass(frozen=True)
class Judge:
    """One way to judge inputs: ``flag(X, model)`` (True: rejected), ``new_model(model)`` on each snapshot."""

    name: str
    flag: Callable[[np.ndarray, object], np.ndarray]
    new_model: Callable[[object], None]


def judge_names(scenario: Scenario) -> list[str]:
    """What ``--judge`` may name for ``scenario``: each defense kind that judges inputs, in the scenario's
    order, then ``model`` when the model raises alarms.

    >>> judge_names(Scenario.from_dict({})), judge_names(Scenario.from_dict({"model": {"kind": "mlp"}}))
    (['model'], [])
    """
    names = [d.kind for d in scenario.defense if "judges-inputs" in offers(d)]
    return names + [MODEL_ALARMS] if "alarms" in offers(scenario.model) else names


def judge_for(scenario: Scenario) -> str | None:
    """``--judge auto``: the scenario's first judge (:func:`judge_names`), None when it has none."""
    names = judge_names(scenario)
    return names[0] if names else None


def check_judge(scenario: Scenario, name: str) -> None:
    """A clear error when ``scenario`` has no judge ``name``, listing the ones it has.

    >>> check_judge(Scenario.from_dict({}), "strip")
    Traceback (most recent call last):
    ...
    poisonsim.config.ConfigError: --judge: expected auto or one of this scenario's judges (model); got 'strip'
    """
    if name not in judge_names(scenario):
        have = ", ".join(judge_names(scenario)) or "none: no defense offers judges-inputs, the model raises no alarms"
        raise ConfigError(f"--judge: expected auto or one of this scenario's judges ({have}); got {name!r}")


def judge(world: World, name: str) -> Judge:
    """The judge ``name`` of the world's scenario (:func:`check_judge` first)."""
    check_judge(world.scenario, name)
    if name == MODEL_ALARMS:
        return Judge(name, lambda X, model: model.predict_many(X), lambda model: None)
    defense = next(d for d in world.defenses if d.kind == name)
    return Judge(name, defense.flag, defense.new_model)


class JudgeProcess:
    def __init__(
        self,
        scenario,
        settings,
        topics: tuple[str, str],
        group_id: str,
        snapshot: Path,
        judge_name: str,
        registry,
        stop,
        signer=None,
        snapshot_interval_s: float = 5.0,
    ):
        check_judge(scenario, judge_name)
        self.world = World.build(scenario)
        self.judge = judge(self.world, judge_name)
        self.scenario, self.settings, self.topics, self.group_id = scenario, settings, topics, group_id
        self.snapshot, self.snapshot_interval_s = snapshot, snapshot_interval_s
        self.stop = stop
        self.key = kafka_io.scenario_key(scenario)
        n_events = scenario.stream.n_events
        self.codec = Codec(
            self.world.source.n_features,
            self.world.source.n_classes,
            n_events,
            pinned=self.world.pins_content,
            n_sources=self.world.n_source_ids,
        )
        self.metrics = JudgeMetrics(registry, judge_name)
        scenario_info(registry, scenario, self.key.decode(), "judge")
        self._mtime: float | None = None
        self.judged = 0
        self.signer = signer
        self.snapshot_position = 0  # the stream position of the learner's model it judges with
        self.n_events = scenario.stream.n_events

    def _reload(self) -> None:
        try:
            mtime = self.snapshot.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        try:
            state = checkpoint.load(self.snapshot)
        except checkpoint.CheckpointError as exc:
            log.warning("model snapshot not loaded: %s", exc)
            return
        if state.get("scenario_key") != self.key.decode():
            log.warning(
                "%s is for scenario %s, not %s: ignored", self.snapshot, state.get("scenario_key"), self.key.decode()
            )
            return
        good = self.world.model.get_state()
        try:
            self.world.model.set_state(state["learner"]["model"])
            self.judge.new_model(self.world.model)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # the right format, wrong contents
            log.warning(
                "model snapshot %s not loaded (%s: %s); keeping the last good one",
                self.snapshot,
                type(exc).__name__,
                exc,
            )
            self.world.model.set_state(good)
            self._mtime = mtime
            return
        self._mtime = mtime
        self.snapshot_position = int(state["next_id"])
        self.metrics.snapshot_events.set(state["next_id"])
        log.info("model snapshot at stream position %d loaded from %s", state["next_id"], self.snapshot)

    def run(self) -> None:
        counts = kafka_io.ensure_topics(self.settings, list(self.topics), 1, self.stop)
        receiver = kafka_io.EventReceiver(
            self.settings, list(self.topics), self.key, self.codec, None, None, self.group_id, self.signer
        )
        log.info(
            "%s: judge %r in group %s on %s (%s)",
            self.key.decode(),
            self.judge.name,
            self.group_id,
            ", ".join(self.topics),
            counts,
        )
        last_reload = 0.0
        try:
            while not self.stop():
                if time.monotonic() - last_reload > self.snapshot_interval_s:
                    self._reload()
                    last_reload = time.monotonic()
                assigned = bool(receiver.consumer.assignment())
                # until the group assigns partitions, poll long enough (>= 1.5 s) for the join to complete
                received = receiver.poll(timeout_ms=500 if assigned else 1500)
                for part in received:
                    self._judge(part.decoded)
                if received:
                    receiver.commit()
                elif (
                    assigned
                    and self.snapshot_position >= self.n_events
                    and receiver.lag()
                    and all(lag == 0 for lag in receiver.lag())
                ):
                    log.info(
                        "stream complete: the learner's model has learned all %d events and every event "
                        "in this judge's partitions is judged",
                        self.n_events,
                    )
                    break
        finally:
            receiver.close()
        log.info("stopped after judging %d events", self.judged)

    def _judge(self, decoded) -> None:
        real = ~decoded.truth.is_adaptive  # white-box placeholders are not inputs yet
        if not real.any():
            return
        flags = np.asarray(self.judge.flag(decoded.batch.x[real], self.world.model), dtype=bool)
        self.metrics.count(self.judge.name, flags, decoded.truth.is_poison[real])
        self.judged += int(real.sum())
