"""The CPU / GPU benchmark script runs end to end and says what it did not measure."""

from __future__ import annotations

import json

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
    columns = {"CPU": {"STRIP: inputs/s": 100, "NC: seconds": 30.0, "online: ratio to a plain torch loop": 1.2},
               "GPU": {"STRIP: inputs/s": 1500, "NC: seconds": 3.0, "online: ratio to a plain torch loop": 1.1}}
    lines = cpu_vs_gpu.table(columns).splitlines()
    assert lines[0] == "| figure | CPU | GPU | GPU / CPU |"
    assert lines[2:] == ["| STRIP: inputs/s | 100 | 1,500 | 15.0x |", "| NC: seconds | 30.0 | 3.0 | 10.0x |",
                         "| online: ratio to a plain torch loop | 1.2 | 1.1 |  |"]  # fmt: skip


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
