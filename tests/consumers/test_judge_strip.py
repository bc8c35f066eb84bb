"""The judge process's STRIP: the scenario's strip defense on a learner snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import margin, over_seeds

from poisonsim.config import ConfigError, Scenario
from poisonsim.consumers.judge import judge, judge_for
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.world import World

SCENARIO = Path(__file__).parents[2] / "scenarios" / "strip_badnets.toml"


@pytest.mark.slow
def test_the_judge_process_strip_judges_with_a_snapshot_of_the_learners_model():
    """Seeds 1-8, 4,000 events: the judge process's STRIP on the learner's snapshot gives the learner's own
    STRIP verdicts, and rejects triggered inputs that fire the backdoor more often than clean ones."""
    gaps = over_seeds(_snapshot_gap, range(1, 9))
    assert np.mean(gaps) - margin(gaps) >= 0.3  # measured 0.62 on average (0.13-0.85)


def _snapshot_gap(seed: int) -> float:
    """One seed: the judge process's STRIP on the learner's snapshot agrees with the learner's own STRIP; the share of
    triggered inputs that fire the backdoor it rejects, less the share of clean inputs."""
    overrides = ["stream.n_events=4000", "evaluation.every=4000", f"seed={seed}", "defense.strip.judge=snapshot"]
    scenario = Scenario.from_toml(SCENARIO, overrides)  # the judge role sees snapshots, not the stream: no "ahead"
    learner_world = World.build(scenario)  # the learner's side: trains on the poisoned stream
    learner, stream = Learner(learner_world), learner_world.stream()
    for size in learner_world.batch_sizes():
        learner.feed(*stream.next_batch(size))

    judge_world = World.build(scenario)  # the judge process rebuilds the world, then loads the snapshot
    strip = judge(judge_world, judge_for(scenario))
    assert strip.name == "strip"
    judge_world.model.set_state(learner_world.model.get_state())
    strip.new_model(judge_world.model)
    targets, attack = learner_world.attack.target_x_, learner_world.attack
    triggered = strip.flag(targets, judge_world.model)
    clean = strip.flag(learner_world.source.test_x, judge_world.model)
    own = learner_world.defenses[0]  # the learner's STRIP, recalibrated on the same final model
    own.calibrate(learner_world.model)
    assert (triggered == own.flag(targets, learner_world.model)).all()
    fired = learner_world.model.predict_many(targets) == attack.target_class_
    return float(triggered[fired].mean() - clean.mean())


def test_the_judge_role_runs_only_a_judge_the_scenario_has():
    scenario = Scenario.from_toml(SCENARIO, ["stream.n_events=100", "defense=[]", "model.pretrain_events=0"])
    assert judge_for(scenario) is None  # a net without a defense that judges inputs: nothing to judge
    with pytest.raises(ConfigError, match=r"judges \(none: no defense offers judges-inputs.*got 'strip'"):
        judge(World.build(scenario), "strip")
