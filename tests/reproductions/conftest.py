"""Paper-level reproductions (Kloft & Laskov 2012, BadNets, Blended, Witches' Brew, STRIP, ABL, fine-pruning):
every test here is slow; CI runs them all."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
