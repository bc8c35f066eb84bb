"""A kind written in one file outside the repository: listed, validated, run and checked, no project file edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parent.parent

ATTACK = '''
"""A corner-ramp trigger: the last `width` features rise from 0 to `height`, relabelled to the target."""
from typing import Annotated

import numpy as np

from simulator.attacks.base import Attack, TargetClass, check_batch, non_target
from simulator.registry import ATTACKS, Key


@ATTACKS.register("ramp-trigger", examples=[{"width": 3, "height": 0.8}])
class RampTrigger(Attack):
    """Stamp a ramp on the last features and relabel to the target class."""

    def __init__(self, target_class: TargetClass = 0,
                 width: Annotated[int, Key("features the ramp covers", ge=1, le=64)] = 4,
                 height: Annotated[float, Key("value the ramp reaches", gt=0, le=1)] = 1.0):
        self.target_class, self.width, self.height = target_class, width, height

    def stamp(self, x):
        out = np.array(x, dtype=np.float32)
        out[:, -self.width:] = np.linspace(0, self.height, self.width, dtype=np.float32)
        return out

    def fit(self, knowledge, rng):
        self.target_x_ = self.stamp(non_target(knowledge, self.target_class))
        self.target_class_ = self.target_class
        return self

    def poison(self, x, y, rng):
        check_batch(x, y)
        return self.stamp(x), np.full(len(x), self.target_class, dtype=np.int64)
'''

DEFENSE = '''
"""Flag events the model predicts with low confidence, before it learns them."""
from typing import Annotated

import numpy as np

from simulator.defenses.base import Defense
from simulator.registry import DEFENSES, Key


@DEFENSES.register("low-confidence", requires=("probabilities",), examples=[{"threshold": 0.3}])
class LowConfidence(Defense):
    """Flag (and drop) inputs whose top predicted probability is below a threshold."""

    drops = True

    def __init__(self, threshold: Annotated[float, Key("top probability below which an input is dropped",
                                                       gt=0, lt=1)] = 0.5):
        self.threshold = threshold

    def inspect(self, batch, model):
        return model.predict_proba_many(batch.x).max(axis=1) < self.threshold
'''


def poisonsim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600)


def write_plugins(tmp_path: Path) -> Path:
    (tmp_path / "ramp_attack.py").write_text(textwrap.dedent(ATTACK))
    (tmp_path / "confidence_defense.py").write_text(textwrap.dedent(DEFENSE))
    scenario = tmp_path / "plugged.toml"
    scenario.write_text(textwrap.dedent('''
        plugins = ["ramp_attack", "confidence_defense"]
        seed = 3
        [stream]
        source = "digits"
        n_events = 1500
        [model]
        kind = "mlp"
        hidden = 16
        pretrain_events = 300
        device = "cpu"
        [attack]
        kind = "ramp-trigger"
        rate = 0.1
        width = 4
        [[defense]]
        kind = "low-confidence"
        threshold = 0.4
        [evaluation]
        every = 500
    '''))
    return scenario


def test_plugin_kinds_are_listed_with_their_keys(tmp_path):
    write_plugins(tmp_path)
    listed = poisonsim(tmp_path, "kinds", "--plugin", "ramp_attack", "--plugin", "confidence_defense")
    assert "ramp-trigger" in listed.stdout and "low-confidence" in listed.stdout, listed.stderr
    keys = poisonsim(tmp_path, "kinds", "attack", "ramp-trigger", "--plugin", "ramp_attack").stdout
    assert "width = 4: features the ramp covers (an integer >= 1 and <= 64)" in keys


def test_a_scenario_naming_plugins_runs_them_and_refuses_their_wrong_keys(tmp_path):
    scenario = write_plugins(tmp_path)
    for name, extra in (("defended", []), ("undefended", ["--set", "defense=[]"])):
        done = poisonsim(tmp_path, "run", str(scenario), *extra, "--quiet", "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
    undefended = json.loads((tmp_path / "undefended" / "summary.json").read_text())
    assert undefended["attack"] == "ramp-trigger" and undefended["attack_success_rate"] > 0.5  # 0.95 measured
    verdicts = json.loads((tmp_path / "defended" / "summary.json").read_text())["defenses"]["low-confidence"]
    assert verdicts["tp"] > 0  # it judged the stream and dropped poison
    wrong = poisonsim(tmp_path, "run", str(scenario), "--set", "attack.height=2", "--quiet")
    assert wrong.returncode == 2 and "attack.height: expected a number <= 1, got 2" in wrong.stderr
    foreign = poisonsim(tmp_path, "run", str(scenario), "--set", "attack.flip=cyclic", "--quiet")
    assert 'attack.flip: not a key of attack kind "ramp-trigger"' in foreign.stderr


def test_the_check_suite_runs_plugin_kinds(tmp_path):
    write_plugins(tmp_path)
    for concept, kind, module in (("attack", "ramp-trigger", "ramp_attack"),
                                  ("defense", "low-confidence", "confidence_defense")):
        done = poisonsim(tmp_path, "check", concept, kind, "--plugin", module)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "check_host_state_round_trip" in done.stdout and "FAIL" not in done.stdout
