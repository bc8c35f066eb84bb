"""Checks of the model interface: seeded, inputs untouched, batch equals one by one, clear errors, state."""

from __future__ import annotations

import pickle

import numpy as np

from poisonsim.checks import IMAGE_SIDE, N_CLASSES, N_FEATURES, sample_data
from poisonsim.registry import Kind


def example_models(kind: Kind) -> list:
    """One instance of ``kind`` per registered example."""
    return [
        kind.build(example, n_classes=N_CLASSES, n_features=N_FEATURES, image_side=IMAGE_SIDE, seed=1)
        for example in kind.examples
    ]


def _fingerprint(model, x) -> tuple:
    state = model.get_state()
    arrays = [
        np.asarray(v, dtype=np.float64).ravel()
        for k, v in sorted(_flat(state))
        if isinstance(v, np.ndarray) and np.issubdtype(np.asarray(v).dtype, np.number)
    ]
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


CHECKS = (
    check_model_seeded,
    check_model_inputs_unchanged,
    check_batch_equals_one_by_one,
    check_model_bad_input,
    check_model_state_round_trip,
    check_pickle_model,
)
