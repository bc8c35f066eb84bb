"""Every registered kind of every concept passes the shared checks, and every kind is registered."""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pytest

import poisonsim
from poisonsim import Attack, checks
from poisonsim.checks import attacks
from poisonsim.registry import REGISTRIES, Kind


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
