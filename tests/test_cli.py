"""The console script as a user runs it: files written, errors clear, runs repeatable."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from poisonsim.pipeline.results import TIMING_FIELDS

ROOT = Path(__file__).parent.parent
SCENARIO = ROOT / "scenarios" / "centroid_shift.toml"
SMALL = ["--set", "stream.n_events=20000", "--set", "attack.start=2000"]


def poisonsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_run_writes_summary_timeseries_and_resolved_scenario(tmp_path):
    done = poisonsim("run", str(SCENARIO), *SMALL, "--set", "attack.rate=0.3", "--seed", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "attack success at the end" in done.stdout  # the summary table
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "events_total",
        "poison_events_total",
        "observed_poisoning_rate",
        "clean_accuracy",
        "attack_success_rate",
        "displacement_radii",
        "window_contamination",
        "events_per_second",
        "seed",
    ):
        assert key in summary
    assert summary["seed"] == 3 and summary["events_total"] == 20_000
    rows = list(csv.DictReader(open(tmp_path / "timeseries.csv")))
    assert len(rows) == 1 + 20_000 // 2_000 and rows[0]["events"] == "0" and rows[-1]["events"] == "20000"
    # the resolved scenario repeats the run exactly
    again = tmp_path / "again"
    assert poisonsim("run", str(tmp_path / "scenario.toml"), "--quiet", "--out", str(again)).returncode == 0
    assert (again / "timeseries.csv").read_bytes() == (tmp_path / "timeseries.csv").read_bytes()


@pytest.mark.parametrize("policy", ["average-out", "random-out", "nearest-out"])
def test_same_scenario_and_seed_give_identical_results(tmp_path, policy):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        done = poisonsim(
            "run", str(SCENARIO), *SMALL, "--set", f"model.window_policy={policy}", "--quiet", "--out", str(out)
        )
        assert done.returncode == 0, done.stderr
        outs.append(out)
    a, b = (json.loads((o / "summary.json").read_text()) for o in outs)
    for field in TIMING_FIELDS:
        a.pop(field), b.pop(field)
    assert a == b
    assert (outs[0] / "timeseries.csv").read_bytes() == (outs[1] / "timeseries.csv").read_bytes()


def test_a_different_seed_gives_a_different_run(tmp_path):
    for seed in ("1", "2"):
        poisonsim("run", str(SCENARIO), *SMALL, "--seed", seed, "--quiet", "--out", str(tmp_path / seed))
    assert (tmp_path / "1" / "timeseries.csv").read_bytes() != (tmp_path / "2" / "timeseries.csv").read_bytes()


def test_bad_override_is_refused_before_running(tmp_path):
    done = poisonsim("run", str(SCENARIO), "--set", "model.window_size=-3", "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "model.window_size: expected an integer >= 1, got -3" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()


def test_help_lists_commands_and_scenario_keys():
    commands = poisonsim("--help").stdout
    assert all(f"    {command} " in commands for command in ("run", "produce", "consume", "sweep", "report"))
    text = poisonsim("run", "--help").stdout
    assert "--set" in text and "model.snapshot_every" in text and "poisonsim kinds" in text
    kinds = poisonsim("kinds").stdout
    assert all(f"  {kind} " in kinds for kind in ("badnets", "strip", "cnn", "digits", "front-running"))
    badnets = poisonsim("kinds", "attack", "badnets").stdout
    assert "trigger.size = 2: side of the square patch" in badnets and "flip" not in badnets


def test_a_key_of_another_kind_is_refused_naming_the_kind_and_its_keys():
    done = poisonsim("run", str(SCENARIO), "--set", "attack.kind=badnets", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        'attack.target_distance: not a key of attack kind "badnets" and channel kind "stream" (its keys: target_class,'
        in done.stderr
    )


def test_a_defense_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    done = poisonsim("run", str(SCENARIO), "--set", 'defense=[{kind="strip"}]', "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert 'defense[0].kind: "strip" needs a model or source that offers torch-net' in done.stderr


def test_the_printed_summary_shows_defense_and_deployment_figures_and_a_verdict():
    defended = poisonsim("run", "scenarios/centroid_defended.toml", "--set", "stream.n_events=3000").stdout
    assert "outlier-rejection: precision" in defended and "drift-reset: resets" in defended
    deployed = poisonsim("run", "scenarios/front_running.toml", "--set", "stream.n_events=4000").stdout
    assert "deployed model: attack success" in deployed
    # the verdict judges the model that serves: the deployed snapshot
    assert "targeted: succeeded at the end of the stream (deployed model's attack success 1; mean over" in deployed
    assert "with 100 poison events; it cost" in deployed  # the accuracy it cost against the clean twin
    late = poisonsim(
        "run", "scenarios/label_flip.toml", "--set", "stream.n_events=1000", "--set", "attack.start=5000"
    ).stdout
    assert "label-flip: no poison reached the learner" in late


def test_an_embedded_run_serves_the_learners_metrics_live(tmp_path):
    """--metrics-port: the Kafka learner's metric families from an embedded run, scraped while it serves."""
    import signal
    import time
    import urllib.request

    from conftest import free_port

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "poisonsim.cli",
        "run",
        str(SCENARIO),
        "--set",
        "stream.n_events=4000",
        "--quiet",
        "--metrics-port",
        str(port),
        "--keep-serving",
        "--out",
        str(tmp_path),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, text, summary = time.monotonic() + 120, "", None
        while time.monotonic() < deadline and summary is None:  # the stream learned and its results written
            time.sleep(0.3)
            try:
                summary = json.loads((tmp_path / "summary.json").read_text())  # written once the run ended
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except (OSError, ValueError):  # not serving yet, or the results not yet (all) written
                continue
        assert summary is not None, "no results within 120 s"
        assert "poisonsim_stream_position_events 4000.0" in text
        assert f"poisonsim_poisoning_rate_ratio {summary['observed_poisoning_rate']}" in text
        assert 'role="embedded"' in text
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert "metrics at http://127.0.0.1:" in out and "serving metrics until" in out


def test_metrics_port_errors_name_the_flag():
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "run", str(SCENARIO), "--metrics-port", "70000"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "--metrics-port: expected 0..65535, got 70000" in done.stderr


def test_explain_puts_each_figure_s_unit_and_definition_beside_it_and_speed_apart():
    plain = poisonsim("run", "scenarios/centroid_shift.toml", "--set", "stream.n_events=3000").stdout
    assert "--explain defines every row" in plain and "unit: what it is" not in plain
    assert "events / s" not in plain and "(this machine: 3,000 events in " in plain  # speed is no result
    explained = poisonsim(
        "run", "scenarios/centroid_shift.toml", "--set", "stream.n_events=3000", "--explain"
    ).stdout.replace("\n", " ")
    assert "unit: what it is" in explained and "radii: how far the" in explained
    assert "share of held-out inputs" in explained


def test_a_reader_that_stops_early_ends_the_listing_quietly():
    """``poisonsim kinds | head -1``: no traceback when the pipe closes, and the status a shell expects (141)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "poisonsim.cli", "kinds"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    process.stdout.close()  # the reader goes away before the listing is written
    assert process.wait(timeout=120) == 141
    assert process.stderr.read() == b""


def test_listing_every_kind_imports_neither_torch_nor_a_net():
    """``poisonsim kinds`` registers every built-in kind without importing torch (most of a second): the torch
    kinds import it when a net is first built or judged."""
    code = (
        "import sys; from poisonsim.registry import REGISTRIES\n"
        "kinds = [k for r in REGISTRIES.values() for k in r.load_all()]\n"
        "print(len(kinds), sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.endswith('.nets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) > 40 and out[1].strip() == "[]"
    listing = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "kinds", "defense"], capture_output=True, text=True, check=True
    )
    assert "strip" in listing.stdout and "neural-cleanse" in listing.stdout
