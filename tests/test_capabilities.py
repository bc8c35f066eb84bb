"""What a kind can do is said one way: tags in ``offers``, read alike by every part of the library.

The library asks ``"tag" in obj.offers``: it never probes for an attribute
(``hasattr``, ``getattr`` with a default), never tests for a concrete kind's
class and never compares a kind's name with a literal outside the module that
registers it. These tests read the library's source for each of the three,
then check that the registry refuses what it cannot honour.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from poisonsim import REGISTRIES, Defense
from poisonsim.capabilities import CAPABILITIES
from poisonsim.registry import Registry

LIBRARY = Path(__file__).parents[1] / "poisonsim"


def _calls(tree: ast.AST, name: str):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def _sources():
    for path in sorted(LIBRARY.rglob("*.py")):
        yield path.relative_to(LIBRARY.parent), ast.parse(path.read_text())


def _registered() -> dict[str, dict[str, str]]:
    """Every kind's class name and name, with the module that registers it."""
    kinds = {"classes": {}, "names": {}}
    for registry in REGISTRIES.values():
        for kind in registry.load_all().values():
            kinds["classes"][kind.factory.__name__] = kind.factory.__module__
            kinds["names"][kind.name] = kind.factory.__module__
    return kinds


def test_the_library_probes_for_no_attribute():
    probes = [
        f"{path}:{call.lineno}"
        for path, tree in _sources()
        for call in _calls(tree, "hasattr") + [c for c in _calls(tree, "getattr") if len(c.args) == 3]
    ]
    assert probes == []


def test_the_library_never_tests_for_a_concrete_kinds_class():
    concrete = _registered()["classes"]
    found = []
    for path, tree in _sources():
        for call in _calls(tree, "isinstance"):
            classes = call.args[1].elts if isinstance(call.args[1], ast.Tuple) else [call.args[1]]
            found += [f"{path}:{call.lineno} {c.id}" for c in classes if isinstance(c, ast.Name) and c.id in concrete]
    assert found == []


def test_the_library_names_no_kind_outside_the_module_that_registers_it():
    """A comparison of a kind selector (``x.kind``, ``x.channel``, ``x.source``, ``kind``) with a registered kind's
    name, anywhere but in that kind's own module; the check suite builds host scenarios from named kinds and is
    left out."""
    names = _registered()["names"]
    selectors = {"kind", "channel", "source"}
    found = []
    for path, tree in _sources():
        module = ".".join(path.with_suffix("").parts)
        if module.startswith("poisonsim.checks"):
            continue
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.Compare)):
            sides = [node.left, *node.comparators]
            selector = any(
                isinstance(s, ast.Attribute) and s.attr in selectors or isinstance(s, ast.Name) and s.id in selectors
                for s in sides
            )
            literals = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
            found += [f"{path}:{node.lineno} {v!r}" for v in literals if selector and names.get(v, module) != module]
    assert found == []


def test_every_tag_a_kind_offers_or_requires_is_a_declared_capability():
    for registry in REGISTRIES.values():
        for kind in registry.load_all().values():
            assert kind.factory.offers <= CAPABILITIES.keys(), kind.name
            assert kind.requires <= CAPABILITIES.keys(), kind.name


def test_the_registry_refuses_an_undeclared_capability_by_name():
    things = Registry("thing")

    class Judge(Defense):
        """A judge with a misspelt capability."""

        offers = frozenset({"judges-input"})

    with pytest.raises(ValueError, match="thing kind 'judge': offers: unknown capability 'judges-input'"):
        things.register("judge")(Judge)
    with pytest.raises(ValueError, match="thing kind 'net-judge': requires: unknown capability 'torchnet'"):
        things.register("net-judge", requires=("torchnet",))(Defense)


def test_the_registry_refuses_a_class_that_is_no_kind_of_the_project():
    class Loose:
        """Not a subclass of any base."""

        def __init__(self, size: int = 1):
            self.size = size

    with pytest.raises(TypeError, match="Loose must subclass its concept's base"):
        Registry("thing").register("loose")(Loose)


def test_a_kind_built_by_hand_checks_its_keys_as_a_scenario_file_does():
    """One validator: the registry's check of each key runs in the constructor too, with the same words."""
    from poisonsim.config import ConfigError, Scenario
    from poisonsim.defenses.strip import Strip

    with pytest.raises(ConfigError) as from_file:
        Scenario.from_dict({"model": {"kind": "mlp"}, "defense": [{"kind": "strip", "frr": 1.5}]})
    with pytest.raises(ValueError) as by_hand:
        Strip(frr=1.5)
    assert str(from_file.value) == f"defense[0].{by_hand.value}"
    with pytest.raises(ValueError, match="mode: expected one of flag, drop; got 'keep'"):
        Strip(mode="keep")
    assert Strip(overlays=np.int64(16)).overlays == 16  # a numpy number is a number
