"""Sweeps: grid expansion, identical tables on every executor, failures kept apart, resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from poisonsim.config import ConfigError
from poisonsim.experiments.grid import Grid
from poisonsim.experiments.sweep import read_journal, run_sweep
from poisonsim.pipeline import engine
from poisonsim.pipeline.results import TIMING_FIELDS

ROOT = Path(__file__).parents[2]
BASE = {
    "name": "small",
    "stream": {"n_events": 3000},
    "model": {"window_size": 50},
    "attack": {"kind": "centroid-shift", "start": 500},
    "evaluation": {"every": 500},
}
TWO_AXES = {
    "base": BASE,
    "seeds": [1, 2, 3],
    "axes": {"attack.rate": [0.0, 0.3], "model.window_policy": ["average-out", "random-out"]},
}


def table(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").drop(columns=list(TIMING_FIELDS))


def done_counts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in read_journal(out):
        if entry["status"] == "done":
            counts[entry["run"]] = counts.get(entry["run"], 0) + 1
    return counts


def test_grid_file_expands_axes_by_seeds_with_base_beside_the_file_and_fixed_keys(tmp_path):
    (tmp_path / "base.toml").write_text('name = "b"\n[attack]\nkind = "centroid-shift"\n')
    (tmp_path / "grid.toml").write_text(
        'base = "base.toml"\nseeds = [3, 1]\n[axes]\n"attack.rate" = [0.0, 0.1, 0.2]\n'
        'model.window_policy = ["fifo", "infinite"]\n[set]\n"stream.n_events" = 1234\n'
    )
    runs = Grid.from_toml(tmp_path / "grid.toml").runs()
    assert len(runs) == 3 * 2 * 2
    assert [r.id for r in runs[:4]] == ["p0000-s1", "p0000-s3", "p0001-s1", "p0001-s3"]
    # first axis slowest; seeds sorted; [set] applied to every run
    assert [(r.values["attack.rate"], r.values["model.window_policy"]) for r in runs[::2]] == [
        (0.0, "fifo"),
        (0.0, "infinite"),
        (0.1, "fifo"),
        (0.1, "infinite"),
        (0.2, "fifo"),
        (0.2, "infinite"),
    ]
    last = runs[-1].scenario
    assert (last.name, last.seed, last.attack.rate, last.model.window_policy) == ("b", 3, 0.2, "infinite")
    assert {r.scenario.stream.n_events for r in runs} == {1234}


def test_base_relative_to_the_repository_and_the_ready_sweep_files_load():
    for path in sorted((ROOT / "sweeps").glob("*.toml")):
        runs = Grid.from_toml(path).runs()
        assert runs and all(r.error is None for r in runs), path


def test_zip_mode_pairs_axis_values_and_without_seeds_uses_the_base_seed():
    axes = {"model.window_size": [10, 20, 30], "model.window_policy": ["fifo", "infinite", "fifo"]}
    grid = Grid.from_dict({"base": {"seed": 9}, "mode": "zip", "axes": axes})
    runs = grid.runs()
    assert [(r.scenario.model.window_size, r.scenario.model.window_policy, r.seed) for r in runs] == [
        (10, "fifo", 9),
        (20, "infinite", 9),
        (30, "fifo", 9),
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"axis": {}}, "axis: unknown grid key"),
        ({"mode": "random"}, 'mode: expected "product" or "zip"'),
        ({"seeds": [1, 1]}, "seeds: each seed once"),
        ({"seeds": 3}, "seeds: expected a non-empty list"),
        ({"axes": {"attack.rate": 0.1}}, "axes.attack.rate: expected a non-empty list"),
        ({"axes": {"seed": [1, 2]}}, "sweep seeds with seeds = [...]"),
        ({"mode": "zip", "axes": {"a.b": [1], "c.d": [1, 2]}}, "needs axes of equal length, got a.b: 1, c.d: 2"),
    ],
)
def test_bad_grids_are_refused_with_the_key_named(raw, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        Grid.from_dict(raw)


def test_missing_base_file_is_named(tmp_path):
    (tmp_path / "g.toml").write_text('base = "nowhere.toml"\n')
    with pytest.raises(ConfigError, match="base: no scenario file 'nowhere.toml'"):
        Grid.from_toml(tmp_path / "g.toml")


def test_a_top_level_axis_of_lists_of_tables_sets_that_key_and_is_labelled_by_kind():
    """The shape a ``defense = [...]`` axis takes (the [[defense]] section lands with its own issue)."""
    values = [[], [{"kind": "quota", "share": 0.1}], [{"kind": "a"}, {"kind": "b"}]]
    grid = Grid.from_dict({"axes": {"defense": values}})
    tables = [grid.scenario_table(point) for point in grid.points()]
    assert [t["defense"] for t in tables] == values
    assert [r.values["defense"] for r in grid.runs()] == ["none", "quota", "a+b"]


def test_a_whole_table_axis_keeps_the_narrower_keys_of_set_and_of_other_axes():
    """``attack = {...}`` replaces the section; ``[set] attack.start`` and an ``attack.rate`` axis still hold."""
    axes = {"attack.rate": [0.0, 0.2], "attack": [{"kind": "none"}, {"kind": "label-flip", "flip": "cyclic"}]}
    grid = Grid.from_dict(
        {"base": {"attack": {"kind": "centroid-shift", "start": 9}}, "axes": axes, "set": {"attack.start": 500}}
    )
    runs = grid.runs()
    flipped = [r for r in runs if r.values["attack"] == "label-flip"]
    assert [(r.values["attack.rate"], r.scenario.attack.rate, r.scenario.attack.start) for r in flipped] == [
        (0.0, 0.0, 500),
        (0.2, 0.2, 500),
    ]
    assert flipped[1].scenario.attack.flip == "cyclic"
    refused = [r for r in runs if r.error]  # no attack at rate 0.2: refused with its reason, not run at rate 0
    assert [(r.values["attack"], r.values["attack.rate"]) for r in refused] == [("none", 0.2)]


@pytest.mark.parametrize(
    "axes, fixed, message",
    [
        ({"attack.rate": [0.1, 0.2]}, {"attack.rate": 0.3}, "axes.attack.rate: also in [set]"),
        (
            {"attack": [{"kind": "label-flip", "rate": 0.3}]},
            {"attack.rate": 0.1},
            "axes.attack: a value sets attack.rate, which set.attack.rate sets too",
        ),
        (
            {"attack": [{"kind": "badnets", "trigger": {"size": 2}}], "attack.trigger.size": [3, 4]},
            {},
            "axes.attack: a value sets attack.trigger.size, which axes.attack.trigger.size sets too",
        ),
    ],
)
def test_a_key_set_in_two_places_is_refused(axes, fixed, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        Grid.from_dict({"axes": axes, "set": fixed})


def test_zip_axes_may_repeat_a_value_and_keep_it_as_it_is():
    axes = {"attack.kind": ["centroid-shift", "boiling-frog", "centroid-shift"], "attack.rate": [0.1, 0.1, 0.3]}
    runs = Grid.from_dict({"mode": "zip", "axes": axes}).runs()
    assert [(r.values["attack.kind"], r.values["attack.rate"]) for r in runs] == [
        ("centroid-shift", 0.1),
        ("boiling-frog", 0.1),
        ("centroid-shift", 0.3),
    ]


def test_one_worker_and_two_workers_give_the_same_table(tmp_path):
    grid = Grid.from_dict(TWO_AXES)
    one = run_sweep(grid, tmp_path / "one", workers=1)
    two = run_sweep(grid, tmp_path / "two", workers=2)
    assert (one.done, one.failed, two.done, two.failed) == (12, 0, 12, 0)
    a, b = table(tmp_path / "one"), table(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns[:6]) == ["run", "point", "seed", "attack.rate", "model.window_policy", "error"]
    assert list(zip(a["point"], a["seed"])) == [(p, s) for p in range(4) for s in (1, 2, 3)]
    # the figures of every run are there and differ where they should
    assert (a["events_total"] == 3000).all() and a["error"].isna().all()
    assert (a.loc[a["attack.rate"] == 0.0, "poison_events_total"] == 0).all()
    assert (a.loc[a["attack.rate"] == 0.3, "observed_poisoning_rate"].between(0.2, 0.3)).all()
    series = pd.read_parquet(tmp_path / "one" / "timeseries.parquet")
    per_run = [len(pd.read_csv(tmp_path / "one" / "points" / run / "timeseries.csv")) for run in a["run"]]
    assert len(series) == sum(per_run) and min(per_run) >= 6 and list(series["run"].unique()) == list(a["run"])
    assert (series.groupby("run")["events"].max() == 3000).all()
    csv = pd.read_csv(tmp_path / "one" / "results.csv")
    assert len(csv) == 12 and list(csv.columns) == list(pd.read_parquet(tmp_path / "one" / "results.parquet").columns)


def test_a_dask_local_cluster_gives_the_same_table(tmp_path):
    distributed = pytest.importorskip("distributed")
    grid = Grid.from_dict(TWO_AXES)
    run_sweep(grid, tmp_path / "local", workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        progress = run_sweep(grid, tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert (progress.done, progress.failed) == (12, 0)
    pd.testing.assert_frame_equal(table(tmp_path / "local"), table(tmp_path / "dask"))


def test_a_failing_run_is_recorded_and_the_others_finish_then_a_restart_retries_only_it(tmp_path, monkeypatch):
    grid = Grid.from_dict(TWO_AXES)
    real_run = engine.run

    def flaky(scenario, *args, **kwargs):
        if scenario.seed == 2 and scenario.attack.rate == 0.3 and scenario.model.window_policy == "random-out":
            raise RuntimeError("disk full")
        return real_run(scenario, *args, **kwargs)

    monkeypatch.setattr(engine, "run", flaky)
    progress = run_sweep(grid, tmp_path, workers=1)
    assert (progress.done, progress.failed) == (11, 1)
    failed = pd.read_parquet(tmp_path / "results.parquet").set_index("run").loc["p0003-s2"]
    assert failed["error"] == "RuntimeError: disk full" and pd.isna(failed["clean_accuracy"])
    assert "Traceback" in (tmp_path / "points" / "p0003-s2" / "error.txt").read_text()
    assert not (tmp_path / "points" / "p0003-s2" / "summary.json").exists()

    monkeypatch.setattr(engine, "run", real_run)
    again = run_sweep(grid, tmp_path, workers=1)
    assert (again.skipped, again.done, again.failed) == (11, 1, 0)
    assert set(done_counts(tmp_path).values()) == {1} and len(done_counts(tmp_path)) == 12
    assert table(tmp_path)["error"].isna().all()


def test_a_refused_combination_is_a_failed_row_not_a_stopped_sweep(tmp_path):
    axes = {"attack.kind": ["none", "centroid-shift"], "attack.rate": [0.0, 0.2]}
    grid = Grid.from_dict({"base": BASE, "axes": axes})
    progress = run_sweep(grid, tmp_path, workers=1)
    assert (progress.done, progress.failed) == (3, 1)
    rows = pd.read_parquet(tmp_path / "results.parquet")
    refused = rows[rows["error"].notna()]
    assert list(refused["run"]) == ["p0001-s0"]
    assert refused["error"].iloc[0].startswith('attack.rate: attack.kind "none" poisons nothing')


def test_a_grid_whose_every_run_is_refused_stops_before_running(tmp_path):
    with pytest.raises(ConfigError, match="model.window_size: expected an integer >= 1"):
        run_sweep(Grid.from_dict({"axes": {"model.window_size": [0, -1]}}), tmp_path / "x", workers=1)
    assert not (tmp_path / "x").exists()


def test_a_restart_skips_finished_runs_and_leaves_them_untouched(tmp_path):
    grid = Grid.from_dict(TWO_AXES)
    run_sweep(grid, tmp_path, workers=1)
    before = {p.name: (p / "summary.json").read_bytes() for p in (tmp_path / "points").iterdir()}
    first = pd.read_parquet(tmp_path / "results.parquet")
    # a run stopped mid-write leaves a temporary directory; a lost run leaves nothing
    (tmp_path / "points" / ".tmp-p0001-s1-999").mkdir()
    for name in ("p0001-s1", "p0002-s3"):
        for f in (tmp_path / "points" / name).iterdir():
            f.unlink()
        (tmp_path / "points" / name).rmdir()
    again = run_sweep(grid, tmp_path, workers=2)
    assert (again.skipped, again.done) == (10, 2)
    after = {p.name: (p / "summary.json").read_bytes() for p in (tmp_path / "points").iterdir()}
    assert sorted(after) == sorted(before)
    assert all(after[k] == before[k] for k in before if k not in ("p0001-s1", "p0002-s3"))  # timing fields too
    pd.testing.assert_frame_equal(table(tmp_path), first.drop(columns=list(TIMING_FIELDS)))
    assert [e["run"] for e in read_journal(tmp_path)][12:] in (["p0001-s1", "p0002-s3"], ["p0002-s3", "p0001-s1"])


def test_another_grid_into_the_same_results_is_refused(tmp_path):
    run_sweep(Grid.from_dict({"base": BASE, "axes": {"attack.rate": [0.1]}}), tmp_path, workers=1)
    with pytest.raises(ConfigError, match="holds the results of a different sweep"):
        run_sweep(Grid.from_dict({"base": BASE, "axes": {"attack.rate": [0.2]}}), tmp_path, workers=1)


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "poisonsim.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _cpu_bound_grid(tmp_path: Path, n_events: int) -> Path:
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(
        f'base = "{ROOT / "scenarios" / "centroid_shift.toml"}"\nseeds = [1, 2, 3, 4]\n'
        '[axes]\n"attack.rate" = [0.1, 0.2, 0.3, 0.4]\n'
        f'[set]\n"stream.n_events" = {n_events}\n"stream.n_features" = 16\n"evaluation.every" = 50000\n'
    )
    return grid_file


@pytest.mark.slow
def test_a_sweep_killed_halfway_finishes_on_restart_with_no_run_done_twice(tmp_path):
    grid_file = _cpu_bound_grid(tmp_path, 400_000)
    out = tmp_path / "out"
    sweep = _cli("sweep", str(grid_file), "--out", str(out), "--workers", "2", "--quiet", start_new_session=True)
    deadline = time.monotonic() + 120
    while len(done_counts(out)) < 4 and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its workers, mid-flight
    sweep.wait()
    summaries = [p / "summary.json" for p in (out / "points").glob("p*")]
    finished = {s.parent.name: s.read_bytes() for s in summaries if s.exists()}
    assert 4 <= len(finished) < 16, "the sweep should have been stopped halfway"
    assert not (out / "results.parquet").exists()

    restart = _cli("sweep", str(grid_file), "--out", str(out), "--workers", "2")
    stdout, stderr = restart.communicate(timeout=300)
    assert restart.returncode == 0, stderr
    assert f"{16 - len(finished)} runs done, 0 failed, {len(finished)} already finished" in stdout.replace("\n", " ")
    assert done_counts(out) == {f"p{p:04d}-s{s}": 1 for p in range(4) for s in range(1, 5)}
    for name, summary in finished.items():  # not run again: even the timing fields are the first run's
        assert (out / "points" / name / "summary.json").read_bytes() == summary
    run_sweep(Grid.from_toml(grid_file), tmp_path / "straight", workers=1)
    pd.testing.assert_frame_equal(table(out), table(tmp_path / "straight"))


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_its_workers_and_says_how_to_resume(tmp_path):
    grid_file, out = _cpu_bound_grid(tmp_path, 3_000_000), tmp_path / "out"
    # started as from a terminal: Ctrl-C handled, even where this test runs in the background of a
    # non-interactive shell (whose children inherit SIGINT ignored)
    sweep = _cli(
        "sweep",
        str(grid_file),
        "--out",
        str(out),
        "--workers",
        "2",
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not done_counts(out) and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal sends the whole group on Ctrl-C
    stdout, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "Traceback" not in stderr, (sweep.returncode, stdout[-300:], stderr[-300:])
    assert "interrupted; finished runs are kept" in stderr and "the same command resumes" in stderr
    psutil = pytest.importorskip("psutil")
    left = [p for p in psutil.process_iter(["status"]) if _group(p.pid) == sweep.pid]
    # helpers such as multiprocessing's resource tracker exit once the sweep's pipes close: give them a moment
    _, alive = psutil.wait_procs(left, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []  # no worker left behind
    assert 1 <= len(done_counts(out)) < 16


@pytest.mark.slow
def test_workers_end_when_the_sweep_alone_is_killed(tmp_path):
    """``kill -9`` of the sweep's own process (not its group): no handler runs, the workers must notice."""
    psutil = pytest.importorskip("psutil")
    grid_file, out = _cpu_bound_grid(tmp_path, 3_000_000), tmp_path / "out"
    sweep = _cli("sweep", str(grid_file), "--out", str(out), "--workers", "2", "--quiet", start_new_session=True)
    deadline = time.monotonic() + 120
    while not done_counts(out) and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = [p for p in psutil.Process(sweep.pid).children() if "multiprocessing" in " ".join(p.cmdline())]
    assert len(workers) >= 2, [p.cmdline() for p in workers]
    sweep.kill()
    sweep.wait()
    left = [p for p in psutil.process_iter(["status"]) if _group(p.pid) == sweep.pid]
    _, alive = psutil.wait_procs(left, timeout=15)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == [], [(p.cmdline(), p.status()) for p in alive]


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_cli_sweep_writes_tables_and_shows_progress(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text(
        'base = "scenarios/centroid_shift.toml"\nseeds = [1, 2]\n[axes]\n"attack.rate" = [0.0, 0.2]\n'
        '[set]\n"stream.n_events" = 4000\n"attack.start" = 1000\n"evaluation.every" = 1000\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "poisonsim.cli",
            "sweep",
            str(grid_file),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "4/4" in done.stdout and "0 failed" in done.stdout
    assert "4 runs done, 0 failed, 0 already finished" in done.stdout
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert rows["attack.rate"].tolist() == [0.0, 0.0, 0.2, 0.2] and rows["seed"].tolist() == [1, 2, 1, 2]
    manifest = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert manifest["axes"] == ["attack.rate"] and len(manifest["runs"]) == 4


def test_cli_sweep_refuses_a_bad_grid_clearly(tmp_path):
    grid_file = tmp_path / "grid.toml"
    grid_file.write_text('mode = "zip"\n[axes]\n"attack.rate" = [0.1]\n"model.window_size" = [1, 2]\n')
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "sweep", str(grid_file), "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert 'axes: mode "zip" needs axes of equal length' in done.stderr


def test_a_second_sweep_into_the_same_results_while_one_runs_is_refused(tmp_path):
    import fcntl

    tmp_path.joinpath(".lock").touch()
    with open(tmp_path / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        with pytest.raises(ConfigError, match="another sweep is writing there now"):
            run_sweep(Grid.from_dict({"base": BASE}), tmp_path, workers=1)
    assert run_sweep(Grid.from_dict({"base": BASE}), tmp_path, workers=1).done == 1
