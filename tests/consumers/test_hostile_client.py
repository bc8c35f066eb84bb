"""An outside client that is not our codec or producer writes into the stream topics of a run started the
default way (signed with the deployment key the processes make on first use).

Poison pills (a header name that is not UTF-8, repeated headers, a value past
the broker's 1 MB, forged and unsigned records carrying real ids, a real
record signed for the other topic, malformed payloads) arrive interleaved
with the real stream: every one lands in the dead-letter topic with its
reason and is counted, the learner ends exactly as the embedded run, and the
judge keeps running. A flood of forged copies of coming events is refused
at a bounded cost in dead letters and log lines and takes no real event's
place. On an explicitly unsigned run (``--insecure-unsigned``) a flood
repeating one future id costs bounded memory and skips no real event, and two
copies of an id with different content are neither learned.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import (
    consume_command,
    embedded,
    forged_copies,
    free_port,
    poisonsim_process,
    produce_both,
    read_summary,
    scenario_parts,
    stop_all,
    wait_all,
    wait_for_log,
)
from test_kafka_e2e import CENTROID, malformed_corpus

from poisonsim.pipeline.world import World
from poisonsim.transport.codec import TRUTH_HEADER, Codec
from poisonsim.transport.dead_letters import LOG_INTERVAL_S, PUBLISH_BURST, PUBLISH_PER_S
from poisonsim.transport.kafka import KafkaSettings, ensure_topics
from poisonsim.transport.signing import SIGNATURE_HEADER, Signer, load_signer

UNSIGNED = "--insecure-unsigned"  # the flood and conflict tests: what unsigned topics let through
PACED = ["--rate", "4000"]  # 20,000 events in about 5 s: the pills sent meanwhile land between real records


class RawName(str):
    """A header name whose bytes on the wire are not UTF-8 (kafka-python encodes header names with ``encode``)."""

    def encode(self, *args, **kwargs) -> bytes:
        return b"\xff\xfetruth"


def real_message(world: World, codec: Codec, event_id: int) -> tuple[bytes, bytes]:
    """The message the benign producer sends for ``event_id`` (value and truth header)."""
    stream = world.stream()
    seen = 0
    for size in world.batch_sizes():
        batch, truth = stream.next_batch(size)
        if seen + size > event_id:
            row = [event_id - seen]
            return codec.encode(batch.select(row), truth.select(row), 1)[0]
        seen += size
    raise AssertionError(f"no event {event_id}")


def hostile_records(
    codec: Codec, world: World, key: bytes, topics, signer: Signer
) -> list[tuple[str, bytes | None, list, str]]:
    """(topic, value, headers, expected dead-letter reason) of every record the outside client sends; ``signer``
    holds the deployment's key (an insider's malformed records are signed with it)."""
    stranger = Signer(b"s" * 32)
    records = []
    for i, (value, bits, reason) in enumerate(malformed_corpus(codec, seed=1)[::3]):
        topic = topics.benign if i % 2 else topics.attack
        if value is not None and bits is not None:
            headers = [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, signer.sign(key, topic, value, bits))]
            records.append((topic, value, headers, reason))
        else:
            records.append(
                (
                    topic,
                    value,
                    [] if bits is None else [(TRUTH_HEADER, bits)],
                    reason if value is None else "bad_signature",
                )
            )
    value, bits = real_message(world, codec, 12_345)
    forged = bytearray(value)
    forged[-4:] = np.float32(9.0).tobytes()  # the real id, another feature value
    flipped = bytes([bits[0], bits[1] ^ 1])  # the real event, its ground truth flipped
    big = bytes(1_048_000)
    sign = lambda topic, value, bits: [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, signer.sign(key, topic, value, bits))]  # noqa: E731
    benign, attack = topics.benign, topics.attack
    records += [
        (benign, value, [(RawName("truth"), bits)], "unreadable"),
        (attack, value, [(TRUTH_HEADER, bits), *sign(attack, value, bits)], "bad_header"),
        (benign, bytes(forged), [(TRUTH_HEADER, bits)], "bad_signature"),
        (
            attack,
            bytes(forged),
            [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, stranger.sign(key, attack, bytes(forged), bits))],
            "bad_signature",
        ),
        (benign, value, [(TRUTH_HEADER, flipped), sign(benign, value, bits)[1]], "bad_signature"),
        (benign, value, sign(attack, value, bits), "bad_signature"),  # a real record, signed for the other topic
        (attack, big, sign(attack, big, bits), "oversized"),
    ]
    return records


def send_all(broker, key: bytes, records) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4_000_000)
    for topic, value, headers, _ in records:
        producer.send(topic, value, key=key, headers=headers, partition=0)
        producer.flush()  # one record per batch: kafka-python cannot read past an unparseable record in its batch
    producer.close()


def read_dead_letters(broker, topic: str, expected: int) -> list:
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=2**21
    )
    partition = TopicPartition(topic, 0)
    reader.assign([partition])
    reader.seek(partition, 0)
    dead = []
    for _ in range(60):
        dead += [r for records in reader.poll(timeout_ms=500).values() for r in records]
        if len(dead) >= expected:
            break
    reader.close()
    return dead


@pytest.mark.slow
def test_poison_pills_are_dead_lettered_and_the_signed_run_ends_as_embedded(broker, topics, tmp_path):
    scenario, world, codec, key = scenario_parts(CENTROID)
    records = hostile_records(codec, world, key, topics, load_signer()[0])  # the key the processes make or find
    ensure_topics(KafkaSettings(broker.bootstrap), [topics.benign, topics.attack], partitions=1)
    send_all(broker, key, records[: len(records) // 2])  # ahead of the real stream ...

    port = free_port()
    producers = produce_both(broker, topics, CENTROID, tmp_path, *PACED)  # started the default way: signed
    learner = poisonsim_process(
        consume_command(CENTROID, broker, topics, tmp_path, "--metrics-port", port, "--keep-serving"),
        tmp_path / "consume.log",
    )
    judge = poisonsim_process(
        consume_command(CENTROID, broker, topics, tmp_path, "--role", "judge", "--no-metrics"),
        tmp_path / "judge.log",
    )
    try:
        # ... and among it: once both producers publish, about 5 s of paced stream are left (not a fixed delay,
        # which a loaded machine could stretch past the stream's end)
        for role, producer in zip(("benign", "attack"), producers):
            wait_for_log(tmp_path / f"produce-{role}.log", "publishing the", timeout=60, process=producer)
        send_all(broker, key, records[len(records) // 2 :])
        wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
        wait_for_log(tmp_path / "consume.log", "serving metrics until SIGTERM", timeout=120, process=learner)
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert judge.wait(timeout=60) == 0  # it ran to the stream's end and stopped by itself
    finally:
        codes = stop_all(learner, judge)  # both, whatever failed: a live judge would hold its group
    assert codes[0] == 0
    assert "stream complete" in (tmp_path / "judge.log").read_text()
    assert "Traceback" not in (tmp_path / "judge.log").read_text()
    assert read_summary(tmp_path / "out") == embedded(CENTROID)[0]
    for reason in {r for *_, r in records}:
        expected = sum(r == reason for *_, r in records)
        assert f'poisonsim_dead_letters_total{{reason="{reason}"}} {float(expected)}' in exposition, reason

    dead = read_dead_letters(broker, topics.dead_letter, len(records))
    assert sorted(dict(r.headers)["reason"].decode() for r in dead) == sorted(r for *_, r in records)
    by_reason = {dict(r.headers)["reason"].decode(): r for r in dead}
    unreadable = dict(by_reason["unreadable"].headers)
    assert (
        unreadable["source-topic"].decode() in (topics.benign, topics.attack) and int(unreadable["source-offset"]) >= 0
    )
    oversized = [r for r in dead if dict(r.headers).get("original-size") == b"1048000"]
    assert len(oversized) == 1 and len(oversized[0].value) < 1_000_000  # cut, so that it could be republished


def peak_rss_mib(process) -> float:
    """The high-water mark of a running process's resident memory, sampled until it exits."""
    peak = 0.0
    while process.poll() is None:
        try:
            status = open(f"/proc/{process.pid}/status").read()
        except OSError:
            break
        if "VmHWM:" not in status:  # exiting
            break
        peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        time.sleep(0.05)
    return peak


@pytest.mark.slow
def test_a_replay_flood_of_one_future_id_costs_bounded_memory_and_skips_nothing(broker, topics, tmp_path):
    """Ahead of the stream, 90 messages each repeating one real future event 22,000 times (about 2M events)."""
    from kafka import KafkaProducer

    scenario, world, codec, key = scenario_parts(CENTROID)
    value, bits = real_message(world, codec, 15_000)
    decoded, truth = codec.decode(value, bits)
    copies = np.zeros(22_000, dtype=np.int64)
    value, bits = codec.encode(decoded.select(copies), truth.select(copies), 22_000)[0]
    ensure_topics(KafkaSettings(broker.bootstrap), [topics.benign, topics.attack], partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=2**21)
    for _ in range(90):
        producer.send(topics.attack, value, key=key, headers=[(TRUTH_HEADER, bits)], partition=0)
    producer.flush()
    producer.close()

    producers = produce_both(broker, topics, CENTROID, tmp_path, UNSIGNED)
    learner = poisonsim_process(
        consume_command(CENTROID, broker, topics, tmp_path, "--no-metrics", UNSIGNED), tmp_path / "consume.log"
    )
    sampled: list[float] = []
    sampler = threading.Thread(target=lambda: sampled.append(peak_rss_mib(learner)))
    sampler.start()
    wait_all([*producers, learner], timeout=180, logs=[tmp_path / "consume.log"])
    sampler.join()
    assert read_summary(tmp_path / "out") == embedded(CENTROID)[0]  # every real event learned in order, none skipped
    print(f"learner peak RSS under the flood: {sampled[0]:.0f} MiB")
    assert 0 < sampled[0] < 500, f"peak RSS {sampled[0]:.0f} MiB"


@pytest.mark.slow
def test_two_copies_of_an_id_with_different_content_are_neither_learned(broker, topics, tmp_path):
    """Unsigned run: a forged copy of real event 12,345 ahead of the stream; the real one comes later."""
    scenario, world, codec, key = scenario_parts(CENTROID)
    value, bits = real_message(world, codec, 12_345)
    forged = bytearray(value)
    forged[-4:] = np.float32(9.0).tobytes()
    ensure_topics(KafkaSettings(broker.bootstrap), [topics.benign, topics.attack], partitions=1)
    send_all(broker, key, [(topics.attack, bytes(forged), [(TRUTH_HEADER, bits)], "conflict")])
    producers = produce_both(broker, topics, CENTROID, tmp_path, UNSIGNED)
    port = free_port()
    learner = poisonsim_process(
        consume_command(CENTROID, broker, topics, tmp_path, "--metrics-port", port, "--keep-serving", UNSIGNED),
        tmp_path / "consume.log",
    )
    try:
        wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
        wait_for_log(tmp_path / "consume.log", "serving metrics until SIGTERM", timeout=120, process=learner)
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        stop_all(learner)
    summary = read_summary(tmp_path / "out")
    assert summary["events_total"] == scenario.stream.n_events - 1  # event 12,345 given up, not learned
    assert "poisonsim_skipped_events_total 1.0" in exposition and 'reason="conflict"} 2.0' in exposition
    dead = read_dead_letters(broker, topics.dead_letter, 2)
    assert [dict(r.headers)["reason"] for r in dead] == [b"conflict", b"conflict"]
    assert {dict(r.headers)["source-topic"].decode() for r in dead} == {topics.attack, topics.benign}


@pytest.mark.slow
def test_a_flood_of_forged_coming_events_is_refused_at_a_bounded_cost(broker, topics, tmp_path):
    """Run started the default way: ahead of the stream, 20,000 forged copies of the coming events 5,000-14,999
    (first feature +0.5), half without a tag, half with a random one."""
    from kafka import KafkaProducer

    scenario, world, codec, key = scenario_parts(CENTROID)
    forged = forged_copies(world, codec, 5_000, 10_000)
    rng = np.random.default_rng(7)
    ensure_topics(KafkaSettings(broker.bootstrap), [topics.benign, topics.attack], partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for value, bits in forged + forged:
        tag = [(SIGNATURE_HEADER, rng.bytes(32))] if rng.random() < 0.5 else []
        producer.send(topics.benign, value, key=key, headers=[(TRUTH_HEADER, bits), *tag], partition=0)
    producer.flush()
    producer.close()
    flood = 2 * len(forged)

    port = free_port()
    producers = produce_both(broker, topics, CENTROID, tmp_path)
    started = time.monotonic()
    learner = poisonsim_process(
        consume_command(CENTROID, broker, topics, tmp_path, "--metrics-port", port, "--keep-serving"),
        tmp_path / "consume.log",
    )
    try:
        wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
        wait_for_log(tmp_path / "consume.log", "serving metrics until SIGTERM", timeout=180, process=learner)
        elapsed = time.monotonic() - started
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        stop_all(learner)
    assert read_summary(tmp_path / "out") == embedded(CENTROID)[0]  # nothing forged learned, no real event lost
    assert f'poisonsim_dead_letters_total{{reason="bad_signature"}} {float(flood)}' in exposition  # every one counted
    withheld = float(exposition.split('poisonsim_dead_letters_withheld_total{reason="bad_signature"} ')[1].split()[0])
    written = flood - int(withheld)
    assert PUBLISH_BURST <= written <= PUBLISH_BURST + PUBLISH_PER_S * elapsed  # the topic gets a bounded share
    assert len(read_dead_letters(broker, topics.dead_letter, written)) == written
    lines = [line for line in (tmp_path / "consume.log").read_text().splitlines() if "dead letter" in line]
    assert 1 <= len(lines) <= 2 * (elapsed / LOG_INTERVAL_S + 2)  # per interval: the first in full, then a count
