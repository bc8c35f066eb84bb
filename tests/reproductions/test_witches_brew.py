"""Witches' Brew in its own threat model: a victim retrained from scratch on a data lake that holds the poisons.

The fast tests pin down ``model.retrain_every`` (seeded, from scratch, the
lake's size, checkpoints); the slow one is the measurement of
``benchmarks/witches_brew.py`` on eight of its twenty targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import over_seeds, resumed_after_first_batch

from poisonsim.config import Scenario
from poisonsim.models.nets import train_offline
from poisonsim.models.neural import NeuralClassifier
from poisonsim.models.retrain import retrain_rngs
from poisonsim.pipeline.engine import run

SCENARIO = Path(__file__).parents[2] / "scenarios" / "witches_brew_retrain.toml"
SMALL = dict(
    architecture="cnn",
    image_side=4,
    hidden=8,
    batch_size=16,
    device="cpu",
    pretrain_events=60,
    retrain_every=50,
    retrain_epochs=2,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the floats do not depend on the core count


def _data(m=260, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=m)
    x = 0.5 + 0.1 * rng.normal(size=(m, 16)) + 0.3 * np.eye(3, 16)[y]
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def _weights(model) -> list:
    return [v.detach().cpu().numpy() for v in model.net.state_dict().values()]


def test_retraining_is_seeded_and_from_scratch():
    """Retrains at the end of pre-training and every ``retrain_every`` events; each is a fresh net trained on the
    lake alone, reproducible from the seed."""
    x, y = _data()
    a, b, other = (NeuralClassifier(3, 16, seed=s, **SMALL) for s in (4, 4, 5))
    predictions = [m.process_many(x[:137], y[:137])[0] for m in (a, b, other)]  # mid interval, mid mini-batch
    predictions = [np.concatenate([p, m.process_many(x[137:], y[137:])[0]]) for p, m in zip(predictions, (a, b, other))]
    assert a.retrains_ == 5 and a.learned_ == 260  # at 60, 110, 160, 210, 260 events
    assert predictions[0].tolist() == predictions[1].tolist()
    assert all(np.array_equal(u, v) for u, v in zip(_weights(a), _weights(b)))
    assert not all(np.array_equal(u, v) for u, v in zip(_weights(a), _weights(other)))

    # the last retrain is a fresh net of the model's own seed and count trained on the lake, nothing else
    torch_seed, shuffle = retrain_rngs(4, 5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        fresh = a.new_net()
    train_offline(fresh, x, y, shuffle, epochs=2, batch_size=16, optimizer=a.make_optimizer(fresh), keep_last=True)
    assert all(np.array_equal(u, v.detach().numpy()) for u, v in zip(_weights(a), fresh.state_dict().values()))


def test_off_by_default_and_the_lake_size_is_honoured():
    x, y = _data()
    plain = NeuralClassifier(3, 16, **{**SMALL, "retrain_every": 0})
    plain.learn_many(x, y)
    assert plain.retrains_ == 0 and "lake" not in plain.get_state()

    everything = NeuralClassifier(3, 16, **SMALL)
    everything.learn_many(x, y)
    lake = everything.get_state()["lake"]
    assert np.array_equal(lake["x"], x) and np.array_equal(lake["y"], y)  # pre-training events included

    bounded = NeuralClassifier(3, 16, **SMALL, lake_size=70)
    for start in range(0, len(x), 33):  # however the events are cut
        bounded.learn_many(x[start : start + 33], y[start : start + 33])
    lake = bounded.get_state()["lake"]
    assert lake["seen"] == 260 and np.array_equal(lake["x"], x[-70:]) and np.array_equal(lake["y"], y[-70:])


def test_a_checkpoint_holds_the_lake_and_resumes_exactly(tmp_path):
    from poisonsim.services import checkpoint

    x, y = _data()
    whole = NeuralClassifier(3, 16, seed=2, lake_size=90, **SMALL)
    expected, _ = whole.process_many(x, y)

    first = NeuralClassifier(3, 16, seed=2, lake_size=90, **SMALL)
    head, _ = first.process_many(x[:131], y[:131])  # the lake has wrapped; mid interval and mid mini-batch
    checkpoint.save(tmp_path / "ck.npz", {"model": first.get_state()})
    resumed = NeuralClassifier(3, 16, seed=99, lake_size=90, **SMALL)  # the seed of the retrains comes from the state
    resumed.set_state(checkpoint.load(tmp_path / "ck.npz")["model"])
    tail, _ = resumed.process_many(x[131:], y[131:])
    assert np.concatenate([head, tail]).tolist() == expected.tolist()
    assert np.array_equal(resumed.predict_proba_many(x), whole.predict_proba_many(x))
    with pytest.raises(ValueError, match="data lake"):
        NeuralClassifier(3, 16, **SMALL).set_state(NeuralClassifier(3, 16, **{**SMALL, "retrain_every": 0}).get_state())


def _tiny_scenario() -> Scenario:
    return Scenario.from_toml(
        SCENARIO,
        [
            "stream.n_events=300",
            "model.pretrain_events=300",
            "model.retrain_every=300",
            "model.retrain_epochs=2",
            "model.hidden=16",
            "attack.start=20",
            "attack.poisons=6",
            "attack.budget=6",
            "attack.burst_length=6",
            "attack.steps=3",
            "attack.restarts=1",
            "attack.supplier_events=300",
            "evaluation.every=100",
        ],
    )


def test_the_scenario_runs_and_a_restored_learner_ends_like_the_uninterrupted_one():
    scenario = Scenario.from_toml(SCENARIO)
    lake = scenario.model.pretrain_events + scenario.stream.n_events
    assert scenario.model.retrain_every == scenario.stream.n_events  # the stream ends at the retrain after the poisons
    assert scenario.attack.budget == scenario.attack.poisons == lake // 100  # 1% of what the last retrain learns from
    assert scenario.attack.eps == pytest.approx(16 / 255, abs=1e-4) and scenario.attack.surrogate == "fresh"

    tiny = _tiny_scenario()
    reference = run(tiny)
    assert reference.summary["poison_events_total"] == 6
    _, resumed = resumed_after_first_batch(tiny)
    assert resumed.evaluator.rows == reference.timeseries
    assert resumed.model.retrains_ == 2


# -- the measurement -------------------------------------------------------------------------------------------


def _summary(seed: int, eps: float) -> dict:
    return run(Scenario.from_toml(SCENARIO, [f"attack.eps={eps}", f"seed={seed}", "evaluation.twin=false"])).summary


def _p_target(seeds, eps: float) -> np.ndarray:
    summaries = over_seeds(_summary, seeds, [eps] * len(seeds))
    assert all(s["poison_events_total"] == 40 for s in summaries)
    return np.array([[s["attack_success_rate"], s["target_class_probability"], s["clean_accuracy"]] for s in summaries])


@pytest.mark.slow
def test_witches_brew_against_a_victim_retrained_from_scratch():
    """Eight targets X' (seeds 0-7), 40 poisons = 1% of the lake, victim retrained from scratch: crafted vs bare.

    Measured on seeds 0-19 (``benchmarks/witches_brew.py --seeds 0-19``, ``docs/data/witches_brew.csv``): the
    attack does not reproduce the paper's ~90% on the 8x8 digits. At eps = 16/255 it flipped 0 of 20 targets
    (mean p(0 | X') 8.0e-05, median 4.3e-09), at eps = 0.3 1 of 20 (mean 0.076, median 1.1e-03); the
    unperturbed control 0 of 20 (mean 4.3e-05, median 2.7e-10). What holds is a shift: crafting raised
    p(0 | X') over the control of the same target in 19 of 20 at 16/255 and 20 of 20 at 0.3, by a mean of
    0.95 orders of magnitude (sd 0.62, min -0.01) and 5.9 (sd 2.2, min 0.75). On seeds 0-7: 0.91 (sd 0.62)
    and 5.8 (sd 2.1). Clean accuracy of the retrained net: 0.978, crafted or not. The bounds on
    ``mean - 2 standard errors`` (measured on seeds 0-7: 0.47 and 4.28) sit 0.8 and 1.7 standard errors of
    an eight-seed mean below those figures.
    """
    seeds = range(8)
    control = _p_target(seeds, 0.0)
    crafted = _p_target(seeds, 16 / 255)
    strong = _p_target(seeds, 0.3)
    gain = {
        name: np.log10(np.maximum(runs[:, 1], 1e-30) / np.maximum(control[:, 1], 1e-30))
        for name, runs in (("16/255", crafted), ("0.3", strong))
    }
    assert control[:, 0].sum() == 0  # unperturbed images of class 0, correctly labelled, flip no target
    assert abs(crafted[:, 2].mean() - control[:, 2].mean()) < 0.02  # the poisons cost no clean accuracy
    for name, floor in (("16/255", 0.3), ("0.3", 3.0)):
        g = gain[name]
        assert (g > 0).sum() >= 7, name  # a sign test: 7 of 8 has p = 0.035 if crafting did nothing
        assert g.mean() - 2 * g.std(ddof=1) / np.sqrt(len(g)) > floor, (name, g.round(2).tolist())
