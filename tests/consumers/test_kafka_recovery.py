"""Failures: a consumer killed -9 at random points, and a broker that stops answering mid-stream.

Both end with exactly the embedded run's results: no event lost, none learned twice.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
from conftest import (
    consume_command,
    embedded,
    poisonsim_process,
    produce_both,
    read_summary,
    stop,
    wait_all,
    wait_for_log,
)

from poisonsim.services import checkpoint

N_LONG = 150_000
LONG = [
    "scenarios/centroid_shift.toml",
    "--set",
    f"stream.n_events={N_LONG}",
    "--set",
    "attack.start=2000",
    "--set",
    "model.window_policy=random-out",
]
PACED = ["scenarios/centroid_shift.toml", "--set", "stream.n_events=24000", "--set", "attack.start=2000"]


def _position(directory) -> int:
    paths = list(directory.glob("*.npz"))
    return int(checkpoint.load(paths[0])["next_id"]) if paths else 0


@pytest.mark.slow
def test_consumer_killed_at_random_points_ends_like_an_uninterrupted_run(broker, topics, tmp_path):
    producers = produce_both(broker, topics, LONG, tmp_path)
    wait_all(producers, timeout=120, logs=[tmp_path / "produce-benign.log", tmp_path / "produce-attack.log"])
    command = consume_command(LONG, broker, topics, tmp_path, "--checkpoint-interval", "0.02", "--no-metrics")
    rng = np.random.default_rng(11)
    positions = []
    for kill, target in enumerate(np.sort(rng.uniform(0.05, 0.9, size=4)) * N_LONG):
        log = tmp_path / f"consume-{kill}.log"
        consumer = poisonsim_process(command, log)
        deadline = time.monotonic() + 60
        while consumer.poll() is None and _position(tmp_path / "ck") < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.03)))  # then at an arbitrary point, not just after a checkpoint
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=10)
        positions.append(_position(tmp_path / "ck"))
    final = poisonsim_process(command, tmp_path / "consume-final.log")
    wait_all([final], timeout=120, logs=[tmp_path / "consume-final.log"])
    assert len({p for p in positions if 0 < p < N_LONG}) >= 3, positions  # killed mid-stream, at several points
    assert positions == sorted(positions)
    summary, timeseries = embedded(LONG)
    assert read_summary(tmp_path / "out") == summary
    rows = (tmp_path / "out" / "timeseries.csv").read_text().splitlines()
    assert len(rows) == 1 + len(timeseries)
    assert "resumed from" in (tmp_path / "consume-final.log").read_text()


@pytest.mark.slow
def test_a_paused_broker_loses_nothing(broker, topics, tmp_path):
    # 24 s of stream: the learner keeps up however loaded the machine, so the pause leaves it idle
    producers = produce_both(broker, topics, PACED, tmp_path, "--rate", "1000")
    consumer = poisonsim_process(
        consume_command(PACED, broker, topics, tmp_path, "--no-metrics", "--stall-seconds", "2"),
        tmp_path / "consume.log",
    )
    logs = [tmp_path / n for n in ("produce-benign.log", "produce-attack.log", "consume.log")]
    wait_for_log(logs[2], "consuming", timeout=60, process=consumer)
    wait_for_log(logs[0], "publishing", timeout=60, process=producers[0])
    time.sleep(1.5)
    with broker.paused():
        time.sleep(6)
    wait_all([*producers, consumer], timeout=120, logs=logs)
    assert read_summary(tmp_path / "out") == embedded(PACED)[0]
    benign, consumed = logs[0].read_text(), logs[2].read_text()
    assert "broker not acknowledging" in benign and "broker acknowledging again" in benign
    assert "no events for" in consumed and "events arriving again" in consumed
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["events_total"] == 24000


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_restart_finishes(broker, topics, tmp_path):
    producers = produce_both(broker, topics, PACED, tmp_path, "--rate", "2000")  # 12 s: stopped mid-stream
    command = consume_command(PACED, broker, topics, tmp_path, "--no-metrics")
    consumer = poisonsim_process(command, tmp_path / "consume-1.log")
    wait_for_log(tmp_path / "consume-1.log", "consuming", timeout=60, process=consumer)
    time.sleep(1.0)
    assert stop(consumer) == 0
    assert stop(producers[0]) == 0  # a producer stops cleanly too; restarted, it publishes again
    text = (tmp_path / "consume-1.log").read_text()
    assert "SIGTERM: stopping cleanly" in text and "checkpoint written" in text
    position = int(checkpoint.load(next((tmp_path / "ck").glob("*.npz")))["next_id"])
    assert 0 < position < 24000
    again = produce_both(broker, topics, PACED, tmp_path)[:1]  # duplicates are dropped by id
    final = poisonsim_process(command, tmp_path / "consume-2.log")
    wait_all(
        [*again, producers[1], final], timeout=120, logs=[tmp_path / "consume-2.log", tmp_path / "produce-benign.log"]
    )
    assert read_summary(tmp_path / "out") == embedded(PACED)[0]
