"""Registries: every kind of every concept is registered once, where it is written.

A kind is a class; its scenario keys are its constructor's keyword
parameters, each declared beside its annotation with a :class:`Key` (the
one-line doc, bounds, choices). Parameters the world supplies (a model's
``n_classes``, ``seed``, ...) are the registry's *context* and are not keys.

>>> from typing import Annotated
>>> things = Registry("thing")
>>> @things.register("box", examples=[{"side": 2}])
... class Box(Estimator):
...     '''A box.'''
...     def __init__(self, side: Annotated[int, Key("edge length", ge=1)] = 1):
...         self.side = side
>>> things.get("box").keys["side"].describe()
'side = 1: edge length (an integer >= 1)'
>>> things.get("boxx")
Traceback (most recent call last):
...
poisonsim.registry.UnknownKind: thing kind "boxx" does not exist (did you mean "box"?) (known: box)

Built-in kinds live in the modules a registry is given; they are imported on
first need (the torch-based ones only when a scenario asks for one).
Third-party kinds register the same way from any module, found through the
entry-point group ``poisonsim.<concept>s`` or named in a scenario's
``plugins = ["dotted.module"]``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import typing
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from poisonsim.base import Estimator
from poisonsim.capabilities import check_tags

EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "floats": "a list of numbers",
    "kind": "a kind",
}


class UnknownKind(LookupError):
    """A kind that no registry holds (the message lists the known ones)."""


@dataclass(frozen=True)
class Key:
    """What a constructor parameter accepts as a scenario key.

    ``table`` puts the key in a nested table; ``kinds`` makes the key a kind
    of another concept, written as its name or as a table of its own
    (``[attack.trigger] kind = "patch"``, ``size = 2``); ``choices`` then
    restricts the kinds. Numbers must be finite unless ``finite=False``.
    """

    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    table: str | None = None
    finite: bool = True
    kinds: Registry | None = None


@dataclass(frozen=True)
class Param:
    """One scenario key of a kind: its name, type, default and :class:`Key`."""

    name: str
    type: str  # "int", "float", "str", "bool", "floats"
    default: Any
    key: Key
    optional: bool = False  # None is allowed (and means "not set")

    @property
    def path(self) -> str:
        """The key as written in the section (``trigger.size`` for a nested table)."""
        return f"{self.key.table}.{self.name}" if self.key.table else self.name

    def describe(self) -> str:
        """``name = default: doc (allowed)``, one line, the default as a scenario file writes it."""
        return f"{self.path} = {toml_literal(self.default)}: {self.key.doc} ({self.expected()})"

    def expected(self) -> str:
        """What is allowed, in words."""
        if self.type == "kind":
            choices = self.key.choices or list(self.key.kinds.load_all())
            return f"a {self.key.kinds.concept} kind ({', '.join(choices)}) or a table of its keys"
        if self.key.choices:
            return "one of " + ", ".join(map(str, self.key.choices))
        noun = EXPECTED[self.type]
        bounds = [
            f"{op} {v:g}"
            for op, v in ((">=", self.key.ge), (">", self.key.gt), ("<=", self.key.le), ("<", self.key.lt))
            if v is not None
        ]
        return " ".join([noun, " and ".join(bounds)]).strip() + (", or unset" if self.optional else "")


def toml_literal(value) -> str:
    """``value`` as a scenario file writes it (``unset`` for no value).

    >>> [toml_literal(v) for v in (None, True, "blobs", 0.5, (1, 2))]
    ['unset', 'true', '"blobs"', '0.5', '[1, 2]']
    """
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return str(value)


@dataclass
class Kind:
    """A registered kind: its class, keys, requirements and check examples."""

    concept: str
    name: str
    factory: type
    keys: dict[str, Param]
    requires: frozenset[str] = frozenset()
    examples: list[dict] = field(default_factory=list)
    fixed: dict[str, Any] = field(default_factory=dict)  # constructor arguments the kind's name implies

    @property
    def doc(self) -> str:
        """The first line of the class docstring."""
        own = self.factory.__doc__  # the class's own: a base class's docstring does not document a kind
        return inspect.cleandoc(own).splitlines()[0] if own and own.strip() else ""

    def as_table(self, values: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments laid out as a scenario section writes them (nested tables nested)."""
        table: dict[str, Any] = {}
        for name, value in values.items():
            nested = self.keys[name].key.table if name in self.keys else None
            (table.setdefault(nested, {}) if nested else table)[name] = value
        return table

    def build(self, values: dict[str, Any], **context: Any):
        """An instance from validated key values and the world's context."""
        accepted = inspect.signature(self.factory.__init__).parameters
        context = {name: value for name, value in context.items() if name in accepted}
        keys = {name: self._nested(name, values[name]) for name in self.keys if name in values}
        obj = self.factory(**keys, **self.fixed, **context)
        obj.kind = self.name
        return obj

    def _nested(self, name: str, value: Any) -> Any:
        """A key that is a kind of another concept, given as its name or table, built."""
        param = self.keys[name]
        if param.type != "kind" or not isinstance(value, (str, dict)):
            return value
        return param.key.kinds.build_spec(value, param.default)


class Registry:
    """The kinds of one concept (``model``, ``attack``, ...).

    ``modules``: where the built-in kinds are written, imported on first
    need; ``context``: constructor parameters the world supplies.
    """

    def __init__(self, concept: str, modules: tuple[str, ...] = (), context: tuple[str, ...] = ()):
        self.concept = concept
        self.context = frozenset(context)
        self._kinds: dict[str, Kind] = {}
        self._unloaded = list(modules)
        self._failed: dict[str, str] = {}
        self._entry_points_loaded = False

    @property
    def group(self) -> str:
        """The entry-point group third-party kinds of this concept register under."""
        return f"poisonsim.{self.concept}s"

    def register(
        self,
        name: str,
        *,
        requires: tuple[str, ...] = (),
        examples: list[dict] | None = None,
        fixed: dict[str, Any] | None = None,
    ):
        """Class decorator: register ``name``.

        ``requires``: capabilities the kind needs from the model or source
        (checked once, when a scenario is validated); ``examples``: small key
        sets the check suite builds; ``fixed``: constructor arguments the
        name implies (one class, several kinds).
        """

        def decorate(cls: type) -> type:
            where = f"{self.concept} kind {name!r}"
            check_tags(requires, f"{where}: requires")
            if not issubclass(cls, Estimator):
                raise TypeError(
                    f"{where}: {cls.__name__} must subclass its concept's base (poisonsim.Attack, "
                    "poisonsim.Defense, poisonsim.Model, ...) or poisonsim.Estimator"
                )
            check_tags(cls.offers, f"{where}: offers")
            if name in self._kinds and self._kinds[name].factory is not cls:
                raise ValueError(
                    f"{self.concept} kind {name!r} is registered twice "
                    f"({self._kinds[name].factory.__module__} and {cls.__module__})"
                )
            keys = schema(cls, self.context | set(fixed or {}))
            if "__init__" in vars(cls) and vars(cls)["__init__"] not in _CHECKED_INITS:
                cls.__init__ = _checking_keys(vars(cls)["__init__"], keys)
            self._kinds[name] = Kind(
                self.concept, name, cls, keys, frozenset(requires), list(examples or []), dict(fixed or {})
            )
            return cls

        return decorate

    def get(self, name: str) -> Kind:
        """The kind ``name``, importing built-in modules and plug-ins until it is found."""
        while name not in self._kinds and self._unloaded:
            self._import(self._unloaded.pop(0))
        if name not in self._kinds:
            self._load_entry_points()
        if name not in self._kinds:
            failed = "".join(f"; {m} not loaded ({why})" for m, why in self._failed.items())
            near = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f' (did you mean "{near[0]}"?)' if near else ""
            raise UnknownKind(
                f'{self.concept} kind "{name}" does not exist{hint} (known: {", ".join(self.names())}){failed}'
            )
        return self._kinds[name]

    def build_spec(self, spec: str | dict[str, Any], default: str) -> Any:
        """A kind built from its name, or from a table of its keys whose ``kind`` defaults to ``default``."""
        table = {"kind": spec} if isinstance(spec, str) else {"kind": default, **spec}
        return self.get(table.pop("kind")).build(table)

    def offering(self, capability: str) -> list[str]:
        """Every kind whose class offers ``capability`` (built-in and plug-in kinds), sorted."""
        return [name for name, kind in self.load_all().items() if capability in kind.factory.offers]

    def names(self) -> list[str]:
        """Every kind registered so far, sorted (call :meth:`load_all` first for all of them)."""
        return sorted(self._kinds)

    def load_all(self) -> dict[str, Kind]:
        """Every kind: built-in modules and entry points imported."""
        while self._unloaded:
            self._import(self._unloaded.pop(0))
        self._load_entry_points()
        return dict(sorted(self._kinds.items()))

    def _import(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except ImportError as exc:  # e.g. the neural kinds without torch installed
            self._failed[module] = str(exc)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for point in metadata.entry_points(group=self.group):
            point.load()  # the module registers its kinds on import


_CHECKED_INITS: set = set()  # constructors that check their keys (a class registered twice is wrapped once)


def _checking_keys(init, keys: dict[str, Param]):
    """``init`` that first checks the keys it is given, with the same rule (and the same message) as a
    scenario file: one validator, whether a kind is built from a scenario or by hand.

    >>> from poisonsim.attacks.label_flip import LabelFlip
    >>> LabelFlip(flip="sideways")
    Traceback (most recent call last):
    ...
    ValueError: flip: expected one of cyclic, random, farthest; got 'sideways'
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        for name, value in signature.bind(self, *args, **kwargs).arguments.items():
            param = keys.get(name)
            if param is None or param.type == "kind" and not isinstance(value, (str, dict)):
                continue  # not a key, or a kind given built
            plain = value.tolist() if isinstance(value, (np.generic, np.ndarray)) else value  # numpy, as plain values
            check_value(name, param, plain)
        init(self, *args, **kwargs)

    _CHECKED_INITS.add(checked)
    return checked


def either(names: list[str]) -> str:
    """Kind names as an error message offers them.

    >>> either(["mlp", "cnn", "lenet"]), either(["stream"]), either([])
    ('"mlp", "cnn" or "lenet"', '"stream"', 'none registered')
    """
    quoted = [f'"{name}"' for name in names]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted) or "none registered"


def schema(cls: type, context: frozenset[str] | set[str] = frozenset()) -> dict[str, Param]:
    """The scenario keys of ``cls``: its constructor's parameters, less the context ones."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    params = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or name in context or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(name)
        annotated = typing.get_origin(hint) is typing.Annotated
        extras = [m for m in typing.get_args(hint)[1:] if isinstance(m, Key)] if annotated else []
        if not extras:
            raise TypeError(f"{cls.__name__}.__init__: parameter {name!r} needs an Annotated[..., Key(...)]")
        if p.default is p.empty:
            raise TypeError(f"{cls.__name__}.__init__: parameter {name!r} needs a default")
        base, optional = ("kind", False) if extras[0].kinds else _base_type(typing.get_args(hint)[0])
        params[name] = Param(name, base, p.default, extras[0], optional)
    return params


def _base_type(hint: Any) -> tuple[str, bool]:
    args = typing.get_args(hint)
    optional = type(None) in args
    inner = [a for a in args if a is not type(None)] if optional else [hint]
    base = inner[0]
    if typing.get_origin(base) is tuple:
        return "floats", optional
    return base.__name__, optional


def check_value(path: str, param: Param, value: Any) -> Any:
    """``value`` coerced to the key's type and checked against its bounds; a ValueError names ``path``.

    >>> p = Param("rate", "float", 0.0, Key("rho", ge=0, le=1))
    >>> check_value("attack.rate", p, 1)
    1.0
    >>> check_value("attack.rate", p, float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: attack.rate: expected a finite number, got nan
    """
    if value is None and param.optional:
        return None
    if param.type == "kind":
        return _check_kind(path, param, value)
    value = _coerce(path, param.type, value)
    key = param.key
    if param.type in ("int", "float", "floats"):
        for v in value if param.type == "floats" else (value,):
            if key.finite and not math.isfinite(v):
                raise ValueError(f"{path}: expected a finite number, got {v!r}")
    if key.choices is not None and value not in key.choices:
        raise ValueError(f"{path}: expected one of {', '.join(map(str, key.choices))}; got {value!r}")
    if param.type in ("int", "float"):
        noun = EXPECTED[param.type]
        for op, bound, ok in (
            (">=", key.ge, lambda b: value >= b),
            (">", key.gt, lambda b: value > b),
            ("<=", key.le, lambda b: value <= b),
            ("<", key.lt, lambda b: value < b),
        ):
            if bound is not None and not ok(bound):
                raise ValueError(f"{path}: expected {noun} {op} {bound:g}, got {value!r}")
    return value


def _check_kind(path: str, param: Param, value: Any) -> Any:
    """A kind key: a kind name, or a table whose ``kind`` (default: the key's default) names one."""
    if not isinstance(value, (str, dict)):
        raise ValueError(f"{path}: expected {param.expected()}, got {value!r}")
    name = value if isinstance(value, str) else value.get("kind", param.default)
    registry = param.key.kinds
    if not isinstance(name, str):
        raise ValueError(f"{path}.kind: expected a string, got {name!r}")
    if param.key.choices is not None and name not in param.key.choices:
        raise ValueError(
            f"{path}: expected a {registry.concept} kind among {', '.join(param.key.choices)}; got {name!r}"
        )
    try:
        registry.get(name)
    except UnknownKind as exc:
        raise ValueError(f"{path}: {exc}") from None
    return value


def _coerce(path: str, kind: str, value: Any) -> Any:
    """``value`` as the key's type, or a ValueError saying what was expected (and how to write it).

    >>> _coerce("stream.n_events", "int", 1e12)
    Traceback (most recent call last):
    ...
    ValueError: stream.n_events: expected an integer, got 1000000000000.0 (a float: write 1_000_000_000_000)
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        raise ValueError(f"{path}: expected an integer, got {value!r} (a float: write {int(value):_})")
    if kind == "int" and number and isinstance(value, int):
        return value
    if kind == "float" and number:
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "floats" and isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
    raise ValueError(f"{path}: expected {EXPECTED[kind]}, got {value!r}")


def import_plugins(modules: list[str] | tuple[str, ...]) -> None:
    """Import a scenario's ``plugins``: modules that register kinds (a clear error when one is missing)."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"plugins: cannot import {module!r} ({exc})") from None


SOURCES = Registry("source", ("poisonsim.sources",))
MODELS = Registry(
    "model",
    ("poisonsim.models.centroid", "poisonsim.models.neural"),
    context=("n_classes", "n_features", "image_side", "seed"),
)
ATTACKS = Registry(
    "attack",
    tuple(
        f"poisonsim.attacks.{m}"
        for m in (
            "base",
            "label_flip",
            "targeted",
            "centroid_shift",
            "backdoor",
            "gradient_alignment",
            "supply_chain",
            "boiling_frog",
            "provoke",
            "all_to_all",
            "accumulative",
        )
    ),
)
TRIGGERS = Registry("trigger", ("poisonsim.attacks.triggers",))
CHANNELS = Registry("channel", ("poisonsim.attacks.schedule",))
DEFENSES = Registry(
    "defense",
    tuple(
        f"poisonsim.defenses.{m}"
        for m in ("window", "drift", "strip", "isolation", "pruning", "analysis", "neural_cleanse")
    ),
)
REGISTRIES = {r.concept: r for r in (SOURCES, MODELS, ATTACKS, TRIGGERS, CHANNELS, DEFENSES)}
