"""poisonsim as a library: run a scenario from a file or a plain dict, read its results as a DataFrame.

>>> import poisonsim
>>> result = poisonsim.run({"seed": 1, "stream": {"n_events": 3000},
...                         "attack": {"kind": "centroid-shift", "rate": 0.2, "start": 1000}})
>>> result.summary["events_total"], result.summary["attack"]
(3000, 'centroid-shift')
>>> frame = result.to_frame()
>>> list(frame["events"])
[0, 1000, 2000, 3000]
>>> sorted(poisonsim.kinds("trigger"))
['blend', 'patch']

The same scenario runs from a TOML file (``poisonsim.run("scenarios/centroid_shift.toml")``),
with ``--set``-style overrides (``overrides=["attack.rate=0.3"]``) and another seed (``seed=4``).

``poisonsim`` is the one import name: the library's modules (``poisonsim.attacks``,
``poisonsim.models``, ...), the Kafka roles (``poisonsim.producers``, ``poisonsim.consumers``,
``poisonsim.services``) and, for plug-in authors, the bases and registries at the top:

>>> from poisonsim import ATTACKS, Attack, Defense, Key, Model
>>> issubclass(ATTACKS.get("label-flip").factory, Attack)
True

Names are loaded on first use, so ``import poisonsim.transport.codec`` does not import torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("poisonsim")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from poisonsim.config import Scenario
    from poisonsim.pipeline.results import RunResult

_EXPORTS = {
    # running scenarios and reading results
    "ConfigError": "poisonsim.config",
    "Scenario": "poisonsim.config",
    "RunResult": "poisonsim.pipeline.results",
    "World": "poisonsim.pipeline.world",
    "write_results": "poisonsim.pipeline.results",
    # writing a kind of one's own: the bases, the parameter declaration and the registries
    "Attack": "poisonsim.attacks.base",
    "AttackerKnowledge": "poisonsim.attacks.base",
    "TargetClass": "poisonsim.attacks.base",
    "check_batch": "poisonsim.attacks.base",
    "non_target": "poisonsim.attacks.base",
    "Defense": "poisonsim.defenses.base",
    "DefenderKnowledge": "poisonsim.defenses.base",
    "Model": "poisonsim.models.base",
    "AttackerHook": "poisonsim.models.base",
    "Trigger": "poisonsim.attacks.triggers",
    "Channel": "poisonsim.attacks.schedule",
    "SourceKind": "poisonsim.sources.datasets",
    "Estimator": "poisonsim.base",
    "Key": "poisonsim.registry",
    "REGISTRIES": "poisonsim.registry",
    "ATTACKS": "poisonsim.registry",
    "DEFENSES": "poisonsim.registry",
    "MODELS": "poisonsim.registry",
    "TRIGGERS": "poisonsim.registry",
    "CHANNELS": "poisonsim.registry",
    "SOURCES": "poisonsim.registry",
}


def __getattr__(name: str) -> Any:
    """The names of ``_EXPORTS``, imported from their module on first use (PEP 562)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poisonsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def scenario(
    spec: str | Path | dict[str, Any] | Scenario, overrides: list[str] | tuple[str, ...] = (), seed: int | None = None
) -> Scenario:
    """A validated :class:`Scenario` from a TOML path, a dict (a parsed TOML document) or a scenario."""
    from poisonsim.config import ConfigError, Scenario, apply_overrides

    if isinstance(overrides, (str, bytes)) or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(f'overrides: expected a list of "section.key=value" strings, got {overrides!r}')
    if isinstance(spec, Scenario):
        raw = spec.to_dict()
    elif isinstance(spec, dict):
        raw = spec
    elif isinstance(spec, (str, Path)):
        return Scenario.from_toml(spec, list(overrides), seed)
    else:
        raise ConfigError(f"scenario: expected a TOML file's path, a dict or a Scenario, got {spec!r}")
    raw = apply_overrides(raw, list(overrides))
    if seed is not None:
        raw["seed"] = seed
    return Scenario.from_dict(raw)


def run(
    spec: str | Path | dict[str, Any] | Scenario,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    transport=None,
) -> RunResult:
    """Run a scenario to its end, embedded (or over ``transport``); its summary, timeseries and scores."""
    from poisonsim.pipeline.engine import run as run_scenario

    return run_scenario(scenario(spec, overrides, seed), transport=transport)


def kinds(concept: str | None = None) -> dict[str, Any]:
    """Registered kinds (plug-ins included): ``{concept: {kind: Kind}}``, or one concept's ``{kind: Kind}``.

    >>> kinds("atack")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    poisonsim.config.ConfigError: concept: no concept 'atack' (did you mean 'attack'?); concepts: ...
    """
    from poisonsim.registry import REGISTRIES

    if concept is not None:
        if concept not in REGISTRIES:
            from difflib import get_close_matches

            from poisonsim.config import ConfigError

            near = get_close_matches(str(concept), REGISTRIES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"concept: no concept {concept!r}{hint}; concepts: {', '.join(REGISTRIES)}")
        return REGISTRIES[concept].load_all()
    return {name: registry.load_all() for name, registry in REGISTRIES.items()}


def river_classifier(model):
    """A poisonsim classifier behind river's classifier interface (``river.evaluate.progressive_val_score``)."""
    from poisonsim.models.river_adapter import RiverClassifier

    return RiverClassifier(model)


__all__ = ["__version__", "kinds", "river_classifier", "run", "scenario", *_EXPORTS]
