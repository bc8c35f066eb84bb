"""Prometheus metrics: names and values from an injected registry, and a real Prometheus scraping a consumer."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    consume_command,
    free_port,
    poisonsim_process,
    produce_both,
    read_summary,
    require_binary,
    stop,
    wait_all,
    wait_for_log,
)
from prometheus_client import CollectorRegistry, generate_latest

from poisonsim.config import Scenario
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.world import World
from poisonsim.services.exporter import (
    ConsumerMetrics,
    JudgeMetrics,
    LearnerCollector,
    MetricsServer,
    ProducerMetrics,
)

SCENARIO = Scenario.from_dict(
    {
        "seed": 3,
        "stream": {"n_events": 6000},
        "evaluation": {"every": 1000},
        "attack": {"kind": "centroid-shift", "rate": 0.3, "start": 500},
    }
)


def exposed_names() -> set[str]:
    """Every metric name (families and samples) the learner, producer and judge processes expose."""
    producer, judge = CollectorRegistry(), CollectorRegistry()
    ProducerMetrics(producer)
    JudgeMetrics(judge, "model")
    names = set()
    for registry in (exposed_registry()[0], producer, judge):
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


def exposed_registry() -> tuple[CollectorRegistry, Learner]:
    """The learner process's registry, after a scenario ran through the learner."""
    registry = CollectorRegistry()
    ConsumerMetrics(registry)
    world = World.build(SCENARIO)
    learner, collector = Learner(world), LearnerCollector(SCENARIO.model.kind, registry)
    stream = world.stream()
    for size in world.batch_sizes():
        learner.feed(*stream.next_batch(size))
    collector.update(learner)
    return registry, learner


def test_the_learner_collector_reports_the_evaluator_at_scrape_time():
    registry, learner = exposed_registry()
    row, model = learner.evaluator.rows[-1], {"model": "centroid-detector"}
    get = registry.get_sample_value
    assert get("poisonsim_attack_success_ratio", model) == row["attack_success_rate"]
    assert get("poisonsim_clean_accuracy_ratio", model) == row["clean_accuracy"]
    assert get("poisonsim_displacement_radii", model) == row["displacement_radii"]
    assert get("poisonsim_window_contamination_ratio", model) == row["window_contamination"]
    assert get("poisonsim_poisoning_rate_ratio") == row["observed_poisoning_rate"]
    assert get("poisonsim_centroid_displacement", {**model, "class": "0"}) == row["centroid_displacement"]
    assert get("poisonsim_stream_position_events") == 6000
    twin = {"model": "centroid-detector/twin"}  # the clean twin beside the attacked model
    assert get("poisonsim_clean_accuracy_ratio", twin) == row["twin_clean_accuracy"]
    assert get("poisonsim_attack_success_ratio", twin) == row["twin_attack_success_rate"] == 0.0
    assert get("poisonsim_accuracy_drop_ratio", model) == row["accuracy_drop"] > 0  # A accepted costs clean traffic
    assert get("poisonsim_twin_disagreement_ratio", model) == row["disagreement"] >= row["accuracy_drop"]


def test_learner_detections_are_its_confusion_matrix_against_ground_truth():
    """tp/fp/tn/fn recomputed here, event by event, from the same model and stream."""
    registry, _ = exposed_registry()
    world = World.build(SCENARIO)
    stream, model, attack = world.stream(), world.model, world.attack
    counts = dict.fromkeys(("tp", "fp", "tn", "fn"), 0)

    for size in world.batch_sizes():
        batch, truth = stream.next_batch(size)
        alarms, _ = model.process_many(batch.x, batch.y, attack.hook(truth.is_adaptive))
        for flag, poison in zip(alarms, truth.is_poison):
            counts[("t" if flag == poison else "f") + ("p" if flag else "n")] += 1
    for outcome, n in counts.items():
        assert (
            registry.get_sample_value(
                "poisonsim_detections_total", {"role": "learner", "judge": "model", "outcome": outcome}
            )
            == n
        )


def test_every_labelled_series_exists_at_zero_and_labels_are_bounded():
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry)
    text = generate_latest(registry).decode()
    assert (
        'poisonsim_events_total{stream="benign"} 0.0' in text
        and 'poisonsim_consumer_lag_messages{stream="attack"} 0.0' in text
    )
    metrics.processing.observe(0.002)
    assert registry.get_sample_value("poisonsim_processing_seconds_count") == 1
    judge = JudgeMetrics(registry, "model")
    judge.count("model", np.array([True, True, False, False]), np.array([True, False, True, False]))
    assert [
        registry.get_sample_value("poisonsim_detections_total", {"role": "judge", "judge": "model", "outcome": o})
        for o in ("tp", "fp", "tn", "fn")
    ] == [1, 1, 1, 1]
    for family in registry.collect():  # no label carries an id or a name
        for sample in family.samples:
            assert set(sample.labels) <= {
                "stream",
                "reason",
                "model",
                "class",
                "role",
                "judge",
                "monitor",
                "outcome",
                "le",
            }


def test_the_metrics_endpoint_binds_to_loopback_by_default():
    server = MetricsServer(CollectorRegistry(), 0)
    try:
        assert server.address == "127.0.0.1"
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).status == 200
    finally:
        server.close()


def test_the_metrics_endpoint_answers_on_its_paths_alone():
    server = MetricsServer(CollectorRegistry(), 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).read() == b"ok\n"
        for path in ("/", "/metric", "/metrics/x", "/index.html", "/favicon.ico"):
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(base + path, timeout=5)
            assert answer.value.code == 404, path
        assert b"# HELP" not in urllib.request.urlopen(f"{base}/healthz", timeout=5).read()
    finally:
        server.close()


def _query(prometheus_port: int, expression: str) -> list:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    try:
        return json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
    except OSError:
        return []


@pytest.mark.slow
def test_a_real_prometheus_scrapes_the_consumer(broker, topics, tmp_path):
    binary = require_binary("prometheus", "apt-get install prometheus")
    scenario = [
        "scenarios/centroid_shift.toml",
        "--set",
        "stream.n_events=10000",
        "--set",
        "attack.start=1000",
        "--set",
        "attack.rate=0.4",
    ]
    metrics_port, prometheus_port = free_port(), free_port()
    producers = produce_both(broker, topics, scenario, tmp_path)
    consumer = poisonsim_process(
        consume_command(scenario, broker, topics, tmp_path, "--metrics-port", metrics_port, "--keep-serving"),
        tmp_path / "consume.log",
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: poisonsim\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    with open(tmp_path / "prometheus.log", "wb") as log:
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
        wait_for_log(tmp_path / "consume.log", "serving metrics until SIGTERM", timeout=120, process=consumer)
        summary = read_summary(tmp_path / "out")
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline:  # the stream is complete: wait for a scrape of its final state
            result = _query(prometheus_port, "poisonsim_stream_position_events == 10000")
            if result:
                break
            time.sleep(0.5)
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        success = _query(prometheus_port, "poisonsim_attack_success_ratio")
        assert success[0]["metric"]["model"] == "centroid-detector"
        assert float(success[0]["value"][1]) == summary["attack_success_rate"]
        events = _query(prometheus_port, "sum(poisonsim_events_total)")
        assert float(events[0]["value"][1]) == 10000
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=20)
        assert stop(consumer) == 0


def test_drift_monitor_alarms_when_the_prequential_error_jumps_and_not_before():
    from poisonsim.services.exporter import ErrorDriftAlarm

    rows, correct = [], 0.0
    for step in range(1, 41):
        correct += 950 if step <= 20 else 600  # 5% error, then 40%
        rows.append({"events": step * 1000, "poison_events": 0, "prequential_accuracy": correct / (step * 1000)})
    early, monitor = ErrorDriftAlarm(), ErrorDriftAlarm()
    early.update(rows[:20], is_detector=True)
    for end in range(0, 41, 7):  # fed in any pieces: the same alarms
        monitor.update(rows[:end], is_detector=True)
    monitor.update(rows, is_detector=True)
    assert early.alarms == 0 and monitor.alarms >= 1


def test_defenses_verdicts_and_drift_alarms_are_exported():
    scenario = Scenario.from_toml(
        Path(__file__).parents[2] / "scenarios" / "centroid_defended.toml",
        ["stream.n_events=6000", "attack.start=3000"],
    )
    world = World.build(scenario)
    learner, stream = Learner(world), world.stream()
    for size in world.batch_sizes():
        learner.feed(*stream.next_batch(size))
    registry = CollectorRegistry()
    LearnerCollector(scenario.model.kind, registry).update(learner)
    counts = learner.evaluator.defense_counts
    for kind in ("outlier-rejection", "drift-reset"):
        for outcome in ("tp", "fp", "tn", "fn"):
            value = registry.get_sample_value(
                "poisonsim_detections_total", {"role": "learner", "judge": kind, "outcome": outcome}
            )
            assert value == counts[kind][outcome]
    # robust-centroid flags nothing (it changes how the centroid is estimated): no verdicts exported as detections
    assert (
        registry.get_sample_value(
            "poisonsim_detections_total", {"role": "learner", "judge": "robust-centroid", "outcome": "tn"}
        )
        is None
    )
    drift = next(d for d in learner.defenses if d.kind == "drift-reset")
    exported = registry.get_sample_value("poisonsim_drift_alarms_total", {"monitor": "drift-reset"})
    assert exported == len(drift.alarm_events_) >= 1  # the attack from event 3,000 sets it off


def test_the_docs_name_every_metric_the_processes_expose():
    readme = (Path(__file__).parents[2] / "docs" / "kafka.md").read_text()
    producer, judge = CollectorRegistry(), CollectorRegistry()
    ProducerMetrics(producer)
    JudgeMetrics(judge, "model")
    families = {family.name for registry in (exposed_registry()[0], producer, judge) for family in registry.collect()}
    # a counter family "x" is exposed as x_total; an info family as x_info
    shown = {name for name in families if not any(f"`{name}{end}" in readme for end in ("", "_total", "_info"))}
    assert not shown, sorted(shown)


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_page_hinkley_raises_river_s_alarms_value_for_value(seed):
    """The exporter's own Page-Hinkley (it spares every learner river's 1.5 s import) against river's: the same
    alarms at the same values on noisy series with jumps up and down, with the exporter's settings and river's
    defaults."""
    from river.drift import PageHinkley as RiverPageHinkley

    from poisonsim.defenses.page_hinkley import PageHinkley

    rng = np.random.default_rng(seed)
    levels = np.repeat(rng.uniform(0, 1, 12), 400)
    series = (levels + rng.normal(0, 0.05, len(levels))).tolist()
    for settings in ({"min_instances": 5, "threshold": 0.3}, {}):
        ours, river = PageHinkley(**settings), RiverPageHinkley(**settings)
        alarms = [i for i, x in enumerate(series) if ours.update(x)]
        expected = []
        for i, x in enumerate(series):
            river.update(x)
            if river.drift_detected:
                expected.append(i)
        assert alarms == expected
        assert len(alarms) >= 5  # jumps of the level were caught, so the comparison saw alarms and resets
