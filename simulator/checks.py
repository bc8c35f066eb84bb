"""One check suite that finds every registered kind of every concept, plug-ins included.

As river's ``check_estimator``: :func:`yield_checks` gives the checks that
apply to a kind, each a plain function of the kind. Every kind runs the
shared ones: its registry metadata is complete (a docstring, a doc for every
key, at least one example), a value out of bounds is refused naming the key,
and, run inside a small host scenario through the real learner, the same
seed gives the same result and a learner restored from its state
(``get_state``/``set_state``) ends like an uninterrupted one. Models and
attacks also pass the checks of their own interface (inputs not mutated,
batch equals one by one, bad input refused with a clear error, pickling).

>>> from simulator.registry import MODELS
>>> kind = MODELS.get("centroid-detector")
>>> for check in yield_checks(kind):
...     check(kind)
"""

from __future__ import annotations

import math
import pickle
from typing import Callable, Iterator

import numpy as np

from simulator.registry import MODELS, REGISTRIES, Kind, check_value

N_CLASSES, N_FEATURES, IMAGE_SIDE = 3, 16, 4
HOST_EVENTS, HOST_EVERY = 300, 100
SMALL_NET = {"hidden": 8, "batch_size": 16, "pretrain_events": 100, "device": "cpu"}


def all_kinds() -> list[Kind]:
    """Every registered kind of every concept (built-in modules and entry points loaded)."""
    return [kind for registry in REGISTRIES.values() for kind in registry.load_all().values()]


def yield_checks(kind: Kind) -> Iterator[Callable[[Kind], None]]:
    """The checks that apply to ``kind``."""
    yield from (check_metadata, check_bounds_refused, check_host_seeded, check_host_state_round_trip)
    if kind.concept == "model":
        yield from (check_model_seeded, check_model_inputs_unchanged, check_batch_equals_one_by_one,
                    check_model_bad_input, check_model_state_round_trip, check_pickle_model)  # fmt: skip
    if kind.concept == "attack" and getattr(kind.factory, "supplies_model", False):
        yield check_supplied_model_seeded
    elif kind.concept == "attack":
        yield from (check_attack_seeded, check_attack_inputs_unchanged, check_attack_output_shape,
                    check_attack_bad_input, check_pickle_attack)  # fmt: skip


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
    from simulator.config import ConfigError, Scenario

    for name, param in kind.keys.items():
        bad = _out_of_bounds(param)
        for value in bad:
            raw = _host(kind, {**kind.examples[0], name: value})
            try:
                Scenario.from_dict(raw)
            except ConfigError as exc:
                assert f".{param.path}:" in str(exc), f"{kind.name}.{name}={value!r}: the error names another key: {exc}"
            else:
                raise AssertionError(f"{kind.concept} kind {kind.name!r} accepted {name} = {value!r}")


def _out_of_bounds(param) -> list:
    """Values ``param`` must refuse: past each bound, NaN, the wrong type, not a choice."""
    key = param.key
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
    from simulator.pipeline.engine import run

    scenario = _host_scenario(kind)
    a, b = run(scenario), run(scenario)
    assert _comparable(a) == _comparable(b), f"{kind.name}: the same seed gave different runs"


def check_host_state_round_trip(kind: Kind) -> None:
    """A learner restored from another's state halfway ends like the uninterrupted one."""
    from simulator.pipeline.engine import Learner, World, run

    scenario = _host_scenario(kind)
    reference = run(scenario)
    world = World.build(scenario)
    stream = world.stream()
    parts = [stream.next_batch(size) for size in world.batch_sizes()]
    first = Learner(world)
    for part in parts[: len(parts) // 2]:
        first.feed(*part)
    resumed = Learner(World.build(scenario))
    resumed.set_state(first.get_state())
    for part in parts[len(parts) // 2 :]:
        resumed.feed(*part)
    assert resumed.evaluator.rows == reference.timeseries, f"{kind.name}: a restored learner diverged"


def _comparable(result) -> tuple:
    from simulator.pipeline.engine import TIMING_FIELDS

    return {k: v for k, v in result.summary.items() if k not in TIMING_FIELDS}, result.timeseries


def _host_scenario(kind: Kind):
    from simulator.config import Scenario

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
        raw["attack"] = ({"kind": "badnets", "rate": 0.1} if "torch-net" in offers else
                         {"kind": "centroid-shift", "rate": 0.2} if "centroid-state" in offers else
                         {"kind": "label-flip", "rate": 0.2})  # fmt: skip
        return raw
    raw["model"], raw["stream"]["source"] = _host_model(set(kind.requires))
    if kind.concept == "attack":
        rate = {} if getattr(kind.factory, "supplies_model", False) or kind.name == "none" else {"rate": 0.1}
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


# -- models ------------------------------------------------------------------------------------------------


def sample_data(m: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated classes of 16 features in [0, 1] (square 4x4 images for a CNN)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=m)
    x = 0.5 + 0.1 * rng.normal(size=(m, N_FEATURES)) + 0.3 * np.eye(N_CLASSES, N_FEATURES)[y]
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def example_models(kind: Kind) -> list:
    """One instance of ``kind`` per registered example."""
    return [kind.build(example, n_classes=N_CLASSES, n_features=N_FEATURES, image_side=IMAGE_SIDE, seed=1)
            for example in kind.examples]  # fmt: skip


def _fingerprint(model, x) -> tuple:
    state = model.get_state()
    arrays = [np.asarray(v, dtype=np.float64).ravel() for k, v in sorted(_flat(state)) if isinstance(v, np.ndarray)
              and np.issubdtype(np.asarray(v).dtype, np.number)]  # fmt: skip
    return np.asarray(model.predict_many(x)).tolist(), np.concatenate(arrays).tolist() if arrays else []


def _flat(state, prefix=""):
    for key, value in state.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _each_model(check):
    def run_on_examples(kind: Kind) -> None:
        for model in example_models(kind):
            check(model)

    run_on_examples.__name__ = check.__name__
    run_on_examples.__doc__ = check.__doc__
    return run_on_examples


@_each_model
def check_model_seeded(model) -> None:
    """Same seed, same data: same predictions and same state."""
    x, y = sample_data()
    a, b = model.clone(), model.clone()
    a.learn_many(x, y)
    b.learn_many(x, y)
    assert _fingerprint(a, x) == _fingerprint(b, x), "same seed gave different models"


@_each_model
def check_model_inputs_unchanged(model) -> None:
    """Learning and predicting leave the caller's arrays as they were."""
    x, y = sample_data()
    x0, y0 = x.copy(), y.copy()
    model.learn_many(x, y)
    model.predict_many(x)
    assert np.array_equal(x, x0) and np.array_equal(y, y0), "the model changed its input"


@_each_model
def check_batch_equals_one_by_one(model) -> None:
    """learn_many over a batch equals learn_one over its events in order."""
    x, y = sample_data()
    a, b = model.clone(), model.clone()
    a.learn_many(x, y)
    for xi, yi in zip(x, y):
        b.learn_one(xi, int(yi))
    # compiled centroid updates are exact; torch may order float sums differently per batch size
    tol = 1e-12 if "window" in model.offers else 1e-6
    np.testing.assert_allclose(_fingerprint(a, x)[1], _fingerprint(b, x)[1], rtol=tol, atol=tol)
    assert _fingerprint(a, x)[0] == _fingerprint(b, x)[0]


@_each_model
def check_model_bad_input(model) -> None:
    """NaN, a wrong feature count or a 1-d array: a ValueError that starts with ``X:``."""
    x, y = sample_data(20)
    model.learn_many(x, y)
    bad = x.copy()
    bad[3, 1] = np.nan
    for broken, word in ((bad, "NaN"), (x[:, :2], "features"), (x[0], "2-d")):
        try:
            model.learn_many(broken, y[: len(np.atleast_2d(broken))])
        except ValueError as exc:
            assert word in str(exc) and str(exc).startswith("X:"), f"unclear error: {exc}"
        else:
            raise AssertionError(f"bad input accepted: {word}")


@_each_model
def check_model_state_round_trip(model) -> None:
    """A fresh model given another's ``get_state`` predicts and learns on exactly like it."""
    x, y = sample_data()
    model.learn_many(x[:100], y[:100])
    twin = model.clone()
    twin.set_state(model.get_state())
    model.learn_many(x[100:], y[100:])
    twin.learn_many(x[100:], y[100:])
    assert _fingerprint(twin, x) == _fingerprint(model, x), "a restored model diverged"


@_each_model
def check_pickle_model(model) -> None:
    """A pickled copy predicts and learns on like the original."""
    x, y = sample_data()
    model.learn_many(x, y)
    copy = pickle.loads(pickle.dumps(model))
    assert _fingerprint(copy, x) == _fingerprint(model, x)
    model.learn_many(x, y)
    copy.learn_many(x, y)
    assert _fingerprint(copy, x) == _fingerprint(model, x), "a pickled model diverged"


# -- attacks -----------------------------------------------------------------------------------------------


def _each_attack(check):
    def run_on_examples(kind: Kind) -> None:
        for example in kind.examples:
            check(kind, example)

    run_on_examples.__name__ = check.__name__
    run_on_examples.__doc__ = check.__doc__
    return run_on_examples


def _fitted(kind: Kind, example: dict, seed: int = 0):
    """The attack fitted on the knowledge its requirements call for (a neural victim, a detector)."""
    from simulator.pipeline.stream import attacker_knowledge
    from simulator.sources import Source

    x, y = sample_data(300, seed=5)
    source = Source("checks", x, y, N_CLASSES, image_side=IMAGE_SIDE, _train_x=x, _train_y=y)
    model = None
    if "torch-net" in kind.requires:
        model = MODELS.get("mlp").build(SMALL_NET, n_classes=N_CLASSES, n_features=N_FEATURES, seed=1)
    center = x.mean(axis=0).astype(np.float64)
    knowledge = attacker_knowledge(source, center=center, radius=2.0, model=model)
    return kind.build(example).fit(knowledge, np.random.default_rng(seed))


@_each_attack
def check_attack_seeded(kind: Kind, example: dict) -> None:
    """Same seed, same draws: the same poison."""
    x, y = sample_data(50)
    a = _fitted(kind, example).poison(x, y, np.random.default_rng(3))
    b = _fitted(kind, example).poison(x, y, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "same seed gave different poison"


@_each_attack
def check_supplied_model_seeded(kind: Kind, example: dict) -> None:
    """A supply-chain attack: the same seed supplies the same model (weights and module)."""
    a, b = _fitted(kind, example).supplied_, _fitted(kind, example).supplied_
    assert a.weights == b.weights and a.module == b.module, "same seed supplied different models"


@_each_attack
def check_attack_inputs_unchanged(kind: Kind, example: dict) -> None:
    """Poisoning copies: the attacker's draws are left as they were."""
    x, y = sample_data(50)
    x0, y0 = x.copy(), y.copy()
    _fitted(kind, example).poison(x, y, np.random.default_rng(0))
    assert np.array_equal(x, x0) and np.array_equal(y, y0), "the attack changed its input"


@_each_attack
def check_attack_output_shape(kind: Kind, example: dict) -> None:
    """Poison has the draws' shape, float32 features, int64 labels, finite values."""
    x, y = sample_data(50)
    px, py = _fitted(kind, example).poison(x, y, np.random.default_rng(0))
    assert px.shape == x.shape and px.dtype == np.float32, (px.shape, px.dtype)
    assert py.shape == y.shape and py.dtype == np.int64, (py.shape, py.dtype)
    assert np.isfinite(px).all()


@_each_attack
def check_attack_bad_input(kind: Kind, example: dict) -> None:
    """Infinity, mismatched labels or a 1-d array: a ValueError naming ``x`` or ``y``."""
    x, y = sample_data(10)
    fitted = _fitted(kind, example)
    bad = x.copy()
    bad[0, 0] = np.inf
    for args, word in (((bad, y), "x:"), ((x, y[:3]), "y:"), ((x[0], y), "x:")):
        try:
            fitted.poison(*args, np.random.default_rng(0))
        except ValueError as exc:
            assert str(exc).startswith(word), f"unclear error: {exc}"
        else:
            raise AssertionError(f"bad input accepted ({word})")


@_each_attack
def check_pickle_attack(kind: Kind, example: dict) -> None:
    """A pickled fitted attack poisons like the original."""
    fitted = _fitted(kind, example)
    copy = pickle.loads(pickle.dumps(fitted))
    x, y = sample_data(20)
    a = fitted.poison(x, y, np.random.default_rng(1))
    b = copy.poison(x, y, np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
