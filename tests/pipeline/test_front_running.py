"""Front-running: bursts timed before each snapshot poison the deployed model, not the live one for long.

Setting: targeted poison (copies of one held-out digit X' labelled 3) on the
centroid classifier, fifo window of 50 per class. A burst of 50 fills the
class-3 window, so the live model calls X' a 3 until benign 3s wash it out
(a few hundred events); the snapshot taken right after the burst serves
poison for the whole period.

Seeds 1-8; figures that vary by seed are asserted on their mean over the
seeds with a margin of two standard errors (conftest.margin), paired where a
defended run is compared with the open run of the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import margin

from poisonsim.config import ConfigError, Scenario
from poisonsim.defenses import Defense
from poisonsim.events import EventBatch, Truth
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.world import World

SEEDS = range(1, 9)


def _scenario(seed: int, **model) -> Scenario:
    return Scenario.from_dict(
        {
            "seed": seed,
            "stream": {"source": "digits", "n_events": 10_000, "n_test": 500},
            "model": {
                "kind": "centroid-classifier",
                "window_size": 50,
                "window_policy": "fifo",
                "snapshot_every": 2_000,
                **model,
            },
            "attack": {
                "kind": "targeted",
                "channel": "front-running",
                "burst_size": 50,
                "lead": 0,
                "target_class": 3,
                "target_count": 1,
            },
            "evaluation": {"every": 100},
        }
    )


def _per_seed(summaries: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The live and the deployed model's attack success, each averaged over the run, per seed."""
    live = np.array([s["attack_success_rate_mean"] for s in summaries])
    deployed = np.array([s["deployed_attack_success_rate_mean"] for s in summaries])
    return live, deployed


def _above(values, bound: float = 0.0) -> bool:
    """The mean over seeds clears ``bound`` by two standard errors."""
    values = np.asarray(values, dtype=float)
    return values.mean() - margin(values) > bound


def _show(label: str, values) -> None:
    print(f"\n{label}: {np.mean(values):.3f} ({np.min(values):.3f}-{np.max(values):.3f})", end="")


class CentroidDriftAlarm(Defense):
    """A drift alarm (flags, never drops): after learning, the events of any class whose centroid
    moved farther from the defender's trusted class mean than 3x its distance at the start."""

    kind = "centroid-drift-alarm"
    offers = frozenset({"flags-events"})

    def fit(self, knowledge, model, rng):
        classes = range(knowledge.n_classes)
        self.means_ = np.stack([knowledge.clean_x[knowledge.clean_y == c].mean(axis=0) for c in classes])
        self.threshold_ = 3 * float(np.linalg.norm(model.centers - self.means_, axis=1).max())
        return self

    def update(self, batch, predictions, slots, model, position):
        drifted = np.linalg.norm(model.centers - self.means_, axis=1) > self.threshold_
        return drifted[batch.y]


def _run_with_detector(scenario: Scenario) -> dict:
    world = World.build(scenario)
    world.defenses.append(CentroidDriftAlarm().fit(_knowledge(world), world.model, None))
    learner, stream = Learner(world), world.stream()
    for size in world.batch_sizes():
        learner.feed(*stream.next_batch(size))
    return learner.summary(1.0)


def _knowledge(world: World):
    from poisonsim.defenses import DefenderKnowledge

    x, y = world.source.sample(np.random.default_rng(0), 1_000)
    return DefenderKnowledge(x, y, world.source.n_classes)


def test_bursts_before_snapshots_poison_the_deployed_model_far_longer_than_the_live_one():
    summaries = [run(_scenario(seed)).summary for seed in SEEDS]
    live, deployed = _per_seed(summaries)
    assert all(s["poison_events_total"] == 250 for s in summaries)  # 5 snapshots x 50: the fixed budget
    assert all(s["snapshots_taken"] == s["snapshots_deployed"] == 5 for s in summaries)
    assert _above(0.3 - live), live  # washed clean within a few hundred events of each burst
    assert _above(deployed, 0.7), deployed  # poisoned from the first snapshot on (rows 2,000..10,000)
    assert _above(deployed - live, 0.5), (live, deployed)
    _show("live", live), _show("deployed", deployed)


def test_randomised_snapshot_timing_brings_the_deployed_attack_success_down():
    _, fixed = _per_seed([run(_scenario(seed)).summary for seed in SEEDS])
    live, jittered = _per_seed([run(_scenario(seed, snapshot_jitter=0.5)).summary for seed in SEEDS])
    assert _above(0.5 * fixed - jittered), (fixed, jittered)  # paired: the same stream, the same bursts
    assert _above(live + 0.25 - jittered), (live, jittered)
    _show("deployed, jitter 0.5", jittered)


def test_quarantine_with_detector_evidence_vetoes_the_poisoned_snapshots():
    open_ = [_run_with_detector(_scenario(seed)) for seed in SEEDS]
    vetted = [_run_with_detector(_scenario(seed, quarantine=100, veto_flags=10)) for seed in SEEDS]
    assert _above(_per_seed(open_)[1], 0.7)
    assert _above(0.1 - _per_seed(vetted)[1]), _per_seed(vetted)
    _show("deployed, quarantine with the drift alarm", _per_seed(vetted)[1])
    # snapshots at 2,000 .. 8,000 vetoed; the one at 10,000 is still in quarantine when the stream ends
    assert all(s["snapshots_vetoed"] == 4 and s["snapshots_pending"] == 1 for s in vetted)
    assert all(s["snapshots_taken"] == s["snapshots_deployed"] + s["snapshots_vetoed"] + 1 for s in vetted)
    # the detector flags the bursts, not the benign stream: without an attacker nothing is vetoed, in any seed
    for seed in SEEDS:
        clean = _run_with_detector(
            Scenario.from_dict(
                {
                    **_scenario(seed, quarantine=100, veto_flags=10).to_dict(),
                    "attack": {"kind": "none"},
                }
            )
        )
        assert clean["snapshots_vetoed"] == 0 and clean["snapshots_deployed"] == 4


def test_snapshots_do_not_depend_on_how_the_stream_was_cut():
    scenario = _scenario(3, snapshot_jitter=0.3)
    reference = run(scenario).timeseries
    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    batch = EventBatch.concatenate([b for b, _ in parts])
    truth = Truth.concatenate([t for _, t in parts])
    learner = Learner(world)
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, 10_000), size=40, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, 10_000]):
        learner.feed(batch.select(slice(lo, hi)), truth.select(slice(lo, hi)))
    assert learner.evaluator.rows == reference


def test_front_running_keys_are_checked():
    with pytest.raises(ConfigError, match="model.snapshot_every"):
        Scenario.from_dict({"attack": {"kind": "targeted", "channel": "front-running"}})
    with pytest.raises(ConfigError, match="attack.burst_size"):
        Scenario.from_dict(
            {
                "attack": {"kind": "targeted", "channel": "front-running", "burst_size": 90, "lead": 20},
                "model": {"snapshot_every": 100},
            }
        )
    with pytest.raises(ConfigError, match="attack.rate"):
        Scenario.from_dict(
            {"attack": {"kind": "targeted", "channel": "front-running", "rate": 0.1}, "model": {"snapshot_every": 100}}
        )
    with pytest.raises(ConfigError, match="model.quarantine"):
        Scenario.from_dict({"model": {"quarantine": 10}})


def test_a_checkpointed_learner_resumes_with_its_snapshots(tmp_path):
    from poisonsim.services import checkpoint

    scenario = _scenario(4, snapshot_jitter=0.3, quarantine=100)
    reference = run(scenario).timeseries
    world = World.build(scenario)
    stream, sizes = world.stream(), list(world.batch_sizes())
    first = Learner(world)
    for size in sizes[:37]:  # stop mid-period, with a snapshot in quarantine or not
        first.feed(*stream.next_batch(size))
    checkpoint.save(tmp_path / "ck.npz", first.get_state())
    resumed = Learner(World.build(scenario))
    resumed.set_state(checkpoint.load(tmp_path / "ck.npz"))
    for size in sizes[37:]:
        resumed.feed(*stream.next_batch(size))
    assert resumed.evaluator.rows == reference
