"""Benign sources: shapes, held-out splits, reproducibility, nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest

from poisonsim.config import Scenario
from poisonsim.pipeline.engine import run
from poisonsim.sources import BUNDLED_RIVER_SETS, Blobs, Digits, augment_images


def test_digits_split_into_disjoint_held_out_trusted_and_stream_pools():
    from collections import Counter

    from sklearn.datasets import load_digits

    src = Digits(augment=False).load(np.random.default_rng(0))
    assert (src.n_features, src.n_classes, src.image_side) == (64, 10, 8)
    trusted_x, _ = src.trusted_sample(np.random.default_rng(2))
    assert (len(src.test_y), len(trusted_x), src.stream_pool_size) == (449, 359, 989)  # 25% / 20% / the rest
    pools = [{row.tobytes() for row in x} for x in (src.test_x, trusted_x, src._train_x)]
    images = (load_digits().data / 16.0).astype(np.float32)
    counts = Counter(row.tobytes() for row in images)
    repeated = {image for image, n in counts.items() if n > 1}
    for i in range(3):  # no image in two pools, but for images the data set itself holds twice
        for j in range(i + 1, 3):
            assert pools[i] & pools[j] <= repeated
    x, _ = src.sample(np.random.default_rng(1), 5000)
    assert all(row.tobytes() in pools[2] for row in x[:500])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_augmentation_is_light_and_copies():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(100, 64)).astype(np.float32)
    before = x.copy()
    out = augment_images(x, rng)
    assert np.array_equal(x, before)
    assert 0 < np.abs(out - x).mean() < 0.1


def test_blobs_follow_their_parameters():
    src = Blobs(n_features=5, n_classes=4, cluster_std=0.5).load(np.random.default_rng(0))
    x, y = src.sample(np.random.default_rng(1), 20_000)
    within = x - src._means[y]
    assert within.std() == pytest.approx(0.5, rel=0.02)
    assert np.bincount(y, minlength=4).min() > 4_000


def test_same_seed_same_source():
    a = Digits().load(np.random.default_rng(3))
    b = Digits().load(np.random.default_rng(3))
    assert np.array_equal(a.test_x, b.test_x)
    assert np.array_equal(a.sample(np.random.default_rng(4), 50)[0], b.sample(np.random.default_rng(4), 50)[0])


@pytest.mark.parametrize("name", BUNDLED_RIVER_SETS)
def test_bundled_river_sets_stream_through_the_classifier(name):
    scenario = Scenario.from_dict(
        {
            "stream": {"source": f"river:{name}", "n_events": 3000, "n_test": 500},
            "model": {"kind": "centroid-classifier", "window_size": 50},
            "attack": {"kind": "label-flip", "rate": 0.1},
            "evaluation": {"every": 1000},
        }
    )
    summary = run(scenario).summary
    assert summary["events_total"] == 3000
    # a nearest-centroid classifier under 10% flipped labels (seed 0): 0.44, 0.80, 0.91, 0.96; Bananas' two
    # interleaved classes defeat any centroid (its majority class is 0.53 of the held-out set)
    assert summary["clean_accuracy"] >= {"Bananas": 0.35, "ImageSegments": 0.7, "Phishing": 0.85, "Shuttle": 0.9}[name]
    assert summary["observed_poisoning_rate"] == pytest.approx(0.1, abs=0.03)


def test_mnist_splits_into_disjoint_pools_of_real_28x28_digits():
    from poisonsim.sources import Mnist

    src = Mnist(augment=False).load(np.random.default_rng(0))
    assert (src.n_features, src.n_classes, src.image_side) == (784, 10, 28)
    trusted_x, trusted_y = src.trusted_sample(np.random.default_rng(2))
    assert (len(src.test_y), len(trusted_x), src.stream_pool_size) == (1250, 1000, 2750)
    assert 0.0 <= src.test_x.min() and src.test_x.max() == 1.0
    assert np.bincount(trusted_y, minlength=10).min() >= 70  # every class in the defender's sample
    pools = [{row.tobytes() for row in x} for x in (src.test_x, trusted_x, src._train_x)]
    assert all(not (pools[i] & pools[j]) for i in range(3) for j in range(i + 1, 3))


NEURAL_ATTACKS = [
    {"kind": "badnets", "trigger": {"size": 3}},
    {"kind": "blended"},
    {"kind": "label-flip"},
    {"kind": "targeted"},
    {"kind": "gradient-alignment", "poisons": 8, "steps": 5, "supplier_events": 300},
    {"kind": "malicious-training", "supplier_events": 300},
    {"kind": "malicious-architecture", "supplier_events": 300},
]
NEURAL_DEFENSES = [
    {"kind": "strip", "overlays": 4, "every": 200},
    {"kind": "isolation"},
    {"kind": "fine-pruning"},
    {"kind": "activation-analysis"},
    {"kind": "neural-cleanse"},
]


@pytest.mark.slow
@pytest.mark.parametrize("attack", NEURAL_ATTACKS, ids=lambda a: a["kind"])
def test_every_neural_attack_runs_on_mnist_with_lenet(attack):
    rate = 0.0 if attack["kind"].startswith("malicious") else 0.1  # a supplied model: the stream stays clean
    summary = run(_mnist_scenario({"attack": {**attack, "rate": rate}})).summary
    assert 0.0 <= summary["clean_accuracy"] <= 1.0 and summary["events_total"] == 600


@pytest.mark.slow
@pytest.mark.parametrize("defense", NEURAL_DEFENSES, ids=lambda d: d["kind"])
def test_every_neural_defense_runs_on_mnist_with_lenet(defense):
    summary = run(_mnist_scenario({"attack": {"kind": "badnets", "rate": 0.1}, "defense": [defense]})).summary
    assert defense["kind"] in summary["defenses"] and summary["attack_success_rate"] is not None


def _mnist_scenario(extra: dict) -> Scenario:
    return Scenario.from_dict(
        {
            "seed": 3,
            "stream": {"source": "mnist", "n_events": 600},
            "model": {"kind": "lenet", "pretrain_events": 300, "device": "cpu"},
            "evaluation": {"every": 300},
            **extra,
        }
    )
