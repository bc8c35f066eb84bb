"""The Kafka judge role runs a plug-in defense that judges inputs, written in a file outside the repository.

The plug-in offers ``judges-inputs``; nothing in the project names it. Over a
real broker, ``poisonsim consume --role judge`` picks it (``auto``), hears of
each snapshot it loads (``new_model``) and scores its verdicts; they are the
plug-in's own verdicts on every event of the embedded stream, and it catches
the trigger.
"""

from __future__ import annotations

import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, poisonsim_process, stop_all, wait_all, wait_for_log

PLUGIN = '''
"""A runtime judge of one's own: flag inputs whose bottom-right corner is brighter than any trusted one."""
import logging
from typing import Annotated

import numpy as np

from poisonsim import DEFENSES, Defense, Key

log = logging.getLogger("corner-judge")


@DEFENSES.register("corner-judge", requires=("images",), examples=[{"side": 2}])
class CornerJudge(Defense):
    """Flag inputs whose bottom-right corner is brighter than the trusted sample's brightest."""

    offers = frozenset({"judges-inputs"})

    def __init__(self, side: Annotated[int, Key("side of the corner square, in pixels", ge=1, le=64)] = 3):
        self.side = side

    def fit(self, knowledge, model, rng):
        self.image_side_ = knowledge.image_side
        self.threshold_ = float(self.brightness(knowledge.clean_x).max())
        return self

    def brightness(self, X):
        images = np.asarray(X).reshape(len(X), self.image_side_, self.image_side_)
        return images[:, -self.side:, -self.side:].mean(axis=(1, 2))

    def flag(self, X, model):
        return self.brightness(X) > self.threshold_

    def score(self, X, model):
        return -self.brightness(X)

    def new_model(self, model):
        log.info("corner-judge: judging with a new model")
'''

SCENARIO = """
plugins = ["corner_judge"]
seed = 12
[stream]
source = "digits"
n_events = 4000
[model]
kind = "centroid-classifier"
window_size = 50
[attack]
kind = "badnets"
rate = 0.1
target_class = 5
trigger = {kind = "patch", size = 3, value = 1.0}
[[defense]]
kind = "corner-judge"
[evaluation]
every = 1000
"""


@pytest.mark.slow
def test_the_judge_role_runs_a_plugin_defense_that_judges_inputs(broker, topics, tmp_path):
    (tmp_path / "corner_judge.py").write_text(textwrap.dedent(PLUGIN))
    scenario_file = tmp_path / "corner.toml"
    scenario_file.write_text(textwrap.dedent(SCENARIO))
    env = {"PYTHONPATH": str(tmp_path), "POISONSIM_KEY_DIR": str(tmp_path / "keys")}
    common = [scenario_file, "--bootstrap-servers", broker.bootstrap, *topics.flags()]
    port = free_port()
    processes = [
        poisonsim_process(["produce", role, *common], tmp_path / f"produce-{role}.log", env)
        for role in ("benign", "attack")
    ] + [
        poisonsim_process(
            ["consume", *common, "--checkpoint-dir", tmp_path / "ck", "--checkpoint-interval", "0.5"],
            tmp_path / "learner.log",
            env,
        ),
        poisonsim_process(
            [
                "consume",
                *common,
                "--role",
                "judge",
                "--checkpoint-dir",
                tmp_path / "ck",
                "--metrics-port",
                port,
                "--keep-serving",
            ],
            tmp_path / "judge.log",
            env,
        ),
    ]
    logs = [tmp_path / f"{name}.log" for name in ("produce-benign", "produce-attack", "learner")]
    try:
        wait_all(processes[:3], timeout=300, logs=logs)
        wait_for_log(tmp_path / "judge.log", "serving metrics until SIGTERM", timeout=120, process=processes[3])
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        codes = stop_all(*processes)
    judge_log = (tmp_path / "judge.log").read_text()
    assert codes == [0, 0, 0, 0], judge_log[-3000:]
    assert "judge: corner-judge" in judge_log  # auto picked the scenario's defense that judges inputs
    assert "corner-judge: judging with a new model" in judge_log  # it heard of the snapshots it loaded
    counted = {outcome: _sample(exposition, outcome) for outcome in ("tp", "fp", "tn", "fn")}
    assert counted == _embedded_verdicts(scenario_file, tmp_path)
    assert counted["tp"] / (counted["tp"] + counted["fn"]) >= 0.95  # the patch is brighter than any clean corner
    assert counted["fp"] / (counted["fp"] + counted["tn"]) <= 0.01


def _sample(exposition: str, outcome: str) -> int:
    line = f'poisonsim_detections_total{{judge="corner-judge",outcome="{outcome}",role="judge"}} '
    found = [row for row in exposition.splitlines() if row.startswith(line)]
    assert found, f"{line} not exposed"
    return int(float(found[0][len(line) :]))


def _embedded_verdicts(scenario_file: Path, plugin_dir: Path) -> dict[str, int]:
    """The plug-in's verdicts on every event of the embedded stream, against the truth."""
    sys.path.insert(0, str(plugin_dir))
    try:
        from poisonsim.config import Scenario
        from poisonsim.pipeline.world import World

        world = World.build(Scenario.from_toml(scenario_file))
    finally:
        sys.path.remove(str(plugin_dir))
    corner, stream = world.defenses[0], world.stream()
    counts = dict.fromkeys(("tp", "fp", "tn", "fn"), 0)
    for size in world.batch_sizes():
        batch, truth = stream.next_batch(size)
        flags, poison = corner.flag(batch.x, world.model), truth.is_poison
        for outcome, mask in (
            ("tp", flags & poison),
            ("fp", flags & ~poison),
            ("tn", ~flags & ~poison),
            ("fn", ~flags & poison),
        ):
            counts[outcome] += int(np.sum(mask))
    return counts
