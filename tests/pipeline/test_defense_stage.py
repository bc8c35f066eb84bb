"""The defense stage of the learner: gates, verdicts against ground truth, determinism."""

from __future__ import annotations

import pytest

from poisonsim.config import ConfigError, Scenario
from poisonsim.defenses.base import Defense
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.world import World
from poisonsim.registry import DEFENSES


@DEFENSES.register("drop-label-one", examples=[{}])
class DropLabelOne(Defense):
    """A stand-in gate on a public field: drops every event labelled 1, poison or not."""

    offers = frozenset({"flags-events"})
    drops = True

    def inspect(self, batch, model):
        return batch.y == 1


@pytest.fixture
def gate():
    return "drop-label-one"


def _scenario(kind: str = "drop-label-one"):
    return Scenario.from_dict(
        {
            "seed": 3,
            "stream": {"source": "digits", "n_events": 3000},
            "model": {"kind": "centroid-classifier", "window_size": 30},
            "attack": {"kind": "label-flip", "rate": 0.3},
            "evaluation": {"every": 1000},
            "defense": [{"kind": kind}],
        }
    )


def test_a_gate_keeps_flagged_events_from_the_model_and_is_scored_against_truth(gate):
    summary = run(_scenario()).summary
    batch, truth = World.build(_scenario()).stream().next_batch(3000)  # the same stream, read here
    flagged, poison = batch.y == 1, truth.is_poison
    expected = {"tp": flagged & poison, "fp": flagged & ~poison, "tn": ~flagged & ~poison, "fn": ~flagged & poison}
    tally = summary["defenses"]["drop-label-one"]
    assert {k: tally[k] for k in expected} == {k: int(v.sum()) for k, v in expected.items()}
    assert tally["precision"] == pytest.approx((flagged & poison).sum() / flagged.sum())
    assert summary["dropped_events"] == int(flagged.sum()) > 0
    undefended = run(_scenario().replace(["defense=[]"])).summary
    assert "defenses" not in undefended and undefended["dropped_events"] == 0


def test_defended_runs_are_reproducible_and_write_their_columns(gate, tmp_path):
    from poisonsim.pipeline.results import write_results

    first, second = run(_scenario()), run(_scenario())
    assert first.timeseries == second.timeseries
    write_results(first, _scenario(), tmp_path)
    header = (tmp_path / "timeseries.csv").read_text().splitlines()[0].split(",")
    assert {"dropped_events", "defense.drop-label-one.tp", "defense.drop-label-one.fn"} <= set(header)


def test_an_unavailable_defense_is_a_clear_error():
    with pytest.raises(ConfigError, match='defense\\[0\\].kind: defense kind "no-such" does not exist'):
        _scenario("no-such")
