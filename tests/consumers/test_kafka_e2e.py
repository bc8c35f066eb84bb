"""End to end over a real broker: producers and consumer as processes give the embedded result.

Also: every malformed message lands in the dead-letter topic with its reason,
is counted by reason in the metrics, and the run still equals the embedded one.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from conftest import (
    ROOT,
    consume_command,
    embedded,
    free_port,
    poisonsim_process,
    produce_both,
    read_summary,
    scenario_parts,
    stop,
    wait_all,
    wait_for_log,
)

from poisonsim.config import Scenario
from poisonsim.transport.codec import DECODE_REASONS, HEADER, TRUTH_HEADER, Codec
from poisonsim.transport.dead_letters import MAX_VALUE_BYTES
from poisonsim.transport.kafka import KafkaSettings, ensure_topics

CENTROID = ["scenarios/centroid_shift.toml", "--set", "stream.n_events=20000", "--set", "attack.start=2000"]
LABEL_FLIP = ["scenarios/label_flip.toml", "--set", "stream.n_events=10000", "--set", "attack.start=1000"]
FRONT_RUNNING = ["scenarios/front_running.toml", "--set", "stream.n_events=8000", "--set", "model.quarantine=50"]
SPLIT_VIEW = ["scenarios/split_view.toml", "--set", "stream.n_events=8000", "--set", "model.pin_content=true"]
STRIP_EXPLAINED = [
    "scenarios/strip_badnets.toml",
    "--set",
    "stream.n_events=3000",
    "--set",
    "evaluation.explain=true",
    "--set",
    "evaluation.explain_inputs=50",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario_args, per_message",
    [(CENTROID, 1), (LABEL_FLIP, 7), (FRONT_RUNNING, 5), (SPLIT_VIEW, 9), (STRIP_EXPLAINED, 4)],
    ids=["centroid-shift", "label-flip", "front-running", "split-view", "strip-explained"],
)
def test_kafka_run_equals_embedded_run(broker, topics, tmp_path, scenario_args, per_message):
    producers = produce_both(broker, topics, scenario_args, tmp_path, "--events-per-message", per_message)
    consumer = poisonsim_process(
        consume_command(scenario_args, broker, topics, tmp_path, "--no-metrics"),
        tmp_path / "consume.log",
    )
    logs = [tmp_path / n for n in ("produce-benign.log", "produce-attack.log", "consume.log")]
    wait_all([*producers, consumer], timeout=120, logs=logs)
    summary, timeseries = embedded(scenario_args)
    assert read_summary(tmp_path / "out") == summary
    rows = (tmp_path / "out" / "timeseries.csv").read_text().splitlines()
    assert len(rows) == 1 + len(timeseries) and rows[-1].startswith(str(summary["events_total"]))
    assert (tmp_path / "out" / "scenario.toml").read_text() == Scenario.from_toml(
        ROOT / scenario_args[0], scenario_args[2::2]
    ).to_toml()
    if scenario_args is STRIP_EXPLAINED:  # the end-of-run analysis as an embedded run writes it
        assert "analysis" in summary and (tmp_path / "out" / "strip_scores.csv").stat().st_size > 0
        written = {p.name for p in (tmp_path / "out" / "analysis").iterdir()}
        assert written >= {"attributions.npz", "attributions.png", "trigger.npz"}


def malformed_corpus(codec: Codec, seed: int = 0) -> list[tuple[bytes | None, bytes | None, str]]:
    """(value, truth header, expected reason): several fuzzed variants of every reason."""
    rng = np.random.default_rng(seed)
    world_ids = codec.n_events
    corpus = []
    for _ in range(4):
        x = rng.normal(size=(3, codec.n_features)).astype(np.float32)
        records = np.zeros(3, dtype=codec.record)
        records["id"] = rng.integers(0, world_ids, 3)
        records["x"] = x
        header = np.zeros(1, dtype=HEADER)
        header["magic"], header["version"], header["n_features"], header["n_events"] = b"PS", 1, codec.n_features, 3
        good, bits = header.tobytes() + records.tobytes(), bytes([1, 0])
        bad = records.copy()
        bad["x"][rng.integers(0, 3), rng.integers(0, codec.n_features)] = rng.choice([np.nan, np.inf, -np.inf])
        label, ident, source = records.copy(), records.copy(), records.copy()
        label["y"][rng.integers(0, 3)] = rng.choice([-1, codec.n_classes, 10**6])
        ident["id"][rng.integers(0, 3)] = rng.choice([-5, world_ids, 2**40])
        source["source"][rng.integers(0, 3)] = rng.choice([-1, codec.n_sources, 5000])
        corpus += [
            (None, bits, "empty"),
            (good[: int(rng.integers(1, len(good)))], bits, "truncated"),
            (good + rng.bytes(int(rng.integers(1, 50))), bits, "trailing_bytes"),
            (rng.bytes(2).replace(b"P", b"Q") + good[2:], bits, "bad_magic"),
            (good[:2] + bytes([int(rng.integers(2, 256))]) + good[3:], bits, "bad_version"),
            (good[:4] + struct.pack("<I", codec.n_features + int(rng.integers(1, 9))) + good[8:], bits, "dimension"),
            (good + bytes(codec.max_bytes), bits, "oversized"),
            (header.tobytes() + bad.tobytes(), bits, "non_finite"),
            (header.tobytes() + label.tobytes(), bits, "bad_label"),
            (header.tobytes() + ident.tobytes(), bits, "bad_id"),
            (header.tobytes() + source.tobytes(), bits, "bad_source"),
            (good, rng.choice([None, b"", bytes([1]), bytes([7, 0])]), "bad_truth"),
        ]
    assert {reason for *_, reason in corpus} == set(DECODE_REASONS)
    return corpus


@pytest.mark.slow
def test_malformed_messages_go_to_the_dead_letter_topic_and_the_run_goes_on(broker, topics, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    scenario, world, codec, key = scenario_parts(CENTROID)
    corpus = malformed_corpus(codec)
    ensure_topics(KafkaSettings(broker.bootstrap), [topics.benign, topics.attack], partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4 * codec.max_bytes)
    for i, (value, bits, _) in enumerate(corpus):  # ahead of the real stream, in both topics
        headers = [] if bits is None else [(TRUTH_HEADER, bits)]
        producer.send(topics.benign if i % 3 else topics.attack, value, key=key, headers=headers, partition=0)
    producer.send(topics.benign, b"not ours", key=b"another-scenario", partition=0)  # skipped, not a dead letter
    producer.flush()
    producer.close()

    port = free_port()
    # unsigned, so that the codec itself screens them (a signed run refuses them before: test_hostile_client.py)
    producers = produce_both(broker, topics, CENTROID, tmp_path, "--insecure-unsigned")
    consumer = poisonsim_process(
        consume_command(
            CENTROID, broker, topics, tmp_path, "--metrics-port", port, "--keep-serving", "--insecure-unsigned"
        ),
        tmp_path / "consume.log",
    )
    try:
        wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
        wait_for_log(tmp_path / "consume.log", "serving metrics until SIGTERM", timeout=120, process=consumer)
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        assert stop(consumer) == 0
    assert read_summary(tmp_path / "out") == embedded(CENTROID)[0]
    for reason in set(DECODE_REASONS):
        expected = sum(r == reason for *_, r in corpus)
        assert f'poisonsim_dead_letters_total{{reason="{reason}"}} {float(expected)}' in exposition
    assert "poisonsim_ignored_messages_total 1.0" in exposition

    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    partition = TopicPartition(topics.dead_letter, 0)
    reader.assign([partition])
    reader.seek(partition, 0)
    dead = []
    for _ in range(40):
        dead += [r for records in reader.poll(timeout_ms=500).values() for r in records]
        if len(dead) >= len(corpus):
            break
    reader.close()
    assert len(dead) == len(corpus)
    got = sorted((dict(r.headers)["reason"].decode(), r.value or b"") for r in dead)
    # the original bytes kept (past MAX_VALUE_BYTES cut, so that the dead letter fits the broker's limit)
    assert got == sorted((reason, (value or b"")[:MAX_VALUE_BYTES]) for value, _, reason in corpus)
    cut = [int(dict(r.headers)["original-size"]) for r in dead if "original-size" in dict(r.headers)]
    assert sorted(cut) == sorted(len(value) for value, *_ in corpus if value and len(value) > MAX_VALUE_BYTES)
    assert all(
        r.key == key and dict(r.headers)["source-topic"].decode() in (topics.benign, topics.attack) for r in dead
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["produce", "benign", CENTROID[0], "--security-protocol", "SASL_SSL"],
            "--sasl-mechanism: SASL_SSL needs one of",
        ),
        (["produce", "attack", CENTROID[0], "--events-per-message", "0"], "--events-per-message: expected 1..33332"),
        (["consume", CENTROID[0], "--ssl-cafile", "/nonexistent", "--security-protocol", "SSL"], "no such file"),
    ],
)
def test_bad_flags_are_refused_before_connecting(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", *args, "--bootstrap-servers", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
