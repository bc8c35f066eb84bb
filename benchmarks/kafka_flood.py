"""What a flood of forged records costs a signed run, and how soon a fresh learner consumes, over a real broker.

Two phases on fresh topics, alternating ``--repeat`` times (the best time of
each kept, to see through other load on the machine), both signed as every
run is by default:

- clean: both producers publish the centroid-shift stream, then the learner
  consumes it to its end;
- flood: the same, with ``--flood`` records an outside client (kafka-python,
  not our producer) sent ahead of the stream: forged copies of coming events
  (the real ids, first feature +0.5) with a random tag.

Printed for each: the learner's time (its first poll to the stream's end,
``elapsed_seconds``), the flood's ratio to clean, the bytes the learner
logged, and the dead letters counted, written and withheld; and, as the
floor any learner on this client library pays, the time a bare kafka-python
consumer takes to fetch and parse the flood's records alone. Then the time
to first event: a ``poisonsim consume`` process started beside topics that
already hold the stream, from its start to its metrics endpoint answering
and to its stream position leaving 0 (sampled every 20 ms). The figures are
kept as a row (machine, date, stream and flood sizes) of
``docs/data/kafka_flood.csv``; the Kafka page's table is generated from it
(``--table`` prints it), and a test holds the page to it.

    .venv/bin/python benchmarks/kafka_flood.py                 # starts a Tansu broker
    .venv/bin/python benchmarks/kafka_flood.py --bootstrap-servers HOST:PORT --flood 200000
    .venv/bin/python benchmarks/kafka_flood.py --table
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import forged_copies, free_port  # noqa: E402

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from benchmarks.kafka_throughput import local_broker  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.pipeline.results import TIMING_FIELDS  # noqa: E402
from poisonsim.pipeline.world import World  # noqa: E402
from poisonsim.transport.codec import TRUTH_HEADER, Codec  # noqa: E402
from poisonsim.transport.kafka import KafkaSettings, ensure_topics, scenario_key  # noqa: E402
from poisonsim.transport.signing import KEY_VARIABLE, SIGNATURE_HEADER  # noqa: E402

DATA = ROOT / "docs" / "data" / "kafka_flood.csv"
FIELDS = (
    "machine",
    "date",
    "events",
    "flood",
    "repeat",
    "clean_s",
    "flood_s",
    "clean_log_bytes",
    "flood_log_bytes",
    "dead",
    "withheld",
    "client_s",
    "metrics_s",
    "first_event_s",
)
KEY = ("machine", "events", "flood")
OVERRIDES = ["stream.n_events=200000", "attack.start=2000", "attack.rate=0.2", "evaluation.every=10000"]


def scenario() -> Scenario:
    return Scenario.from_toml(ROOT / "scenarios/centroid_shift.toml", OVERRIDES)


def forged_records(s: Scenario, count: int, seed: int = 0) -> list[tuple[bytes, list]]:
    """``count`` forged copies of the stream's events from the 1,000th on (again from there past the stream's end),
    one per message, each with a random tag."""
    world = World.build(s)
    codec = Codec(world.source.n_features, world.source.n_classes, s.stream.n_events)
    copies = forged_copies(world, codec, 1000, min(count, s.stream.n_events - 1000))
    rng = np.random.default_rng(seed)
    return [
        (value, [(TRUTH_HEADER, bits), (SIGNATURE_HEADER, rng.bytes(32))])
        for value, bits in (copies[i % len(copies)] for i in range(count))
    ]


def send_flood(settings: KafkaSettings, topic: str, key: bytes, records) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.client_config(), linger_ms=5, batch_size=256 * 1024)
    for value, headers in records:
        producer.send(topic, value, key=key, headers=headers, partition=0)
    producer.flush()
    producer.close()


def topics_args(tag: str) -> SimpleNamespace:
    return SimpleNamespace(
        benign_topic=f"fl{tag}.benign",
        attack_topic=f"fl{tag}.attack",
        partitions=1,
        rate=0.0,
        events_per_message=1,
        signing_key_file=None,
        insecure_unsigned=False,
    )


def produce_stream(settings: KafkaSettings, s: Scenario, args: SimpleNamespace) -> None:
    from prometheus_client import CollectorRegistry

    from poisonsim.producers.process import produce

    for role in ("benign", "attack"):
        produce(s, role, settings, args, CollectorRegistry(), logging.getLogger("bench"), lambda: False)


def client_read_seconds(settings: KafkaSettings, topic: str, count: int) -> float:
    """Seconds a bare kafka-python consumer (the receiver's fetch sizes) takes to read ``count`` records of
    ``topic`` from its start: fetch and parse, nothing else."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **settings.client_config(),
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=20_000,
        fetch_max_bytes=1024 * 1024,
        max_partition_fetch_bytes=512 * 1024,
    )
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    read, started = 0, time.monotonic()
    while read < count:
        read += sum(len(records) for records in consumer.poll(timeout_ms=200).values())
    seconds = time.monotonic() - started
    consumer.close()
    return seconds


def learn(settings: KafkaSettings, s: Scenario, flood: list, state: Path) -> dict:
    """One phase: the flood (if any) ahead of the stream, then the learner; its time, log bytes, dead letters."""
    from prometheus_client import CollectorRegistry

    from poisonsim.consumers.learner import LearnerOptions, LearnerProcess
    from poisonsim.transport.signing import load_signer

    tag, key = uuid.uuid4().hex[:8], scenario_key(s)
    args = topics_args(tag)
    ensure_topics(settings, [args.benign_topic, args.attack_topic])
    if flood:
        send_flood(settings, args.benign_topic, key, flood)
    produce_stream(settings, s, args)
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    registry = CollectorRegistry()
    options = LearnerOptions(
        (args.benign_topic, args.attack_topic),
        f"fl{tag}.dead",
        None,
        state / f"{tag}.npz",
        checkpoint_interval_s=5.0,
        signer=load_signer()[0],
    )
    try:
        result = LearnerProcess(s, settings, options, registry, lambda: False).run()
    finally:
        root.removeHandler(handler)
    assert result.summary["events_total"] == s.stream.n_events, "a real event was lost"
    refused = {"reason": "bad_signature"}
    counted = registry.get_sample_value("poisonsim_dead_letters_total", refused)
    withheld = registry.get_sample_value("poisonsim_dead_letters_withheld_total", refused)
    return {
        "client_seconds": client_read_seconds(settings, args.benign_topic, len(flood)) if flood else 0.0,
        "seconds": result.summary["elapsed_seconds"],
        "log_bytes": len(logged.getvalue().encode()),
        "dead": int(counted),
        "withheld": int(withheld),
        "summary": result.summary,
    }


def time_to_first_event(bootstrap: str, state: Path) -> tuple[float, float]:
    """Seconds from starting ``poisonsim consume`` (topics already full) to its metrics answering, and to its
    stream position leaving 0."""
    s, tag, port = scenario(), uuid.uuid4().hex[:8], free_port()
    settings, args = KafkaSettings(bootstrap), topics_args(tag)
    ensure_topics(settings, [args.benign_topic, args.attack_topic])
    produce_stream(settings, s, args)
    command = [
        sys.executable,
        "-m",
        "poisonsim.cli",
        "consume",
        "scenarios/centroid_shift.toml",
        *(a for o in OVERRIDES for a in ("--set", o)),
        "--bootstrap-servers",
        bootstrap,
        "--benign-topic",
        args.benign_topic,
        "--attack-topic",
        args.attack_topic,
        "--dead-letter-topic",
        f"fl{tag}.dead",
        "--checkpoint-dir",
        str(state / tag),
        "--metrics-port",
        str(port),
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    answering = None
    try:
        while process.poll() is None and time.monotonic() - started < 120:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
            except OSError:
                time.sleep(0.02)
                continue
            answering = answering or time.monotonic() - started
            position = re.search(r"^poisonsim_stream_position_events (\S+)", text, re.MULTILINE)
            if position and float(position.group(1)) > 0:
                return answering, time.monotonic() - started
            time.sleep(0.02)
        raise SystemExit("the learner never left stream position 0")
    finally:
        process.terminate()
        process.wait(timeout=30)


def table(rows: list[dict]) -> str:
    """The docs' table, a line per row of the data file.

    >>> row = {"machine": "Xeon", "date": "2026-12-07", "events": "200000", "flood": "200000", "repeat": "3",
    ...        "clean_s": "1.81", "flood_s": "3.66", "clean_log_bytes": "9700", "flood_log_bytes": "10100",
    ...        "dead": "200000", "withheld": "198789", "client_s": "1.31", "metrics_s": "0.62", "first_event_s": "0.80"}
    >>> print(table([row]).splitlines()[-1])
    | Xeon | 2026-12-07 | 200,000 | 200,000 | 1.81 | 3.66 (2.02x) | 9.7 / 10.1 | 200,000 / 1,211 / 198,789 | 1.31 (0.72) | 0.62 | 0.80 |
    """
    lines = [
        "| machine | date | stream events | forged records | clean run s | flooded run s | log kB, clean / flooded "
        "| dead letters counted / written / withheld | kafka-python alone s (of clean) | metrics answer s "
        "| first event s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        clean, flooded, client = float(row["clean_s"]), float(row["flood_s"]), float(row["client_s"])
        dead, withheld = int(row["dead"]), int(row["withheld"])
        lines.append(
            f"| {row['machine']} | {row['date']} | {int(row['events']):,} | {int(row['flood']):,} | {clean:.2f} "
            f"| {flooded:.2f} ({flooded / clean:.2f}x) "
            f"| {int(row['clean_log_bytes']) / 1000:.1f} / {int(row['flood_log_bytes']) / 1000:.1f} "
            f"| {dead:,} / {dead - withheld:,} / {withheld:,} | {client:.2f} ({client / clean:.2f}) "
            f"| {float(row['metrics_s']):.2f} | {float(row['first_event_s']):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting Tansu")
    parser.add_argument("--flood", type=int, default=200_000, help="forged records ahead of the stream")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each phase, alternating; the best is shown")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)))
        return
    os.environ[KEY_VARIABLE] = "00" * 32  # the bench's own key: producers and learner in this process share it
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.INFO)  # what a learner logs by default
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # the console: warnings only
    with local_broker(args.bootstrap_servers) as bootstrap:
        run_phases(args, bootstrap)


def run_phases(args: argparse.Namespace, bootstrap: str) -> None:
    settings, state, s = KafkaSettings(bootstrap), Path(tempfile.mkdtemp()), scenario()
    try:
        flood = forged_records(s, args.flood)
        runs = {"clean": [], "flood": []}
        for _ in range(args.repeat):
            runs["clean"].append(learn(settings, s, [], state))
            runs["flood"].append(learn(settings, s, flood, state))
        best = {phase: min(r, key=lambda run: run["seconds"]) for phase, r in runs.items()}
        learned = [{k: v for k, v in best[p]["summary"].items() if k not in TIMING_FIELDS} for p in ("clean", "flood")]
        assert learned[0] == learned[1], "the flood changed what was learned"
        print(
            f"centroid-shift, {s.stream.n_events:,} events (one per message), signed; flood: {args.flood:,} "
            f"forged copies of coming events with a random tag, sent ahead of the stream"
        )
        print("| phase | learner s | vs clean | log bytes | dead letters counted | written | withheld |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for phase, run in best.items():
            print(
                f"| {phase} | {run['seconds']:.2f} | {run['seconds'] / best['clean']['seconds']:.2f}x | "
                f"{run['log_bytes']:,} | {run['dead']:,} | {run['dead'] - run['withheld']:,} | "
                f"{run['withheld']:,} |"
            )
        floor = min(run["client_seconds"] for run in runs["flood"])
        print(
            f"\nthe client library alone (a bare kafka-python consumer) fetching and parsing the flood's "
            f"{args.flood:,} records: {floor:.2f} s"
        )
        firsts = [time_to_first_event(bootstrap, state) for _ in range(args.repeat)]
        answering, first = min(f[0] for f in firsts), min(f[1] for f in firsts)
        print(
            f"\ntime to first event of a fresh learner (topics already full): metrics answer after {answering:.2f} "
            f"s, stream position > 0 after {first:.2f} s (best of {args.repeat})"
        )
        row = {"machine": machine(), "date": today(), "events": s.stream.n_events, "flood": args.flood}
        row |= {"repeat": args.repeat, "clean_s": f"{best['clean']['seconds']:.2f}"}
        row |= {"flood_s": f"{best['flood']['seconds']:.2f}", "clean_log_bytes": best["clean"]["log_bytes"]}
        row |= {"flood_log_bytes": best["flood"]["log_bytes"], "dead": best["flood"]["dead"]}
        row |= {"withheld": best["flood"]["withheld"], "client_s": f"{floor:.2f}", "metrics_s": f"{answering:.2f}"}
        row |= {"first_event_s": f"{first:.2f}"}
        write_rows(args.data, [row], FIELDS, KEY)
        print(f"row kept in {args.data}")
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
