"""Every registered model and attack passes the shared checks."""

from __future__ import annotations

import pytest

from simulator import checks


def _cases(objects):
    return list(_each(objects))


def _each(objects):
    for obj in objects:
        for check in checks.yield_checks(obj):
            yield pytest.param(obj, check, id=f"{obj!r}-{check.__name__}")


@pytest.mark.parametrize("model, check", _cases(checks.registered_models()))
def test_model(model, check):
    check(model.clone())


@pytest.mark.parametrize("attack, check", _cases(checks.registered_attacks()))
def test_attack(attack, check):
    check(attack.clone())
