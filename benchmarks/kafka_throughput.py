"""Events/s end to end over a real broker, next to raw kafka-python moving the same bytes.

For one event per message and for batched messages, the centroid-shift
scenario's two streams go through the broker twice, in the same run:

- raw: kafka-python sends the already-encoded messages (same values, keys,
  headers, topics and partition) and a consumer reads them back, doing nothing;
- poisonsim: the producers' code generates, encodes and sends both streams,
  and the learner's code reads, decodes, merges, learns, evaluates and
  checkpoints until the stream is complete (each timed from its first event
  to its last, as its own log reports; one-time set-up, such as connecting
  and building the scenario, is not counted, as raw's clients are not).

Phases run one after the other in this process, so each has the machine to
itself, raw and poisonsim alternating (``--repeat`` times; the best time of
each phase is kept, to see through other load on the machine); end to end is
events / (produce time + consume time). Then producers
at a fixed rate run as processes beside a consumer process, and the
consumer's lag (its own metric) is sampled while they run. The figures are
kept as rows (machine, date, signed or not, events per message) of
``docs/data/kafka_throughput.csv`` and the lag as rows of
``docs/data/kafka_lag.csv``; the Kafka page's tables are generated from them
(``--table`` prints them), and a test holds the page to them.

    .venv/bin/python benchmarks/kafka_throughput.py            # starts a Tansu broker
    .venv/bin/python benchmarks/kafka_throughput.py --table
    .venv/bin/python benchmarks/kafka_throughput.py --bootstrap-servers HOST:PORT
    .venv/bin/python benchmarks/kafka_throughput.py --insecure-unsigned   # records neither signed nor checked
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.pipeline.world import World  # noqa: E402
from poisonsim.transport.codec import TRUTH_HEADER, Codec  # noqa: E402
from poisonsim.transport.kafka import KafkaSettings, ensure_topics, scenario_key  # noqa: E402

DATA = ROOT / "docs" / "data" / "kafka_throughput.csv"
FIELDS = (
    "machine",
    "date",
    "signed",
    "per_message",
    "events",
    "raw_produce_s",
    "raw_consume_s",
    "produce_s",
    "consume_s",
)
KEY = ("machine", "signed", "per_message", "events")
LAG = DATA.with_name("kafka_lag.csv")
LAG_FIELDS = ("machine", "date", "signed", "rate", "samples", "at_zero", "median", "max")


def scenario(n_events: int) -> Scenario:
    return Scenario.from_toml(
        ROOT / "scenarios/centroid_shift.toml",
        [f"stream.n_events={n_events}", "attack.start=2000", "attack.rate=0.2", "evaluation.every=10000"],
    )  # the docs' figures: rho = 0.2


def encoded(s: Scenario, per_message: int) -> dict[str, list[tuple[bytes, bytes]]]:
    world = World.build(s)
    codec = Codec(world.source.n_features, world.source.n_classes, s.stream.n_events)
    stream, out = world.stream(), {"benign": [], "attack": []}
    for size in world.batch_sizes():
        batch, truth = stream.next_batch(size)
        for role, rows in (("benign", ~truth.is_poison), ("attack", truth.is_poison)):
            if rows.any():
                out[role] += codec.encode(batch.select(rows), truth.select(rows), per_message)
    return out


def raw(settings: KafkaSettings, s: Scenario, per_message: int) -> tuple[float, float]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    messages, key, tag = encoded(s, per_message), scenario_key(s), uuid.uuid4().hex[:8]
    topics = {role: f"raw{tag}.{role}" for role in messages}
    ensure_topics(settings, list(topics.values()))
    producer = KafkaProducer(
        **settings.client_config(), acks="all", linger_ms=5, batch_size=256 * 1024, max_request_size=1_004_096
    )
    started = time.perf_counter()
    for role, items in messages.items():
        for value, bits in items:
            producer.send(topics[role], value, key=key, partition=0, headers=[(TRUTH_HEADER, bits)])
    producer.flush()
    produced = time.perf_counter() - started
    producer.close()
    consumer = KafkaConsumer(
        **settings.client_config(),
        enable_auto_commit=False,
        max_poll_records=20_000,
        fetch_max_bytes=1024 * 1024,
        max_partition_fetch_bytes=1_000_000,
    )
    partitions = [TopicPartition(t, 0) for t in topics.values()]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, 0)
    total, seen = sum(map(len, messages.values())), 0
    started = time.perf_counter()
    while seen < total:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                seen += record.value is not None
    consumed = time.perf_counter() - started
    consumer.close()
    return produced, consumed


def ours(settings: KafkaSettings, s: Scenario, per_message: int, state: Path) -> tuple[float, float]:
    from prometheus_client import CollectorRegistry

    from poisonsim.consumers.learner import LearnerOptions, LearnerProcess
    from poisonsim.producers.process import produce
    from poisonsim.transport.signing import KEY_VARIABLE, load_signer

    tag = uuid.uuid4().hex[:8]
    args = SimpleNamespace(
        benign_topic=f"ps{tag}.benign",
        attack_topic=f"ps{tag}.attack",
        partitions=1,
        rate=0.0,
        events_per_message=per_message,
        signing_key_file=None,
        insecure_unsigned=KEY_VARIABLE not in os.environ,
    )
    log, never = logging.getLogger("bench"), lambda: False
    # each process's own figure: from its first event to its last (set-up and connections excluded,
    # as for raw, whose clients exist before its clock starts)
    produced = sum(
        produce(s, role, settings, args, CollectorRegistry(), log, never)[1] for role in ("benign", "attack")
    )
    options = LearnerOptions(
        (args.benign_topic, args.attack_topic),
        f"ps{tag}.dead",
        None,
        state / f"{tag}.npz",
        checkpoint_interval_s=5.0,
        signer=None if args.insecure_unsigned else load_signer()[0],
    )
    result = LearnerProcess(s, settings, options, CollectorRegistry(), never).run()
    assert result.summary["events_total"] == s.stream.n_events
    return produced, result.summary["elapsed_seconds"]


def lag_under_load(bootstrap: str, n_events: int, rate: float, state: Path, unsigned: bool = False) -> list[float]:
    """Producers at ``rate`` merged events/s beside a consumer; its lag metric sampled each 0.5 s."""
    tag, port = uuid.uuid4().hex[:8], _free_port()
    common = [
        "scenarios/centroid_shift.toml",
        "--set",
        f"stream.n_events={n_events}",
        "--set",
        "attack.start=2000",
        "--set",
        "attack.rate=0.2",
        "--bootstrap-servers",
        bootstrap,
        "--benign-topic",
        f"lag{tag}.benign",
        "--attack-topic",
        f"lag{tag}.attack",
        "--dead-letter-topic",
        f"lag{tag}.dead",
        *(["--insecure-unsigned"] if unsigned else []),
    ]
    run = lambda *a: subprocess.Popen(
        [sys.executable, "-m", "poisonsim.cli", *a],
        cwd=ROOT,  # noqa: E731
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    consumer = run("consume", *common, "--checkpoint-dir", str(state), "--metrics-port", str(port), "--keep-serving")
    time.sleep(3)
    producers = [run("produce", role, *common, "--rate", str(rate)) for role in ("benign", "attack")]
    lags = []
    try:
        while any(p.poll() is None for p in producers):
            time.sleep(0.5)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            lags.append(sum(float(v) for v in re.findall(r"poisonsim_consumer_lag_messages\{[^}]*\} (\S+)", text)))
    finally:
        for p in [*producers, consumer]:
            p.terminate()
            p.wait(timeout=30)
    return lags


@contextlib.contextmanager
def local_broker(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap``, or, when it is None, a Tansu broker started on a free port for as long as the block runs."""
    if bootstrap is not None:
        yield bootstrap
        return
    from poisonsim.services.broker import tansu_binary

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        broker.terminate()
        broker.wait()


def _free_port() -> int:
    from conftest import free_port

    return free_port()


def table(rows: list[dict]) -> str:
    """The docs' table of events per second, a line per row of the data file.

    >>> row = {"machine": "Xeon", "date": "2026-12-07", "signed": "yes", "per_message": "1", "events": "200000",
    ...        "raw_produce_s": "2.0", "raw_consume_s": "1.0", "produce_s": "2.5", "consume_s": "2.0"}
    >>> print(table([row]).splitlines()[-1])
    | Xeon | 2026-12-07 | yes | 1 | 200,000 | 100,000 | 200,000 | 66,667 | 80,000 | 100,000 | 44,444 | 0.67x |
    """
    lines = [
        "| machine | date | signed | events per message | events | raw produce ev/s | raw consume ev/s "
        "| raw end to end ev/s | poisonsim produce ev/s | poisonsim consume ev/s | poisonsim end to end ev/s "
        "| ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        n = int(row["events"])
        rp, rc, pp, pc = (float(row[k]) for k in ("raw_produce_s", "raw_consume_s", "produce_s", "consume_s"))
        lines.append(
            f"| {row['machine']} | {row['date']} | {row['signed']} | {row['per_message']} | {n:,} | {n / rp:,.0f} "
            f"| {n / rc:,.0f} | {n / (rp + rc):,.0f} | {n / pp:,.0f} | {n / pc:,.0f} | {n / (pp + pc):,.0f} "
            f"| {(rp + rc) / (pp + pc):.2f}x |"
        )
    return "\n".join(lines)


def lag_table(rows: list[dict]) -> str:
    """The docs' table of consumer lag under load, a line per row of the lag data file.

    >>> row = {"machine": "Xeon", "date": "2026-12-07", "signed": "yes", "rate": "10000", "samples": "42",
    ...        "at_zero": "40", "median": "0", "max": "28355"}
    >>> print(lag_table([row]).splitlines()[-1])
    | Xeon | 2026-12-07 | yes | 10,000 | 40 of 42 | 0 | 28,355 |
    """
    lines = [
        "| machine | date | signed | producers, merged events/s | samples at lag 0 | median lag | largest lag |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['machine']} | {row['date']} | {row['signed']} | {float(row['rate']):,.0f} "
            f"| {row['at_zero']} of {row['samples']} | {float(row['median']):,.0f} | {float(row['max']):,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting Tansu")
    parser.add_argument("--events", type=int, default=200_000, help="events, one per message (default %(default)s)")
    parser.add_argument("--batched-events", type=int, default=2_000_000, help="events, batched (default %(default)s)")
    parser.add_argument(
        "--per-message", type=int, default=1000, help="events per batched message (default %(default)s)"
    )
    parser.add_argument(
        "--lag-rate", type=float, default=10_000, help="merged events/s for the lag run (default %(default)s)"
    )
    parser.add_argument("--lag-events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase, alternating; the best is shown")
    parser.add_argument(
        "--insecure-unsigned",
        action="store_true",
        help="poisonsim neither signs nor checks records (default: HMAC-SHA256 on every record)",
    )
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the tables from the data files and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)), lag_table(read_rows(args.data.with_name(LAG.name))), sep="\n\n")
        return
    os.environ.pop("POISONSIM_SIGNING_KEY", None)
    if not args.insecure_unsigned:
        os.environ["POISONSIM_SIGNING_KEY"] = "00" * 32
    logging.basicConfig(level=logging.WARNING)
    with local_broker(args.bootstrap_servers) as bootstrap:
        run_phases(args, bootstrap)


def run_phases(args: argparse.Namespace, bootstrap: str) -> None:
    settings, state = KafkaSettings(bootstrap), Path(tempfile.mkdtemp())
    where, when, signed = machine(), today(), "no" if args.insecure_unsigned else "yes"
    try:
        print(
            "| events per message | events | raw produce ev/s | raw consume ev/s | raw end to end ev/s | "
            "poisonsim produce ev/s | poisonsim consume ev/s | poisonsim end to end ev/s | ratio |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for per_message, n in ((1, args.events), (args.per_message, args.batched_events)):
            s = scenario(n)
            runs = [(raw(settings, s, per_message), ours(settings, s, per_message, state)) for _ in range(args.repeat)]
            rp, rc = min(r[0][0] for r in runs), min(r[0][1] for r in runs)
            pp, pc = min(r[1][0] for r in runs), min(r[1][1] for r in runs)
            print(
                f"| {per_message} | {n:,} | {n / rp:,.0f} | {n / rc:,.0f} | {n / (rp + rc):,.0f} | {n / pp:,.0f} | "
                f"{n / pc:,.0f} | {n / (pp + pc):,.0f} | {(rp + rc) / (pp + pc):.2f}x |",
                flush=True,
            )
            row = {"machine": where, "date": when, "signed": signed, "per_message": per_message, "events": n}
            row |= {"raw_produce_s": f"{rp:.4f}", "raw_consume_s": f"{rc:.4f}"}
            row |= {"produce_s": f"{pp:.4f}", "consume_s": f"{pc:.4f}"}
            write_rows(args.data, [row], FIELDS, KEY)
        lags = lag_under_load(bootstrap, args.lag_events, args.lag_rate, state, args.insecure_unsigned)
        if lags:
            print(
                f"\nconsumer lag with producers at {args.lag_rate:,.0f} merged events/s (one per message), "
                f"{len(lags)} samples: max {max(lags):,.0f} messages, last {lags[-1]:,.0f}, "
                f"median {sorted(lags)[len(lags) // 2]:,.0f}"
            )
            row = {"machine": where, "date": when, "signed": signed, "rate": args.lag_rate, "samples": len(lags)}
            row |= {"at_zero": sum(lag == 0 for lag in lags), "median": sorted(lags)[len(lags) // 2], "max": max(lags)}
            write_rows(args.data.with_name(LAG.name), [row], LAG_FIELDS, ("machine", "signed", "rate"))
        print(f"rows kept in {args.data} and {args.data.with_name(LAG.name)}")
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
