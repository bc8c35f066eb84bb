"""Accumulative poisoning (after Pang et al. 2021): the attack's pieces (fast) and the measurement (slow).

The slow tests run a scenario three ways per seed: the attack (60 batches of
accumulation poisons, then the trigger at event 8192), the trigger alone at
the same event (``attack.accumulate=0``: 32 plain label flips at once), and
no attack. On the plain MLP (``scenarios/accumulative.toml``) the trigger
makes a cliff with or without the accumulation, which adds no more than
noise to it; with batch norm (``scenarios/accumulative_bn.toml``) the
accumulation makes the trigger drop clean accuracy more than 3x as far as
alone, at well under a point before it (see docs/stream-threats.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import margin, over_seeds
from torch import nn

from poisonsim.attacks.accumulative import Accumulative, craft, flat_grad, lookahead_direction
from poisonsim.models.neural import NeuralClassifier
from poisonsim.pipeline.stream import attacker_knowledge
from poisonsim.sources import Blobs

SCENARIOS = Path(__file__).parents[2] / "scenarios"
SCENARIO = SCENARIOS / "accumulative.toml"
TRIGGER_AT = 8192  # the scenario's start + accumulate / rate: the row just before the trigger's training step
SEEDS = tuple(range(1, 9))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the floats do not depend on the core count


def _fitted(**keys) -> tuple[Accumulative, object]:
    src = Blobs(n_features=4, n_classes=3).load(np.random.default_rng(0))
    victim = NeuralClassifier(
        n_classes=3, n_features=4, hidden=8, batch_size=8, optimizer="sgd", lr=0.05, device="cpu", pretrain_events=64
    )
    victim.learn_many(*src.sample(np.random.default_rng(1), 64))
    keys = {"accumulate": 16, "trigger_size": 8, "steps": 3, "validation_events": 32, **keys}
    return Accumulative(**keys).fit(attacker_knowledge(src, model=victim), np.random.default_rng(2)), src


def _small_net_and_data(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=64)
    x = (0.5 + 0.15 * rng.normal(size=(64, 4)) + 0.3 * np.eye(3, 4)[y]).clip(0, 1).astype(np.float32)
    for _ in range(200):  # fitted, so the clean loss is low and a flipped batch is a real trigger
        loss = nn.functional.cross_entropy(net(torch.as_tensor(x)), torch.as_tensor(y))
        net.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.5 * p.grad
    return net, x, y


def test_the_trigger_alone_is_plain_cyclic_label_flips_of_the_attackers_own_draws():
    attack, src = _fitted(accumulate=0)
    x, y = src.sample(np.random.default_rng(2), 8)  # fit's first draws: the trigger batch
    assert np.array_equal(attack.trigger_x_, x) and np.array_equal(attack.trigger_y_, (y + 1) % 3)
    px, py = attack.poison(*src.sample(np.random.default_rng(3), 8), np.random.default_rng(4))
    assert np.array_equal(px, x) and np.array_equal(py, (y + 1) % 3)
    assert attack.report_["accumulated"] == 0 and attack.report_["trigger_events"] == 8


def test_poison_follows_the_phases_by_the_count_of_events_sent_whatever_the_pieces():
    attack, src = _fitted()
    x, y = src.sample(np.random.default_rng(3), 30)
    parts = [attack.poison(x[i : i + 5], y[i : i + 5], np.random.default_rng(i)) for i in range(0, 30, 5)]
    px, py = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    assert np.array_equal(py[:16], y[:16]) and np.abs(px[:16] - x[:16]).max() <= attack.eps + 1e-6
    assert np.array_equal(px[16:24], attack.trigger_x_) and np.array_equal(py[16:24], attack.trigger_y_)
    assert np.array_equal(px[24:], x[24:]) and np.array_equal(py[24:], y[24:])
    assert attack.report_["accumulated"] == 16 and attack.report_["trigger_events"] == 8
    assert attack.report_["batches"] == 4  # crafted as they come: 5, 5, 5 and 1 poison
    with pytest.raises(ValueError, match="^accumulative:"):
        Accumulative().fit(attacker_knowledge(src), np.random.default_rng(0))  # no neural victim to copy


def test_a_step_along_the_lookahead_direction_raises_the_after_trigger_loss_not_the_clean_loss():
    net, x, y = _small_net_and_data()
    trigger = torch.as_tensor(x[:16]), torch.as_tensor((y[:16] + 1) % 3)
    validation = torch.as_tensor(x), torch.as_tensor(y)
    before = lookahead_direction(net, trigger, validation, lr=0.5, clean_limit=float("inf"))
    u = before[0]
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.nn.utils.parameters_to_vector(net.parameters()) + 0.01 * u, net.parameters()
        )
    after = lookahead_direction(net, trigger, validation, lr=0.5, clean_limit=float("inf"))
    gained = after[1]["after_trigger_loss"] - before[1]["after_trigger_loss"]
    assert gained > 0 and after[1]["clean_loss"] - before[1]["clean_loss"] < gained / 10


def test_crafted_poisons_point_their_gradient_closer_to_the_wanted_direction_than_the_draws_themselves():
    net, x, y = _small_net_and_data(1)
    trigger = torch.as_tensor(x[:16]), torch.as_tensor((y[:16] + 1) % 3)
    validation = torch.as_tensor(x), torch.as_tensor(y)
    u, _ = lookahead_direction(net, trigger, validation, lr=0.5, clean_limit=float("inf"))
    params = list(net.parameters())
    draws_loss = nn.functional.cross_entropy(net(torch.as_tensor(x[16:48])), torch.as_tensor(y[16:48]))
    raw = nn.functional.cosine_similarity(flat_grad(draws_loss, params), -u, dim=0)
    poisons, cosine = craft(net, x[16:48], y[16:48], u, eps=0.2, steps=60, bounds=(0.0, 1.0))
    assert cosine > float(raw) + 0.2 and np.abs(poisons - x[16:48]).max() <= 0.2 + 1e-6


# -- the measurement -------------------------------------------------------------------------------------


def _figures(seed: int, scenario: Path = SCENARIO) -> dict:
    """Clean accuracy just before and just after the trigger's step: attacked, trigger alone, no attack."""
    import poisonsim

    def rows(overrides):
        result = poisonsim.run(str(scenario), overrides=[*overrides, "evaluation.twin=false"], seed=seed)
        return {r["events"]: r for r in result.timeseries}, result.summary

    attacked, summary = rows([])
    alone, _ = rows(["attack.accumulate=0", "attack.budget=32", f"attack.start={TRIGGER_AT}"])
    clean, _ = rows(['attack={kind="none"}'])
    after = TRIGGER_AT + 32
    for timeline in (attacked, alone):  # the trigger's 32 events are the ones learned between the two rows
        assert timeline[after]["poison_events"] - timeline[TRIGGER_AT]["poison_events"] == 32
    return {
        "before": attacked[TRIGGER_AT]["clean_accuracy"],
        "after": attacked[after]["clean_accuracy"],
        "alone_before": alone[TRIGGER_AT]["clean_accuracy"],
        "alone_after": alone[after]["clean_accuracy"],
        "clean": clean[TRIGGER_AT]["clean_accuracy"],
        "accumulated": summary["attack_details"]["accumulated"],
    }


@pytest.mark.slow
def test_the_trigger_is_a_cliff_with_or_without_the_accumulation_which_adds_only_noise():
    """Seeds 1-8 (seeds 9-12 measured alike): after 60 batches of look-ahead poisons the trigger drops clean
    accuracy 11.3 points on average (4.7-20.7); alone, at the same event, 9.4 (4.0-21.8): paired, +1.9 points
    (2 s.e. 1.9). Clean accuracy just before the trigger is 1.0 point (2 s.e. 0.3) below the run without
    attack. Far short of the paper's 3x (see docs/stream-threats.md)."""
    runs = over_seeds(_figures, SEEDS)
    figures = {key: np.array([run[key] for run in runs]) for key in runs[0]}
    assert (figures["accumulated"] == 1920).all()
    drop = figures["before"] - figures["after"]
    alone = figures["alone_before"] - figures["alone_after"]
    assert drop.mean() - margin(drop) >= 0.03 and alone.mean() - margin(alone) >= 0.03  # a cliff either way
    cost = figures["clean"] - figures["before"]  # paired by seed: the same benign stream
    assert cost.mean() + margin(cost) <= 0.02
    gain = drop - alone
    assert abs(gain.mean()) <= margin(gain) + 0.03  # the accumulation: within noise of nothing, not 3x
    assert drop.mean() < 3 * alone.mean()


@pytest.mark.slow
def test_with_batch_norm_the_accumulation_makes_the_trigger_drop_accuracy_over_3x_as_far_as_alone():
    """Seeds 1-8: after the accumulation the trigger drops clean accuracy 8.5 points on average (6.0-13.6);
    alone, 2.0 (0.2-5.3): 4.2x, higher in every seed (paired gain 6.5, 2 s.e. 1.4). Clean accuracy just before
    the trigger is 0.25 points (2 s.e. 0.35) below the run without attack. Seeds 9-16, not named here: 9.1 vs
    2.0 points (4.6x, every seed higher), 0.3 points before the trigger."""
    runs = over_seeds(_figures, SEEDS, [SCENARIOS / "accumulative_bn.toml"] * len(SEEDS))
    figures = {key: np.array([run[key] for run in runs]) for key in runs[0]}
    assert (figures["accumulated"] == 1920).all()
    drop = figures["before"] - figures["after"]
    alone = figures["alone_before"] - figures["alone_after"]
    assert drop.mean() >= 3 * alone.mean()  # the 3x; measured 4.2x here, 4.6x on seeds 9-16
    gain = drop - alone
    assert gain.mean() - margin(gain) > 0.03 and (gain > 0).all()
    cost = figures["clean"] - figures["before"]  # paired by seed: the same benign stream
    assert cost.mean() + margin(cost) <= 0.01
