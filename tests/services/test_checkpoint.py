"""Checkpoints: exact resumption of model and evaluator, atomic writes, no pickle (no broker)."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from poisonsim.config import Scenario
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.learner import Learner
from poisonsim.pipeline.results import TIMING_FIELDS
from poisonsim.pipeline.world import World
from poisonsim.services import checkpoint

SCENARIOS = [
    {
        "stream": {"n_events": 4000},
        "attack": {"kind": "centroid-shift", "rate": 0.3},
        "model": {"window_policy": "random-out"},
    },
    {
        "stream": {"n_events": 4000},
        "attack": {"kind": "centroid-shift", "rate": 0.2},
        "model": {"window_policy": "fifo"},
    },
    {
        "stream": {"source": "digits", "n_events": 4000},
        "model": {"kind": "centroid-classifier", "window_size": 30, "window_policy": "random-out"},
        "attack": {"kind": "label-flip", "rate": 0.2},
    },
    # defenses resume too: trusted window states, a river detector's input, isolation buffers, analysis
    {
        "stream": {"n_events": 4000},
        "attack": {"kind": "centroid-shift", "rate": 0.3, "start": 1500},
        "model": {"learn": "all", "warmup": 500, "window_size": 50},
        "defense": [{"kind": "fpr-reset", "every": 100}, {"kind": "drift-reset", "monitor": "kswin", "every": 300}],
    },
    {
        "stream": {"source": "digits", "n_events": 4000},
        "model": {"kind": "cnn", "pretrain_events": 500},
        "attack": {"kind": "badnets", "rate": 0.05},
        "defense": [{"kind": "isolation", "at": 3000}, {"kind": "activation-analysis", "at": 3500}],
    },
    {
        "stream": {"source": "digits", "n_events": 4000},
        "model": {"kind": "cnn"},  # pruned at 1536, saved at 2100
        "attack": {"kind": "badnets", "rate": 0.05, "start": 1200},
        "defense": [
            {"kind": "strip", "superimpose": "additive", "every": 1000, "judge": "snapshot"},
            {"kind": "fine-pruning", "when": "drift", "monitor": "page-hinkley", "every": 500},
        ],
    },
]


@pytest.mark.parametrize("overrides", SCENARIOS)
def test_a_learner_restored_from_a_checkpoint_ends_like_an_uninterrupted_one(overrides, tmp_path):
    scenario = Scenario.from_dict({"seed": 4, "evaluation": {"every": 700}} | overrides)
    reference = run(scenario)
    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    learner = Learner(world)
    for part in parts[:3]:
        learner.feed(*part)
    checkpoint.save(tmp_path / "ck.npz", learner.get_state())
    for part in parts[3:5]:  # progress after the checkpoint is lost with the process
        learner.feed(*part)
    resumed = Learner(World.build(scenario))
    resumed.set_state(checkpoint.load(tmp_path / "ck.npz"))
    for part in parts[3:]:
        resumed.feed(*part)
    assert resumed.evaluator.rows == reference.timeseries
    drop = lambda s: {k: v for k, v in s.items() if k not in TIMING_FIELDS}  # noqa: E731
    assert drop(resumed.summary(1.0)) == drop(reference.summary)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.npz"
    checkpoint.save(path, {"n": 1, "a": np.arange(3)})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"n": 2, "a": np.arange(4)})
    assert checkpoint.load(path)["n"] == 1 and list(tmp_path.iterdir()) == [path]  # no temp file left


def test_nothing_is_pickled_and_pickles_are_refused(tmp_path):
    with pytest.raises(TypeError, match="object arrays"):
        checkpoint.save(tmp_path / "x.npz", {"bad": np.array([object()])})
    with pytest.raises(TypeError, match="cannot store a set"):
        checkpoint.save(tmp_path / "x.npz", {"bad": {1, 2}})
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as archive:  # an object array member: loading it would unpickle
        member = io.BytesIO()
        np.save(member, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        archive.writestr("a0.npy", member.getvalue())
        archive.writestr("state.json", '{"format": "poisonsim-checkpoint/1", "state": {"a": {"__array__": "a0"}}}')
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.load(tmp_path / "p.npz")


def test_temporary_files_of_an_interrupted_write_are_removed(tmp_path):
    path = tmp_path / "run.npz"
    checkpoint.save(path, {"events": 1})
    stale = [tmp_path / ".run.npz.abc123.tmp", tmp_path / ".run.npz.def456.tmp"]
    for tmp in stale:
        tmp.write_bytes(b"half a checkpoint")
    (tmp_path / ".other.npz.x.tmp").write_bytes(b"another run's")
    assert checkpoint.remove_stale(path) == 2
    assert not any(tmp.exists() for tmp in stale) and (tmp_path / ".other.npz.x.tmp").exists()
    assert checkpoint.load(path) == {"events": 1}
