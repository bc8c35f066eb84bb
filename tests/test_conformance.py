"""Every registered kind of every concept passes the shared checks, and every kind is registered."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import poisonsim
from poisonsim import Attack, Defense, checks
from poisonsim.checks import attacks
from poisonsim.checks.defenses import check_defense_interface
from poisonsim.registry import DEFENSES, REGISTRIES, Kind


def _cases():
    for kind in checks.all_kinds():
        slow = "torch-net" in kind.requires or "torch-net" in getattr(kind.factory, "offers", ())
        for check in checks.yield_checks(kind):
            marks = [pytest.mark.slow] if slow and check.__name__.startswith("check_host") else []
            yield pytest.param(kind, check, id=f"{kind.concept}:{kind.name}-{check.__name__}", marks=marks)


@pytest.mark.parametrize("kind, check", list(_cases()))
def test_kind(kind, check):
    check(kind)


def test_every_module_that_registers_kinds_is_known_to_its_registry():
    """A module under poisonsim/ that registers a kind its registry does not import on its own is a mistake."""
    before = {concept: set(registry.load_all()) for concept, registry in REGISTRIES.items()}
    for module in pkgutil.walk_packages(poisonsim.__path__, "poisonsim."):
        importlib.import_module(module.name)
    after = {concept: set(registry.load_all()) for concept, registry in REGISTRIES.items()}
    assert after == before, "kinds registered in modules their registry does not list"


def test_the_suite_covers_every_concept():
    concepts = {kind.concept for kind in checks.all_kinds()}
    assert concepts == set(REGISTRIES)
    assert len(checks.all_kinds()) >= 31


class _InPlaceUnseeded(Attack):
    """Adds noise of its own (not the seeded draws) to its input, in place, and returns it."""

    def fit(self, knowledge, rng):
        return self

    def poison(self, x, y, rng):
        x += np.random.default_rng().random(x.shape, dtype=np.float32)  # a fresh seed each call
        return x, y


def test_the_seeded_check_catches_an_unseeded_attack_that_returns_its_own_input():
    kind = Kind("attack", "in-place", _InPlaceUnseeded, keys={}, examples=[{}])
    for check in (attacks.check_attack_seeded, attacks.check_pickle_attack):
        with pytest.raises(AssertionError, match="same seed gave different poison|a pickled copy poisoned differently"):
            check(kind)


class _IntegerFlags(Defense):
    """Flags every event, as integers rather than booleans."""

    offers = frozenset({"flags-events"})

    def inspect(self, batch, model):
        return np.ones(len(batch), dtype=np.int64)


class _Undeclared(Defense):
    """Flags every event without saying it flags events: its verdicts would not be scored."""

    def inspect(self, batch, model):
        return np.ones(len(batch), dtype=bool)


class _Scrubber(Defense):
    """Zeroes the features of the batch it is shown, in place."""

    def update(self, batch, predictions, slots, model, position):
        batch.x[:] = 0.0
        return None


@pytest.mark.parametrize(
    "defense, fault",
    [
        (_IntegerFlags, "inspect returned int64 of shape"),
        (_Undeclared, "inspect returned verdicts, but the defense offers neither flags-events nor judges-inputs"),
        (_Scrubber, "update changed the batch it was given"),
    ],
)
def test_the_defense_check_catches_wrong_verdicts_and_a_changed_batch(defense, fault):
    name = f"check-{defense.__name__.lower()}"
    DEFENSES.register(name, examples=[{}])(defense)
    try:
        with pytest.raises(AssertionError, match=fault):
            check_defense_interface(DEFENSES.get(name))
    finally:
        DEFENSES._kinds.pop(name)
