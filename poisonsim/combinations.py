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
from poisonsim.registry import CHANNELS, either


def offers(section: Section, selector: str = "kind") -> frozenset[str]:
    """What the kind a section selected offers (:mod:`poisonsim.capabilities`)."""
    return section.kind_of(selector).factory.offers


def pins_content(s: Scenario) -> bool:
    """Whether the attack's channel swaps content after vetting, so events carry the vetted content's hash."""
    return "swaps-content" in offers(s.attack, "channel")


def check_combination(s: Scenario) -> None:
    """Requirements against capabilities, then the rules of the attack's channel."""
    source, model = offers(s.stream, "source"), offers(s.model)
    _require("model.kind", s.model.kind_of(), source, s, model_included=False)
    _require("attack.kind", s.attack.kind_of(), source | model, s)
    for i, defense in enumerate(s.defense):
        _require(f"defense[{i}].kind", defense.kind_of(), source | model, s)
    a, does, channel = s.attack, offers(s.attack), offers(s.attack, "channel")
    supplies = "supplies-model" in does
    if supplies and "rate" not in channel:
        raise ConfigError(
            f"attack.channel: {a.kind} supplies the model and uses no stream channel; "
            f"attack.channel must be {either(CHANNELS.offering('rate'))}, got {a.channel!r}"
        )
    if supplies and a.rate > 0:
        raise ConfigError(
            f"attack.rate: {a.kind} supplies the starting model and leaves the stream clean, "
            f"so the rate must be 0, got {a.rate}"
        )
    if "no-poison" in does and "rate" in channel and a.rate > 0:
        raise ConfigError(f'attack.rate: attack.kind "{a.kind}" poisons nothing, so the rate must be 0, got {a.rate}')
    _check_channel(s)


def _require(path: str, kind, offered: frozenset[str], s: Scenario, model_included: bool = True) -> None:
    missing = sorted(kind.requires - offered)
    if not missing:
        return
    where = "a model or source" if model_included else "a source"
    parts = (
        [f'model kind "{s.model.kind}" offers {", ".join(sorted(offers(s.model))) or "nothing"}']
        if model_included
        else []
    )
    parts.append(f'source kind "{s.stream.source}" offers {", ".join(sorted(offers(s.stream, "source"))) or "nothing"}')
    raise ConfigError(f'{path}: "{kind.name}" needs {where} that offers {", ".join(missing)}; {"; ".join(parts)}')


def _check_channel(s: Scenario) -> None:
    """Content swaps and front-running: the keys of one channel need the others."""
    a, m, does, channel = s.attack, s.model, offers(s.attack), offers(s.attack, "channel")
    if "swaps-content" in channel and "white-box" in does:
        raise ConfigError(
            f"attack.channel: {a.kind} places its points when they are delivered, after vetting could "
            f"see them; {a.channel} swaps vetted content instead. "
            f"Use attack.channel = {either(CHANNELS.offering('rate'))}"
        )
    if "swaps-content" in channel and "no-poison" in does:
        raise ConfigError(f'attack.channel: {a.channel} swaps in a payload; set attack.kind (e.g. "targeted")')
    if m.pin_content and "swaps-content" not in channel:
        raise ConfigError(
            f"model.pin_content: pins the content of swapped references; needs attack.channel = "
            f"{either(CHANNELS.offering('swaps-content'))}, got {a.channel!r}"
        )
    if "runs-ahead" in channel:
        if "no-poison" in does:
            raise ConfigError(
                f'attack.channel: {a.channel} times bursts of a payload; set attack.kind (e.g. "targeted")'
            )
        if m.snapshot_every == 0:
            raise ConfigError(f"attack.channel: {a.channel} needs snapshots to run ahead of; set model.snapshot_every")
        if a.burst_size + a.lead > m.snapshot_every:
            raise ConfigError(
                f"attack.burst_size: burst ({a.burst_size}) plus lead ({a.lead}) must fit in one "
                f"snapshot interval (model.snapshot_every = {m.snapshot_every})"
            )
    if m.snapshot_every == 0:
        for key in ("snapshot_jitter", "quarantine", "veto_flags"):
            if getattr(m, key):
                raise ConfigError(f"model.{key}: applies to snapshots; set model.snapshot_every > 0 first")
