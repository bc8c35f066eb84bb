"""A kind written in one file outside the repository: listed, validated, run and checked, no project file edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent

ATTACK = '''
"""A corner-ramp trigger: the last `width` features rise from 0 to `height`, relabelled to the target."""
from typing import Annotated

import numpy as np

from poisonsim import ATTACKS, Attack, Key, TargetClass, check_batch, non_target


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

from poisonsim import DEFENSES, Defense, Key


@DEFENSES.register("low-confidence", requires=("probabilities",), examples=[{"threshold": 0.3}])
class LowConfidence(Defense):
    """Flag (and drop) inputs whose top predicted probability is below a threshold."""

    offers = frozenset({"flags-events"})
    drops = True

    def __init__(self, threshold: Annotated[float, Key("top probability below which an input is dropped",
                                                       gt=0, lt=1)] = 0.5):
        self.threshold = threshold

    def inspect(self, batch, model):
        return model.predict_proba_many(batch.x).max(axis=1) < self.threshold
'''

TRIGGER = '''
"""SIG (Barni et al. 2019): a horizontal sinusoid added to the image, clipped to [0, 1]."""
from typing import Annotated

import numpy as np

from poisonsim import TRIGGERS, Key, Trigger


@TRIGGERS.register("sig", examples=[{"delta": 0.3, "frequency": 1}])
class SignalTrigger(Trigger):
    """SIG: x' = clip(x + delta sin(2 pi j f / m)), j the column, m the image width."""

    def __init__(self, delta: Annotated[float, Key("amplitude of the sinusoid", gt=0, le=1)] = 0.2,
                 frequency: Annotated[int, Key("periods across the image", ge=1, le=64)] = 6):
        self.delta, self.frequency = delta, frequency

    def fit(self, pool_x, image_side, rng):
        n_features = np.shape(pool_x)[1]
        width = image_side or n_features
        column = np.arange(n_features) % width
        self.signal_ = (self.delta * np.sin(2 * np.pi * column * self.frequency / width)).astype(np.float32)
        return self

    def __call__(self, x):
        return np.clip(np.asarray(x, dtype=np.float32) + self.signal_, 0, 1).astype(np.float32)
'''


def poisonsim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )


def write_plugins(tmp_path: Path) -> Path:
    (tmp_path / "ramp_attack.py").write_text(textwrap.dedent(ATTACK))
    (tmp_path / "confidence_defense.py").write_text(textwrap.dedent(DEFENSE))
    scenario = tmp_path / "plugged.toml"
    scenario.write_text(
        textwrap.dedent("""
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
    """)
    )
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
    for concept, kind, module in (
        ("attack", "ramp-trigger", "ramp_attack"),
        ("defense", "low-confidence", "confidence_defense"),
    ):
        done = poisonsim(tmp_path, "check", concept, kind, "--plugin", module)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "check_host_state_round_trip" in done.stdout and "FAIL" not in done.stdout


GENERATOR_DEFENSE = '''
"""Flag a random share of events; its state keeps numpy's Generator itself (a checkpoint cannot store it)."""
from typing import Annotated

import numpy as np

from poisonsim import DEFENSES, Defense, Key


@DEFENSES.register("coin-flip", examples=[{"share": 0.1}])
class CoinFlip(Defense):
    """Flag each event with probability share."""

    offers = frozenset({"flags-events"})

    def __init__(self, share: Annotated[float, Key("share of events flagged", ge=0, le=1)] = 0.1):
        self.share = share

    def fit(self, knowledge, model, rng):
        self.rng_ = np.random.default_rng(rng.integers(2**32))
        return self

    def inspect(self, batch, model):
        return self.rng_.random(len(batch)) < self.share

    def get_state(self):
        return {"rng": self.rng_}

    def set_state(self, state, model):
        self.rng_ = state["rng"]
'''


def test_the_check_suite_refuses_a_state_that_a_checkpoint_cannot_store(tmp_path):
    (tmp_path / "coin_flip.py").write_text(textwrap.dedent(GENERATOR_DEFENSE))
    done = poisonsim(tmp_path, "check", "defense", "coin-flip", "--plugin", "coin_flip")
    assert done.returncode != 0
    assert "coin-flip: its state cannot be checkpointed" in done.stdout + done.stderr
    assert "cannot store a Generator" in done.stdout + done.stderr


def install_trigger_package(tmp_path: Path) -> Path:
    """Build a wheel that declares the trigger under the ``poisonsim.triggers`` entry point; pip installs it."""
    wheel = tmp_path / "sig_trigger-0.1-py3-none-any.whl"
    info = "sig_trigger-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("sig_trigger.py", textwrap.dedent(TRIGGER))
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: sig-trigger\nVersion: 0.1\n")
        archive.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{info}/entry_points.txt", "[poisonsim.triggers]\nsig = sig_trigger\n")
        archive.writestr(f"{info}/RECORD", "")
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return site


def test_a_trigger_from_an_installed_package_is_found_through_its_entry_point(tmp_path):
    site = install_trigger_package(tmp_path)
    assert (site / "sig_trigger.py").exists() and not (tmp_path / "sig_trigger.py").exists()
    listed = poisonsim(site, "kinds", "trigger")  # no --plugin: the entry point alone names the module
    assert "  sig " in listed.stdout, listed.stdout + listed.stderr
    scenario = tmp_path / "sig.toml"
    scenario.write_text(
        textwrap.dedent("""
        seed = 4
        [stream]
        source = "digits"
        n_events = 2000
        [model]
        kind = "mlp"
        hidden = 32
        pretrain_events = 300
        device = "cpu"
        [attack]
        kind = "badnets"
        rate = 0.1
        [attack.trigger]
        kind = "sig"
        delta = 0.3
        [evaluation]
        every = 500
    """)
    )
    done = poisonsim(site, "run", str(scenario), "--quiet", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["attack_success_rate"] > 0.5, summary["attack_success_rate"]
    wrong = poisonsim(site, "run", str(scenario), "--set", "attack.trigger.size=2", "--quiet")
    assert 'attack.trigger.size: not a key of trigger kind "sig" (its keys: delta, frequency)' in wrong.stderr
    checked = poisonsim(site, "check", "trigger", "sig")
    assert checked.returncode == 0 and "check_trigger_stamps_copies" in checked.stdout, checked.stdout
