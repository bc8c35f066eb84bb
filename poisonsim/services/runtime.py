"""What every long-running process shares: scenario, Kafka and metrics flags, logging, a clean stop.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_scenario_arguments(parser)
>>> add_metrics_arguments(parser, default_port=None)
>>> args = parser.parse_args(["s.toml", "--set", "attack.rate=0.1", "--metrics-port", "9400"])
>>> args.overrides, args.metrics_port, args.metrics_address
(['attack.rate=0.1'], 9400, '127.0.0.1')
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path

from poisonsim.config import ConfigError, Scenario
from poisonsim.transport.kafka import DEFAULT_TOPICS, SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaSettings


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario TOML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. attack.rate=0.3 (repeatable)",
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("POISONSIM_LOG_LEVEL", "INFO"),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )


def load_scenario(args: argparse.Namespace) -> Scenario:
    return Scenario.from_toml(args.scenario, args.overrides, args.seed)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"POISONSIM_{name}", default)


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Connection, security and topic flags; each defaults to a ``POISONSIM_*`` variable."""
    kafka = parser.add_argument_group("Kafka (each flag defaults to the POISONSIM_<FLAG> environment variable)")
    kafka.add_argument(
        "--bootstrap-servers",
        default=_env("BOOTSTRAP_SERVERS", "localhost:9092"),
        metavar="HOSTS",
        help="comma-separated host:port list (default %(default)s)",
    )
    kafka.add_argument(
        "--security-protocol", default=_env("SECURITY_PROTOCOL", "PLAINTEXT"), choices=SECURITY_PROTOCOLS
    )
    kafka.add_argument("--sasl-mechanism", default=_env("SASL_MECHANISM"), choices=SASL_MECHANISMS)
    kafka.add_argument("--sasl-username", default=_env("SASL_USERNAME"))
    kafka.add_argument(
        "--sasl-password-file",
        default=_env("SASL_PASSWORD_FILE"),
        metavar="PATH",
        help="file holding the SASL password (or POISONSIM_SASL_PASSWORD; never a flag)",
    )
    kafka.add_argument("--ssl-cafile", default=_env("SSL_CAFILE"), metavar="PATH")
    kafka.add_argument("--ssl-certfile", default=_env("SSL_CERTFILE"), metavar="PATH")
    kafka.add_argument(
        "--ssl-keyfile",
        default=_env("SSL_KEYFILE"),
        metavar="PATH",
        help="its password, if any: POISONSIM_SSL_PASSWORD",
    )
    for name, default in DEFAULT_TOPICS.items():
        flag = name.replace("_", "-")
        kafka.add_argument(
            f"--{flag}-topic",
            default=_env(f"{name.upper()}_TOPIC", default),
            metavar="TOPIC",
            help="default %(default)s",
        )
    kafka.add_argument(
        "--partitions",
        type=int,
        default=int(_env("PARTITIONS", "1")),
        help="partitions of topics this process creates when missing (default %(default)s)",
    )
    kafka.add_argument(
        "--signing-key-file",
        default=_env("SIGNING_KEY_FILE"),
        metavar="PATH",
        help="key that signs (producers) and verifies (consumers) every record; or the key itself "
        "in POISONSIM_SIGNING_KEY (hex); default: this machine's deployment key, made on first use "
        "(POISONSIM_KEY_DIR, else ~/.config/poisonsim/signing.key)",
    )
    kafka.add_argument(
        "--insecure-unsigned",
        action="store_true",
        default=_env("INSECURE_UNSIGNED") == "1",
        help="neither sign nor check records: anyone who can write the topics can forge events and "
        "ground truth, and a forged copy of a coming event takes its place (POISONSIM_INSECURE_"
        "UNSIGNED=1)",
    )


def check_number(flag: str, value: float, low: float = 0, what: str = "a number") -> None:
    """Refuse a flag value that is NaN, infinite or below ``low``."""
    if not math.isfinite(value) or value < low:
        raise ConfigError(f"{flag}: expected {what} >= {low:g}, got {value}")


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    check_number("--partitions", args.partitions, 1, "an integer")
    password = os.environ.get("POISONSIM_SASL_PASSWORD")
    if args.sasl_password_file:
        try:
            password = open(args.sasl_password_file).read().strip()
        except OSError as exc:
            raise ConfigError(f"--sasl-password-file: {exc}") from None
    return KafkaSettings(
        args.bootstrap_servers,
        args.security_protocol,
        args.sasl_mechanism,
        args.sasl_username,
        password,
        args.ssl_cafile,
        args.ssl_certfile,
        args.ssl_keyfile,
        os.environ.get("POISONSIM_SSL_PASSWORD"),
    ).check()


def signer(args: argparse.Namespace, log: logging.Logger):
    """The record signer the flags give (see :mod:`poisonsim.transport.signing`), or None with
    ``--insecure-unsigned`` (and a warning: anyone who can write the topics can forge)."""
    from poisonsim.transport.signing import load_signer

    if args.insecure_unsigned:
        log.warning(
            "--insecure-unsigned: records are neither signed nor checked, so anyone who can write the "
            "topics can forge events and ground truth, and a forged copy of a coming event takes the real "
            "one's place (the real one is then counted in poisonsim_duplicate_events_total, or with other "
            "content still held, both in poisonsim_skipped_events_total)"
        )
        return None
    try:
        loaded, origin = load_signer(args.signing_key_file)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    log.info("records signed and checked with the key from %s", origin)
    return loaded


def add_metrics_arguments(parser: argparse.ArgumentParser, default_port: int | None) -> None:
    env_port = os.environ.get("POISONSIM_METRICS_PORT")
    group = parser.add_argument_group("metrics")
    shown = default_port if default_port is not None else "none"
    group.add_argument(
        "--metrics-port",
        type=int,
        default=int(env_port) if env_port else default_port,
        metavar="PORT",
        help=f"serve Prometheus metrics on this port (0: any free port; default {shown}, POISONSIM_METRICS_PORT)",
    )
    group.add_argument(
        "--metrics-address",
        default=os.environ.get("POISONSIM_METRICS_ADDRESS", "127.0.0.1"),
        metavar="ADDR",
        help="address the metrics endpoint binds to (default %(default)s)",
    )
    group.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoint")


def check_metrics(args: argparse.Namespace) -> None:
    """Refuse a metrics port out of range (before anything is built)."""
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port: expected 0..65535, got {args.metrics_port}")


def start_metrics(args: argparse.Namespace, registry):
    """The metrics endpoint the flags ask for, or None."""
    if args.no_metrics or args.metrics_port is None:
        return None
    check_metrics(args)
    from poisonsim.services.exporter import MetricsServer

    try:
        return MetricsServer(registry, args.metrics_port, args.metrics_address)
    except OSError as exc:
        where = f"{args.metrics_address}:{args.metrics_port}"
        raise ConfigError(f"--metrics-port {args.metrics_port}: cannot listen on {where} ({exc})") from None


def setup_logging(level: str, name: str) -> logging.Logger:
    logging.basicConfig(
        level=level, stream=sys.stderr, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.WARNING)
    return logging.getLogger(name)


def need_kafka(command: str) -> None:
    """A clear error when the optional Kafka dependencies are missing."""
    try:
        import kafka  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{command} needs the kafka extra ({exc.name} is missing): pip install 'poisonsim[kafka]'")


class StopFlag:
    """Set by SIGTERM or SIGINT; a loop checks it and stops cleanly (flush, commit, checkpoint)."""

    def __init__(self, log: logging.Logger):
        self.log = log
        self.stopping = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.stopping:  # a second signal: stop now
            raise KeyboardInterrupt
        self.log.info("%s: stopping cleanly", signal.Signals(signum).name)
        self.stopping = True

    def __call__(self) -> bool:
        return self.stopping
