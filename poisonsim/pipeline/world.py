"""The world a scenario's seed fixes: the source, the model (pre-trained), the attacker (fitted), the
defenses (fitted on the defender's trusted sample) and the clean twin; and the merged stream it produces.

Each party draws from its own seed sequence (:class:`Seeds`), so adding draws to one never moves another's.

>>> from poisonsim.config import Scenario
>>> world = World.build(Scenario.from_dict({"seed": 1, "stream": {"n_events": 200}, "evaluation": {"every": 50}}))
>>> type(world.model).__name__, list(world.batch_sizes())
('CentroidDetector', [50, 50, 50, 50])
"""

from __future__ import annotations

import contextlib
import copy
import re
import sys
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

import numpy as np

from poisonsim.attacks import Attack, build_attack, build_schedule
from poisonsim.combinations import pins_content
from poisonsim.config import ConfigError, Scenario, Section
from poisonsim.defenses import TRUSTED_EVENTS, DefenderKnowledge, Defense
from poisonsim.models import build_model
from poisonsim.pipeline.stream import MergedStream, attacker_knowledge, source_id_count
from poisonsim.resources import check_memory
from poisonsim.sources import Source, make_source

MAX_BATCH = 16_384


@dataclass
class World:
    """Everything a scenario's seed fixes before the first event."""

    scenario: Scenario
    source: Source
    model: object
    attack: Attack
    defenses: list[Defense] = field(default_factory=list)
    twin: object | None = None  # the clean twin (evaluation.twin): the model as it stood before the attacker acted

    @classmethod
    def build(cls, scenario: Scenario) -> World:
        """Source, warmed-up model and fitted attack, reproducibly from the seed.

        A model, attack or defense that refuses what the scenario asks of it
        (a ``ValueError`` naming the key) is reported as a :class:`ConfigError`.
        """
        try:
            world = cls._build(scenario)
            world.stream()  # the source ids asked for are checked before the first event
            return world
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def _build(cls, scenario: Scenario) -> World:
        check_memory(scenario)
        seeds = seeds_of(scenario)
        with _naming("stream", scenario.stream):
            source = make_source(scenario.stream, np.random.default_rng(seeds.source))
        with _naming("model", scenario.model):
            model = build_model(
                scenario.model, source.n_classes, seed_int(seeds.model), source.n_features, source.image_side
            )
        fix_threads(scenario.model.threads)
        with _naming("attack", scenario.attack):
            attack = build_attack(scenario.attack)
        if "supplies-model" in attack.offers:  # the victim starts from the attacker's model, not its own pre-training
            twin = copy.deepcopy(model) if scenario.evaluation.twin else None
            if twin is not None and twin.warmup_events:  # without the attacker, the victim pre-trains its own
                twin.learn_many(*source.sample(np.random.default_rng(seeds.warmup), twin.warmup_events))
            with _naming("attack", scenario.attack):
                attack.fit(attacker_knowledge(source, model=model), np.random.default_rng(seeds.attacker))
            model.start_from(attack.supplied_)
            return cls(scenario, source, model, attack, _defenses(scenario, source, model), twin)
        warmup = model.warmup_events
        if warmup:
            model.learn_many(*source.sample(np.random.default_rng(seeds.warmup), warmup))
        twin = copy.deepcopy(model) if scenario.evaluation.twin else None
        rate = build_schedule(scenario.attack, scenario.model.snapshot_every).rate
        if "centroid-state" in model.offers:
            knowledge = attacker_knowledge(source, model.center, model.radius_, copy.deepcopy(model), rate)
        else:
            knowledge = attacker_knowledge(source, model=copy.deepcopy(model), rate=rate)
        with _naming("attack", scenario.attack):
            attack.fit(knowledge, np.random.default_rng(seeds.attacker))
        return cls(scenario, source, model, attack, _defenses(scenario, source, model), twin)

    @property
    def n_source_ids(self) -> int:
        """Public source ids the stream uses (the range a message's ``source`` must lie in)."""
        attack = self.scenario.attack
        return source_id_count(self.scenario.stream.benign_sources, attack.identities, attack.identity_pool)

    @property
    def pins_content(self) -> bool:
        """Whether the attack's channel swaps content after vetting (events then carry the vetted hash)."""
        return pins_content(self.scenario)

    def stream(self) -> MergedStream:
        """The producer side: the merged stream, batch by batch."""
        attack, model = self.scenario.attack, self.scenario.model
        schedule = build_schedule(attack, model.snapshot_every)
        return MergedStream(
            self.source,
            self.attack,
            schedule,
            seeds_of(self.scenario).stream,
            self.pins_content,
            self.scenario.stream.benign_sources,
            attack.identities,
            attack.identity_pool,
        )

    def batch_sizes(self):
        """Batch sizes a producer uses: they end on every evaluation step."""
        return _batches(self.scenario.stream.n_events, self.scenario.evaluation.every)


class Seeds(NamedTuple):
    """The independent random streams a scenario's seed fixes, one per party, in this order."""

    source: np.random.SeedSequence
    warmup: np.random.SeedSequence
    model: np.random.SeedSequence
    attacker: np.random.SeedSequence
    stream: np.random.SeedSequence  # the merged stream: who has a turn, the producers' ids
    defender: np.random.SeedSequence
    evaluator: np.random.SeedSequence


def seeds_of(scenario: Scenario) -> Seeds:
    """Fresh seed sequences of ``scenario`` (each call: a ``spawn`` from one of them gives the same children).

    >>> seeds_of(Scenario.from_dict({"seed": 3})).attacker.spawn_key
    (3,)
    """
    return Seeds(*np.random.SeedSequence(scenario.seed).spawn(len(Seeds._fields)))


def seed_int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


def fix_threads(threads: int) -> None:
    """Set torch's thread count for this process, when torch is in use.

    A float sum split over another number of threads rounds differently, so
    a neural run is reproducible from its seed only with the count fixed.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _batches(n_events: int, every: int):
    """Batch sizes that end on every evaluation step."""
    done = 0
    while done < n_events:
        next_eval = min((done // every + 1) * every, n_events)
        size = min(next_eval - done, MAX_BATCH)
        done += size
        yield size


@contextlib.contextmanager
def _naming(section: str, keys: Section) -> Iterator[None]:
    """A refusal that names a key of the section by its own name (``target_class: ...``, raised by the kind,
    which knows no scenario) names it in full (``attack.target_class: ...``).

    >>> with _naming("attack", Scenario.from_dict({"attack": {"kind": "badnets"}}).attack):
    ...     raise ValueError("target_class: expected a class in [0, 10), got 10")
    Traceback (most recent call last):
    ...
    ValueError: attack.target_class: expected a class in [0, 10), got 10
    """
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:
        key = re.match(r"([A-Za-z_]\w*)[.:\[]", str(exc))
        if key and key.group(1) in keys:
            raise ValueError(f"{section}.{exc}") from exc
        raise


def _defenses(scenario: Scenario, source: Source, model) -> list[Defense]:
    """The scenario's defenses, fitted on a trusted clean sample the defender owns."""
    if not scenario.defense:
        return []
    rng = np.random.default_rng(seeds_of(scenario).defender)
    clean_x, clean_y = source.trusted_sample(rng, TRUSTED_EVENTS)
    knowledge = DefenderKnowledge(clean_x, clean_y, source.n_classes, source.image_side, scenario.stream.n_events)
    defenses = []
    for i, section in enumerate(scenario.defense):
        with _naming(f"defense[{i}]", section):  # a refusal names the key as the scenario file writes it
            defenses.append(section.build().fit(knowledge, model, rng))
    return defenses
