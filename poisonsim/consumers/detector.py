"""The detector process: judge every event with a detector on a snapshot of the learner's model.

It joins its own consumer group (``poisonsim-detector`` by default), so it
reads the stream independently of the learner and scales with partitions;
it never learns. The model it judges with is the learner's, loaded from the
learner's latest checkpoint (reloaded when that changes) on top of the
scenario's rebuilt world. Verdicts are scored against the ground-truth header
into ``poisonsim_detections_total{role="detector",detector,outcome}``; offsets are committed
after each poll is scored.

Detectors are looked up by name in :data:`DETECTORS`: each builds, from the
scenario's world, a ``flag(model, X)`` returning one boolean per row and a
``refresh(model)`` run whenever a new snapshot is loaded. ``strip`` uses the
scenario's ``[[defense]] kind = "strip"`` (its trusted sample, overlays and
target false rejection rate) and recalibrates its threshold on each snapshot.
A white-box attacker's events are placeholders until the learner fills them
in, so they are not judged here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from poisonsim.config import ConfigError
from poisonsim.models import CentroidDetector
from poisonsim.models.neural import NeuralClassifier
from poisonsim.pipeline.engine import World
from poisonsim.services import checkpoint
from poisonsim.services.exporter import DetectorMetrics, scenario_info
from poisonsim.transport import kafka as kafka_io
from poisonsim.transport.codec import Codec

log = logging.getLogger("detect")


def centroid_alarm(world: World) -> tuple[Callable, Callable]:
    """The centroid detector's own alarm (``||x - c|| > r``) on the snapshot."""
    return (lambda model, X: model.predict_many(X)), (lambda model: None)


def strip(world: World) -> tuple[Callable, Callable]:
    """STRIP with the scenario's own strip defense, recalibrated on each snapshot."""
    defense = next((d for d in world.defenses if d.kind == "strip"), None)
    if defense is None:
        raise ConfigError('--detector strip: the scenario has no [[defense]] with kind = "strip"')
    return (lambda model, X: defense.flag(X, model)), defense.calibrate


DETECTORS: dict[str, tuple[Callable, type]] = {
    "centroid": (centroid_alarm, CentroidDetector),
    "strip": (strip, NeuralClassifier),
}


def detector_for(scenario) -> str | None:
    """``--detector auto``: STRIP when the scenario has a strip defense, the centroid alarm for a centroid
    detector, else None (the scenario has no runtime detector to run).

    >>> from poisonsim.config import Scenario
    >>> detector_for(Scenario.from_dict({})), detector_for(Scenario.from_dict({"model": {"kind": "mlp"}}))
    ('centroid', None)
    """
    if any(d.kind == "strip" for d in scenario.defense):
        return "strip"
    return "centroid" if scenario.model.kind == "centroid-detector" else None


class DetectorProcess:
    def __init__(self, scenario, settings, topics: tuple[str, str], group_id: str, snapshot: Path, detector: str,
                 registry, stop, signer=None, snapshot_interval_s: float = 5.0):  # fmt: skip
        if detector not in DETECTORS:
            raise ConfigError(f"--detector: expected one of {', '.join(DETECTORS)}; got {detector!r}")
        make, model_type = DETECTORS[detector]
        self.world = World.build(scenario)
        if not isinstance(self.world.model, model_type):
            raise ConfigError(f"--detector {detector}: needs a {model_type.__name__} model, "
                              f"the scenario has {scenario.model.kind}")  # fmt: skip
        self.flag, self.refresh = make(self.world)
        self.scenario, self.settings, self.topics, self.group_id = scenario, settings, topics, group_id
        self.snapshot, self.snapshot_interval_s = snapshot, snapshot_interval_s
        self.detector, self.stop = detector, stop
        self.key = kafka_io.scenario_key(scenario)
        n_events = scenario.stream.n_events
        self.codec = Codec(self.world.source.n_features, self.world.source.n_classes, n_events,
                           pinned=self.world.scenario.attack.channel == "split-view",
                           n_sources=self.world.n_source_ids)  # fmt: skip
        self.metrics = DetectorMetrics(registry, detector)
        scenario_info(registry, scenario, self.key.decode(), "detector")
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
            log.warning("%s is for scenario %s, not %s: ignored", self.snapshot, state.get("scenario_key"),
                        self.key.decode())  # fmt: skip
            return
        good = self.world.model.get_state()
        try:
            self.world.model.set_state(state["learner"]["model"])
            self.refresh(self.world.model)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:  # the right format, wrong contents
            log.warning("model snapshot %s not loaded (%s: %s); keeping the last good one", self.snapshot,
                        type(exc).__name__, exc)  # fmt: skip
            self.world.model.set_state(good)
            self._mtime = mtime
            return
        self._mtime = mtime
        self.snapshot_position = int(state["next_id"])
        self.metrics.snapshot_events.set(state["next_id"])
        log.info("model snapshot at stream position %d loaded from %s", state["next_id"], self.snapshot)

    def run(self) -> None:
        counts = kafka_io.ensure_topics(self.settings, list(self.topics), 1, self.stop)
        receiver = kafka_io.EventReceiver(self.settings, list(self.topics), self.key, self.codec, None, None,
                                          self.group_id, self.signer)  # fmt: skip
        log.info("%s: detector %r in group %s on %s (%s)", self.key.decode(), self.detector, self.group_id,
                 ", ".join(self.topics), counts)  # fmt: skip
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
                elif assigned and self.snapshot_position >= self.n_events and receiver.lag() and \
                        all(lag == 0 for lag in receiver.lag()):  # fmt: skip
                    log.info("stream complete: the learner's model has learned all %d events and every event "
                             "in this detector's partitions is judged", self.n_events)  # fmt: skip
                    break
        finally:
            receiver.close()
        log.info("stopped after judging %d events", self.judged)

    def _judge(self, decoded) -> None:
        real = ~decoded.truth.is_adaptive  # white-box placeholders are not inputs yet
        if not real.any():
            return
        flags = np.asarray(self.flag(self.world.model, decoded.batch.x[real]), dtype=bool)
        self.metrics.count(self.detector, flags, decoded.truth.is_poison[real])
        self.judged += int(real.sum())
