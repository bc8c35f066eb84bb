"""Explanations of the final model: the trigger draws the attributions, and the figures are drawn and redrawn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import margin, over_seeds

from poisonsim import cli
from poisonsim.config import Scenario
from poisonsim.defenses import Defense
from poisonsim.evaluation import explain
from poisonsim.evaluation.explain import read_analysis
from poisonsim.experiments.grid import Grid
from poisonsim.experiments.report import write_report
from poisonsim.experiments.sweep import POINTS_DIR, run_sweep
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.results import write_results

ROOT = Path(__file__).parents[2]
MNIST = ROOT / "scenarios" / "mnist_badnets.toml"
DIGITS = ROOT / "scenarios" / "badnets_cnn.toml"
SEEDS = (21, 22, 23, 24)  # no other test runs these
SMALL_MNIST = [
    "--set",
    "stream.n_events=500",
    "--set",
    "model.pretrain_events=200",
    "--set",
    "evaluation.every=250",
    "--set",
    "evaluation.explain_inputs=24",
]
TINY_DIGITS = {
    "seed": 5,
    "stream": {"source": "digits", "n_events": 600},
    "model": {"kind": "cnn", "pretrain_events": 200, "device": "cpu"},
    "attack": {"kind": "badnets", "rate": 0.1},
    "evaluation": {"every": 300},
}


def assert_png(path: Path, min_height: int = 300, min_width: int = 400) -> None:
    """A drawn figure: big enough, not a blank canvas, several distinct colours (maps, colour bars, text)."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= min_height and image.shape[1] >= min_width, image.shape
    rgb = image[..., :3]
    assert rgb.std() > 0.05
    codes = (rgb.reshape(-1, 3) * 255).round().astype(np.int64) @ np.array([65536, 256, 1])
    assert len(np.unique(codes)) > 50


def shares(path: Path, seed: int) -> dict:
    return run(Scenario.from_toml(path, ["evaluation.explain=true"], seed)).summary["analysis"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [MNIST, DIGITS], ids=["mnist-lenet", "digits-cnn"])
def test_integrated_gradients_put_5x_more_mass_in_the_trigger_on_triggered_inputs(path):
    runs = over_seeds(shares, [path] * len(SEEDS), SEEDS)
    on = np.array([r["trigger_attribution_share"] for r in runs])
    off = np.array([r["trigger_attribution_share_clean"] for r in runs])  # the same images, no trigger
    gap = on - 5 * off
    assert gap.mean() > margin(gap), (on, off)
    # not only against a black corner IG cannot credit on clean inputs: against a uniform map, and by saliency
    region = runs[0]["trigger_region_pixel_share"]
    assert (on / region).mean() - 5 > margin(on / region), on
    saliency = np.array([r["trigger_saliency_share"] - 3 * r["trigger_saliency_share_clean"] for r in runs])
    assert saliency.mean() > margin(saliency), runs


def test_explanations_are_off_by_default_and_skipped_with_a_reason_where_they_do_not_apply(tmp_path):
    plain = run(Scenario.from_dict(TINY_DIGITS))
    assert "analysis" not in plain.summary and plain.analysis == {}
    write_results(plain, Scenario.from_dict(TINY_DIGITS), tmp_path)
    assert not (tmp_path / "analysis").exists()
    cases = {
        "not a torch net": {
            "stream": {"source": "digits", "n_events": 100},
            "model": {"kind": "centroid-classifier"},
            "attack": {"kind": "badnets", "rate": 0.1},
        },
        "not square images": {
            "stream": {"source": "blobs", "n_events": 100, "n_classes": 3},
            "model": {"kind": "mlp", "pretrain_events": 50, "device": "cpu"},
            "attack": {"kind": "badnets", "rate": 0.1},
        },
        "no trigger": {**TINY_DIGITS, "attack": {"kind": "label-flip", "rate": 0.1}},
    }
    reasons = {
        "not a torch net": "not a torch net",
        "not square images": "not square images",
        "no trigger": "no trigger",
    }
    for case, scenario in cases.items():
        scenario = {**scenario, "evaluation": {"every": 100, "explain": True}}
        result = run(Scenario.from_dict(scenario))
        assert reasons[case] in result.summary["analysis"]["skipped"], (case, result.summary["analysis"])
        assert "attributions" not in result.analysis


def test_a_blend_has_no_region_to_share_but_its_maps_are_drawn(tmp_path):
    scenario = Scenario.from_dict(
        {
            **TINY_DIGITS,
            "attack": {"kind": "blended", "rate": 0.1},
            "evaluation": {"every": 300, "explain": True, "explain_inputs": 20},
        }
    )
    result = run(scenario)
    figures = result.summary["analysis"]
    assert figures["trigger_region_pixel_share"] == 1.0 and figures["trigger_attribution_share"] is None
    assert figures["explained_inputs"] == 20
    write_results(result, scenario, tmp_path)
    assert_png(tmp_path / "analysis" / "attributions.png")


def test_the_same_seed_explains_the_same_inputs_the_same_way():
    scenario = Scenario.from_dict({**TINY_DIGITS, "evaluation": {"every": 300, "explain": True, "explain_inputs": 30}})
    first, again = run(scenario), run(scenario)
    assert first.summary["analysis"] == again.summary["analysis"]
    a, b = first.analysis["attributions"], again.analysis["attributions"]
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert first.summary["analysis"]["explained_inputs"] == 30 and len(a["labels"]) == 30
    assert (a["labels"] != 0).all()  # inputs of the classes other than the target
    counts = a["triggered_class_count"]
    assert counts.sum() == 30 and counts.shape == (10,) and a["triggered_ig_class_mean"].shape == (10, 64)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    """``poisonsim run --out DIR`` on a small MNIST BadNets run (the scenario turns explanations on)."""
    out = tmp_path_factory.mktemp("mnist") / "run"
    assert cli.main(["run", str(MNIST), *SMALL_MNIST, "--quiet", "--out", str(out)]) == 0
    return out


def test_run_out_writes_the_attribution_figure_and_its_arrays(mnist_run):
    summary = json.loads((mnist_run / "summary.json").read_text())
    assert summary["analysis"]["explained_inputs"] == 24
    assert summary["analysis"]["trigger_region_pixel_share"] == pytest.approx(9 / 784)
    assert_png(mnist_run / "analysis" / "attributions.png", min_height=1000, min_width=1200)
    saved = read_analysis(mnist_run / "analysis")
    assert set(saved) == {"attributions", "trigger"}
    arrays = saved["attributions"]
    assert int(arrays["image_side"]) == 28 and arrays["example_clean_ig"].shape[1] == 784
    assert sorted(saved["trigger"]["region"].tolist()) == [r * 28 + c for r in (25, 26, 27) for c in (25, 26, 27)]


def test_report_redraws_a_runs_analysis_from_its_arrays(mnist_run):
    assert cli.main(["report", str(mnist_run)]) == 0
    assert_png(mnist_run / "figures" / "attributions.png", min_height=1000, min_width=1200)
    assert_png(mnist_run / "figures" / "timeline.png")
    text = (mnist_run / "report.md").read_text()
    assert "![attributions](figures/attributions.png)" in text and "`analysis.trigger_attribution_share`" in text


def test_a_sweep_report_draws_the_analysis_of_a_run_that_kept_it(tmp_path):
    grid = Grid.from_dict(
        {
            "base": {**TINY_DIGITS, "evaluation": {"every": 300, "explain": True, "explain_inputs": 20}},
            "seeds": [1],
            "axes": {"attack.rate": [0.1]},
        }
    )
    run_sweep(grid, tmp_path, workers=1)
    (folder,) = (tmp_path / POINTS_DIR).iterdir()
    assert (folder / "analysis" / "attributions.npz").exists()
    report = write_report(tmp_path)
    assert report.analysed is not None and "attributions" in report.figures
    assert_png(report.figures["attributions"])
    assert f"![attributions](figures/attributions.png) (run {report.analysed})" in report.markdown.read_text()


def draw_mask(artifacts, true_region, image_side):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("mask", "pattern")):
        image = ax.imshow(artifacts[name].reshape(image_side, image_side), cmap="viridis")
        ax.set_title(f"{name} ({len(true_region)} trigger pixels)")
        fig.colorbar(image, ax=ax)
    return fig


class MaskKeeper(Defense):
    """Not registered: keeps a mask and a pattern, and draws them with its ``figure``."""

    kind = "mask-keeper"
    figure = staticmethod(draw_mask)

    def __init__(self, side: int = 8):
        grid = np.add.outer(np.arange(side), np.arange(side)).ravel()
        self.mask_, self.pattern_ = (grid / grid.max()).astype(np.float32), (grid % 3 / 2).astype(np.float32)

    def artifacts(self):
        return {"mask": self.mask_, "pattern": self.pattern_}


def test_a_defenses_artifacts_are_saved_and_drawn_by_its_classes_figure(tmp_path, monkeypatch):
    found = explain.defense_artifacts([MaskKeeper(), Defense()])  # the base has no artifacts()
    assert list(found) == ["mask-keeper"] and set(found["mask-keeper"]) == {"mask", "pattern"}
    monkeypatch.setattr(
        explain, "defense_figure", lambda kind: explain.figure_of(MaskKeeper) if kind == "mask-keeper" else None
    )
    trigger = {
        "region": np.array([54, 55, 62, 63]),
        "image_side": np.int64(8),
        "n_features": np.int64(64),
        "target_class": np.int64(0),
    }
    written = explain.write_analysis({**found, "trigger": trigger}, tmp_path / "analysis")
    assert set(written) == {"mask-keeper"}
    assert_png(written["mask-keeper"], min_height=250, min_width=500)
    saved = read_analysis(tmp_path / "analysis")
    assert np.array_equal(saved["mask-keeper"]["mask"], found["mask-keeper"]["mask"])
    assert saved["trigger"]["region"].tolist() == [54, 55, 62, 63]


def test_neural_cleanse_draws_with_its_classes_figure():
    from poisonsim.defenses.neural_cleanse import NeuralCleanse, reversed_trigger_figure

    assert explain.figure_of(NeuralCleanse) is reversed_trigger_figure
    assert explain.defense_figure("neural-cleanse") is reversed_trigger_figure
    assert explain.figure_of(Defense) is None and explain.defense_figure("strip") is None


DEFENSE = '''
"""A stand-in for a trigger-reconstructing defense: keeps a mask and a pattern, and draws them."""
import numpy as np
from matplotlib.figure import Figure

from poisonsim.defenses.base import Defense
from poisonsim.registry import DEFENSES


def draw(artifacts, true_region, image_side):
    fig = Figure(figsize=(6, 3), layout="constrained")
    for ax, name in zip(fig.subplots(1, 2), ("mask", "pattern")):
        image = ax.imshow(artifacts[name].reshape(image_side, image_side), cmap="viridis")
        ax.set_title(f"{name} ({len(true_region)} trigger pixels)")
        fig.colorbar(image, ax=ax)
    return fig


@DEFENSES.register("mask-keeper", examples=[{}])
class MaskKeeper(Defense):
    """Keeps the clean sample's mean image as a pattern and its variance as a mask."""

    figure = staticmethod(draw)

    def fit(self, knowledge, model, rng):
        self.pattern_, self.mask_ = knowledge.clean_x.mean(axis=0), knowledge.clean_x.var(axis=0)
        return self

    def artifacts(self):
        return {"mask": self.mask_, "pattern": self.pattern_}
'''


@pytest.mark.slow
def test_a_plugged_defenses_artifacts_are_saved_by_run_and_redrawn_by_report(tmp_path):
    (tmp_path / "mask_defense.py").write_text(textwrap.dedent(DEFENSE))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE"}
    out = tmp_path / "run"

    def poisonsim(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "poisonsim.cli", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=300,
        )

    done = poisonsim(
        "run",
        str(DIGITS),
        "--set",
        "stream.n_events=600",
        "--set",
        "model.pretrain_events=200",
        "--set",
        "evaluation.every=300",
        "--set",
        'plugins=["mask_defense"]',
        "--set",
        'defense=[{kind="mask-keeper"}]',
        "--quiet",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    saved = read_analysis(out / "analysis")
    assert set(saved) == {"mask-keeper", "trigger"}  # explanations are off in this scenario
    assert saved["mask-keeper"]["mask"].shape == (64,) and saved["trigger"]["region"].tolist() == [54, 55, 62, 63]
    assert_png(out / "analysis" / "mask-keeper.png", min_height=250, min_width=500)
    done = poisonsim("report", str(out))
    assert done.returncode == 0, done.stderr
    assert "mask-keeper: " in done.stdout and "attributions: skipped" not in done.stdout
    assert_png(out / "figures" / "mask-keeper.png", min_height=250, min_width=500)
