"""Prometheus metrics of the Kafka processes, on an injected registry.

Names follow Prometheus conventions (base units, ``_total`` counters, few
bounded labels; the scenario's name is an info metric, never a label).
What the evaluator knows is read at scrape time by :class:`LearnerCollector`
from a snapshot the consumer takes after each processed batch, so a scrape
never races the model's in-place updates. Process counters (events,
dead letters, lag, processing time) are ordinary client metrics, every
labelled series created up front so that it exists at 0.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> metrics = ConsumerMetrics(registry)
>>> registry.get_sample_value("poisonsim_dead_letters_total", {"reason": "truncated"})
0.0
>>> metrics.dead_letters.labels(reason="non_finite").inc()
>>> registry.get_sample_value("poisonsim_dead_letters_total", {"reason": "non_finite"})
1.0
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from poisonsim.defenses.page_hinkley import PageHinkley
from poisonsim.transport.codec import REASONS

MODEL_ALARMS = "model"  # the detections metric's label for the model's own alarms (a model that offers "alarms")

log = logging.getLogger(__name__)

STREAMS = ("benign", "attack")
OUTCOMES = ("tp", "fp", "tn", "fn")
PROCESSING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def scenario_info(registry: CollectorRegistry, scenario, key: str, role: str) -> None:
    """``poisonsim_scenario_info``: what this process runs (labels of an info metric)."""
    Info("poisonsim_scenario", "The scenario this process runs", registry=registry).info(
        {
            "scenario": scenario.name,
            "scenario_id": key,
            "model": scenario.model.kind,
            "attack": scenario.attack.kind,
            "seed": str(scenario.seed),
            "role": role,
        }
    )


class ConsumerMetrics:
    """Counters and gauges a consumer process updates as it goes."""

    def __init__(self, registry: CollectorRegistry):
        self.events = Counter(
            "poisonsim_events",
            "Events learned, by the stream each belongs to (benign or attack)",
            ["stream"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "poisonsim_dead_letters",
            "Records refused, by reason (each counted; the dead-letter topic gets them at a bounded rate)",
            ["reason"],
            registry=registry,
        )
        self.withheld = Counter(
            "poisonsim_dead_letters_withheld",
            "Refused records not written to the dead-letter topic (past its rate), by reason",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "poisonsim_duplicate_events", "Redelivered events dropped (already learned or buffered)", registry=registry
        )
        self.ignored = Counter(
            "poisonsim_ignored_messages", "Messages keyed for other scenarios, skipped", registry=registry
        )
        self.skipped = Counter(
            "poisonsim_skipped_events", "Missing events given up on after the gap timeout", registry=registry
        )
        self.lag = Gauge(
            "poisonsim_consumer_lag_messages",
            "Messages behind the partition's end, by stream",
            ["stream"],
            registry=registry,
        )
        self.buffered = Gauge(
            "poisonsim_merge_buffered_events", "Events received, waiting for earlier ids", registry=registry
        )
        self.stalled = Gauge(
            "poisonsim_consumer_stalled",
            "1 while no event has arrived for the stall time and the stream is unfinished (broker or producers down)",
            registry=registry,
        )
        self.processing = Histogram(
            "poisonsim_processing_seconds",
            "Time to decode, merge and learn one poll",
            buckets=PROCESSING_BUCKETS,
            registry=registry,
        )
        self.checkpoints = Counter("poisonsim_checkpoints", "Checkpoints written", registry=registry)
        self.checkpoint_time = Gauge(
            "poisonsim_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint", registry=registry
        )
        for stream in STREAMS:
            self.events.labels(stream=stream)
            self.lag.labels(stream=stream)
        for reason in REASONS:
            self.dead_letters.labels(reason=reason)
            self.withheld.labels(reason=reason)


class ProducerMetrics:
    """What a producer process reports."""

    def __init__(self, registry: CollectorRegistry):
        self.events = Counter(
            "poisonsim_produced_events", "Events sent to the broker, by stream", ["stream"], registry=registry
        )
        self.messages = Counter(
            "poisonsim_produced_messages", "Messages sent to the broker, by stream", ["stream"], registry=registry
        )
        self.retries = Counter(
            "poisonsim_produce_retries", "Messages sent again after a failed delivery", registry=registry
        )
        self.broker_up = Gauge(
            "poisonsim_broker_up", "1 while the broker acknowledges in time, 0 while it does not", registry=registry
        )
        self.broker_up.set(1)
        for stream in STREAMS:
            self.events.labels(stream=stream)
            self.messages.labels(stream=stream)


class JudgeMetrics:
    """A judge consumer's verdicts against ground truth."""

    def __init__(self, registry: CollectorRegistry, judge: str):
        self.detections = Counter(
            "poisonsim_detections",
            "Verdicts against ground truth, by role and judge",
            ["role", "judge", "outcome"],
            registry=registry,
        )
        self.snapshot_events = Gauge(
            "poisonsim_judge_snapshot_events",
            "Stream position of the model snapshot the judge uses",
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.detections.labels(role="judge", judge=judge, outcome=outcome)

    def count(self, judge: str, flags, is_poison) -> None:
        """Add a batch of verdicts (numpy bool arrays)."""
        tp = int((flags & is_poison).sum())
        fp = int((flags & ~is_poison).sum())
        fn = int((~flags & is_poison).sum())
        tn = len(flags) - tp - fp - fn
        for outcome, n in zip(OUTCOMES, (tp, fp, tn, fn)):
            if n:
                self.detections.labels(role="judge", judge=judge, outcome=outcome).inc(n)


class ErrorDriftAlarm:
    """Page-Hinkley (:mod:`poisonsim.defenses.page_hinkley`, river's test) on the prequential error of each
    evaluation step; counts its alarms.

    Monitoring only: it reads the evaluator's rows, so it gives the same alarms
    however the stream was cut, and after a restart (rows are checkpointed).
    """

    name = "page-hinkley"

    def __init__(self, threshold: float = 0.3):
        self._monitor = PageHinkley(min_instances=5, threshold=threshold)
        self.alarms = 0
        self._seen = 0
        self._previous = (0.0, 0)

    def update(self, rows: list[dict], is_detector: bool) -> None:
        for row in rows[self._seen :]:
            judged = row["events"] if is_detector else row["events"] - row["poison_events"]
            correct = (row.get("prequential_accuracy") or 0.0) * judged
            step = judged - self._previous[1]
            if step > 0:
                self.alarms += self._monitor.update(1.0 - (correct - self._previous[0]) / step)
            self._previous = (correct, judged)
        self._seen = len(rows)


class LearnerCollector(Collector):
    """The evaluator's figures, read at scrape time from the latest snapshot."""

    def __init__(self, model_kind: str, registry: CollectorRegistry | None = None):
        self.model_kind = model_kind
        self.drift = ErrorDriftAlarm()
        self._lock = threading.Lock()
        self._snapshot: dict = {}
        if registry is not None:
            registry.register(self)

    def update(self, learner) -> None:
        """Take a snapshot of ``learner`` (call between batches, from the consumer's thread)."""
        evaluator = learner.evaluator
        snapshot = {
            "events": evaluator.events,
            "n_events": learner.n_events,
            "poison": evaluator.poison_events,
            "correct": evaluator.correct,
            "alarms": evaluator.alarms,
            "is_detector": evaluator.is_detector,
            "row": dict(evaluator.rows[-1]) if evaluator.rows else {},
            "by_class": self._snapshot.get("by_class", {}),
            "rows": len(evaluator.rows),
        }
        if evaluator.rows and snapshot["rows"] != self._snapshot.get("rows"):
            snapshot["by_class"] = evaluator.summary().get("centroid_displacement_by_class", {})
            self.drift.update(evaluator.rows, evaluator.is_detector)
        snapshot["drift_alarms"] = self.drift.alarms
        snapshot["defense_counts"] = {kind: dict(counts) for kind, counts in evaluator.defense_counts.items()}
        snapshot["defense_alarms"] = {  # every defense's drift alarms: "<kind>", or "<kind>/<monitor>" for several
            f"{d.kind}/{name}" if name else d.kind: len(positions)
            for d in learner.defenses
            for name, positions in d.alarms().items()
        }
        with self._lock:
            self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(self._families({}))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._snapshot
        return iter(self._families(snapshot))

    def _families(self, s: dict) -> list[Metric]:
        row, model = s.get("row", {}), [self.model_kind]
        families = []
        for name, key, doc in _ROW_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["model"])
            if row.get(key) is not None:
                family.add_metric(model, row[key])
            for other in ("deployed", "twin"):  # the snapshot serving uses; the clean twin (evaluation.twin)
                if row.get(f"{other}_{key}") is not None:
                    family.add_metric([f"{self.model_kind}/{other}"], row[f"{other}_{key}"])
            families.append(family)
        refused = CounterMetricFamily("poisonsim_refused_content", "Split-view: resolved content refused by pinning")
        if row.get("refused_content") is not None:
            refused.add_metric([], row["refused_content"])
        families.append(refused)
        rho = GaugeMetricFamily("poisonsim_poisoning_rate_ratio", "Observed poisoning rate rho (poison / events)")
        if row.get("observed_poisoning_rate") is not None:
            rho.add_metric([], row["observed_poisoning_rate"])
        shift = GaugeMetricFamily(
            "poisonsim_centroid_displacement",
            "Distance of each class centroid from its start, in the features' own units",
            labels=["model", "class"],
        )
        for klass, value in s.get("by_class", {}).items():
            shift.add_metric([self.model_kind, klass], value)
        position = GaugeMetricFamily("poisonsim_stream_position_events", "Events of the merged stream learned so far")
        length = GaugeMetricFamily("poisonsim_stream_length_events", "Events in the scenario's merged stream")
        if s:
            position.add_metric([], s["events"])
            length.add_metric([], s["n_events"])
        detections = CounterMetricFamily(
            "poisonsim_detections",
            "Verdicts against ground truth, by role and judge",
            labels=["role", "judge", "outcome"],
        )
        if s.get("is_detector"):  # the learner's own model, and its defenses: role "learner"
            for outcome, n in zip(OUTCOMES, _confusion(s)):
                detections.add_metric(["learner", MODEL_ALARMS, outcome], n)
        for kind, counts in s.get("defense_counts", {}).items():  # each defense's verdicts
            for outcome in OUTCOMES:
                detections.add_metric(["learner", kind, outcome], counts.get(outcome, 0))
        drift = CounterMetricFamily(
            "poisonsim_drift_alarms",
            "Drift alarms, by monitor: page-hinkley on the prequential error, each defense's as <kind>[/<monitor>]",
            labels=["monitor"],
        )
        drift.add_metric([self.drift.name], s.get("drift_alarms", 0))
        for name, alarms in s.get("defense_alarms", {}).items():
            drift.add_metric([name], alarms)
        return [*families, rho, shift, position, length, detections, drift]


_ROW_GAUGES = (  # metric, evaluator row key, help
    ("poisonsim_clean_accuracy_ratio", "clean_accuracy", "Accuracy on held-out clean events (detector: no alarm)"),
    ("poisonsim_prequential_accuracy_ratio", "prequential_accuracy", "Test-then-train accuracy on the stream so far"),
    ("poisonsim_attack_success_ratio", "attack_success_rate", "Share of the attacker's targets classified as it wants"),
    ("poisonsim_displacement_radii", "displacement_radii", "Centroid displacement toward the attack point, in radii"),
    ("poisonsim_window_contamination_ratio", "window_contamination", "Share of poison in the model's window(s)"),
    (
        "poisonsim_accuracy_drop_ratio",
        "accuracy_drop",
        "Held-out accuracy the model lost against its clean twin "
        "(the same model learning the stream without the poison or defenses)",
    ),
    (
        "poisonsim_twin_disagreement_ratio",
        "disagreement",
        "Share of held-out clean inputs the model and its clean twin classify differently",
    ),
)


def _confusion(s: dict) -> tuple[int, int, int, int]:
    """tp, fp, tn, fn of the learner's detector from the evaluator's totals.

    correct = tp + tn, alarms = tp + fp, poison = tp + fn, events = all four.
    """
    tp = (s["correct"] + s["alarms"] + s["poison"] - s["events"]) // 2
    return tp, s["alarms"] - tp, s["correct"] - tp, s["poison"] - tp


METRICS_PATH, HEALTH_PATH = "/metrics", "/healthz"


def metrics_app(registry: CollectorRegistry):
    """The WSGI app of one registry: the exposition at ``/metrics``, ``ok`` at ``/healthz``, 404 elsewhere.

    >>> from wsgiref.util import setup_testing_defaults
    >>> def get(path):
    ...     environ, status = {"PATH_INFO": path}, []
    ...     setup_testing_defaults(environ)
    ...     body = b"".join(metrics_app(CollectorRegistry())(environ, lambda s, h: status.append(s)))
    ...     return status[0], body[:20]
    >>> get("/metrics")[0], get("/healthz"), get("/")[0], get("/metrics/x")[0]
    ('200 OK', ('200 OK', b'ok\\n'), '404 Not Found', '404 Not Found')
    """
    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return exposition(environ, start_response)
        found = path == HEALTH_PATH
        start_response("200 OK" if found else "404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"ok\n" if found else f"not found; the metrics are at {METRICS_PATH}\n".encode()]

    return app


class MetricsServer:
    """The ``/metrics`` endpoint of one registry (and ``/healthz``; 404 elsewhere), served by a daemon thread;
    loopback unless told otherwise."""

    def __init__(self, registry: CollectorRegistry, port: int, address: str = "127.0.0.1"):
        import socket
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:  # no line per scrape
                pass

        self._server = make_server(address, port, metrics_app(registry), Server, handler_class=Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.address, self.port = self._server.server_address[:2]
        log.info("metrics at http://%s:%d%s", self.address, self.port, METRICS_PATH)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class EmbeddedMetrics:
    """An embedded run's metrics (``poisonsim run --metrics-port``): the learner's families, as the Kafka
    learner serves them, updated after every batch the run processes."""

    def __init__(self, scenario, port: int, address: str = "127.0.0.1"):
        self.registry = CollectorRegistry()
        scenario_info(self.registry, scenario, scenario.name, "embedded")
        self.collector = LearnerCollector(scenario.model.kind, self.registry)
        self.server = MetricsServer(self.registry, port, address)

    def observe(self, learner) -> None:
        self.collector.update(learner)

    def serve_until_stopped(self) -> None:
        """Keep the endpoint up until SIGTERM or Ctrl-C (``--keep-serving``), as the Kafka processes do."""
        from poisonsim.services.runtime import StopFlag

        stop = StopFlag(log)
        while not stop():
            time.sleep(0.2)

    def close(self) -> None:
        self.server.close()
