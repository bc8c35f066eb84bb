"""Checks of the attack and trigger interfaces: seeded, inputs untouched, output shape, clear errors, pickling."""

from __future__ import annotations

import pickle

import numpy as np

from poisonsim.checks import IMAGE_SIDE, N_CLASSES, N_FEATURES, SMALL_NET, sample_data
from poisonsim.registry import MODELS, Kind


def _each_attack(check):
    def run_on_examples(kind: Kind) -> None:
        for example in kind.examples:
            check(kind, example)

    run_on_examples.__name__ = check.__name__
    run_on_examples.__doc__ = check.__doc__
    return run_on_examples


def _fitted(kind: Kind, example: dict, seed: int = 0):
    """The attack fitted on the knowledge its requirements call for (a neural victim, a detector)."""
    from poisonsim.pipeline.stream import attacker_knowledge
    from poisonsim.sources import Source

    x, y = sample_data(300, seed=5)
    source = Source("checks", x, y, N_CLASSES, image_side=IMAGE_SIDE, _train_x=x, _train_y=y)
    model = None
    if "torch-net" in kind.requires:
        model = MODELS.get("mlp").build(SMALL_NET, n_classes=N_CLASSES, n_features=N_FEATURES, seed=1)
    center = x.mean(axis=0).astype(np.float64)
    knowledge = attacker_knowledge(source, center=center, radius=2.0, model=model, rate=0.2)
    return kind.build(example).fit(knowledge, np.random.default_rng(seed))


@_each_attack
def check_attack_seeded(kind: Kind, example: dict) -> None:
    """Same seed, same draws: the same poison (each call on its own copy of the draws, so that an attack that
    changes its input and returns it is not compared with itself)."""
    x, y = sample_data(50)
    a = _fitted(kind, example).poison(x.copy(), y.copy(), np.random.default_rng(3))
    b = _fitted(kind, example).poison(x.copy(), y.copy(), np.random.default_rng(3))
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
    a = fitted.poison(x.copy(), y.copy(), np.random.default_rng(1))
    b = copy.poison(x.copy(), y.copy(), np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "a pickled copy poisoned differently"


ATTACK_CHECKS = (
    check_attack_seeded,
    check_attack_inputs_unchanged,
    check_attack_output_shape,
    check_attack_bad_input,
    check_pickle_attack,
)


# -- triggers: fitted on the attacker's pool, then stamp copies ---------------------------------------------


def _each_trigger(check):
    def run_on_examples(kind: Kind) -> None:
        for example in kind.examples:
            for side in (IMAGE_SIDE, None):  # square images, and flat features
                check(
                    lambda seed=0: kind.build(example).fit(
                        sample_data(30, seed=5)[0], side, np.random.default_rng(seed)
                    )
                )

    run_on_examples.__name__ = check.__name__
    run_on_examples.__doc__ = check.__doc__
    return run_on_examples


@_each_trigger
def check_trigger_seeded(fitted) -> None:
    """Same seed, same trigger: the same stamped batch."""
    x, _ = sample_data(20)
    assert np.array_equal(fitted(3)(x), fitted(3)(x)), "same seed gave different triggers"


@_each_trigger
def check_trigger_stamps_copies(fitted) -> None:
    """Stamping copies its input, keeps the shape, gives float32 in [0, 1], and changes only its region."""
    x, _ = sample_data(20)
    x0 = x.copy()
    trigger = fitted()
    out = trigger(x)
    assert np.array_equal(x, x0), "the trigger changed its input"
    assert out.shape == x.shape and out.dtype == np.float32, (out.shape, out.dtype)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, "stamped values outside [0, 1]"
    outside = np.setdiff1d(np.arange(N_FEATURES), trigger.region(N_FEATURES))
    assert np.array_equal(out[:, outside], x[:, outside]), "the trigger wrote outside its region"
    assert not np.array_equal(out, x), "the trigger left the batch as it was"


@_each_trigger
def check_pickle_trigger(fitted) -> None:
    """A pickled fitted trigger stamps like the original."""
    x, _ = sample_data(20)
    trigger = fitted()
    assert np.array_equal(pickle.loads(pickle.dumps(trigger))(x), trigger(x))


TRIGGER_CHECKS = (check_trigger_seeded, check_trigger_stamps_copies, check_pickle_trigger)
