"""The defense stage of the learner: gates, verdicts against ground truth, determinism."""

from __future__ import annotations

import pytest

from simulator.config import ConfigError, Scenario
from simulator.defenses.base import Defense
from simulator.events import ATTACKER_SOURCE
from simulator.pipeline.engine import run
from simulator.registry import DEFENSES


@DEFENSES.register("drop-attacker-source", examples=[{}])
class DropOneSource(Defense):
    """A stand-in gate: drops whatever one producer sends (reads the public source id only)."""

    drops = True

    def inspect(self, batch, model):
        return batch.source == ATTACKER_SOURCE


@pytest.fixture
def gate():
    return "drop-attacker-source"


def _scenario(kind: str = "drop-attacker-source"):
    return Scenario.from_dict({
        "seed": 3,
        "stream": {"source": "digits", "n_events": 3000},
        "model": {"kind": "centroid-classifier", "window_size": 30},
        "attack": {"kind": "label-flip", "rate": 0.3},
        "evaluation": {"every": 1000},
        "defense": [{"kind": kind}],
    })  # fmt: skip


def test_a_gate_keeps_flagged_events_from_the_model_and_is_scored_against_truth(gate):
    summary = run(_scenario()).summary
    tally = summary["defenses"]["drop-attacker-source"]
    poison = summary["poison_events_total"]
    assert (tally["tp"], tally["fp"], tally["fn"]) == (poison, 0, 0)
    assert tally["tn"] == 3000 - poison and tally["precision"] == tally["recall"] == 1.0
    assert summary["dropped_events"] == poison
    assert summary["window_contamination"] == 0.0  # nothing the attacker sent was learned
    undefended = run(_scenario().replace(["defense=[]"])).summary
    assert undefended["window_contamination"] > 0.2 and "defenses" not in undefended


def test_defended_runs_are_reproducible_and_write_their_columns(gate, tmp_path):
    from simulator.pipeline.engine import write_results

    first, second = run(_scenario()), run(_scenario())
    assert first.timeseries == second.timeseries
    write_results(first, _scenario(), tmp_path)
    header = (tmp_path / "timeseries.csv").read_text().splitlines()[0].split(",")
    assert {"dropped_events", "defense.drop-attacker-source.tp", "defense.drop-attacker-source.fn"} <= set(header)


def test_an_unavailable_defense_is_a_clear_error():
    with pytest.raises(ConfigError, match='defense\\[0\\].kind: defense kind "no-such" does not exist'):
        _scenario("no-such")
