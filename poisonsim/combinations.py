"""Rules that involve more than one section, checked once when a scenario is validated.

Capabilities come from the kinds themselves: a source and a model state what
they ``offers`` (class attributes), an attack, defense or model states what
it ``requires`` when it is registered; each requirement must be offered by
the scenario's source or model.

>>> from poisonsim.config import Scenario
>>> Scenario.from_dict({"attack": {"kind": "centroid-shift"}, "model": {"kind": "centroid-classifier"}})
Traceback (most recent call last):
...
poisonsim.config.ConfigError: attack.kind: "centroid-shift" needs a model or source that offers centroid-state; model kind "centroid-classifier" offers classes, window; source kind "blobs" offers nothing
"""

from __future__ import annotations

from poisonsim.config import ConfigError, Scenario, Section


def offers(section: Section, selector: str = "kind") -> frozenset[str]:
    """What the kind a section selected offers to the others."""
    return frozenset(getattr(section.kind_of(selector).factory, "offers", frozenset()))


def check_combination(s: Scenario) -> None:
    """Requirements against capabilities, then the rules of the attack's channel."""
    source, model = offers(s.stream, "source"), offers(s.model)
    _require("model.kind", s.model.kind_of(), source, s, model_included=False)
    _require("attack.kind", s.attack.kind_of(), source | model, s)
    for i, defense in enumerate(s.defense):
        _require(f"defense[{i}].kind", defense.kind_of(), source | model, s)
    a = s.attack
    supplies = getattr(a.kind_of().factory, "supplies_model", False)
    if supplies and a.channel != "stream":
        raise ConfigError(f"attack.channel: {a.kind} supplies the model and uses no stream channel; "
                          f'attack.channel must be "stream", got {a.channel!r}')  # fmt: skip
    if supplies and a.rate > 0:
        raise ConfigError(f"attack.rate: {a.kind} supplies the starting model and leaves the stream clean, "
                          f"so the rate must be 0, got {a.rate}")  # fmt: skip
    if a.kind == "none" and a.channel == "stream" and a.rate > 0:
        raise ConfigError(f'attack.rate: attack.kind is "none", so the rate must be 0, got {a.rate}')
    _check_channel(s)


def _require(path: str, kind, offered: frozenset[str], s: Scenario, model_included: bool = True) -> None:
    missing = sorted(kind.requires - offered)
    if not missing:
        return
    where = "a model or source" if model_included else "a source"
    parts = ([f'model kind "{s.model.kind}" offers {", ".join(sorted(offers(s.model))) or "nothing"}']
             if model_included else [])  # fmt: skip
    parts.append(f'source kind "{s.stream.source}" offers {", ".join(sorted(offers(s.stream, "source"))) or "nothing"}')
    raise ConfigError(f'{path}: "{kind.name}" needs {where} that offers {", ".join(missing)}; {"; ".join(parts)}')


def _check_channel(s: Scenario) -> None:
    """Front-running and split-view: the keys of one channel need the others."""
    a, m = s.attack, s.model
    if a.channel == "split-view" and getattr(a.kind_of().factory, "white_box", False):
        raise ConfigError(f"attack.channel: {a.kind} places its points when they are delivered, after vetting could "
                          f'see them; split-view swaps vetted content instead. Use attack.channel = "stream"')  # fmt: skip
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
