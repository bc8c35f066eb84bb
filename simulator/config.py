"""Scenario configuration: frozen dataclasses, TOML in, clear errors out.

A scenario is one TOML file with ``seed`` and the sections ``[stream]``,
``[model]``, ``[attack]`` and ``[evaluation]``. Any key can be overridden
with ``--set section.key=value``. An unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` naming the key, what was given
and what is allowed, before anything runs.

>>> s = Scenario.from_dict({"seed": 3, "attack": {"kind": "label-flip", "rate": 0.2}})
>>> s.attack.rate, s.model.kind
(0.2, 'centroid-detector')
>>> Scenario.from_dict({"model": {"window_size": -3}})
Traceback (most recent call last):
...
simulator.config.ConfigError: model.window_size: expected an integer >= 1, got -3
>>> apply_overrides({}, ["attack.rate=0.3", "model.window_policy=random-out"])
{'attack': {'rate': 0.3}, 'model': {'window_policy': 'random-out'}}
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import tomli_w

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
WINDOW_POLICIES = ("fifo", "average-out", "random-out", "nearest-out", "infinite")
CENTROID_KINDS = ("centroid-detector", "centroid-classifier")
NEURAL_KINDS = ("mlp", "cnn")
MODEL_KINDS = CENTROID_KINDS + NEURAL_KINDS
SUPPLY_CHAIN_ATTACKS = ("malicious-training", "malicious-architecture")
ATTACK_KINDS = (
    "none", "label-flip", "targeted", "centroid-shift",
    "badnets", "blended", "gradient-alignment", *SUPPLY_CHAIN_ATTACKS,
)  # fmt: skip
CHANNELS = ("stream", "front-running", "split-view")
BUNDLED_RIVER_SETS = ("Bananas", "ImageSegments", "Phishing", "Shuttle")


class ConfigError(ValueError):
    """A scenario value was refused; the message names the key."""


def _opt(default: Any, doc: str, **check: Any) -> Any:
    """A dataclass field with its documentation and its allowed values."""
    return field(default=default, metadata={"doc": doc, **check})


@dataclass(frozen=True)
class StreamConfig:
    source: str = _opt("blobs", 'benign source: "blobs", "digits" or "river:<bundled set>"')
    n_events: int = _opt(20_000, "events in the merged stream (benign + attacker)", ge=1)
    n_features: int = _opt(2, "blobs: dimensions", ge=1, le=4096)
    n_classes: int = _opt(1, "blobs: number of classes", ge=1, le=1000)
    cluster_std: float = _opt(1.0, "blobs: standard deviation of each class", gt=0)
    separation: float = _opt(8.0, "blobs: spread of the class means (a box of this half-width)", ge=0)
    n_test: int = _opt(2_000, "held-out clean events for the evaluator", ge=1)
    augment: bool = _opt(True, "digits: vary ink intensity and add light noise to drawn images")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _opt("centroid-detector", "model family", choices=MODEL_KINDS)
    window_size: int = _opt(100, "n: points per window (per class for the classifier)", ge=1, le=1_000_000)
    window_policy: str = _opt("average-out", "which point leaves a full window", choices=WINDOW_POLICIES)
    radius: float | None = _opt(None, "detector: alarm radius r (else calibrated)", gt=0)
    radius_quantile: float = _opt(0.95, "detector: r = this quantile of warm-up distances", gt=0, le=1)
    learn: str = _opt("accepted", "detector: learn accepted points only, or all", choices=("accepted", "all"))
    warmup: int | None = _opt(None, "clean events that fill the window first (default window_size)", ge=1)
    device: str = _opt("auto", "mlp/cnn: torch device (auto takes CUDA when present)", choices=("auto", "cpu", "cuda"))
    batch_size: int = _opt(32, "mlp/cnn: stream events per training step", ge=1, le=65536)
    lr: float = _opt(0.001, "mlp/cnn: learning rate", gt=0)
    optimizer: str = _opt("adam", "mlp/cnn: optimizer", choices=("adam", "sgd"))
    momentum: float = _opt(0.9, "mlp/cnn: sgd momentum", ge=0, lt=1)
    hidden: int = _opt(64, "mlp/cnn: width of the last hidden layer", ge=1, le=65536)
    replay: int = _opt(0, "mlp/cnn: replay buffer size (0: none)", ge=0)
    replay_batch: int = _opt(32, "mlp/cnn: replayed samples added to each training step", ge=0)
    pretrain_events: int = _opt(2_000, "mlp/cnn: clean events learned before the stream starts", ge=0)
    load_supplied: str = _opt(
        "weights", "a supplied model: load its weights into our architecture, or run its module",
        choices=("weights", "module"),
    )  # fmt: skip
    # deployment: snapshots served in place of the live model (front-running)
    snapshot_every: int = _opt(0, "events between published snapshots K (0: none, serving = live model)", ge=0)
    snapshot_jitter: float = _opt(0.0, "each snapshot interval drawn uniformly in [K(1-j), K(1+j)]", ge=0, lt=1)
    quarantine: int = _opt(0, "events a snapshot waits before deployment, open to a veto (0: deploy at once)", ge=0)
    veto_flags: int = _opt(0, "quarantine: veto a snapshot when defenses flagged more events than this "
                              "since the previous snapshot", ge=0)  # fmt: skip
    pin_content: bool = _opt(False, "split-view: refuse content whose hash differs from the one seen at vetting")


@dataclass(frozen=True)
class TriggerConfig:
    size: int = _opt(2, "badnets: side of the square patch, in pixels", ge=1)
    position: str = _opt("bottom-right", "badnets: patch corner", choices=CORNERS)
    value: float = _opt(1.0, "badnets: patch intensity", ge=0, le=1)
    pattern: str = _opt("checkerboard", "blended: pattern", choices=("checkerboard", "noise", "image"))
    alpha: float = _opt(0.2, "blended: x' = (1 - alpha) x + alpha pattern", gt=0, le=1)


@dataclass(frozen=True)
class AttackConfig:
    kind: str = _opt("none", "attack family", choices=ATTACK_KINDS)
    rate: float = _opt(0.0, "rho: share of attacker events in the merged stream", ge=0, le=1)
    budget: int | None = _opt(None, "most attacker events (default: no limit)", ge=0)
    start: int = _opt(0, "stream index where the attacker begins", ge=0)
    schedule: str = _opt("constant", "constant share, or bursts", choices=("constant", "bursts"))
    burst_length: int = _opt(100, "bursts: consecutive attacker events per burst", ge=1)
    target_class: int = _opt(0, "targeted / label-flip: class c", ge=0)
    target_point: tuple[float, ...] | None = _opt(None, "attack point A (centroid-shift) or X' (targeted)")
    target_count: int = _opt(10, "targeted: X' drawn from held-out events of other classes", ge=1)
    target_distance: float = _opt(3.0, "centroid-shift: A this many radii from c0 when not given", gt=0)
    spread: float = _opt(0.05, "targeted: noise around X', as a share of the data's scale", ge=0)
    flip: str = _opt("farthest", "label-flip: new label rule", choices=("cyclic", "random", "farthest"))
    trigger: TriggerConfig = field(default_factory=TriggerConfig, metadata={"doc": "backdoor trigger"})
    poisons: int = _opt(40, "gradient-alignment: base samples of class c perturbed (cycled in the stream)", ge=1)
    eps: float = _opt(0.1, "gradient-alignment: L-inf bound on each perturbation (pixels in [0, 1])", ge=0, le=1)
    steps: int = _opt(100, "gradient-alignment: optimisation steps per restart", ge=1)
    restarts: int = _opt(2, "gradient-alignment: random restarts (the best alignment is kept)", ge=1)
    poison_weight: float = _opt(0.2, "malicious-training: lambda of the adversarial loss", ge=0, le=1)
    supplier_events: int = _opt(5_000, "supply chain / surrogate: attacker's own clean training events", ge=1)
    channel: str = _opt("stream", "how poison gets in: mixed into the stream, bursts before snapshots, "
                                  "or content swapped after vetting", choices=CHANNELS)  # fmt: skip
    burst_size: int = _opt(50, "front-running: attacker events in the burst before each snapshot", ge=1)
    lead: int = _opt(0, "front-running: events between the end of a burst and the snapshot", ge=0)
    controlled_share: float = _opt(0.0, "split-view: share of references the attacker controls", ge=0, le=1)


DEFENSE_KINDS = (
    "outlier-rejection", "robust-centroid", "source-quota", "fpr-reset", "drift-reset",
    "strip", "isolation", "fine-pruning", "activation-analysis",
)  # fmt: skip


@dataclass(frozen=True)
class DefenseConfig:
    """One ``[[defense]]`` table; each kind reads the keys that concern it."""

    kind: str = _opt("outlier-rejection", "defense family", choices=DEFENSE_KINDS)
    every: int = _opt(500, "events between a defense's checks (fpr-reset, drift-reset, isolation, pruning)", ge=1)
    # window defenses
    radius_factor: float = _opt(1.0, "outlier-rejection: learn only points within this many radii", gt=0)
    estimator: str = _opt("median", "robust-centroid: centroid estimate", choices=("median", "trimmed-mean"))
    trim: float = _opt(0.1, "robust-centroid: share cut from each end for the trimmed mean", ge=0, lt=0.5)
    quota: float = _opt(0.2, "source-quota: most share of a window one source may hold", gt=0, le=1)
    alpha: float = _opt(0.1, "fpr-reset: false alarm budget on trusted clean traffic", gt=0, lt=1)
    detector: str = _opt("adwin", "drift-reset, fine-pruning on drift: river drift detector",
                         choices=("adwin", "page-hinkley", "kswin"))  # fmt: skip
    signal: str = _opt("distance", "drift-reset, fine-pruning on drift: watched signal", choices=("distance", "confidence"))
    action: str = _opt("reset", "drift-reset: on alarm", choices=("reset", "freeze"))
    # runtime detection
    overlays: int = _opt(16, "strip: clean inputs each input is superimposed on (N)", ge=1, le=1024)
    superimpose: str = _opt("blend", "strip: how inputs are superimposed", choices=("blend", "additive"))
    frr: float = _opt(0.01, "strip: false rejection rate the threshold is calibrated for", gt=0, lt=1)
    mode: str = _opt("flag", "strip: flag inputs only, or drop them before the model", choices=("flag", "drop"))
    # training-time isolation and unlearning
    rule: str = _opt(
        "mixture", "isolation: loss cutoff rule",
        choices=("fraction", "threshold", "percentile", "mixture"),
    )  # fmt: skip
    score: str = _opt(
        "gain", "isolation: loss (ABL: the net's loss after its step) or gain (a clean reference's loss minus it)",
        choices=("loss", "gain"),
    )  # fmt: skip
    fraction: float = _opt(0.05, "isolation: share isolated by the fraction rule", gt=0, lt=1)
    gamma: float = _opt(0.5, "isolation: threshold gamma (score loss: below it, with flooding as in ABL; gain: above)",
                        gt=0)  # fmt: skip
    percentile: float = _opt(5.0, "isolation: share (%) of unseen clean samples scoring above the cutoff", gt=0, lt=100)
    unlearn: bool = _opt(True, "isolation: gradient ascent on isolated samples, fine-tune on the rest")
    unlearn_weight: float = _opt(1.0, "isolation: lambda of the unlearning (ascent) loss", gt=0)
    # model analysis and repair
    margin: float = _opt(0.03, "fine-pruning: clean accuracy drop allowed while pruning", gt=0, lt=1)
    when: str = _opt("once", "fine-pruning: run once at the end of the attack window, or on drift alarms",
                     choices=("once", "drift"))  # fmt: skip
    at: int | None = _opt(None, "fine-pruning / activation-analysis: event index to run at (default: the end)", ge=0)


@dataclass(frozen=True)
class EvaluationConfig:
    every: int = _opt(1_000, "evaluate every k events", ge=1)


SECTIONS: dict[str, type] = {
    "stream": StreamConfig,
    "model": ModelConfig,
    "attack": AttackConfig,
    "evaluation": EvaluationConfig,
}


@dataclass(frozen=True)
class Scenario:
    seed: int = 0
    name: str = "scenario"
    stream: StreamConfig = field(default_factory=StreamConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    defense: tuple[DefenseConfig, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Scenario:
        """Validate a parsed TOML document and build the scenario."""
        if not isinstance(raw, dict):
            raise ConfigError(f"scenario: expected a table, got {raw!r}")
        allowed = {"seed", "name", "defense", *SECTIONS}
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(sorted(allowed))}")
        seed = _coerce("seed", raw.get("seed", 0), "int")
        if seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {seed}")
        name = _coerce("name", raw.get("name", "scenario"), "str")
        parts = {}
        for section, klass in SECTIONS.items():
            table = raw.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: expected a table, got {table!r}")
            parts[section] = _build_section(section, klass, table)
        defenses = raw.get("defense", [])
        if not isinstance(defenses, list) or not all(isinstance(d, dict) for d in defenses):
            raise ConfigError(f"defense: expected a list of tables ([[defense]]), got {defenses!r}")
        parts["defense"] = tuple(_build_section(f"defense[{i}]", DefenseConfig, d) for i, d in enumerate(defenses))
        kinds = [d.kind for d in parts["defense"]]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"defense: each kind at most once, got {', '.join(kinds)}")
        scenario = cls(seed=seed, name=name, **parts)
        _check_combination(scenario)
        return scenario

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] = (), seed: int | None = None) -> Scenario:
        """Read a scenario file, apply ``--set`` overrides and an optional seed."""
        raw = apply_overrides(read_toml(Path(path), "scenario"), overrides)
        if seed is not None:
            raw["seed"] = seed
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Every value, defaults included (unset optional values left out)."""
        return _drop_none(dataclasses.asdict(self))

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


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in a parsed scenario, creating tables on the way."""
    *parents, leaf = key.split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: {part} is not a table")
    table[leaf] = value


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML file as a table; a missing or malformed file is a ConfigError naming it."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def describe_options() -> str:
    """One line per scenario key: name, default and meaning (for ``--help``)."""
    lines = []

    def walk(prefix: str, klass: type) -> None:
        for f in dataclasses.fields(klass):
            if f.default is dataclasses.MISSING:  # a nested table
                walk(f"{prefix}.{f.name}", f.default_factory)
                continue
            meta = f.metadata
            allowed = f" ({' | '.join(meta['choices'])})" if "choices" in meta else ""
            lines.append(f"{prefix}.{f.name} = {f.default!r}: {meta['doc']}{allowed}")

    for section, klass in SECTIONS.items():
        walk(section, klass)
    walk("[[defense]]", DefenseConfig)
    return "\n".join(lines)


def _build_section(section: str, klass: type, table: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(klass)}
    hints = typing.get_type_hints(klass)
    values = {}
    for key, value in table.items():
        path = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(f"{path}: unknown key; allowed: {', '.join(fields)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table, got {value!r}")
            values[key] = _build_section(path, hints[key], value)
            continue
        value = _coerce(path, value, _type_name(hints[key]))
        _check_value(path, value, fields[key].metadata)
        values[key] = value
    return klass(**values)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if typing.get_origin(base) is tuple:
        return "floats"
    return base.__name__


def _coerce(path: str, value: Any, kind: str) -> Any:
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "floats" and isinstance(value, (list, tuple)):
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
    expected = {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "floats": "a list of numbers",
    }[kind]
    raise ConfigError(f"{path}: expected {expected}, got {value!r}")


def _check_value(path: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{path}: expected one of {', '.join(meta['choices'])}; got {value!r}")
    noun = "an integer" if isinstance(value, int) else "a number"
    if "ge" in meta and not value >= meta["ge"]:
        raise ConfigError(f"{path}: expected {noun} >= {meta['ge']}, got {value!r}")
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(f"{path}: expected {noun} > {meta['gt']}, got {value!r}")
    if "le" in meta and not value <= meta["le"]:
        raise ConfigError(f"{path}: expected {noun} <= {meta['le']}, got {value!r}")
    if "lt" in meta and not value < meta["lt"]:
        raise ConfigError(f"{path}: expected {noun} < {meta['lt']}, got {value!r}")


def _check_combination(s: Scenario) -> None:
    """Rules that involve more than one key."""
    source = s.stream.source
    if source not in ("blobs", "digits") and not source.startswith("river:"):
        raise ConfigError(f'stream.source: expected "blobs", "digits" or "river:<name>", got {source!r}')
    if source.startswith("river:") and source[6:] not in BUNDLED_RIVER_SETS:
        raise ConfigError(
            f"stream.source: {source!r} is not a river data set bundled with the package; "
            f"bundled: {', '.join('river:' + n for n in BUNDLED_RIVER_SETS)}"
        )
    if s.attack.kind == "centroid-shift" and s.model.kind != "centroid-detector":
        raise ConfigError(
            f"attack.kind: centroid-shift moves a detector's centroid; it needs "
            f'model.kind = "centroid-detector", got {s.model.kind!r}'
        )
    neural = s.model.kind in NEURAL_KINDS
    if s.model.kind == "cnn" and source != "digits":
        raise ConfigError(f'model.kind: "cnn" needs image inputs (stream.source = "digits"), got {source!r}')
    if s.attack.kind in ("gradient-alignment", *SUPPLY_CHAIN_ATTACKS) and not neural:
        raise ConfigError(
            f"attack.kind: {s.attack.kind} attacks a neural net; it needs model.kind = "
            f'"mlp" or "cnn", got {s.model.kind!r}'
        )
    if s.attack.kind in SUPPLY_CHAIN_ATTACKS and s.attack.rate > 0:
        raise ConfigError(
            f"attack.rate: {s.attack.kind} supplies the starting model and leaves the stream clean, "
            f"so the rate must be 0, got {s.attack.rate}"
        )
    if s.attack.kind == "none" and s.attack.rate > 0:
        raise ConfigError(f'attack.rate: attack.kind is "none", so the rate must be 0, got {s.attack.rate}')
    _check_channel(s)


def _check_channel(s: Scenario) -> None:
    """Front-running and split-view: the keys of one channel need the others."""
    a, m = s.attack, s.model
    if a.channel != "stream" and a.kind in SUPPLY_CHAIN_ATTACKS:
        raise ConfigError(f"attack.channel: {a.kind} supplies the model and uses no stream channel; "
                          f'attack.channel must be "stream", got {a.channel!r}')  # fmt: skip
    if a.channel != "stream" and a.rate > 0:
        raise ConfigError(f"attack.rate: the {a.channel} channel sets the attacker's turns "
                          f"({'attack.burst_size, attack.lead' if a.channel == 'front-running' else 'attack.controlled_share'}"
                          f"), so the rate must be 0, got {a.rate}")  # fmt: skip
    if a.channel != "split-view" and a.controlled_share > 0:
        raise ConfigError(f'attack.controlled_share: only the split-view channel uses it; attack.channel is {a.channel!r}')
    if a.channel == "split-view" and a.kind == "none":
        raise ConfigError('attack.channel: split-view swaps in a payload; set attack.kind (e.g. "targeted")')
    if m.pin_content and a.channel != "split-view":
        raise ConfigError(f'model.pin_content: pins the content of split-view references; needs attack.channel = '
                          f'"split-view", got {a.channel!r}')  # fmt: skip
    if a.channel == "front-running":
        if a.kind == "none":
            raise ConfigError('attack.channel: front-running times bursts of a payload; set attack.kind (e.g. "targeted")')
        if m.snapshot_every == 0:
            raise ConfigError("attack.channel: front-running needs snapshots to run ahead of; set model.snapshot_every")
        if a.burst_size + a.lead > m.snapshot_every:
            raise ConfigError(f"attack.burst_size: burst ({a.burst_size}) plus lead ({a.lead}) must fit in one "
                              f"snapshot interval (model.snapshot_every = {m.snapshot_every})")  # fmt: skip
    if m.snapshot_every == 0:
        for key in ("snapshot_jitter", "quarantine", "veto_flags"):
            if getattr(m, key):
                raise ConfigError(f"model.{key}: applies to snapshots; set model.snapshot_every > 0 first")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (tuple, list)):
        return [_drop_none(v) for v in value]
    return value
