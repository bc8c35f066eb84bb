"""poisonsim produce benign|attack SCENARIO: publish one side of the scenario's stream.

Both producers generate the same merged stream from the scenario's seed (as
the embedded run does) and each publishes only its own events: benign the
clean ones, attack the attacker's, to its own topic, keyed by scenario id.
Every event keeps its position in the merged stream as its id, so the
consumer puts the two topics back into exactly the embedded order. Ground
truth travels in the "truth" header, never in the payload.

--rate R paces the merged stream at R events/s (each producer sends its share
of them), so two producers started with the same rate stay in step; 0 sends
as fast as possible. A broker that does not answer is waited for, with
backoff; nothing is lost once it is back. SIGTERM stops cleanly (flush).
"""

from __future__ import annotations

import argparse
import gc
import os
import time

from poisonsim.config import ConfigError
from poisonsim.services import runtime as service
from poisonsim.transport import kafka as kafka_io

ROLES = ("benign", "attack")
FLUSH_EVERY = 20_000  # events: wait for acknowledgements (and notice an absent broker) this often


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "produce",
        help="publish a scenario's benign or attack stream to Kafka",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("role", choices=ROLES, help="which side of the merged stream to publish")
    service.add_scenario_arguments(parser)
    parser.add_argument(
        "--rate",
        type=float,
        default=float(os.environ.get("POISONSIM_RATE", "0")),
        metavar="EVENTS_PER_S",
        help="merged-stream events per second; 0: as fast as possible (default %(default)s, POISONSIM_RATE)",
    )
    parser.add_argument(
        "--events-per-message",
        type=int,
        default=int(os.environ.get("POISONSIM_EVENTS_PER_MESSAGE", "1")),
        metavar="K",
        help="events per message (default %(default)s, POISONSIM_EVENTS_PER_MESSAGE)",
    )
    service.add_kafka_arguments(parser)
    service.add_metrics_arguments(parser, default_port=None)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    service.need_kafka("poisonsim produce")
    from prometheus_client import CollectorRegistry

    log = service.setup_logging(args.log_level, f"produce-{args.role}")
    service.check_metrics(args)
    scenario = service.load_scenario(args)
    settings = service.kafka_settings(args)
    service.check_number("--rate", args.rate, 0, "events per second")
    registry = CollectorRegistry()
    server = service.start_metrics(args, registry)
    try:
        produce(scenario, args.role, settings, args, registry, log, service.StopFlag(log))
    finally:
        if server:
            server.close()
    return 0


def produce(scenario, role: str, settings, args, registry, log, stop) -> tuple[int, float]:
    """Publish ``role``'s events of ``scenario``; returns how many, and the seconds from first to last acknowledged."""
    from poisonsim.pipeline.world import World
    from poisonsim.services.exporter import ProducerMetrics, scenario_info
    from poisonsim.transport.codec import Codec

    world = World.build(scenario)
    n_events = scenario.stream.n_events
    codec = Codec(
        world.source.n_features,
        world.source.n_classes,
        n_events,
        n_sources=world.n_source_ids,
        pinned=world.pins_content,
    )  # a content swap: events carry the vetted hash
    if not 1 <= args.events_per_message <= codec.max_events_per_message():
        raise ConfigError(
            f"--events-per-message: expected 1..{codec.max_events_per_message()} (messages of at "
            f"most {codec.max_bytes} bytes), got {args.events_per_message}"
        )
    key = kafka_io.scenario_key(scenario)
    topic = args.attack_topic if role == "attack" else args.benign_topic
    metrics = ProducerMetrics(registry)
    scenario_info(registry, scenario, key.decode(), f"produce-{role}")
    partitions = kafka_io.ensure_topics(settings, [topic], args.partitions, stop)
    partition = kafka_io.partition_for(key, partitions[topic])
    sender = kafka_io.EventSender(
        settings,
        codec,
        topic,
        key,
        partition,
        args.events_per_message,
        on_state=lambda up: metrics.broker_up.set(1 if up else 0),
        on_retry=metrics.retries.inc,
        signer=service.signer(args, log),
    )
    log.info(
        "%s: publishing the %s side of %s (%d events) to %s[%d], %d event(s) per message, %s",
        key.decode(),
        role,
        scenario.name,
        n_events,
        topic,
        partition,
        args.events_per_message,
        f"{args.rate:g} events/s" if args.rate else "as fast as possible",
    )
    stream, sent, messages = world.stream(), 0, 0
    tick = max(int(args.rate / 20), 1) if args.rate else None  # pace in steps of ~50 ms
    gc.freeze()  # what lives for the whole run (world, clients) is kept out of the collector's way
    started, position, since_flush = time.monotonic(), 0, 0
    try:
        for size in world.batch_sizes():
            if stop():
                break
            batch, truth = stream.next_batch(size)
            mine = truth.is_poison if role == "attack" else ~truth.is_poison
            for lo in range(0, size, tick or size):
                hi = min(lo + (tick or size), size)
                rows = mine[lo:hi].nonzero()[0] + lo
                if len(rows):
                    n_messages = sender.send(batch.select(rows), truth.select(rows))
                    since_flush += len(rows)
                    if tick or since_flush >= FLUSH_EVERY:
                        sender.flush()
                        since_flush = 0
                    sent, messages = sent + len(rows), messages + n_messages
                    metrics.events.labels(stream=role).inc(len(rows))
                    metrics.messages.labels(stream=role).inc(n_messages)
                position += hi - lo
                if tick:
                    _sleep_until(started + position / args.rate, stop)
                if stop():
                    break
    finally:
        sender.close()
    elapsed = time.monotonic() - started
    how = "stopped" if stop() else "done"
    log.info(
        "%s: %d %s events in %d messages to %s[%d] up to stream position %d in %.2f s (%.0f events/s)",
        how,
        sent,
        role,
        messages,
        topic,
        partition,
        position,
        elapsed,
        sent / elapsed if elapsed else 0,
    )
    return sent, elapsed


def _sleep_until(when: float, stop) -> None:
    while not stop():
        left = when - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.2))
