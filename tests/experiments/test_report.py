"""Reports: each figure holds the series it promises, drawn from real sweeps or synthetic scores."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from poisonsim.attacks.centroid_shift import ATTACKER_MARGIN
from poisonsim.config import ConfigError
from poisonsim.experiments.grid import Grid
from poisonsim.experiments.report import rho_figure, roc_curve, strip_figure, timeline_figure, write_report
from poisonsim.experiments.sweep import run_sweep

ROOT = Path(__file__).parents[2]
N = 20


def labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def line(ax, label: str):
    return next(l for l in ax.get_lines() if l.get_label() == label)


def assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 500
    assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.fixture(scope="module")
def kloft_laskov(tmp_path_factory) -> Path:
    """Attacker alone against three window policies, every event evaluated, two seeds."""
    out = tmp_path_factory.mktemp("kl")
    grid = Grid.from_dict(
        {
            "base": {
                "stream": {"n_events": 2 * N, "n_features": 3},
                "model": {"window_size": N, "radius": 2.0},
                "attack": {"kind": "centroid-shift", "rate": 1.0, "target_distance": 20.0},
                "evaluation": {"every": 1},
            },
            "seeds": [1, 2],
            "axes": {"model.window_policy": ["average-out", "fifo", "infinite"]},
        }
    )
    run_sweep(grid, out, workers=1)
    return out


@pytest.fixture(scope="module")
def rho_sweep(tmp_path_factory) -> Path:
    """A greedy attacker at three rates against two window policies, three seeds."""
    out = tmp_path_factory.mktemp("rho")
    grid = Grid.from_dict(
        {
            "base": {
                "stream": {"n_events": 6000},
                "model": {"window_size": 50},
                "attack": {"kind": "centroid-shift", "start": 2000},
                "evaluation": {"every": 500},
            },
            "seeds": [1, 2, 3],
            "axes": {"attack.rate": [0.0, 0.1, 0.4], "model.window_policy": ["average-out", "fifo"]},
        }
    )
    run_sweep(grid, out, workers=1)
    return out


def test_roc_curve_of_separated_reversed_and_tied_scores():
    clean, triggered = np.array([0.9, 1.0, 1.1]), np.array([0.1, 0.2])
    scores, positive = np.r_[clean, triggered], np.r_[[False] * 3, [True] * 2]
    assert roc_curve(scores, positive)[2] == 1.0
    assert roc_curve(scores, positive, lower_is_positive=False)[2] == 0.0
    fpr, tpr, auc = roc_curve(np.ones(4), np.array([True, False, True, False]))  # all tied: one step, chance
    assert (fpr.tolist(), tpr.tolist(), auc) == ([0.0, 1.0], [0.0, 1.0], 0.5)


def test_displacement_figure_draws_each_policy_under_the_kloft_laskov_curves(kloft_laskov):
    report = write_report(kloft_laskov)
    assert_png(report.figures["displacement"])
    (ax,) = report.drawn["displacement"].axes
    assert ax.get_xlabel() == "attacker events i" and ax.get_ylabel() == "displacement D (radii)"
    assert labels(ax) == [
        "window_policy = average-out",
        "window_policy = fifo",
        "window_policy = infinite",
        "i/n",
        "ln(1 + i/n)",
        "sum 1/(n + k)",
        "fifo expectation ((1 + 1/n)^i - 1 up to i = n)",
    ]
    measured = line(ax, "window_policy = average-out")
    i = np.asarray(measured.get_xdata())  # attacker events at each evaluation (every event here)
    assert set(range(1, 2 * N + 1)) <= set(i) and i.max() == 2 * N
    np.testing.assert_allclose(measured.get_ydata(), i / N * (1 - ATTACKER_MARGIN), rtol=1e-6, atol=1e-12)
    harmonic = np.r_[0.0, np.cumsum(1.0 / (N + np.arange(1, 2 * N + 1)))]  # sum_{k <= i} 1 / (n + k)
    infinite = line(ax, "window_policy = infinite")
    np.testing.assert_allclose(
        infinite.get_ydata(), harmonic[np.asarray(infinite.get_xdata(), dtype=int)] * (1 - ATTACKER_MARGIN)
    )
    theory = np.arange(0, 2 * N + 1)
    np.testing.assert_allclose(line(ax, "i/n").get_ydata(), theory / N)
    np.testing.assert_allclose(line(ax, "ln(1 + i/n)").get_ydata(), np.log1p(theory / N))
    np.testing.assert_allclose(line(ax, "sum 1/(n + k)").get_ydata(), harmonic)
    fifo = line(ax, "fifo expectation ((1 + 1/n)^i - 1 up to i = n)").get_ydata()
    np.testing.assert_allclose(fifo[: N + 1], (1 + 1 / N) ** theory[: N + 1] - 1, rtol=1e-9)  # the closed form
    # rho is not swept here: no rho figure, and the reason is given
    assert "rho" not in report.figures and "attack.rate is not swept" in report.skipped["rho"]


def test_displacement_figure_draws_nu_over_one_minus_nu_for_a_traffic_share(rho_sweep):
    (ax,) = write_report(rho_sweep).drawn["displacement"].axes
    assert ax.get_title() == "attacker with a traffic share nu"
    assert {"nu/(1-nu) = 0.111", "nu/(1-nu) = 0.667"} <= set(labels(ax))
    assert line(ax, "nu/(1-nu) = 0.667").get_ydata()[0] == pytest.approx(0.4 / 0.6)
    assert "window_policy = fifo, rate = 0.4" in labels(ax)  # measured line per (policy, rate)


def test_rho_figure_has_a_line_per_policy_with_the_mean_over_seeds(rho_sweep):
    report = write_report(rho_sweep)
    assert_png(report.figures["rho"])
    success, clean = report.drawn["rho"].axes
    assert (success.get_title(), clean.get_title()) == ("attack success", "clean accuracy")
    assert success.get_xlabel() == "rho (attack.rate)"
    assert labels(success) == labels(clean) == ["window_policy = average-out", "window_policy = fifo"]
    table = pd.read_parquet(rho_sweep / "results.parquet")
    fifo = table[table["model.window_policy"] == "fifo"].groupby("attack.rate")["clean_accuracy"].mean()
    curve = line(clean, "window_policy = fifo")
    np.testing.assert_allclose(curve.get_xdata(), [0.0, 0.1, 0.4])
    np.testing.assert_allclose(curve.get_ydata(), fifo.to_numpy())
    assert len(clean.collections) == 2  # the spread over seeds, one band per line


def test_rho_figure_draws_one_line_per_defense_with_its_spread():
    rng = np.random.default_rng(0)
    rows = [
        {
            "attack.rate": rate,
            "defense": defense,
            "seed": seed,
            "error": None,
            "attack_success_rate": min(1.0, rate * (2 if defense == "none" else 0.5) + 0.05 * rng.random()),
            "clean_accuracy": 0.9 - rate * (0.5 if defense == "none" else 0.1),
        }
        for rate in (0.0, 0.1, 0.2)
        for defense in ("none", "quota")
        for seed in (1, 2, 3)
    ]
    success, clean = rho_figure(pd.DataFrame(rows), ["defense"]).axes
    assert labels(success) == ["defense = none", "defense = quota"]
    np.testing.assert_allclose(line(clean, "defense = quota").get_ydata(), [0.9, 0.89, 0.88])
    assert line(success, "defense = none").get_ydata()[-1] > 0.4 > line(success, "defense = quota").get_ydata()[-1]
    band = success.collections[0].get_paths()[0].vertices[:, 1]
    for rate in (0.0, 0.1, 0.2):  # the band is the mean +- its standard error over the seeds at each rate
        seeds = [r["attack_success_rate"] for r in rows if r["attack.rate"] == rate and r["defense"] == "none"]
        sem = np.std(seeds, ddof=1) / np.sqrt(len(seeds))
        for edge in (np.mean(seeds) - sem, np.mean(seeds) + sem):
            assert np.isclose(band, np.clip(edge, 0, 1)).any()


def test_strip_figure_shows_clean_and_triggered_entropies_and_a_roc_per_group():
    rng = np.random.default_rng(1)
    scores = pd.concat(
        [
            pd.DataFrame(
                {
                    "score": np.r_[rng.normal(1.6, 0.2, 300), rng.normal(0.3, 0.1, 100)],
                    "is_triggered": [0] * 300 + [1] * 100,
                    "group": "defense = strip",
                }
            ),
            pd.DataFrame(
                {"score": rng.normal(1.0, 0.3, 400), "is_triggered": [0] * 200 + [1] * 200, "group": "defense = blind"}
            ),
        ]
    )
    blind_hist, strip_hist, roc = strip_figure(scores).axes
    assert strip_hist.get_title() == "STRIP entropy: defense = strip"
    assert labels(strip_hist) == ["clean", "triggered"]
    assert strip_hist.get_xlabel() == "entropy of superimposed predictions"
    clean_bars, triggered_bars = strip_hist.containers
    assert sum(b.get_height() for b in clean_bars) == 300 and sum(b.get_height() for b in triggered_bars) == 100
    # the histograms are apart: every triggered entropy below the clean median
    heights = np.array([b.get_height() for b in triggered_bars])
    centers = np.array([b.get_x() + b.get_width() / 2 for b in triggered_bars])
    assert centers[heights > 0].max() < np.median(scores.loc[scores["group"] == "defense = strip", "score"][:300])
    assert sum(b.get_height() for b in blind_hist.containers[1]) == 200
    named = dict(zip(*reversed(roc.get_legend_handles_labels())))
    (blind,) = [k for k in named if k.startswith("defense = blind")]
    (strip,) = [k for k in named if k.startswith("defense = strip")]
    assert strip == "defense = strip (AUC 1.000)"
    assert 0.4 < float(blind.split("AUC ")[1].rstrip(")")) < 0.6
    assert roc.get_xlabel() == "false positive rate" and roc.get_ylabel() == "true positive rate"


def test_report_draws_strip_only_when_runs_carry_scores(rho_sweep, tmp_path):
    assert "strip_scores.csv" in write_report(rho_sweep).skipped["strip"]
    rng = np.random.default_rng(2)
    path = rho_sweep / "points" / "p0005-s1" / "strip_scores.csv"
    pd.DataFrame(
        {"score": np.r_[rng.normal(1.5, 0.2, 50), rng.normal(0.2, 0.1, 50)], "is_triggered": [0] * 50 + [1] * 50}
    ).to_csv(path, index=False)
    try:
        report = write_report(rho_sweep)
        assert_png(report.figures["strip"])
        hist, roc = report.drawn["strip"].axes
        assert hist.get_title() == "STRIP entropy: window_policy = fifo, rate = 0.4"  # a histogram per rate too
        assert labels(roc) == ["window_policy = fifo, rate = 0.4 (AUC 1.000)"]
    finally:
        path.unlink()


def test_one_runs_report_draws_its_strip_scores_and_a_wrong_directory_is_named(rho_sweep, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(rho_sweep / "points" / "p0005-s1", run)  # a sweep's run directory is a run's --out
    assert "strip_scores.csv" in write_report(run).skipped["strip"]
    pd.DataFrame({"score": [1.4, 1.6, 0.1, 0.3], "is_triggered": [0, 0, 1, 1]}).to_csv(run / "strip_scores.csv")
    report = write_report(run)
    assert_png(report.figures["strip"])
    assert labels(report.drawn["strip"].axes[-1]) == ["this run (AUC 1.000)"]
    with pytest.raises(ConfigError, match="nowhere: no such results directory"):
        write_report(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="not a results directory .no sweep.json from poisonsim sweep --out, no"):
        write_report(tmp_path)


def test_timeline_follows_one_run_over_the_stream(rho_sweep):
    report = write_report(rho_sweep, run="p0003-s2")
    assert_png(report.figures["timeline"])
    (ax,) = report.drawn["timeline"].axes
    assert ax.get_title() == "p0003-s2: centroid-detector under centroid-shift (rate = 0.1, window_policy = fifo)"
    assert labels(ax)[:2] == ["clean accuracy", "attack success rate"] and "attack starts" in labels(ax)
    series = pd.read_csv(rho_sweep / "points" / "p0003-s2" / "timeseries.csv")
    np.testing.assert_array_equal(line(ax, "clean accuracy").get_xdata(), series["events"])
    np.testing.assert_allclose(line(ax, "clean accuracy").get_ydata(), series["clean_accuracy"])
    assert line(ax, "attack starts").get_xdata()[0] == 2000
    # by default: the first run of the strongest attacker
    assert write_report(rho_sweep).drawn["timeline"].axes[0].get_title().startswith("p0004-s1:")


def test_markdown_summary_names_counts_figures_and_means(rho_sweep):
    report = write_report(rho_sweep)
    text = report.markdown.read_text()
    assert "18 runs (6 points x 3 seeds): 18 finished, 0 failed" in text
    assert "![rho](figures/rho.png)" in text and "![displacement](figures/displacement.png)" in text
    assert "- strip: skipped" in text
    assert "over the evaluations after the attack's first poison event" in text  # the means are defined
    table = pd.read_parquet(rho_sweep / "results.parquet")
    lines = text.splitlines()
    header = next(line for line in lines if "| clean_accuracy |" in line).strip("| ").split(" | ")
    row = next(line for line in lines if line.startswith("| 0.4 | fifo |")).strip("| ").split(" | ")
    assert header.index("attack_success_rate_mean") < header.index("clean_accuracy")  # over the stream first
    for figure in ("clean_accuracy", "accuracy_drop_mean"):
        point = table[table["point"] == 5][figure]
        assert row[header.index(figure)] == f"{point.mean():.3g} ± {point.std():.2g}"


def test_cli_report_writes_figures_and_refuses_an_unknown_run(kloft_laskov):
    done = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "report", str(kloft_laskov)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "displacement: " in done.stdout and "report.md" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "poisonsim.cli", "report", str(kloft_laskov), "--run", "p9999-s1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--run p9999-s1: no finished run" in bad.stderr


def test_displacement_figure_keeps_apart_what_else_was_swept(tmp_path):
    """Only seeds are averaged: a further axis (here the attacker's target distance) gets its own lines."""
    grid = Grid.from_dict(
        {
            "base": {
                "stream": {"n_events": 2 * N, "n_features": 3},
                "model": {"window_size": N, "radius": 2.0, "window_policy": "average-out"},
                "attack": {"kind": "centroid-shift", "rate": 1.0},
                "evaluation": {"every": 1},
            },
            "seeds": [1, 2],
            "axes": {"attack.target_distance": [1.0, 20.0]},
        }
    )
    run_sweep(grid, tmp_path, workers=1)
    (ax,) = write_report(tmp_path).drawn["displacement"].axes
    assert labels(ax)[:2] == ["target_distance = 1.0", "target_distance = 20.0"]
    far = line(ax, "target_distance = 20.0")
    i = np.asarray(far.get_xdata())
    np.testing.assert_allclose(far.get_ydata(), i / N * (1 - ATTACKER_MARGIN), rtol=1e-6, atol=1e-12)
    near = np.asarray(line(ax, "target_distance = 1.0").get_ydata())
    assert near.max() < far.get_ydata().max() / 2  # the near target stops the attacker: not averaged in


def test_a_timeline_series_with_one_value_is_drawn_as_a_point():
    series = pd.DataFrame({"events": [0, 100], "clean_accuracy": [0.5, 0.9], "observed_poisoning_rate": [None, 0.2]})
    (ax,) = timeline_figure(series, "t").axes
    assert line(ax, "observed poisoning rate").get_marker() == "o" and line(ax, "clean accuracy").get_marker() == "None"
