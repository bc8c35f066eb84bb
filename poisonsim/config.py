"""Scenario configuration: TOML in, clear errors out.

A scenario is one TOML file with ``seed``, optional ``name`` and ``plugins``,
and the sections ``[stream]``, ``[model]``, ``[attack]``, ``[[defense]]`` and
``[evaluation]``. Each section selects a registered kind (``stream.source``,
``model.kind``, ``attack.kind`` and ``attack.channel``, ``defense.kind``) and
takes exactly the keys of that kind's constructor plus the section's own
(see :mod:`poisonsim.registry`). Any key can be overridden with
``--set section.key=value``. A key the selected kind does not take, a wrong
type, a value out of range or not finite raises :class:`ConfigError` naming
the key, before anything runs.

>>> s = Scenario.from_dict({"seed": 3, "attack": {"kind": "label-flip", "rate": 0.2}})
>>> s.attack.rate, s.model.kind
(0.2, 'centroid-detector')
>>> Scenario.from_dict({"model": {"window_size": -3}})
Traceback (most recent call last):
...
poisonsim.config.ConfigError: model.window_size: expected an integer >= 1, got -3
>>> Scenario.from_dict({"attack": {"kind": "badnets", "flip": "cyclic"}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
poisonsim.config.ConfigError: attack.flip: not a key of attack kind "badnets" and channel kind "stream" (its keys: target_class, ...)
>>> apply_overrides({}, ["attack.rate=0.3", "model.window_policy=random-out"])
{'attack': {'rate': 0.3}, 'model': {'window_policy': 'random-out'}}
"""

from __future__ import annotations

import copy
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

from poisonsim.registry import (
    ATTACKS,
    CHANNELS,
    DEFENSES,
    MODELS,
    SOURCES,
    Key,
    Kind,
    Param,
    Registry,
    UnknownKind,
    check_value,
    import_plugins,
    schema,
)


class ConfigError(ValueError):
    """A scenario value was refused; the message names the key."""


class ScenarioWarning(UserWarning):
    """A scenario that runs, but likely not as its author meant (the CLI prints it as ``poisonsim: warning``)."""


class StreamKeys:
    """Keys of ``[stream]`` whatever the source."""

    def __init__(
        self,
        n_events: Annotated[int, Key("events in the merged stream (benign + attacker)", ge=1, le=10**10)] = 20_000,
        benign_sources: Annotated[int, Key("public source ids benign traffic spreads over", ge=1, le=1000)] = 100,
    ):
        self.n_events = n_events
        self.benign_sources = benign_sources


class AttackKeys:
    """Keys of ``[attack]`` whatever the kind: the public source ids the attacker sends from."""

    def __init__(
        self,
        identities: Annotated[int, Key("public source ids the attacker spreads its events over", ge=1, le=1000)] = 10,
        identity_pool: Annotated[
            str,
            Key(
                "shared: ids that also carry benign traffic; own: ids only the attacker uses (they betray it)",
                choices=("shared", "own"),
            ),
        ] = "shared",
    ):
        self.identities = identities
        self.identity_pool = identity_pool


class ModelKeys:
    """Keys of ``[model]`` whatever the kind: how the learner serves snapshots and vets content."""

    def __init__(
        self,
        snapshot_every: Annotated[
            int, Key("events between published snapshots K (0: none, serving = live model)", ge=0)
        ] = 0,
        snapshot_jitter: Annotated[
            float, Key("each snapshot interval drawn uniformly in [K(1-j), K(1+j)]", ge=0, lt=1)
        ] = 0.0,
        quarantine: Annotated[
            int, Key("events a snapshot waits before deployment, open to a veto (0: deploy at once)", ge=0)
        ] = 0,
        veto_flags: Annotated[
            int,
            Key(
                "quarantine: veto a snapshot when defenses flagged more events than this since the previous snapshot",
                ge=0,
            ),
        ] = 0,
        pin_content: Annotated[
            bool, Key("split-view: refuse content whose hash differs from the one seen at vetting")
        ] = False,
        threads: Annotated[
            int,
            Key(
                "torch threads of the run: fixed, so the same seed gives the same floats on any core count",
                ge=1,
                le=256,
            ),
        ] = 1,
    ):
        self.snapshot_every = snapshot_every
        self.snapshot_jitter = snapshot_jitter
        self.quarantine = quarantine
        self.veto_flags = veto_flags
        self.pin_content = pin_content
        self.threads = threads


class EvaluationKeys:
    """Keys of ``[evaluation]``."""

    def __init__(
        self,
        every: Annotated[int, Key("evaluate every k events", ge=1)] = 1_000,
        explain: Annotated[
            bool,
            Key(
                "at the end of the run, explain the final model (Integrated Gradients and "
                "saliency, captum) on clean and triggered held-out inputs: a torch net on "
                "square images under a trigger attack; skipped otherwise"
            ),
        ] = False,
        explain_inputs: Annotated[
            int, Key("held-out inputs explained, clean and the same ones triggered", ge=1, le=100_000)
        ] = 200,
        twin: Annotated[
            bool,
            Key(
                "a clean twin of the model learns the same stream without the poison and "
                "without defenses, so the run reports what the attack did and what a defense "
                "cost (accuracy_drop, disagreement); false halves a net's training"
            ),
        ] = True,
    ):
        self.every = every
        self.explain = explain
        self.explain_inputs = explain_inputs
        self.twin = twin


@dataclass(frozen=True)
class SectionSpec:
    """How one section is read: its kind selectors (key, registry, default) and its own keys."""

    name: str
    selectors: tuple[tuple[str, Registry, str | None], ...] = ()
    own: type | None = None


SPECS = {
    "stream": SectionSpec("stream", (("source", SOURCES, "blobs"),), StreamKeys),
    "model": SectionSpec("model", (("kind", MODELS, "centroid-detector"),), ModelKeys),
    "attack": SectionSpec("attack", (("kind", ATTACKS, "none"), ("channel", CHANNELS, "stream")), AttackKeys),
    "evaluation": SectionSpec("evaluation", (), EvaluationKeys),
}
DEFENSE_SPEC = SectionSpec("defense", (("kind", DEFENSES, None),))


class Section:
    """A validated section: the selected kinds and every key's value, defaults filled in.

    Attribute access reads a value (``section.rate``, ``section.trigger.size``);
    a key the selected kinds do not take is an AttributeError naming them.
    """

    def __init__(self, path: str, kinds: dict[str, Kind], params: dict[str, Param], values: dict[str, Any]):
        self._path, self._kinds, self._params, self._values = path, kinds, params, values

    def __getattr__(self, name: str) -> Any:
        values, kinds = self.__dict__.get("_values", {}), self.__dict__.get("_kinds", {})
        if name in kinds:
            return kinds[name].name
        if name in values:
            return values[name]
        tables = {p.key.table for p in self.__dict__.get("_params", {}).values() if p.key.table}
        if name in tables:
            return SimpleNamespace(**{p.name: values[p.name] for p in self._params.values() if p.key.table == name})
        raise AttributeError(f"{self.__dict__.get('_path', 'section')}.{name}: not a key of this section")

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is a key (or a kind selector) of this section."""
        return name in self._kinds or name in self._params

    def kind_of(self, selector: str = "kind") -> Kind:
        """The registered kind a selector chose."""
        return self._kinds[selector]

    def build(self, selector: str = "kind", **context: Any):
        """The kind a selector chose, built from this section's values and the world's ``context``.

        A key that is itself a kind (``attack.trigger``) is built first, without context.
        """
        values = {k: v.build() if isinstance(v, Section) else v for k, v in self._values.items()}
        return self._kinds[selector].build(values, **context)

    def to_dict(self) -> dict[str, Any]:
        """Selectors and every key (nested tables as tables), unset optional values left out."""
        out: dict[str, Any] = {s: k.name for s, k in self._kinds.items()}
        for name, param in self._params.items():
            value = self._values[name]
            if value is None:
                continue
            value = (
                list(value) if isinstance(value, tuple) else value.to_dict() if isinstance(value, Section) else value
            )
            (out.setdefault(param.key.table, {}) if param.key.table else out)[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Section) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        return f"Section({self._path}: {self.to_dict()!r})"


def build_section(path: str, spec: SectionSpec, table: Any) -> Section:
    """Validate one section's table against the kinds it selects and its own keys."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table, got {table!r}")
    kinds: dict[str, Kind] = {}
    params: dict[str, Param] = {}
    for selector, registry, default in spec.selectors:
        name = table.get(selector, default)
        if name is None:
            raise ConfigError(f"{path}.{selector}: required (one of {', '.join(registry.load_all())})")
        if not isinstance(name, str):
            raise ConfigError(f"{path}.{selector}: expected a string, got {name!r}")
        try:
            kinds[selector] = registry.get(name)
        except UnknownKind as exc:
            raise ConfigError(f"{path}.{selector}: {exc}") from None
        params.update(kinds[selector].keys)
    params.update(schema(spec.own) if spec.own else {})  # the section's own keys, after its kinds'
    by_path = {p.path: p for p in params.values()}
    values = {name: p.default for name, p in params.items()}
    for key, value in _flatten(table, {p.key.table for p in params.values() if p.key.table}):
        if key in kinds:
            continue
        if key not in by_path:
            raise ConfigError(f"{path}.{key}: {_not_a_key(spec, kinds, by_path)}")
        try:
            values[by_path[key].name] = check_value(f"{path}.{key}", by_path[key], value)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name, param in params.items():
        if param.type == "kind":  # a kind of another concept: its own section, validated the same way
            table = {"kind": values[name]} if isinstance(values[name], str) else values[name]
            spec = SectionSpec(param.path, (("kind", param.key.kinds, param.default),))
            values[name] = build_section(f"{path}.{param.path}", spec, table)
    return Section(path, kinds, params, values)


def _flatten(table: dict[str, Any], tables: set[str]):
    for key, value in table.items():
        if key in tables and isinstance(value, dict):
            yield from ((f"{key}.{k}", v) for k, v in value.items())
        else:
            yield key, value


def _not_a_key(spec: SectionSpec, kinds: dict[str, Kind], by_path: dict[str, Param]) -> str:
    chosen = " and ".join(f'{k.concept} kind "{k.name}"' for k in kinds.values()) or f"[{spec.name}]"
    return f"not a key of {chosen} (its keys: {', '.join(by_path) or 'none'})"


@dataclass(frozen=True)
class Scenario:
    seed: int = 0
    name: str = "scenario"
    stream: Section = field(default_factory=lambda: build_section("stream", SPECS["stream"], {}))
    model: Section = field(default_factory=lambda: build_section("model", SPECS["model"], {}))
    attack: Section = field(default_factory=lambda: build_section("attack", SPECS["attack"], {}))
    evaluation: Section = field(default_factory=lambda: build_section("evaluation", SPECS["evaluation"], {}))
    defense: tuple[Section, ...] = ()
    plugins: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scenario:
        """Validate a parsed TOML document and build the scenario."""
        if not isinstance(raw, dict):
            raise ConfigError(f"scenario: expected a table, got {raw!r}")
        allowed = {"seed", "name", "defense", "plugins", *SPECS}
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(sorted(allowed))}")
        seed = raw.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed: expected an integer >= 0, got {seed!r}")
        name = raw.get("name", "scenario")
        if not isinstance(name, str):
            raise ConfigError(f"name: expected a string, got {name!r}")
        plugins = raw.get("plugins", [])
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise ConfigError(f"plugins: expected a list of module names, got {plugins!r}")
        try:
            import_plugins(plugins)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        parts = {s: build_section(s, spec, raw.get(s, {})) for s, spec in SPECS.items()}
        defenses = raw.get("defense", [])
        if not isinstance(defenses, list) or not all(isinstance(d, dict) for d in defenses):
            raise ConfigError(f"defense: expected a list of tables ([[defense]]), got {defenses!r}")
        parts["defense"] = tuple(build_section(f"defense[{i}]", DEFENSE_SPEC, d) for i, d in enumerate(defenses))
        kinds = [d.kind for d in parts["defense"]]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"defense: each kind at most once, got {', '.join(kinds)}")
        scenario = cls(seed=seed, name=name, plugins=tuple(plugins), **parts)
        from poisonsim.combinations import check_combination

        check_combination(scenario)
        return scenario

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = (), seed: int | None = None) -> Scenario:
        """Read a scenario file, apply ``--set`` overrides and an optional seed (a file that sets nothing, with
        no overrides, runs every default: a :class:`ScenarioWarning` says so)."""
        raw = read_toml(Path(path), "scenario")
        if not raw and not overrides:
            warnings.warn(
                ScenarioWarning(f"{path} sets nothing: every section runs its defaults (see poisonsim run --help)"),
                stacklevel=2,
            )
        raw = apply_overrides(raw, overrides)
        if seed is not None:
            raw["seed"] = seed
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Every value, defaults included (unset optional values left out)."""
        out: dict[str, Any] = {"seed": self.seed, "name": self.name}
        if self.plugins:
            out["plugins"] = list(self.plugins)
        out.update({s: getattr(self, s).to_dict() for s in SPECS})
        out["defense"] = [d.to_dict() for d in self.defense]
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def replace(self, overrides: list[str]) -> Scenario:
        """A copy with ``section.key=value`` overrides applied and validated."""
        return Scenario.from_dict(apply_overrides(self.to_dict(), overrides))


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings; values parse as TOML, else as plain strings."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        set_key(raw, key, value)
    return raw


def dotted(key: str) -> str:
    """A key with array indices written as parts: ``defense[0].check`` as ``defense.0.check``."""
    return re.sub(r"\[(\d+)\]", r".\1", key)


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in a parsed scenario, creating tables on the way; a number picks one table of an array
    of tables, as does a kind (``defense.0.check``, ``defense[0].check``: the first ``[[defense]]`` table's
    ``check``; ``defense.strip.check``: the ``strip`` table's).

    >>> raw = {"defense": [{"kind": "strip"}, {"kind": "isolation"}]}
    >>> set_key(raw, "defense.0.check", 100)
    >>> raw["defense"][0]
    {'kind': 'strip', 'check': 100}
    >>> set_key(raw, "defense[1].mode", "drop")
    >>> set_key(raw, "defense.isolation.fraction", 0.1)
    >>> raw["defense"][1]
    {'kind': 'isolation', 'mode': 'drop', 'fraction': 0.1}
    >>> set_key(raw, "defense.2.check", 100)
    Traceback (most recent call last):
    ...
    poisonsim.config.ConfigError: defense.2: expected the index of a [[defense]] table, 0 to 1, or its kind (strip, isolation)
    >>> set_key({}, "defense.strip.check", 100)
    Traceback (most recent call last):
    ...
    poisonsim.config.ConfigError: defense.strip: the scenario has no [[defense]] table; add one: --set "defense=[{kind='strip'}]"
    """
    *parents, leaf = dotted(key).split(".")
    table: Any = raw
    for depth, part in enumerate(parents):
        where = ".".join(parents[: depth + 1])
        if isinstance(table, list):
            table = table[_index(table, part, where)]
        else:  # a missing [[defense]] is an empty array: a kind or an index into it is then refused, by name
            table = table.setdefault(part, [] if depth == 0 and part == "defense" else {})
        if not isinstance(table, (dict, list)):
            raise ConfigError(f"{key}: {part} is not a table")
    if isinstance(table, list):
        table[_index(table, leaf, key)] = value
    else:
        table[leaf] = value


def _index(tables: list, part: str, where: str) -> int:
    """The position ``part`` names in an array (``where``: the dotted key up to it): a number, or the kind of
    one of its tables (a scenario has each defense kind once)."""
    name = where.rpartition(".")[0]
    if not tables:
        example = f"{name}=[{{kind='{part if not part.isdecimal() else '...'}'}}]"
        raise ConfigError(f'{where}: the scenario has no [[{name}]] table; add one: --set "{example}"')
    kinds = [table.get("kind") if isinstance(table, dict) else None for table in tables]
    if part in kinds:
        return kinds.index(part)
    if not part.isdecimal() or int(part) >= len(tables):
        named = ", ".join(str(kind) for kind in kinds if kind is not None)
        raise ConfigError(
            f"{where}: expected the index of a [[{name}]] table, 0 to {len(tables) - 1}"
            + (f", or its kind ({named})" if named else "")
        )
    return int(part)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a table; a missing, unreadable or malformed file is a ConfigError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a {what} file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8 expected)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def describe_options() -> str:
    """The keys every section takes whatever its kind (for ``--help``); kinds' keys: ``poisonsim kinds``."""
    lines = [
        "seed = 0: the run's seed; every random draw follows from it (an integer >= 0; --seed overrides it)",
        'name = "scenario": the run\'s name in tables and metrics (a string)',
    ]
    for section, spec in SPECS.items():
        selectors = ", ".join(f'{s} (default "{d}")' for s, _, d in spec.selectors)
        if selectors:
            lines.append(f"{section}: selects {selectors}")
        lines += [f"{section}.{p.describe()}" for p in (schema(spec.own) if spec.own else {}).values()]
    lines.append("[[defense]]: selects kind (a list of tables, each kind at most once)")
    return "\n".join(lines)
