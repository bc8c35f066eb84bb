"""Grids: a base scenario, axes over any key, seeds; expanded into runs.

A grid file names a base scenario, the seeds, how axes combine and fixed
overrides. A *point* is one combination of axis values; a *run* is a point
under one seed, and is fully determined by its scenario.

>>> grid = Grid.from_dict({"seeds": [1, 2], "axes": {"attack.kind": ["none", "label-flip"]}})
>>> [(run.id, run.values["attack.kind"]) for run in grid.runs()]
[('p0000-s1', 'none'), ('p0000-s2', 'none'), ('p0001-s1', 'label-flip'), ('p0001-s2', 'label-flip')]
>>> grid.runs()[3].scenario.attack.kind, grid.runs()[3].scenario.seed
('label-flip', 2)
>>> Grid.from_dict({"mode": "zip", "axes": {"attack.rate": [0.1, 0.2], "model.window_size": [10]}})
Traceback (most recent call last):
...
poisonsim.config.ConfigError: axes: mode "zip" needs axes of equal length, got attack.rate: 2, model.window_size: 1
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonsim.config import ConfigError, Scenario, dotted, read_toml, set_key

GRID_KEYS = ("base", "seeds", "mode", "axes", "set")
MODES = ("product", "zip")


@dataclass(frozen=True)
class Run:
    """One point of the grid under one seed: a scenario, or the reason it was refused."""

    id: str
    point: int
    seed: int
    values: dict[str, Any]  # axis key -> label, as in the table
    scenario: Scenario | None
    error: str | None = None


@dataclass(frozen=True)
class Grid:
    """A base scenario (as parsed TOML), seeds, a mode, axes and fixed overrides."""

    base: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    mode: str = "product"
    axes: dict[str, list] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> Grid:
        """Read a grid file; ``base`` is looked up beside it, then in its repository, then here."""
        path = Path(path)
        raw = read_toml(path, "grid")
        base = raw.get("base")
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError(f"base: expected a path to a scenario file, got {base!r}")
            raw = {**raw, "base": read_toml(_find_base(base, path), "scenario")}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Grid:
        """Validate a parsed grid (``base`` already a parsed scenario table)."""
        for key in raw:
            if key not in GRID_KEYS:
                raise ConfigError(f"{key}: unknown grid key; allowed: {', '.join(GRID_KEYS)}")
        base = raw.get("base", {})
        if not isinstance(base, dict):
            raise ConfigError(f"base: expected a scenario table, got {base!r}")
        seeds = raw.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
                raise ConfigError(f"seeds: expected a non-empty list of integers >= 0, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise ConfigError(f"seeds: each seed once, got {seeds!r}")
            seeds = tuple(seeds)
        mode = raw.get("mode", "product")
        if mode not in MODES:
            raise ConfigError(f'mode: expected "product" or "zip", got {mode!r}')
        axes = flatten_keys(_table(raw, "axes"))
        for key, values in axes.items():
            if key == "seed":
                raise ConfigError("axes.seed: sweep seeds with seeds = [...]")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"axes.{key}: expected a non-empty list of values, got {values!r}")
        if mode == "zip" and len({len(v) for v in axes.values()}) > 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in axes.items())
            raise ConfigError(f'axes: mode "zip" needs axes of equal length, got {lengths}')
        fixed = flatten_keys(_table(raw, "set"))
        _refuse_keys_set_twice(axes, fixed)
        return cls(base, seeds, mode, axes, fixed)

    def points(self) -> list[dict[str, int]]:
        """Each point as the position of its value on every axis, in canonical order (first axis slowest)."""
        combine = zip if self.mode == "zip" else itertools.product
        return [dict(zip(self.axes, at)) for at in combine(*(range(len(v)) for v in self.axes.values()))]

    def scenario_table(self, point: dict[str, int]) -> dict[str, Any]:
        """The scenario of a point as a TOML table: the base, then the ``[set]`` keys and the point's axis
        values, the wider key first (a whole ``attack`` table before ``attack.rate``), so none is lost.

        >>> grid = Grid.from_dict({"axes": {"attack": [{"kind": "label-flip"}]}, "set": {"attack.rate": 0.2}})
        >>> grid.scenario_table(grid.points()[0])
        {'attack': {'kind': 'label-flip', 'rate': 0.2}}
        """
        raw = copy.deepcopy(self.base)
        assignments = [*self.fixed.items(), *((k, self.axes[k][at]) for k, at in point.items())]
        for key, value in sorted(assignments, key=lambda item: dotted(item[0]).count(".")):
            set_key(raw, key, copy.deepcopy(value))
        return raw

    def runs(self) -> list[Run]:
        """Every point under every seed, ordered by (point, seed); refused scenarios carry their error."""
        labels = {key: _labels(values) for key, values in self.axes.items()}
        runs = []
        for index, point in enumerate(self.points()):
            raw = self.scenario_table(point)
            seeds = self.seeds if self.seeds is not None else (raw.get("seed", 0),)
            shown = {key: labels[key][at] for key, at in point.items()}
            for seed in sorted(seeds):
                try:
                    scenario, error = Scenario.from_dict({**raw, "seed": seed}), None
                except ConfigError as exc:
                    scenario, error = None, str(exc)
                runs.append(Run(f"p{index:04d}-s{seed}", index, seed, shown, scenario, error))
        return runs


def _refuse_keys_set_twice(axes: dict[str, list], fixed: dict[str, Any]) -> None:
    """Each key swept or fixed once: in ``[set]``, as an axis, or inside the tables of one axis.

    >>> _refuse_keys_set_twice({"attack": [{"kind": "label-flip", "rate": 0.3}]}, {"attack.rate": 0.1})
    Traceback (most recent call last):
    ...
    poisonsim.config.ConfigError: axes.attack: a value sets attack.rate, which set.attack.rate sets too
    """
    where = {dotted(key): f"set.{key}" for key in fixed}
    for key in axes:
        if dotted(key) in where:
            raise ConfigError(f"axes.{key}: also in [set]; a key is swept or fixed, not both")
        where[dotted(key)] = f"axes.{key}"
    for key, values in axes.items():
        tables = [value for value in values if isinstance(value, dict)]
        inner = {dotted(f"{key}.{sub}") for table in tables for sub in flatten_keys(table)}
        clash = min(inner & where.keys(), default=None)
        if clash is not None:
            raise ConfigError(f"axes.{key}: a value sets {clash}, which {where[clash]} sets too")


def _find_base(base: str, grid_path: Path) -> Path:
    here = grid_path.resolve().parent
    repo = next((d for d in (here, *here.parents) if (d / "pyproject.toml").exists() or (d / ".git").exists()), here)
    for folder in dict.fromkeys((here, repo, Path.cwd())):
        if (folder / base).is_file():
            return folder / base
    raise ConfigError(f"base: no scenario file {base!r} beside {grid_path}, in {repo} or in {Path.cwd()}")


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table of scenario keys, got {table!r}")
    return table


def flatten_keys(table: dict[str, Any], drop: str = "", prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys; lists are leaves; the key ``drop`` is left out.

    >>> flatten_keys({"seed": 1, "a": {"b": 1, "c": [{"d": 2}]}}, drop="seed")
    {'a.b': 1, 'a.c': [{'d': 2}]}
    """
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, drop, f"{prefix}{key}."))
        elif prefix + key != drop:
            flat[prefix + key] = value
    return flat


def _labels(values: list) -> list:
    """How an axis's values appear in the table: scalars as they are, tables by their kind.

    >>> _labels([[], [{"kind": "strip"}], [{"kind": "quota"}, {"kind": "strip"}]])
    ['none', 'strip', 'quota+strip']
    >>> _labels([0, 0.5, 0]), _labels([[1.0, 2.0], [3.0, 4.0]])
    ([0, 0.5, 0], ['[1.0, 2.0]', '[3.0, 4.0]'])
    >>> _labels([{"kind": "strip", "check": 100}, {"kind": "strip", "check": 200}])  # one label for two values
    ['{"check": 100, "kind": "strip"}', '{"check": 200, "kind": "strip"}']
    """

    def label(value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("kind", value.get("name")), str):
            return value.get("kind", value.get("name"))
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return "+".join(str(label(v)) for v in value) or "none"
        return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)

    labels = [label(v) for v in values]
    kinds = {bool if isinstance(v, bool) else (float if isinstance(v, (int, float)) else type(v)) for v in labels}
    if len(kinds) > 1:
        labels = [str(v) for v in labels]
    distinct = {json.dumps(v, sort_keys=True) for v in values}  # a value may repeat (mode "zip")
    if len({json.dumps(v) for v in labels}) < len(distinct):  # two values, one label: show them whole
        labels = [json.dumps(v, sort_keys=True) for v in values]
    return labels
