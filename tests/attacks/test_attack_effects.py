"""Attacks do what they claim on the centroid classifier (digits stream)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poisonsim.config import Scenario
from poisonsim.pipeline.engine import run

SEEDS = range(1, 7)


def _classifier_run(attack: dict, seed: int) -> dict:
    scenario = Scenario.from_dict(
        {
            "seed": seed,
            "stream": {"source": "digits", "n_events": 8_000},
            "model": {"kind": "centroid-classifier", "window_size": 50, "window_policy": "fifo"},
            "attack": {"start": 2_000, **attack},
            "evaluation": {"every": 2_000},
        }
    )
    return run(scenario).summary


def _mean(attack: dict, key: str) -> float:
    return float(np.mean([_classifier_run(attack, seed)[key] for seed in SEEDS]))


def test_label_flip_at_30_percent_lowers_clean_accuracy_and_zero_rate_changes_nothing():
    clean = _mean({"kind": "none"}, "clean_accuracy")
    zero = _mean({"kind": "label-flip", "rate": 0.0}, "clean_accuracy")
    flipped = _mean({"kind": "label-flip", "rate": 0.3, "flip": "farthest"}, "clean_accuracy")
    assert clean > 0.85  # nearest centroid on 8x8 digits
    assert zero == clean  # no attacker event: the very same run
    assert clean - flipped > 0.05, (clean, flipped)


def test_random_flips_hurt_less_than_farthest_flips():
    random = _mean({"kind": "label-flip", "rate": 0.3, "flip": "random"}, "clean_accuracy")
    farthest = _mean({"kind": "label-flip", "rate": 0.3, "flip": "farthest"}, "clean_accuracy")
    assert farthest < random


def test_targeted_poison_makes_x_prime_a_three_only_when_present():
    attack = {"kind": "targeted", "target_class": 3, "target_count": 1}
    assert _mean({**attack, "rate": 0.0}, "attack_success_rate") == 0.0
    assert _mean({**attack, "rate": 0.3}, "attack_success_rate") >= 0.8


def test_observed_rate_tracks_rho_and_budget_caps_the_attacker():
    summary = _classifier_run({"kind": "label-flip", "rate": 0.25, "budget": 500}, seed=1)
    assert summary["poison_events_total"] == 500
    uncapped = _classifier_run({"kind": "label-flip", "rate": 0.25}, seed=1)
    # 6,000 events after start at rho = 0.25: 1,500 expected, binomial sd ~34
    assert abs(uncapped["poison_events_total"] - 1500) < 4 * 34
    assert uncapped["observed_poisoning_rate"] == uncapped["poison_events_total"] / 8_000


def test_window_contamination_is_a_share_when_a_small_budget_has_left_the_window():
    """Ten flips, then clean traffic pushes them out: the running shares must not drift below 0."""
    series = run(
        Scenario.from_toml(
            Path(__file__).parents[2] / "scenarios" / "label_flip.toml",
            ["stream.n_events=3000", "attack.start=1000", "attack.budget=10"],
        )
    ).timeseries
    contamination = [row["window_contamination"] for row in series]
    assert all(0.0 <= share <= 1.0 for share in contamination) and contamination[-1] == 0.0
