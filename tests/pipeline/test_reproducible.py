"""The same seed gives the same run on any core count: the scenario fixes torch's threads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poisonsim.pipeline.results import TIMING_FIELDS

ROOT = Path(__file__).parents[2]


def run_on_cores(cores: str, out: Path, *overrides: str) -> tuple[dict, str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("OMP_NUM_THREADS", None)
    command = [
        "taskset",
        "-c",
        cores,
        sys.executable,
        "-m",
        "poisonsim.cli",
        "run",
        str(ROOT / "scenarios" / "badnets_cnn.toml"),
        "--set",
        "stream.n_events=1200",
        "--set",
        "evaluation.every=400",
        *overrides,
        "--quiet",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, env=env, cwd=ROOT, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}, (out / "timeseries.csv").read_text()


@pytest.mark.skipif(shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")
def test_a_neural_run_is_the_same_on_one_core_and_on_two(tmp_path):
    cores = sorted(os.sched_getaffinity(0))[:2]
    one = run_on_cores(str(cores[0]), tmp_path / "one")
    two = run_on_cores(f"{cores[0]},{cores[1]}", tmp_path / "two")
    assert one == two
