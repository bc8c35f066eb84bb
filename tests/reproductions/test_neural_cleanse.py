"""Neural Cleanse (Wang et al. 2019) against BadNets on real MNIST: detection, reversed trigger, unlearning.

Seeds 11-14 (attacked) and 11-20 (clean streams), which no other reproduction
uses. Each run is ``scenarios/mnist_neural_cleanse.toml`` (the defense at the
end of the stream) next to the same scenario without the defense (the same
stream and the same net up to the repair), so clean accuracy "before the
repair" is the undefended run's.

Measured (one torch thread): the target class 0 is flagged in every
attacked seed on log norms (the paper's linear index: 1.91, 1.88, 6.09,
2.34, two of four above 2), its reversed mask's IoU with the 3x3 patch is
0.54, 0.89, 0.80, 0.89, and unlearning cuts attack success to at most 0.05
with clean accuracy within 2 points; on clean streams the largest log index
of a class below the median is 2.91 (seed 11), under the cut of 3.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from conftest import margin, over_seeds

from poisonsim.config import Scenario
from poisonsim.defenses.base import DefenderKnowledge
from poisonsim.defenses.neural_cleanse import NeuralCleanse, anomaly_indices, reversed_trigger_figure, suspects
from poisonsim.evaluation.metrics import mask_iou
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.world import World

SCENARIO = Path(__file__).parents[2] / "scenarios" / "mnist_neural_cleanse.toml"
ATTACKED_SEEDS = (11, 12, 13, 14)
CLEAN_SEEDS = tuple(range(11, 21))
QUICK = ["evaluation.every=6000", "evaluation.twin=false"]


def _summary(seed: int, overrides: tuple[str, ...]) -> dict:
    """A run's summary."""
    return run(Scenario.from_toml(SCENARIO, [f"seed={seed}", *QUICK, *overrides])).summary


@functools.lru_cache(maxsize=None)
def _summaries(seeds: tuple[int, ...], overrides: tuple[str, ...]) -> tuple[dict, ...]:
    """Each seed's summary, the seeds side by side."""
    return tuple(over_seeds(_summary, seeds, [overrides] * len(seeds)))


def _figures(seeds, *overrides: str, compare: bool = True) -> dict[str, np.ndarray]:
    """Per seed (printed, ``pytest -s``): the defended run's figures and, with ``compare``, the undefended one's."""
    rows = []
    defended_runs = _summaries(seeds, overrides)
    undefended_runs = _summaries(seeds, (*overrides, "defense=[]")) if compare else defended_runs
    for seed, defended, undefended in zip(seeds, defended_runs, undefended_runs):
        section = defended["defenses"]["neural-cleanse"]
        rows.append(
            {
                "flagged": len(section["suspect_classes"]) > 0,
                "target_found": section.get("target_found"),
                "mask_iou": section.get("mask_iou"),
                "success_before": undefended["attack_success_rate"],
                "success_after": defended["attack_success_rate"],
                "clean_before": undefended["clean_accuracy"],
                "clean_after": defended["clean_accuracy"],
                "target_index": section["anomaly_index"]["0"],
                "mask_l1": [section["mask_l1"][str(c)] for c in range(10)],
            }
        )
        print(
            seed,
            *overrides,
            rows[-1],
            "suspects",
            section["suspect_classes"],
            "mask_l1",
            [round(v, 1) for v in section["mask_l1"].values()],
            "index",
            [round(v, 2) for v in section["anomaly_index"].values()],
        )
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


# -- fast ---------------------------------------------------------------------------------------------------


def test_anomaly_index_flags_only_small_outliers():
    norms = np.array([60.0, 58.0, 61.0, 9.0, 63.0, 59.0, 62.0, 57.0, 60.0, 200.0])
    index = anomaly_indices(norms)
    assert index[9] > 2 and index[3] > 2
    assert suspects(norms, index, 2.0) == [3]  # a large norm is no backdoor
    deviation = np.abs(norms - np.median(norms))
    assert np.allclose(index, deviation / (1.4826 * np.median(deviation)))


def test_mask_iou_binarises_at_half_the_maximum():
    mask = np.zeros(16)
    mask[[0, 1, 4, 5]] = [1.0, 0.6, 0.5, 0.2]
    assert mask_iou(mask, np.array([0, 1, 4, 5])) == 0.75
    assert mask_iou(np.zeros(16), np.array([0])) == 0.0


def test_neural_cleanse_needs_images():
    from poisonsim.models.neural import NeuralClassifier

    knowledge = DefenderKnowledge(np.zeros((10, 5), dtype=np.float32), np.arange(10) % 2, n_classes=2)
    model = NeuralClassifier(n_classes=2, n_features=5, device="cpu")
    with pytest.raises(ValueError, match="kind: neural-cleanse reverses triggers on square images"):
        NeuralCleanse().fit(knowledge, model, np.random.default_rng(0))


def test_a_planted_shortcut_is_reversed_flagged_and_drawn():
    """The host digits CNN after a short BadNets stream: the search runs, gives one mask per class, draws."""
    scenario = Scenario.from_dict(
        {
            "seed": 3,
            "stream": {"source": "digits", "n_events": 600},
            "evaluation": {"every": 600},
            "model": {"kind": "cnn", "hidden": 16, "batch_size": 16, "pretrain_events": 200, "device": "cpu"},
            "attack": {"kind": "badnets", "rate": 0.1},
            "defense": [{"kind": "neural-cleanse", "steps": 60}],
        }
    )
    world = World.build(scenario)
    summary = run(scenario, world=world).summary
    section = summary["defenses"]["neural-cleanse"]
    defense = world.defenses[0]
    arrays = defense.artifacts()
    assert arrays["masks"].shape == arrays["patterns"].shape == (10, 64)
    assert ((arrays["masks"] >= 0) & (arrays["masks"] <= 1)).all()
    assert set(section["mask_l1"]) == {str(c) for c in range(10)} and "target_found" in section
    assert 0 <= section["mask_iou"] <= 1
    assert section["repairs"][0]["event"] == 600
    region = world.attack.trigger_.region(64)
    figure = reversed_trigger_figure(arrays, region, 8)
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 11  # ten classes and the true trigger


# -- slow: the reproduction ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_neural_cleanse_flags_the_badnets_target_in_every_seed():
    """Seeds 11-14: the target class 0 is a suspect (anomaly index on log norms > 3, norm below the median) in
    every seed; the paper's index (linear norms, > 2) finds it in two."""
    figures = _figures(ATTACKED_SEEDS)
    assert figures["target_found"].all(), f"target anomaly index per seed: {figures['target_index']}"
    linear = [suspects(norms, anomaly_indices(norms), 2.0) for norms in figures["mask_l1"]]
    assert sum(0 in found for found in linear) < len(ATTACKED_SEEDS)


@pytest.mark.slow
def test_the_target_classs_reversed_mask_is_the_true_trigger():
    """Seeds 11-14: the target class's mask (binarised at half its maximum) has IoU >= 0.5 with the 3x3 patch."""
    iou = _figures(ATTACKED_SEEDS)["mask_iou"]
    assert iou.mean() - margin(iou) >= 0.5, iou


@pytest.mark.slow
def test_unlearning_the_reversed_trigger_removes_the_backdoor_and_keeps_clean_accuracy():
    """Seeds 11-14: attack success <= 0.05 after the repair, clean accuracy within 2 points of before."""
    figures = _figures(ATTACKED_SEEDS)
    assert figures["success_before"].mean() >= 0.9  # the backdoor was in
    after = figures["success_after"]
    assert after.mean() + margin(after) <= 0.05, after
    drop = figures["clean_before"] - figures["clean_after"]
    assert drop.mean() + margin(drop) <= 0.02, drop


@pytest.mark.slow
def test_neural_cleanse_flags_no_class_on_clean_streams():
    """Seeds 11-20, attack.rate = 0: no class flagged in at least 90% of them."""
    figures = _figures(CLEAN_SEEDS, "attack.rate=0", compare=False)
    assert figures["flagged"].mean() <= 0.1, figures["flagged"]
