"""Run a scenario embedded: source -> attack -> transport -> model -> evaluator.

Every event is predicted before it is learned (test-then-train). Batches go
through the transport between the producer side (the merged stream) and the
consumer side (model and evaluator), exactly as they would over Kafka.

>>> from poisonsim.config import ConfigError, Scenario
>>> s = Scenario.from_dict({"seed": 1, "stream": {"n_events": 200},
...     "attack": {"kind": "centroid-shift", "rate": 1.0},
...     "model": {"window_size": 100}, "evaluation": {"every": 50}})
>>> result = run(s)
>>> [round(row["displacement_radii"], 4) for row in result.timeseries]
[0.0, 0.5, 1.0, 1.5, 2.0]
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from poisonsim.attacks import Attack, build_attack, build_schedule
from poisonsim.config import ConfigError, Scenario
from poisonsim.defenses import TRUSTED_EVENTS, DefenderKnowledge, Defense, build_defenses
from poisonsim.defenses.base import DEFENSE_UNIT
from poisonsim.evaluation.metrics import TIMESERIES_COLUMNS, Evaluator
from poisonsim.events import EventBatch, Truth
from poisonsim.models import build_model
from poisonsim.models.window import NOT_LEARNED
from poisonsim.pipeline.content import mismatched
from poisonsim.pipeline.deployment import Deployment
from poisonsim.pipeline.stream import MergedStream, attacker_knowledge, source_id_count
from poisonsim.resources import check_memory
from poisonsim.sources import Source, make_source
from poisonsim.transport import InMemoryTransport, Transport

TOPIC = "events"
MAX_BATCH = 16_384
TIMING_FIELDS = ("elapsed_seconds", "events_per_second")


@dataclass
class RunResult:
    """A run's ``summary``, its ``timeseries`` (one row per evaluation step) and per-input ``scores``."""

    summary: dict
    timeseries: list[dict]
    scores: dict[str, list[dict]] = field(default_factory=dict)  # runtime detector -> scores of held-out inputs
    # arrays behind the analysis figures, saved as analysis/<name>.npz: "attributions" (evaluation.explain),
    # "trigger" (the true trigger, evaluator side) and each defense kind with artifacts()
    analysis: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_frame(self):
        """The timeseries as a pandas DataFrame, one row per evaluation step."""
        import pandas as pd

        return pd.DataFrame(self.timeseries)


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
        rng_source, rng_warmup, rng_model, rng_attacker, *_ = _seeds(scenario)
        with _naming("stream", scenario.stream):
            source = make_source(scenario.stream, np.random.default_rng(rng_source))
        with _naming("model", scenario.model):
            model = build_model(scenario.model, source.n_classes, _seed_int(rng_model), source.n_features,
                                source.image_side)  # fmt: skip
        fix_threads(scenario.model.threads)
        with _naming("attack", scenario.attack):
            attack = build_attack(scenario.attack)
        if attack.supplies_model:  # the victim starts from the attacker's model, not its own pre-training
            twin = copy.deepcopy(model) if scenario.evaluation.twin else None
            if twin is not None and twin.warmup_events:  # without the attacker, the victim pre-trains its own
                twin.learn_many(*source.sample(np.random.default_rng(rng_warmup), twin.warmup_events))
            with _naming("attack", scenario.attack):
                attack.fit(attacker_knowledge(source, model=model), np.random.default_rng(rng_attacker))
            model.start_from(attack.supplied_)
            return cls(scenario, source, model, attack, _defenses(scenario, source, model), twin)
        warmup = model.warmup_events
        if warmup:
            model.learn_many(*source.sample(np.random.default_rng(rng_warmup), warmup))
        twin = copy.deepcopy(model) if scenario.evaluation.twin else None
        rate = getattr(build_schedule(scenario.attack, scenario.model.snapshot_every), "rate", None)
        if "centroid-state" in model.offers:
            knowledge = attacker_knowledge(source, model.center, model.radius_, copy.deepcopy(model), rate)
        else:
            knowledge = attacker_knowledge(source, model=copy.deepcopy(model), rate=rate)
        with _naming("attack", scenario.attack):
            attack.fit(knowledge, np.random.default_rng(rng_attacker))
        return cls(scenario, source, model, attack, _defenses(scenario, source, model), twin)

    @property
    def n_source_ids(self) -> int:
        """Public source ids the stream uses (the range a message's ``source`` must lie in)."""
        attack = self.scenario.attack
        return source_id_count(self.scenario.stream.benign_sources, attack.identities, attack.identity_pool)

    def stream(self) -> MergedStream:
        """The producer side: the merged stream, batch by batch."""
        attack, model = self.scenario.attack, self.scenario.model
        schedule = build_schedule(attack, model.snapshot_every)
        return MergedStream(self.source, self.attack, schedule, _seeds(self.scenario)[4], attack.channel == "split-view",
                            self.scenario.stream.benign_sources, attack.identities, attack.identity_pool)

    def batch_sizes(self):
        """Batch sizes a producer uses: they end on every evaluation step."""
        return _batches(self.scenario.stream.n_events, self.scenario.evaluation.every)


class Learner:
    """The consumer side: test-then-train the model on batches, evaluate on schedule.

    Batches of any size are split at evaluation steps, so the timeseries does
    not depend on how a transport cut the stream. The timeseries starts with a
    row at 0 events: the model as the stream finds it.

    The clean twin (``world.twin``), when there is one, learns every event
    that is not poison, undefended: the evaluator reads the truth for it, and
    nothing it learns reaches the model, the defenses or the attacker.
    """

    def __init__(self, world: World):
        self.world = world
        self.model = world.model
        self.twin = world.twin
        self.defenses = world.defenses
        self.evaluator = Evaluator(world.model, world.source, world.attack, world.twin)
        self.evaluator.defenses = self.defenses  # it scores what a defense reconstructed against the truth
        for defense in self.defenses:
            self.evaluator.defense_counts[defense.kind] = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
            if defense.judges_inputs:  # a runtime detector: FAR / FRR measured on held-out inputs
                self.evaluator.input_judges[defense.kind] = defense
            for name in defense.extra_flag_names:  # alternative verdicts, scored apart
                self.evaluator.defense_counts[f"{defense.kind}/{name}"] = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        self.every = world.scenario.evaluation.every
        self.n_events = world.scenario.stream.n_events
        # defenses judge whole units of events, so their verdicts do not depend on batch cuts either
        self.unit = DEFENSE_UNIT if self.defenses else self.every
        self.deployment = _deployment(world)  # snapshots served in place of the live model (None: the live one)
        self.evaluator.deployment = self.deployment
        self.pin_content = world.scenario.model.pin_content
        self.evaluator.split_view = world.scenario.attack.channel == "split-view"
        # held-out probes of runtime detectors at unit ends drawn from an evaluator-side seed the defenses never see
        self.evaluator.probe_plan = (_seed_int(_seeds(world.scenario)[6]), self.every, self.unit, self.n_events)
        self.evaluator.evaluate()  # the starting point: row 0, before the first event

    @property
    def events(self) -> int:
        return self.evaluator.events

    def feed(self, batch: EventBatch, truth: Truth) -> None:
        """Process one batch in order (ground truth goes to the evaluator only)."""
        done = 0
        while done < len(batch):
            until_eval = self.every - self.events % self.every
            until_unit = self.unit - self.events % self.unit
            until_snapshot = self.deployment.until_next(self.events) if self.deployment else until_eval
            part = slice(done, min(len(batch), done + until_eval, done + until_unit, done + until_snapshot))
            self._resolve(batch.select(part), truth.select(part))
            done = part.stop
            if self.deployment:
                self.deployment.advance(self.model, self.events)
            self.evaluator.probe_if_due()
            if self.events % self.every == 0 or self.events == self.n_events:
                self.evaluator.evaluate()

    def _resolve(self, batch: EventBatch, truth: Truth) -> None:
        """Content pinning: refuse (and count) content whose hash differs from the one pinned at vetting."""
        if self.twin is not None:
            self._teach_twin(batch, truth)
        if self.pin_content and batch.pin is not None:
            refused = mismatched(batch.x, batch.y, batch.pin)
            if refused.any():
                self.evaluator.refuse(truth.select(refused))
                batch, truth = batch.select(~refused), truth.select(~refused)
        if len(batch):
            self._process(batch, truth)

    def _teach_twin(self, batch: EventBatch, truth: Truth) -> None:
        """The clean twin learns the batch's events that are not poison, in order (no defense, no attacker)."""
        clean = ~truth.is_poison
        if not clean.all():
            batch = batch.select(clean)
        if len(batch):
            self.twin.process_many(batch.x, batch.y, None, batch.source if self.twin.needs_sources else None)

    def _process(self, batch: EventBatch, truth: Truth) -> None:
        flags = {}
        admitted = np.ones(len(batch), dtype=bool)
        for defense in self.defenses:  # before the model: runtime detection, gates
            flagged = defense.inspect(batch, self.model)
            flags[defense.kind] = np.zeros(len(batch), dtype=bool) if flagged is None else flagged
            if defense.drops and flagged is not None:
                admitted &= ~flagged
        let_in = batch if admitted.all() else batch.select(admitted)
        attack = self.world.attack
        # a white-box attacker knows which events are its own (the hook is the attacker's, not the defender's)
        # and writes each from the model's public state when it is delivered
        if attack.white_box:
            hook = attack.hook(truth.is_adaptive if admitted.all() else truth.is_adaptive[admitted])
        else:
            hook = None
        sources = let_in.source if self.model.needs_sources else None  # source-quota
        predictions, slots = self.model.process_many(let_in.x, let_in.y, hook, sources)
        if truth.is_poison.any():  # the attacker hears what became of its own events (it knows which they are)
            learned = np.zeros(len(batch), dtype=bool)
            learned[admitted] = True if slots is None else slots != NOT_LEARNED
            attack.feedback(learned[truth.is_poison], self.model.predict_many)
        self.evaluator.observe(batch, truth, predictions, slots, None if admitted.all() else admitted)
        position = self.events
        moved = self.evaluator.displacement_radii()  # before any defense resets the model
        for defense in self.defenses:  # after the model: verdicts on what it saw, repairs
            flagged = defense.update(let_in, predictions, slots, self.model, position)
            self.evaluator.observe_alarms(defense, moved)
            if flagged is not None:
                flags[defense.kind][admitted] |= flagged
            self.evaluator.observe_flags(defense.kind, flags[defense.kind], truth)
            for name, verdicts in defense.extra_flags().items():
                full = np.zeros(len(batch), dtype=bool)  # verdicts on let-in events; dropped ones count as not flagged
                full[admitted] = verdicts
                self.evaluator.observe_flags(f"{defense.kind}/{name}", full, truth)
            if defense.saved_at_ is not None:  # window resets: the evaluator's mirror follows
                self.evaluator.save_windows(defense.kind, defense.saved_at_)
            if defense.restored_from_ is not None:
                self.evaluator.restore_windows(defense.kind, defense.restored_from_)
        if self.deployment and flags:  # evidence that may veto a snapshot in quarantine
            self.deployment.observe_flags(int(np.logical_or.reduce(list(flags.values())).sum()))

    def result(self, elapsed: float) -> RunResult:
        """The finished run, embedded or over Kafka alike: summary, timeseries, the runtime detectors' scores of
        held-out inputs, and the end-of-run analysis (:func:`analyse`)."""
        result = RunResult(self.summary(elapsed), self.evaluator.rows, self.evaluator.input_scores())
        analyse(self.world, result)
        return result

    def summary(self, elapsed: float) -> dict:
        scenario = self.world.scenario
        summary = {
            "scenario": scenario.name,
            "seed": scenario.seed,
            "model": scenario.model.kind,
            "attack": scenario.attack.kind,
            **self.evaluator.summary(),
            "elapsed_seconds": elapsed,
            "events_per_second": self.events / elapsed if elapsed > 0 else None,
        }
        for defense in self.defenses:  # each defense's own figures join its section
            figures = defense.report()
            if figures:
                summary.setdefault("defenses", {}).setdefault(defense.kind, {}).update(figures)
        return summary

    def get_state(self) -> dict:
        """Model, evaluator, attacker and defense state (numpy arrays and plain values), for a checkpoint."""
        state = {"model": self.model.get_state(), "evaluator": self.evaluator.get_state()}
        if self.twin is not None:
            state["twin"] = self.twin.get_state()
        attack = self.world.attack.get_state()
        if attack:  # what an adapting attacker learned from the system's answers
            state["attack"] = attack
        if self.deployment:
            state["deployment"] = self.deployment.get_state()
        if self.defenses:
            state["defenses"] = {defense.kind: defense.get_state() for defense in self.defenses}
        return state

    def set_state(self, state: dict) -> None:
        """Resume from :meth:`get_state` of a learner of the same scenario."""
        self.model.set_state(state["model"])
        if (self.twin is None) != ("twin" not in state):
            raise ValueError(f"twin: the checkpoint {'holds' if 'twin' in state else 'lacks'} a clean twin, the "
                             f"scenario's evaluation.twin is {self.twin is not None}")  # fmt: skip
        if self.twin is not None:
            self.twin.set_state(state["twin"])
        self.evaluator.set_state(state["evaluator"])
        self.world.attack.set_state(state.get("attack", {}))
        if self.deployment:
            self.deployment.set_state(state["deployment"], self.model)
        saved = state.get("defenses", {})
        if set(saved) != {defense.kind for defense in self.defenses}:
            raise ValueError(f"defenses: the checkpoint holds {sorted(saved)}, the scenario has "
                             f"{sorted(d.kind for d in self.defenses)}")  # fmt: skip
        for defense in self.defenses:
            defense.set_state(saved[defense.kind], self.model)


def run(
    scenario: Scenario,
    on_progress: Callable[[int], None] | None = None,
    transport: Transport | None = None,
    world: World | None = None,
    observe: Callable[[Learner], None] | None = None,
) -> RunResult:
    """Run ``scenario`` to the end and return its summary and timeseries (from ``world`` when built already);
    ``observe`` sees the learner after every batch (live metrics)."""
    world = world or World.build(scenario)
    stream, learner = world.stream(), Learner(world)
    transport = transport or InMemoryTransport()
    started = time.perf_counter()
    for size in world.batch_sizes():
        transport.send(TOPIC, *stream.next_batch(size))
        pending = size
        while pending:  # a broker may hand a batch back in several parts
            received = transport.receive(TOPIC)
            if received is None:
                raise RuntimeError(f"transport: {pending} events sent on {TOPIC!r} never arrived")
            learner.feed(*received)
            pending -= len(received[0])
        if on_progress:
            on_progress(learner.events)
        if observe:
            observe(learner)
    elapsed = time.perf_counter() - started
    return learner.result(elapsed)


def analyse(world: World, result: RunResult) -> None:
    """After the stream: explain the final model when ``evaluation.explain`` asks (the summary's ``analysis``
    section), and keep each defense's artifacts, with the true trigger they are drawn against, in
    ``result.analysis`` (see :mod:`poisonsim.evaluation.explain`)."""
    from poisonsim.evaluation import explain

    scenario = world.scenario
    if scenario.evaluation.explain:
        rng = np.random.default_rng(_seeds(scenario)[6].spawn(1)[0])  # evaluator side: what is explained
        figures, arrays = explain.analyse(world.model, world.source, world.attack,
                                          scenario.evaluation.explain_inputs, rng)  # fmt: skip
        result.summary["analysis"] = figures
        if arrays is not None:
            result.analysis[explain.ATTRIBUTIONS] = arrays
    result.analysis.update(explain.defense_artifacts(world.defenses))
    trigger = explain.true_trigger(world.source, world.attack)
    if result.analysis and trigger is not None:
        result.analysis[explain.TRIGGER] = trigger


def write_results(result: RunResult, scenario: Scenario, out: str | Path) -> Path:
    """Write ``summary.json``, ``timeseries.csv``, the resolved ``scenario.toml``, per runtime detector
    ``<kind>_scores.csv`` (e.g. ``strip_scores.csv``) and, when the run has any, the analysis arrays and
    figures: ``analysis/attributions.{npz,png}`` (``evaluation.explain``), ``analysis/<defense kind>.npz``
    (and ``.png`` when the defense draws them), ``analysis/trigger.npz``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
    with open(out / "timeseries.csv", "w", newline="") as handle:
        extra = [k for k in (result.timeseries[0] if result.timeseries else {}) if k not in TIMESERIES_COLUMNS]
        writer = csv.DictWriter(handle, fieldnames=[*TIMESERIES_COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in result.timeseries)
    (out / "scenario.toml").write_text(scenario.to_toml())
    for kind, rows in result.scores.items():
        with open(out / f"{kind}_scores.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["score", "is_triggered"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    if result.analysis:
        from poisonsim.evaluation.explain import ANALYSIS_DIR, write_analysis

        write_analysis(result.analysis, out / ANALYSIS_DIR)
    return out


def check_out(out: str | Path) -> Path:
    """The results directory, made and known writable before a run starts (a ConfigError naming ``--out``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, expected a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".poisonsim-write-check-"):
            pass  # a name of its own: services that share --out check it at once
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror})") from None
    return out


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
def _naming(section: str, keys: object) -> Iterator[None]:
    """A refusal that names a key of the section by its own name (``target_class: ...``, raised by the kind,
    which knows no scenario) names it in full (``attack.target_class: ...``).

    >>> with _naming("attack", type("Attack", (), {"target_class": 0})):
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
        if key and hasattr(keys, key.group(1)):
            raise ValueError(f"{section}.{exc}") from exc
        raise


def _seeds(scenario: Scenario) -> list[np.random.SeedSequence]:
    """Independent streams: source, warm-up, model, attacker, merged stream, defender, evaluator."""
    return np.random.SeedSequence(scenario.seed).spawn(7)


def _defenses(scenario: Scenario, source: Source, model) -> list[Defense]:
    """The scenario's defenses, fitted on a trusted clean sample the defender owns."""
    defenses = build_defenses(scenario.defense)
    if not defenses:
        return defenses
    rng = np.random.default_rng(_seeds(scenario)[5])
    clean_x, clean_y = source.trusted_sample(rng, TRUSTED_EVENTS)
    knowledge = DefenderKnowledge(clean_x, clean_y, source.n_classes, source.image_side, scenario.stream.n_events)
    return [defense.fit(knowledge, model, rng) for defense in defenses]


def _deployment(world: World) -> Deployment | None:
    """The scenario's snapshot schedule; jitter is drawn from a defender-side stream the attacker never sees."""
    m = world.scenario.model
    if not m.snapshot_every:
        return None
    rng = np.random.default_rng(_seeds(world.scenario)[5].spawn(2)[1])
    return Deployment(world.model, m.snapshot_every, rng, m.snapshot_jitter, m.quarantine, m.veto_flags)


def _seed_int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])
