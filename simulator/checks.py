"""One conformance suite that every model and attack passes.

As river's ``check_estimator``: each check is a plain function taking a fresh
object; :func:`yield_checks` lists those that apply. Use it on your own model
or attack the same way the test suite does:

>>> from simulator.models import CentroidDetector
>>> for check in yield_checks(CentroidDetector(window_size=20, window_policy="random-out")):
...     check(CentroidDetector(window_size=20, window_policy="random-out"))
"""

from __future__ import annotations

import pickle
from typing import Callable, Iterator

import numpy as np

from simulator.attacks import Attack, BadNets, Blended, CentroidShift, LabelFlip, Targeted
from simulator.config import WINDOW_POLICIES
from simulator.models import CentroidClassifier, CentroidDetector
from simulator.stream import attacker_knowledge

N_CLASSES, N_FEATURES = 3, 4


def registered_models() -> list:
    """One instance of every model class and window policy."""
    models = []
    for policy in WINDOW_POLICIES:
        models.append(CentroidDetector(window_size=20, window_policy=policy, seed=1))
        models.append(CentroidClassifier(n_classes=N_CLASSES, window_size=10, window_policy=policy, seed=1))
    from simulator.models.neural import NeuralClassifier

    models.append(NeuralClassifier(N_CLASSES, N_FEATURES, "mlp", hidden=8, batch_size=16, device="cpu", seed=1))
    models.append(NeuralClassifier(N_CLASSES, N_FEATURES, "mlp", hidden=8, batch_size=7, replay=50,
                                   optimizer="sgd", lr=0.05, device="cpu", seed=1))  # fmt: skip
    return models


def registered_attacks() -> list[Attack]:
    """One instance of every attack family (and label-flip rule)."""
    return [
        LabelFlip("cyclic"),
        LabelFlip("random"),
        LabelFlip("farthest"),
        Targeted(target_class=1, target_count=3, spread=0.1),
        CentroidShift(target_distance=2.0),
        BadNets(target_class=2, size=1),
        Blended(target_class=0, pattern="noise", alpha=0.3),
    ]


def yield_checks(obj) -> Iterator[Callable]:
    if isinstance(obj, Attack):
        yield from (check_attack_seeded, check_attack_inputs_unchanged, check_attack_output_shape,
                    check_attack_bad_input, check_clone, check_pickle_attack)  # fmt: skip
    else:
        yield from (check_model_seeded, check_model_inputs_unchanged, check_batch_equals_one_by_one,
                    check_model_bad_input, check_clone, check_pickle_model)  # fmt: skip


def sample_data(m: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, size=m)
    x = rng.normal(size=(m, N_FEATURES)) + 3.0 * np.eye(N_CLASSES, N_FEATURES)[y]
    return x.astype(np.float32), y.astype(np.int64)


def _fingerprint(model, x) -> tuple:
    if isinstance(model, CentroidDetector):
        state = model.center
    elif isinstance(model, CentroidClassifier):
        state = model.centers
    else:
        state = np.concatenate([p.detach().cpu().numpy().ravel() for p in model.net.parameters()])
    return model.predict_many(x).tolist(), state.tolist()


def check_model_seeded(model) -> None:
    """Same seed, same data: same predictions and same state."""
    x, y = sample_data()
    a, b = model.clone(), model.clone()
    a.learn_many(x, y)
    b.learn_many(x, y)
    assert _fingerprint(a, x) == _fingerprint(b, x), "same seed gave different models"


def check_model_inputs_unchanged(model) -> None:
    x, y = sample_data()
    x0, y0 = x.copy(), y.copy()
    model.learn_many(x, y)
    model.predict_many(x)
    assert np.array_equal(x, x0) and np.array_equal(y, y0), "the model changed its input"


def check_batch_equals_one_by_one(model) -> None:
    """learn_many over a batch equals learn_one over its events in order."""
    x, y = sample_data()
    a, b = model.clone(), model.clone()
    a.learn_many(x, y)
    for xi, yi in zip(x, y):
        b.learn_one(xi, int(yi))
    # compiled centroid updates are exact; torch may order float sums differently per batch size
    tol = 1e-12 if isinstance(model, (CentroidDetector, CentroidClassifier)) else 1e-6
    np.testing.assert_allclose(_fingerprint(a, x)[1], _fingerprint(b, x)[1], rtol=tol, atol=tol)
    assert _fingerprint(a, x)[0] == _fingerprint(b, x)[0]


def check_model_bad_input(model) -> None:
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


def check_clone(obj) -> None:
    clone = obj.clone()
    assert type(clone) is type(obj) and clone.params == obj.params and clone is not obj


def check_pickle_model(model) -> None:
    x, y = sample_data()
    model.learn_many(x, y)
    copy = pickle.loads(pickle.dumps(model))
    assert _fingerprint(copy, x) == _fingerprint(model, x)
    model.learn_many(x, y)
    copy.learn_many(x, y)
    assert _fingerprint(copy, x) == _fingerprint(model, x), "a pickled model diverged"


def _fitted(attack: Attack, seed: int = 0) -> Attack:
    from simulator.data import Source

    x, y = sample_data(300, seed=5)
    source = Source("checks", x, y, N_CLASSES, _train_x=x, _train_y=y)
    knowledge = attacker_knowledge(source, center=x.mean(axis=0).astype(np.float64), radius=2.0)
    return attack.fit(knowledge, np.random.default_rng(seed))


def check_attack_seeded(attack: Attack) -> None:
    x, y = sample_data(50)
    a = _fitted(attack.clone()).poison(x, y, np.random.default_rng(3))
    b = _fitted(attack.clone()).poison(x, y, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), "same seed gave different poison"


def check_attack_inputs_unchanged(attack: Attack) -> None:
    x, y = sample_data(50)
    x0, y0 = x.copy(), y.copy()
    _fitted(attack).poison(x, y, np.random.default_rng(0))
    assert np.array_equal(x, x0) and np.array_equal(y, y0), "the attack changed its input"


def check_attack_output_shape(attack: Attack) -> None:
    x, y = sample_data(50)
    px, py = _fitted(attack).poison(x, y, np.random.default_rng(0))
    assert px.shape == x.shape and px.dtype == np.float32, (px.shape, px.dtype)
    assert py.shape == y.shape and py.dtype == np.int64, (py.shape, py.dtype)
    assert np.isfinite(px).all()


def check_attack_bad_input(attack: Attack) -> None:
    x, y = sample_data(10)
    fitted = _fitted(attack)
    bad = x.copy()
    bad[0, 0] = np.inf
    for args, word in (((bad, y), "x:"), ((x, y[:3]), "y:"), ((x[0], y), "x:")):
        try:
            fitted.poison(*args, np.random.default_rng(0))
        except ValueError as exc:
            assert str(exc).startswith(word), f"unclear error: {exc}"
        else:
            raise AssertionError(f"bad input accepted ({word})")


def check_pickle_attack(attack: Attack) -> None:
    fitted = _fitted(attack)
    copy = pickle.loads(pickle.dumps(fitted))
    x, y = sample_data(20)
    a = fitted.poison(x, y, np.random.default_rng(1))
    b = copy.poison(x, y, np.random.default_rng(1))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
