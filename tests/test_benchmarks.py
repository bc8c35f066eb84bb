"""The benchmark scripts run end to end, say what they did not measure, and keep the docs' tables true."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from benchmarks import cpu_vs_gpu


def test_cpu_vs_gpu_measures_the_cpu_column_and_says_the_gpu_one_is_not_measured(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a machine with a GPU
    threads = torch.get_num_threads()
    try:
        result = cpu_vs_gpu.main(["--quick", "--out", str(tmp_path / "figures.json")])
    finally:
        torch.set_num_threads(threads)
    (column,) = result["columns"].values()
    assert len(column) == 10 and all(value > 0 for value in column.values())  # 4 learners x 2, STRIP, NC
    assert result["gpu"] is None and "the GPU figures are not measured" in capsys.readouterr().out
    assert json.loads((tmp_path / "figures.json").read_text()) == result


def test_the_table_gives_a_speed_up_both_for_rates_and_for_times():
    columns = {
        "CPU": {"STRIP: inputs/s": 100, "NC: seconds": 30.0, "online: ratio to a plain torch loop": 1.2},
        "GPU": {"STRIP: inputs/s": 1500, "NC: seconds": 3.0, "online: ratio to a plain torch loop": 1.1},
    }
    lines = cpu_vs_gpu.table(columns).splitlines()
    assert lines[0] == "| figure | CPU | GPU | GPU / CPU |"
    assert lines[2:] == [
        "| STRIP: inputs/s | 100 | 1,500 | 15.0x |",
        "| NC: seconds | 30.0 | 3.0 | 10.0x |",
        "| online: ratio to a plain torch loop | 1.2 | 1.1 |  |",
    ]


def test_the_scenario_check_reports_attack_success_and_clean_accuracy():
    figures = cpu_vs_gpu.scenario_on("cpu", quick=True)  # the GPU run's code, on the CPU
    assert figures["device"].startswith("CPU") and 0 <= figures["clean_accuracy"] <= 1
    assert 0 <= figures["attack_success_rate"] <= 1 and figures["seconds"] > 0


def test_the_device_check_of_every_case_gives_the_corpus_figures_on_the_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the corpus was recorded
    try:
        rows = cpu_vs_gpu.every_case_on("cpu", names=["badnets_cnn", "label_flip", "mnist_blended"])
    finally:
        torch.set_num_threads(threads)
    assert [row["case"] for row in rows] == ["badnets_cnn", "mnist_blended"]  # label_flip has no torch net
    from cases import tolerance_of  # tests/regression, on the path once every_case_on ran
    from compare import differences

    for row in rows:
        assert "error" not in row
        for figure in ("attack_success_rate", "clean_accuracy"):
            recorded, now = row[figure]["cpu corpus"], row[figure]["cpu"]
            assert not differences(recorded, now, tolerance_of(row["case"]), figure) and 0 < now < 1


def test_a_case_that_fails_on_the_device_is_a_row_with_its_error_and_the_others_still_run(monkeypatch):
    from poisonsim.pipeline import engine

    def on_the_wrong_device(scenario):
        raise RuntimeError("Expected all tensors to be on the same device")

    monkeypatch.setattr(engine, "run", on_the_wrong_device)
    rows = cpu_vs_gpu.every_case_on("cpu", names=["badnets_cnn", "mnist_blended"])
    assert [row["error"] for row in rows] == ["RuntimeError: Expected all tensors to be on the same device"] * 2
    assert rows[0]["clean_accuracy"]["cpu"] is None and rows[0]["clean_accuracy"]["cpu corpus"] > 0


def test_strip_over_stream_keeps_its_rows_in_a_data_file_and_the_docs_table_comes_from_it(tmp_path):
    from benchmarks import strip_over_stream

    rows = [
        {
            "setting": "digits",
            "config": "snapshot",
            "seed": 7.0,
            "target": float(t),
            "attack_success_behind_mean": b,
            "attack_success_behind_worst": 0.3,
            "far_mean": 0.1,
            "frr_mean": 0.01,
            "stream_frr": 0.005,
            "calibrations": 21.0,
            "attack_success_rate_mean": 0.8,
            "twin_attack_success_rate_mean": 0.04,
            "accuracy_drop_mean": None,
            "seconds": 40.0,
        }
        for t, b in ((3, 0.05), (1, 0.01))
    ]
    strip_over_stream.write_rows(rows, tmp_path / "rows.csv")
    back = strip_over_stream.read_rows(tmp_path / "rows.csv")
    assert back == sorted(rows, key=lambda row: row["target"])  # sorted by key, numbers back as written
    strip_over_stream.write_rows([{**rows[0], "seed": 8.0}], tmp_path / "rows.csv")  # another run's writer
    assert len(strip_over_stream.read_rows(tmp_path / "rows.csv")) == 3  # merged: no row lost
    assert "| digits | snapshot | 2 | 0.030 | 0.050 (3) | 0.300 | 0.50% | 0.50% | 0.040 |" in strip_over_stream.table(
        back
    )
    page = (strip_over_stream.ROOT / "docs" / "strip-over-the-stream.md").read_text()
    assert strip_over_stream.table(strip_over_stream.read_rows()) in page  # the page's table is the data file's


@pytest.mark.parametrize("setting", ["digits", "mnist"])
def test_the_ready_strip_scenarios_run_the_configuration_the_docs_call_shipped(setting):
    from benchmarks import strip_over_stream as bench
    from poisonsim.config import Scenario

    paper, _ = bench.SETTINGS[setting]
    measured = Scenario.from_toml(bench.ROOT / "scenarios" / paper, bench.CONFIGS[bench.SHIPPED[setting]])
    ready = Scenario.from_toml(bench.ROOT / "scenarios" / bench.READY[setting])
    assert ready.to_dict()["defense"] == measured.to_dict()["defense"]
    assert {k: v for k, v in ready.to_dict().items() if k not in ("defense", "name")} == {
        k: v for k, v in measured.to_dict().items() if k not in ("defense", "name")
    }  # the same stream and attack


def test_the_readme_indexes_every_shipped_scenario_with_its_measured_time():
    """One row per file of ``scenarios/``, and the time it shows is the data file's
    (``benchmarks/scenario_times.py``), as the index writes it."""
    from benchmarks import scenario_times

    readme = (scenario_times.ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \|.*\| ([^|]+) \|$", readme, re.M))
    shipped = sorted(path.stem for path in (scenario_times.ROOT / "scenarios").glob("*.toml"))
    assert sorted(rows) == shipped
    measured = scenario_times.read_rows()
    assert sorted(measured) == shipped, "run benchmarks/scenario_times.py for the missing scenarios"
    assert {name: rows[name].strip() for name in shipped} == {
        name: scenario_times.shown(float(measured[name]["seconds"])) for name in shipped
    }


@pytest.mark.parametrize(
    "name",
    [
        "datafile",
        "centroid_throughput",
        "neural_throughput",
        "strip_throughput",
        "sweep_scaling",
        "kafka_flood",
        "kafka_throughput",
        "scenario_times",
        "strip_over_stream",
        "sweep_tables",
    ],
)
def test_the_benchmarks_examples_hold(name):
    import doctest
    import importlib

    failed, tried = doctest.testmod(importlib.import_module(f"benchmarks.{name}"))
    assert tried > 0 and failed == 0


def test_a_data_file_merges_rows_by_key_so_other_machines_add_theirs(tmp_path):
    from benchmarks.datafile import read_rows, write_rows

    fields, key = ("machine", "workers", "seconds"), ("machine", "workers")
    write_rows(tmp_path / "rows.csv", [{"machine": "a", "workers": 1, "seconds": "9.0"}], fields, key)
    write_rows(tmp_path / "rows.csv", [{"machine": "b", "workers": 1, "seconds": "4.0"}], fields, key)
    write_rows(tmp_path / "rows.csv", [{"machine": "a", "workers": 1, "seconds": "8.5"}], fields, key)
    assert read_rows(tmp_path / "rows.csv") == [
        {"machine": "a", "workers": "1", "seconds": "8.5"},
        {"machine": "b", "workers": "1", "seconds": "4.0"},
    ]


REPRODUCED_CASES = (  # the reproductions page's cases of benchmarks/seed_figures.py, in its order
    "badnets",
    "badnets-clean",
    "blended",
    "blended-clean",
    "malicious-training",
    "malicious-architecture",
    "malicious-architecture-weights",
    "gradient-alignment",
    "gradient-alignment-control",
)
REPRODUCED_PAIRS = (  # and its paired comparisons (benchmarks.seed_figures.paired_table)
    ("badnets", "badnets-clean", "clean_accuracy", "difference"),
    ("blended", "blended-clean", "clean_accuracy", "difference"),
    ("gradient-alignment", "gradient-alignment-control", "target_class_probability", "log10 ratio"),
)


CHANNEL_CASES = ("front-running", "front-running-jitter", "split-view", "split-view-pinned")  # channels.md's


def _tables_of(name: str) -> list[str]:
    """The tables a benchmark generates from its data files (each with rows)."""
    import importlib

    from benchmarks.datafile import read_rows

    if name.startswith("sweep_tables/"):
        from benchmarks import sweep_tables

        table = name.split("/")[1]
        return sweep_tables.tables(table, read_rows(sweep_tables.data_path(table)))
    bench = importlib.import_module(f"benchmarks.{name.split('/')[0]}")
    if name == "seed_figures/reproductions":
        rows = read_rows(bench.DATA)
        return [bench.table(rows, list(REPRODUCED_CASES)), bench.paired_table(rows, list(REPRODUCED_PAIRS))]
    if name == "seed_figures/channels":
        return [bench.table(read_rows(bench.DATA), list(CHANNEL_CASES))]
    if name == "witches_brew":
        return [bench.table(bench.records_of(read_rows(bench.DATA)))]
    pairs = [(bench.table, bench.DATA)]
    if name == "centroid_throughput":
        pairs.append((bench.memory_table, bench.MEMORY))
    if name == "kafka_throughput":
        pairs.append((bench.lag_table, bench.LAG))
    tables = []
    for table, path in pairs:
        rows = read_rows(path)
        assert rows, f"{path.name} holds no row: run benchmarks/{name}.py"
        tables.append(table(rows))
    return tables


@pytest.mark.parametrize(
    "name, page",
    [
        ("centroid_throughput", "performance.md"),
        ("neural_throughput", "performance.md"),
        ("strip_throughput", "performance.md"),
        ("sweep_scaling", "sweeps.md"),
        ("kafka_flood", "kafka.md"),
        ("kafka_throughput", "kafka.md"),
        ("seed_figures/reproductions", "reproductions.md"),
        ("seed_figures/channels", "channels.md"),
        ("witches_brew", "reproductions.md"),
        ("sweep_tables/badnets_defenses", "defenses.md"),
        ("sweep_tables/drift_bench", "stream-threats.md"),
        ("sweep_tables/mnist_matrix", "mnist.md"),
    ],
)
def test_a_page_shows_the_tables_generated_from_its_benchmarks_data_files(name, page):
    """The docs' measured tables are the benchmarks' rows (machine, date, figures), not typed by hand."""
    text = (Path(__file__).parents[1] / "docs" / page).read_text()
    for table in _tables_of(name):
        command = f"{name.split('/')[0]}.py" + (f" {name.split('/')[1]}" if name.startswith("sweep_tables/") else "")
        assert table in text, f"docs/{page}: paste `.venv/bin/python benchmarks/{command} --table`"
