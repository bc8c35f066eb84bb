"""``poisonsim consume SCENARIO``: the learner (default) or a judge, over Kafka.

The learner merges the scenario's benign and attack topics back into the
embedded order, learns test-then-train, evaluates, exports Prometheus metrics
and checkpoints (model, evaluator and offsets together). Killed at any point
and restarted, it resumes from its checkpoint and ends with the same results
as an uninterrupted run; with --out it writes the same summary.json,
timeseries.csv and scenario.toml as `poisonsim run`.

With --role judge it judges every event with one of the scenario's judges
(a defense that judges inputs, or the model's own alarms) on a snapshot of
the learner's model (read from the learner's checkpoint), as its own group.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from poisonsim.services import runtime as service
from poisonsim.transport import kafka as kafka_io

DEFAULT_METRICS_PORT = 9400


def add_parser(commands) -> None:
    env = os.environ.get
    parser = commands.add_parser(
        "consume",
        help="learn a scenario from Kafka (or judge its events, with --role judge)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    service.add_scenario_arguments(parser)
    parser.add_argument("--role", choices=("learner", "judge"), default=env("POISONSIM_ROLE", "learner"))
    parser.add_argument("--out", type=Path, help="directory for summary.json, timeseries.csv, scenario.toml")
    parser.add_argument(
        "--group-id",
        default=env("POISONSIM_GROUP_ID"),
        help="consumer group (default poisonsim-learner or poisonsim-judge)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path(env("POISONSIM_CHECKPOINT_DIR", "results/checkpoints")),
        help="where the learner keeps <scenario id>.npz (default %(default)s)",
    )
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=float(env("POISONSIM_CHECKPOINT_INTERVAL", "5")),
        metavar="SECONDS",
        help="checkpoint at most this often (default %(default)s)",
    )
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        default=env("POISONSIM_KEEP_SERVING", "") not in ("", "0", "false"),
        help="after the stream ends, keep the metrics endpoint up until SIGTERM",
    )
    parser.add_argument(
        "--stall-seconds",
        type=float,
        default=5.0,
        help="warn when no event has arrived for this long (default %(default)s)",
    )
    parser.add_argument(
        "--gap-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="give up on a missing event after this long, once both topics are read to "
        "their end (default 0: wait forever, nothing is skipped)",
    )
    parser.add_argument(
        "--judge",
        default=env("POISONSIM_JUDGE", "auto"),
        metavar="auto|KIND|model",
        help="judge role: what judges events: a defense kind of the scenario that judges inputs "
        "(strip, or a plug-in's), model (the model's own alarms), or auto (the first of those the "
        "scenario has; default %(default)s)",
    )
    parser.add_argument(
        "--snapshot",
        type=Path,
        help="judge role: the learner checkpoint to take the model from (default: the learner's in --checkpoint-dir)",
    )
    service.add_kafka_arguments(parser)
    service.add_metrics_arguments(parser, default_port=DEFAULT_METRICS_PORT)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    service.need_kafka("poisonsim consume")
    from prometheus_client import CollectorRegistry

    log = service.setup_logging(args.log_level, args.role)
    service.check_metrics(args)
    scenario = service.load_scenario(args)
    settings = service.kafka_settings(args)
    for name in ("checkpoint_interval", "stall_seconds", "gap_timeout"):
        service.check_number(f"--{name.replace('_', '-')}", getattr(args, name), 0, "seconds")
    if args.out:
        from poisonsim.pipeline.results import check_out

        check_out(args.out)
    key = kafka_io.scenario_key(scenario).decode()
    checkpoint_path = args.checkpoint_dir / f"{key}.npz"
    topics = (args.benign_topic, args.attack_topic)
    registry, stop = CollectorRegistry(), service.StopFlag(log)
    if args.role == "judge":
        from poisonsim.consumers.judge import JudgeProcess, check_judge, judge_for

        if args.judge == "auto":
            args.judge = judge_for(scenario)
            if args.judge is None:  # compose starts a judge for every scenario: nothing to judge is no error
                log.info(
                    "no judge for this scenario (no defense judges inputs, model %s raises no "
                    "alarms): nothing to judge",
                    scenario.model.kind,
                )
                return 0
        check_judge(scenario, args.judge)
        log.info("judge: %s", args.judge)
        signer = service.signer(args, log)

        process = JudgeProcess(
            scenario,
            settings,
            topics,
            args.group_id or "poisonsim-judge",
            args.snapshot or checkpoint_path,
            args.judge,
            registry,
            stop,
            signer,
        )
        server = service.start_metrics(args, registry)
        try:
            process.run()
            if args.keep_serving and server and not stop():
                log.info("serving metrics until SIGTERM")
                while not stop():
                    time.sleep(0.2)
        finally:
            if server:
                server.close()
        return 0

    from poisonsim.consumers.learner import LearnerOptions, LearnerProcess

    signer = service.signer(args, log)
    options = LearnerOptions(
        topics,
        args.dead_letter_topic,
        args.group_id or "poisonsim-learner",
        checkpoint_path,
        args.checkpoint_interval,
        args.fresh,
        args.stall_seconds,
        args.gap_timeout,
        partitions=args.partitions,
        signer=signer,
    )
    from poisonsim.services.checkpoint import CheckpointError

    try:
        process = LearnerProcess(scenario, settings, options, registry, stop)
    except CheckpointError as exc:
        raise service.ConfigError(str(exc)) from None
    server = service.start_metrics(args, registry)
    try:
        result = process.run()
        if result is not None:
            _report(result.summary, log)
            if args.out:
                from poisonsim.pipeline.results import write_results

                log.info("results written to %s/", write_results(result, scenario, args.out))
            if args.keep_serving and server:
                log.info("stream complete; serving metrics until SIGTERM")
                while not stop():
                    time.sleep(0.2)
    finally:
        if server:
            server.close()
    return 0


def _report(summary: dict, log) -> None:
    figures = (
        "events_total",
        "poison_events_total",
        "observed_poisoning_rate",
        "clean_accuracy",
        "attack_success_rate",
        "displacement_radii",
        "window_contamination",
    )
    shown = ", ".join(
        f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
        for k in figures
        if summary.get(k) is not None
    )
    log.info("done: %s", shown)
