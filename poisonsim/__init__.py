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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulator import __version__
from simulator.config import ConfigError, Scenario
from simulator.pipeline.engine import RunResult, World, write_results
from simulator.registry import REGISTRIES, Key


def scenario(spec: str | Path | dict[str, Any] | Scenario, overrides: list[str] | tuple[str, ...] = (),
             seed: int | None = None) -> Scenario:  # fmt: skip
    """A validated :class:`Scenario` from a TOML path, a dict (a parsed TOML document) or a scenario."""
    from simulator.config import apply_overrides

    if isinstance(overrides, (str, bytes)) or not all(isinstance(item, str) for item in overrides):
        raise ConfigError(f'overrides: expected a list of "section.key=value" strings, got {overrides!r}')
    if isinstance(spec, Scenario):
        raw = spec.to_dict()
    elif isinstance(spec, dict):
        raw = spec
    else:
        return Scenario.from_toml(spec, list(overrides), seed)
    raw = apply_overrides(raw, list(overrides))
    if seed is not None:
        raw["seed"] = seed
    return Scenario.from_dict(raw)


def run(spec: str | Path | dict[str, Any] | Scenario, overrides: list[str] | tuple[str, ...] = (),
        seed: int | None = None, transport=None) -> RunResult:  # fmt: skip
    """Run a scenario to its end, embedded (or over ``transport``); its summary, timeseries and scores."""
    from simulator.pipeline.engine import run as run_scenario

    return run_scenario(scenario(spec, overrides, seed), transport=transport)


def kinds(concept: str | None = None) -> dict[str, Any]:
    """Registered kinds (plug-ins included): ``{concept: {kind: Kind}}``, or one concept's ``{kind: Kind}``."""
    if concept is not None:
        return REGISTRIES[concept].load_all()
    return {name: registry.load_all() for name, registry in REGISTRIES.items()}


def river_classifier(model):
    """A poisonsim classifier behind river's classifier interface (``river.evaluate.progressive_val_score``)."""
    from simulator.models.river_adapter import RiverClassifier

    return RiverClassifier(model)


__all__ = ["ConfigError", "Key", "RunResult", "Scenario", "World", "__version__", "kinds", "river_classifier", "run",
           "scenario", "write_results"]  # fmt: skip
