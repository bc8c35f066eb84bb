"""One check suite that finds every registered kind of every concept, plug-ins included.

As river's ``check_estimator``: :func:`yield_checks` gives the checks that
apply to a kind, each a plain function of the kind. Every kind runs the
shared ones: its registry metadata is complete (a docstring, a doc for every
key, at least one example), a value out of bounds is refused naming the key,
and, run inside a small host scenario through the real learner, the same
seed gives the same result and a learner restored from its state
(``get_state``/``set_state``) ends like an uninterrupted one. Models and
attacks and triggers also pass the checks of their own interface (inputs not mutated,
batch equals one by one, bad input refused with a clear error, pickling); defenses
that of theirs, with what each capability they offer promises.

>>> from poisonsim.registry import MODELS
>>> kind = MODELS.get("centroid-detector")
>>> for check in yield_checks(kind):
...     check(kind)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from poisonsim.registry import MODELS, REGISTRIES, Kind, check_value

N_CLASSES, N_FEATURES, IMAGE_SIDE = 3, 16, 4
HOST_EVENTS, HOST_EVERY = 300, 100
SMALL_NET = {"hidden": 8, "batch_size": 16, "pretrain_events": 100, "device": "cpu"}


def all_kinds() -> list[Kind]:
    """Every registered kind of every concept (built-in modules and entry points loaded)."""
    return [kind for registry in REGISTRIES.values() for kind in registry.load_all().values()]


def yield_checks(kind: Kind) -> Iterator[Callable[[Kind], None]]:
    """The checks that apply to ``kind``."""
    yield from (check_metadata, check_bounds_refused, check_host_seeded, check_host_state_round_trip)
    from poisonsim.checks import attacks, defenses, models

    if kind.concept == "model":
        yield from models.CHECKS
    if kind.concept == "defense":
        yield from defenses.DEFENSE_CHECKS
    if kind.concept == "attack" and "supplies-model" in kind.factory.offers:
        yield attacks.check_supplied_model_seeded
    elif kind.concept == "attack":
        yield from attacks.ATTACK_CHECKS
    if kind.concept == "trigger":
        yield from attacks.TRIGGER_CHECKS


# -- every kind -------------------------------------------------------------------------------------------


def check_metadata(kind: Kind) -> None:
    """A docstring, a doc for every key, examples that are valid keys: a kind registered but not exercised fails."""
    assert kind.doc, f"{kind.concept} kind {kind.name!r}: the class needs a docstring (its first line is the doc)"
    assert kind.examples, f"{kind.concept} kind {kind.name!r}: register it with examples=[...] for the check suite"
    for name, param in kind.keys.items():
        assert param.key.doc, f"{kind.name}.{name}: the Key needs a doc"
        check_value(name, param, param.default)  # the default itself is allowed
    for example in kind.examples:
        for name, value in example.items():
            assert name in kind.keys, f"{kind.name}: example key {name!r} is not one of its keys"
            check_value(name, kind.keys[name], value)


def check_bounds_refused(kind: Kind) -> None:
    """Each bounded key refuses a value past its bound, and NaN, with an error naming the key."""
    from poisonsim.config import ConfigError, Scenario

    for name, param in kind.keys.items():
        bad = _out_of_bounds(param)
        for value in bad:
            raw = _host(kind, {**kind.examples[0], name: value})
            try:
                Scenario.from_dict(raw)
            except ConfigError as exc:
                assert f".{param.path}:" in str(exc), (
                    f"{kind.name}.{name}={value!r}: the error names another key: {exc}"
                )
            else:
                raise AssertionError(f"{kind.concept} kind {kind.name!r} accepted {name} = {value!r}")


def _out_of_bounds(param) -> list:
    """Values ``param`` must refuse: past each bound, NaN, the wrong type, not a choice."""
    key = param.key
    if param.type == "kind":
        return [12345, "not-a-kind"]
    if param.type == "str":
        return [12345] + (["not-a-choice"] if key.choices else [])
    if param.type == "bool":
        return ["yes"]
    if param.type == "floats":
        return ["a"] + ([[math.nan]] if key.finite else [])
    bad = [bound + step for bound, step in ((key.ge, -1), (key.gt, 0), (key.le, 1), (key.lt, 0)) if bound is not None]
    if param.type == "int":
        bad += [1.5]
    if key.finite:
        bad += [math.nan, math.inf] if param.type == "float" else []
    return bad


def check_host_seeded(kind: Kind) -> None:
    """Run inside its host scenario twice: the same seed gives the same summary and timeseries."""
    from poisonsim.pipeline.engine import run

    scenario = _host_scenario(kind)
    a, b = run(scenario), run(scenario)
    assert _comparable(a) == _comparable(b), f"{kind.name}: the same seed gave different runs"


def check_host_state_round_trip(kind: Kind) -> None:
    """A learner restored from another's state halfway ends like the uninterrupted one, the state going through
    the checkpoint format on the way (numpy arrays and plain values, as a Kafka learner saves it)."""
    from poisonsim.pipeline.engine import run
    from poisonsim.pipeline.learner import Learner
    from poisonsim.pipeline.world import World

    scenario = _host_scenario(kind)
    reference = run(scenario)
    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    first = Learner(world)
    for part in parts[: len(parts) // 2]:
        first.feed(*part)
    resumed = Learner(World.build(scenario))
    resumed.set_state(_through_a_checkpoint(kind, first.get_state()))
    for part in parts[len(parts) // 2 :]:
        resumed.feed(*part)
    assert resumed.evaluator.rows == reference.timeseries, f"{kind.name}: a restored learner diverged"


def _through_a_checkpoint(kind: Kind, state: dict) -> dict:
    """``state`` saved with :mod:`poisonsim.services.checkpoint` and loaded back; a state it cannot store fails the
    check with the checkpoint's reason."""
    import tempfile

    from poisonsim.services import checkpoint

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.npz"
        try:
            checkpoint.save(path, state)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{kind.name}: its state cannot be checkpointed: {exc}") from exc
        return checkpoint.load(path)


def _comparable(result) -> tuple:
    from poisonsim.pipeline.results import TIMING_FIELDS

    return {k: v for k, v in result.summary.items() if k not in TIMING_FIELDS}, result.timeseries


def _host_scenario(kind: Kind):
    from poisonsim.config import Scenario

    return Scenario.from_dict(_host(kind, kind.examples[0]))


def _host(kind: Kind, keys: dict) -> dict:
    """A small scenario around ``kind`` with ``keys``: a model and source that offer what it requires."""
    keys = kind.as_table(keys)
    raw = {"seed": 1, "stream": {"n_events": HOST_EVENTS}, "evaluation": {"every": HOST_EVERY}}
    if kind.concept == "source":
        raw["stream"].update(source=kind.name, **keys)
        raw["model"] = {"kind": "centroid-detector", "window_size": 20}
        return raw
    if kind.concept == "model":
        offers = set(kind.factory.offers)
        raw["stream"]["source"], raw["model"] = "digits", {"kind": kind.name, **keys}
        raw["attack"] = (
            {"kind": "badnets", "rate": 0.1}
            if "torch-net" in offers
            else {"kind": "centroid-shift", "rate": 0.2}
            if "centroid-state" in offers
            else {"kind": "label-flip", "rate": 0.2}
        )
        return raw
    raw["model"], raw["stream"]["source"] = _host_model(set(kind.requires))
    if kind.concept == "trigger":
        raw["attack"] = {"kind": "badnets", "rate": 0.1, "trigger": {"kind": kind.name, **keys}}
    elif kind.concept == "attack":
        rate = {} if kind.factory.offers & {"supplies-model", "no-poison"} else {"rate": 0.1}
        raw["attack"] = {"kind": kind.name, **keys, **rate}
    elif kind.concept == "channel":
        raw["attack"] = {"kind": "targeted", "channel": kind.name, "target_count": 1, **keys}
        raw["model"]["snapshot_every"] = 100
    elif kind.concept == "defense":
        raw["attack"] = {"kind": "badnets" if "torch-net" in kind.requires else "label-flip", "rate": 0.1}
        raw["defense"] = [{"kind": kind.name, **keys}]
    return raw


def _host_model(requires: set[str]) -> tuple[dict, str]:
    """The smallest registered model (and a source) that offer ``requires``."""
    for name in ("centroid-classifier", "centroid-detector", "mlp", "cnn", *MODELS.load_all()):
        kind = MODELS.get(name)
        if requires <= set(kind.factory.offers) | {"images"}:
            small = SMALL_NET if "torch-net" in kind.factory.offers else {"window_size": 20}
            return {"kind": name, **small}, "digits" if name != "centroid-detector" else "blobs"
    raise AssertionError(f"no registered model offers {sorted(requires)}")


def sample_data(m: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes of 16 features in [0, 1] (square 4x4 images for a CNN)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=m)
    x = 0.5 + 0.1 * rng.normal(size=(m, N_FEATURES)) + 0.3 * np.eye(N_CLASSES, N_FEATURES)[y]
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)
