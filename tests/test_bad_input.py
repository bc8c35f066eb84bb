"""Bad scenario values, files and flags: each a one-line error naming the key or flag, exit code 2, no run.

Scenario cases run the CLI in-process; process flags run as real
subprocesses pointed at a port where no broker listens, so a flag that is
not checked before connecting shows up as a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poisonsim.cli import main

ROOT = Path(__file__).parent.parent
CENTROID = str(ROOT / "scenarios" / "centroid_shift.toml")
BADNETS = str(ROOT / "scenarios" / "badnets_cnn.toml")
STRIP = str(ROOT / "scenarios" / "strip_badnets.toml")  # one [[defense]] table
NOWHERE = ["--bootstrap-servers", "127.0.0.1:1"]

SCENARIO_VALUES = [  # (scenario file, override, what the error must name)
    (CENTROID, "model.radius=inf", "model.radius: expected a finite number"),
    (CENTROID, "model.radius=-1", "model.radius: expected a number > 0"),
    (CENTROID, "attack.target_distance=inf", "attack.target_distance: expected a finite number"),
    (CENTROID, "attack.target_point=[nan, nan]", "attack.target_point: expected a finite number"),
    (CENTROID, "attack.target_point='a'", "attack.target_point: expected a list of numbers"),
    (CENTROID, "stream.n_test=1000000000", "stream.n_test: expected an integer <= 1e+06"),
    (CENTROID, "stream.n_events=1000000000000", "stream.n_events: expected an integer <= 1e+10"),
    (CENTROID, "stream.n_events=0", "stream.n_events: expected an integer >= 1"),
    (CENTROID, "stream.n_events=1.5", "stream.n_events: expected an integer"),
    (CENTROID, "stream.n_features=5000", "stream.n_features: expected an integer <= 4096"),
    (CENTROID, "stream.source='mnist-typo'", 'stream.source: source kind "mnist-typo" does not exist'),
    (CENTROID, "model.window_size=0", "model.window_size: expected an integer >= 1"),
    (CENTROID, "model.window_policy='lifo'", "model.window_policy: expected one of"),
    (CENTROID, "model.kind='nope'", 'model.kind: model kind "nope" does not exist'),
    (CENTROID, "model.threads=0", "model.threads: expected an integer >= 1"),
    (CENTROID, "model.snapshot_jitter=1", "model.snapshot_jitter: expected a number < 1"),
    (CENTROID, "attack.rate=1.5", "attack.rate: expected a number <= 1"),
    (CENTROID, "attack.rate=nan", "attack.rate: expected a finite number"),
    (CENTROID, "attack.rate='high'", "attack.rate: expected a number"),
    (CENTROID, "attack.flip='cyclic'", 'attack.flip: not a key of attack kind "centroid-shift"'),
    (CENTROID, "attack.channel='carrier-pigeon'", 'attack.channel: channel kind "carrier-pigeon" does not exist'),
    (CENTROID, "evaluation.every=0", "evaluation.every: expected an integer >= 1"),
    (CENTROID, "evaluation.typo=3", "evaluation.typo: not a key of [evaluation]"),
    (CENTROID, "seed=-1", "seed: expected an integer >= 0"),
    (CENTROID, "seed='x'", "seed: expected an integer >= 0"),
    (CENTROID, "name=3", "name: expected a string"),
    (CENTROID, "plugins=['no_such_module_here']", "plugins: cannot import 'no_such_module_here'"),
    (
        CENTROID,
        "defense=[{kind='strip-typo'}]",
        'defense[0].kind: defense kind "strip-typo" does not exist (did you mean "strip"?)',
    ),
    (CENTROID, "defense=[{kind='drift-reset', monitor='adwin', quota=3}]", "defense[0].quota: not a key"),
    (CENTROID, "defense=[{}]", "defense[0].kind: required"),
    (BADNETS, "defense=[{kind='strip', confidence=0.3}]", "defense[0].confidence: expected a number >= 0.5"),
    (STRIP, "defense.0.check=-1", "defense[0].check: expected an integer >= 0"),
    (STRIP, "defense[0].chek=100", 'defense[0].chek: not a key of defense kind "strip"'),
    (
        STRIP,
        "defense.check=100",
        "defense.check: expected the index of a [[defense]] table, 0 to 0, or its kind (strip)",
    ),
    (STRIP, "defense.1.check=100", "defense.1: expected the index of a [[defense]] table, 0 to 0, or its kind (strip)"),
    (STRIP, "defense.isolation.fraction=0.1", "defense.isolation: expected the index of a [[defense]] table"),
    (BADNETS, "defense.strip.check=100", "defense.strip: the scenario has no [[defense]] table; add one"),
    (
        BADNETS,
        "stream.n_events=500|model.pretrain_events=200|defense=[{kind='fine-pruning',at=1000}]",
        "defense[0].at: 1,000 is after the stream's end (500 events), so it would never come",
    ),
    (CENTROID, "streem.n_events=3", "streem: unknown key"),
    (CENTROID, "stream=3", "stream: expected a table"),
    (CENTROID, "nonsense", "--set 'nonsense': expected section.key=value"),
    (BADNETS, "attack.trigger.size=0", "attack.trigger.size: expected an integer >= 1"),
    (BADNETS, "attack.trigger.alpha=0.5", 'attack.trigger.alpha: not a key of trigger kind "patch"'),
    (BADNETS, "attack.trigger='warp'", 'attack.trigger: trigger kind "warp" does not exist'),
    (BADNETS, "attack.target_class=-1", "attack.target_class: expected an integer >= 0"),
    (BADNETS, "model.lr=inf", "model.lr: expected a finite number"),
    # refused by the kind when the run is built, still named in full
    (BADNETS, "attack.target_class=10", "attack.target_class: expected a class in [0, 10), got 10"),
    (BADNETS, "attack.trigger.size=100", "attack.trigger.size: a 100x100 patch does not fit a 8x8 image"),
    (CENTROID, "attack.target_point=[1, 2, 3]", "attack.target_point: expected 2 numbers, got 3"),
    (
        CENTROID,
        "defense=[{kind='robust-centroid'}]|model.window_policy='infinite'",
        "model.window_policy: a robust centroid (median) needs stored points",
    ),
    (CENTROID, "attack={kind='label-flip',rate=0.1}", "stream: label-flip needs a source of at least 2 classes"),
    # accepted by every bound, but more than any machine here holds: refused before allocating
    (CENTROID, "stream.n_features=4096|model.window_size=1000000", "model.window_size: the run needs about"),
    (CENTROID, "stream.n_features=4096|stream.n_test=1000000", "stream.n_test: the run needs about"),
]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("path, override, expected", SCENARIO_VALUES, ids=[c[1][:40] for c in SCENARIO_VALUES])
def test_a_bad_scenario_value_is_one_clear_line_and_nothing_runs(path, override, expected, capsys, tmp_path):
    sets = [arg for item in override.split("|") for arg in ("--set", item)]
    rc, err = run_cli(["run", path, *sets, "--quiet", "--out", str(tmp_path / "out")], capsys)
    assert rc == 2 and err.startswith("poisonsim: error: ") and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_the_memory_check_allows_the_largest_ready_scenario(capsys):
    from poisonsim.config import Scenario
    from poisonsim.resources import available_bytes, check_memory

    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        check_memory(Scenario.from_toml(path), available=min(available_bytes() or 2**31, 2**31))  # 2 GiB machines


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text file (UTF-8 expected)"),
        ("naïve = 1".encode("latin-1"), "not a text file"),
        (b"seed = = 3", "not valid TOML"),
        (None, "is a directory"),
        (b"", None),
    ],
    ids=["binary", "latin-1", "malformed", "directory", "missing"],
)
def test_an_unreadable_scenario_file_is_named(content, expected, capsys, tmp_path):
    path = tmp_path / "scenario.toml"
    if content is None:
        path.mkdir()
    elif expected is None:
        expected = "no such scenario file"
    else:
        path.write_bytes(content)
    rc, err = run_cli(["run", str(path), "--quiet"], capsys)
    assert rc == 2 and expected in err and str(path) in err and "Traceback" not in err, err


def test_a_run_that_would_run_other_than_meant_says_so(capsys, tmp_path):
    """An empty scenario file runs every default, with a warning; --quiet with nowhere to put the results is
    refused (it would print and write nothing)."""
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing set yet\n")
    rc, err = run_cli(["run", str(empty), "--quiet", "--out", str(tmp_path / "out")], capsys)
    assert (
        rc == 0
        and err
        == f"poisonsim: warning: {empty} sets nothing: every section runs its defaults (see poisonsim run --help)\n"
    )
    rc, err = run_cli(["run", str(empty), "--set", "stream.n_events=500", "--quiet", "--out", str(tmp_path)], capsys)
    assert rc == 0 and err == ""  # an override is a choice: no warning
    rc, err = run_cli(["run", CENTROID, "--quiet"], capsys)
    assert (
        rc == 2
        and err
        == "poisonsim: error: --quiet: with neither --out nor --metrics-port the run would show and keep nothing\n"
    )


def test_an_unwritable_out_is_refused_before_the_run(capsys, tmp_path):
    (tmp_path / "a-file").write_text("")
    for out, expected in ((tmp_path / "a-file", "is a file"), (Path("/proc/poisonsim-results"), "cannot write")):
        rc, err = run_cli(
            ["run", CENTROID, "--set", "stream.n_events=1000000000", "--quiet", "--out", str(out)], capsys
        )
        assert rc == 2 and "--out: " in err and expected in err, err  # a billion events would take minutes


FLAGS = [  # (command, what the error must name)
    (["produce", "benign", CENTROID, "--rate", "nan"], "--rate: expected events per second >= 0, got nan"),
    (["produce", "attack", CENTROID, "--rate", "inf"], "--rate: expected events per second >= 0, got inf"),
    (["produce", "attack", CENTROID, "--rate", "-5"], "--rate: expected events per second >= 0"),
    (["produce", "benign", CENTROID, "--partitions", "0"], "--partitions: expected an integer >= 1"),
    (["consume", CENTROID, "--partitions", "-1"], "--partitions: expected an integer >= 1"),
    (["consume", CENTROID, "--checkpoint-interval", "nan"], "--checkpoint-interval: expected seconds >= 0"),
    (["consume", CENTROID, "--gap-timeout", "nan"], "--gap-timeout: expected seconds >= 0"),
    (["consume", CENTROID, "--stall-seconds", "-1"], "--stall-seconds: expected seconds >= 0"),
    (["consume", CENTROID, "--metrics-port", "70000"], "--metrics-port: expected 0..65535"),
    (["consume", CENTROID, "--signing-key-file", "/nonexistent/key"], "--signing-key-file: cannot read"),
    (
        ["consume", CENTROID, "--role", "judge", "--judge", "nope"],
        "--judge: expected auto or one of this scenario's judges (model); got 'nope'",
    ),
    (["produce", "benign", CENTROID, "--set", "attack.rate=nan"], "attack.rate: expected a finite number"),
]


def test_bad_process_flags_are_refused_before_connecting(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POISONSIM_")}
    env["POISONSIM_KEY_DIR"] = str(tmp_path / "keys")  # the deployment key a process makes, never the user's
    processes = []
    for args, _ in FLAGS:
        where = ["--checkpoint-dir", str(tmp_path)] if args[0] == "consume" else []  # consume's own flag
        command = [sys.executable, "-m", "poisonsim.cli", *args, *NOWHERE, *where]
        processes.append(
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for process, (args, expected) in zip(processes, FLAGS):
        try:
            _, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"{args}: not refused before connecting (still running)") from None
        lines = [line for line in err.splitlines() if " INFO " not in line]  # the signing key's origin
        assert process.returncode == 2 and expected in err and "Traceback" not in err, (args, err)
        assert len(lines) == 1, (args, err)


def test_a_short_signing_key_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "consume", CENTROID, *NOWHERE],
        cwd=ROOT,
        env={**os.environ, "POISONSIM_SIGNING_KEY": "abcd"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "POISONSIM_SIGNING_KEY: expected at least 16 bytes" in done.stderr, done.stderr


def test_a_scenario_name_cannot_place_the_checkpoint_outside_its_directory():
    from poisonsim.config import Scenario
    from poisonsim.transport.kafka import scenario_key

    key = scenario_key(Scenario.from_dict({"name": "../../etc/evil name"})).decode()
    assert "/" not in key and not key.startswith(".") and key.startswith("_.._etc_evil_name-")


def test_a_checkpoint_of_the_right_format_with_wrong_contents_is_a_clear_error(tmp_path):
    from poisonsim.config import Scenario
    from poisonsim.services import checkpoint
    from poisonsim.transport.kafka import DEFAULT_TOPICS, scenario_key

    key = scenario_key(Scenario.from_toml(CENTROID)).decode()
    topics = [DEFAULT_TOPICS["benign"], DEFAULT_TOPICS["attack"]]
    checkpoint.save(
        tmp_path / f"{key}.npz",
        {
            "scenario_key": key,
            "topics": topics,
            "next_id": 5,
            "offsets": [0],
            "learner": {"model": "not a state"},
            "counters": {},
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "consume", CENTROID, *NOWHERE, "--checkpoint-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not a learner state of this scenario" in done.stderr and "--fresh" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
