"""The image's environment, built exactly as the Dockerfile builds it, runs every service.

The deploy test runs compose's commands from the development venv, which
holds every extra; here a fresh venv gets only the Dockerfile's own COPY
lines and pip commands, so a dependency the image lacks fails the run.
The pip index the Dockerfile names for torch's CPU build is dropped: this
machine's configured index serves the same pinned CPU wheel.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, free_port, stop_all, wait_all, wait_for_log

pytestmark = pytest.mark.slow  # builds a venv from scratch (minutes): CI runs it

DOCKERFILE = ROOT / "Dockerfile"


def dockerfile_steps() -> tuple[list[tuple[list[str], str]], list[list[str]]]:
    """The Dockerfile's COPY lines (sources, destination) and the pip commands of its RUN lines."""
    copies, installs = [], []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        if words[0] == "COPY":
            copies.append((words[1:-1], words[-1]))
        elif words[0] == "RUN":
            commands = " ".join(words[1:]).split("&&")
            installs += [shlex.split(c) for c in commands if shlex.split(c)[:2] == ["pip", "install"]]
    return copies, installs


@pytest.fixture(scope="session")
def image_env(tmp_path_factory) -> tuple[Path, Path]:
    """``(python, app)``: the image's interpreter and working directory, built from the Dockerfile's steps."""
    root = tmp_path_factory.mktemp("image")
    app = root / "app"
    app.mkdir()
    copies, installs = dockerfile_steps()
    assert installs, "the Dockerfile installs nothing with pip"
    for sources, destination in copies:
        for source in sources:
            target = app if destination in ("./", ".") else app / destination
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target if destination.endswith("/") else target)
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True, timeout=300)
    python = root / "venv" / "bin" / "python"
    for command in installs:
        args = [a for i, a in enumerate(command) if a != "--index-url" and command[i - 1] != "--index-url"]
        done = subprocess.run([python, "-m", *args], cwd=app, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return python, app


def test_the_image_installs_what_it_copies():
    copies, installs = dockerfile_steps()
    copied = {source for sources, _ in copies for source in sources}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "benchmarks")}
    assert packages <= copied, packages - copied  # every package pyproject installs is in the image
    assert any("torch==" in " ".join(c) for c in installs)  # torch pinned


def test_the_distribution_installs_the_import_name_poisonsim_alone(image_env, tmp_path):
    python, _ = image_env
    code = (
        "from importlib.metadata import distribution; "
        "print(' '.join(sorted({f.parts[0] for f in distribution('poisonsim').files if f.suffix == '.py'})))"
    )
    done = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["poisonsim"]  # no simulator, services, producers or consumers beside it
    marker = "from importlib.metadata import distribution; print([str(f) for f in distribution('poisonsim').files])"
    done = subprocess.run([python, "-c", marker], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "poisonsim/py.typed" in done.stdout  # the type hints are the library's users' too (PEP 561)


@pytest.mark.parametrize(
    "scenario, n_events, judge",
    [
        ("scenarios/centroid_shift.toml", 4_000, "model"),
        ("scenarios/strip_badnets.toml", 1_500, "strip"),
    ],
)
def test_every_service_runs_from_the_image_environment(image_env, broker, topics, tmp_path, scenario, n_events, judge):
    python, app = image_env
    common = [
        scenario,
        "--set",
        f"stream.n_events={n_events}",
        "--bootstrap-servers",
        broker.bootstrap,
        *topics.flags(),
    ]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "POISONSIM_CHECKPOINT_DIR": str(tmp_path / "state"),
        "VIRTUAL_ENV": str(python.parent.parent),
    }
    env.pop("PYTHONPATH", None)

    def service(name: str, *args: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "ab") as log:
            return subprocess.Popen(
                [python.parent / "poisonsim", *args], cwd=app, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    processes = {
        "learner": service(
            "learner", "consume", *common, "--out", str(tmp_path / "results"), "--metrics-port", str(free_port())
        ),
        "judge": service("judge", "consume", "--role", "judge", *common, "--metrics-port", str(free_port())),
        "produce-benign": service("produce-benign", "produce", "benign", *common),
        "produce-attack": service("produce-attack", "produce", "attack", *common),
    }
    logs = {name: tmp_path / f"{name}.log" for name in processes}
    try:
        wait_all(
            [processes[n] for n in ("produce-benign", "produce-attack", "learner")],
            timeout=600,
            logs=[logs[n] for n in ("produce-benign", "produce-attack", "learner")],
        )
        wait_for_log(logs["judge"], "stopped after judging", timeout=180, process=processes["judge"])
    finally:
        codes = dict(zip(processes, stop_all(*processes.values())))  # each, whatever failed
    assert codes == dict.fromkeys(processes, 0), {n: logs[n].read_text()[-2000:] for n in processes}
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["events_total"] == n_events
    assert f"judge: {judge}" in logs["judge"].read_text()  # --judge auto chose it from the scenario
    for name, log in logs.items():
        assert "Traceback" not in log.read_text() and "ModuleNotFoundError" not in log.read_text(), name
