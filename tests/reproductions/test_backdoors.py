"""Backdoor and supply-chain attacks on the online CNN, with the issue's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.config import Scenario
from simulator.pipeline.engine import run

pytestmark = pytest.mark.slow  # a paper-level reproduction: CI runs it, `-m "not slow"` skips it

SCENARIOS = Path(__file__).parents[2] / "scenarios"
SEEDS = (1, 2, 3)


def _runs(name: str, overrides: list[str], seeds=SEEDS) -> list[dict]:
    base = Scenario.from_toml(SCENARIOS / name, overrides)
    return [run(base.replace([f"seed={seed}"])) for seed in seeds]


def _mean(results, key: str) -> float:
    return float(np.mean([r.summary[key] for r in results]))


@pytest.mark.slow
def test_badnets_at_5_percent_succeeds_and_costs_under_3_points_of_clean_accuracy():
    short = ["stream.n_events=10000", "evaluation.every=5000"]
    attacked = _runs("badnets_cnn.toml", short)
    clean = _runs("badnets_cnn.toml", [*short, "attack={kind=\"none\"}"])
    assert _mean(attacked, "observed_poisoning_rate") == pytest.approx(0.05, abs=0.01)
    assert _mean(attacked, "attack_success_rate") >= 0.90
    assert _mean(clean, "clean_accuracy") > 0.9
    assert abs(_mean(attacked, "clean_accuracy") - _mean(clean, "clean_accuracy")) <= 0.03


@pytest.mark.slow
def test_blended_at_10_percent_succeeds():
    attacked = _runs("blended_cnn.toml", ["stream.n_events=10000", "evaluation.every=5000"])
    assert _mean(attacked, "attack_success_rate") >= 0.80


@pytest.mark.slow
def test_malicious_architecture_survives_retraining_unless_only_weights_are_loaded():
    as_supplied = _runs("malicious_architecture.toml", ["model.load_supplied=module"], seeds=(1,))[0]
    weights_only = _runs("malicious_architecture.toml", ["model.load_supplied=weights"], seeds=(1,))[0]
    assert as_supplied.summary["events_total"] == 5000
    assert min(row["attack_success_rate"] for row in as_supplied.timeseries) >= 0.99
    assert weights_only.summary["attack_success_rate"] <= 0.15  # chance: the trigger means nothing
    # the same weights either way: the clean behaviour is that of one model
    assert abs(as_supplied.timeseries[0]["clean_accuracy"] - weights_only.timeseries[0]["clean_accuracy"]) < 0.01


@pytest.mark.slow
def test_malicious_training_starts_backdoored_and_the_timeseries_shows_its_decay():
    result = _runs("malicious_training.toml", ["stream.n_events=6000"], seeds=(1,))[0]
    rows = result.timeseries
    assert rows[0]["events"] == 0 and rows[0]["attack_success_rate"] >= 0.90
    assert rows[0]["clean_accuracy"] > 0.9  # a model a victim would accept
    assert len(rows) == 7 and all(row["attack_success_rate"] is not None for row in rows)
    assert result.summary["poison_events_total"] == 0  # the stream itself is clean


@pytest.mark.slow
def test_gradient_alignment_raises_the_target_probability_over_the_same_budget_of_base_images():
    """Twelve targets X' (seeds 0-11), rho ~ 0.02, eps = 0.3: crafted poisons vs the bare base images, paired.

    What holds in this threat model (a net fine-tuned one step at a time) is a
    shift, not a flip: on seeds 0-15 the crafted poisons raised p(target | X')
    over the unperturbed ones in 16 of 16 targets, by a factor of 80 to 10^12, but
    flipped the prediction in 1 of 16 (Witches' Brew's ~90% is for a victim
    trained from scratch on the poisoned set).
    """
    targets = range(12)
    crafted = _runs("gradient_alignment.toml", ["attack.eps=0.3"], seeds=targets)
    unperturbed = _runs("gradient_alignment.toml", ["attack.eps=0.0"], seeds=targets)
    assert _mean(crafted, "observed_poisoning_rate") <= 0.02
    assert [r.summary["poison_events_total"] for r in crafted] == [r.summary["poison_events_total"] for r in unperturbed]
    assert _mean(unperturbed, "attack_success_rate") == 0.0
    assert _mean(crafted, "attack_success_rate") >= _mean(unperturbed, "attack_success_rate")
    gain = np.log10([max(c.summary["target_class_probability"], 1e-30) / max(u.summary["target_class_probability"], 1e-30)
                     for c, u in zip(crafted, unperturbed)])  # fmt: skip
    assert (gain > 0).sum() >= 10  # a sign test: 10 of 12 has p = 0.019 if crafting did nothing
    assert gain.mean() - 2 * gain.std(ddof=1) / np.sqrt(len(gain)) > 1  # at least tenfold, beyond two standard errors
    assert all(r.summary["attack_details"]["eps"] == 0.3 for r in crafted)
