"""The consumer side: the learner's loop. Test-then-train the model on each batch, let the defenses inspect
and update around it, teach the clean twin, evaluate on schedule; its state is what a checkpoint holds."""

from __future__ import annotations

import numpy as np

from poisonsim.defenses.base import DEFENSE_UNIT
from poisonsim.evaluation.metrics import Evaluator
from poisonsim.events import EventBatch, Truth
from poisonsim.models.window import NOT_LEARNED
from poisonsim.pipeline.content import mismatched
from poisonsim.pipeline.deployment import Deployment
from poisonsim.pipeline.results import RunResult, analyse
from poisonsim.pipeline.world import World, seed_int, seeds_of


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
        self.every = world.scenario.evaluation.every
        self.n_events = world.scenario.stream.n_events
        # defenses judge whole units of events, so their verdicts do not depend on batch cuts either
        self.unit = DEFENSE_UNIT if self.defenses else self.every
        self.deployment = _deployment(world)  # snapshots served in place of the live model (None: the live one)
        self.pin_content = world.scenario.model.pin_content
        # held-out probes of judges at unit ends drawn from an evaluator-side seed the defenses never see
        probe_plan = (seed_int(seeds_of(world.scenario).evaluator), self.every, self.unit, self.n_events)
        self.evaluator = Evaluator(
            world.model,
            world.source,
            world.attack,
            world.twin,
            self.defenses,
            self.deployment,
            world.pins_content,
            probe_plan,
        )
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
        x, y, source = batch.x, batch.y, batch.source if self.twin.needs_sources else None
        clean = ~truth.is_poison
        if not clean.all():  # only what the twin reads
            x, y, source = x[clean], y[clean], None if source is None else source[clean]
        if len(x):
            self.twin.process_many(x, y, None, source)

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
        if "white-box" in attack.offers:
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
        """The finished run, embedded or over Kafka alike: summary, timeseries, the judges' scores of
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
            raise ValueError(
                f"twin: the checkpoint {'holds' if 'twin' in state else 'lacks'} a clean twin, the "
                f"scenario's evaluation.twin is {self.twin is not None}"
            )
        if self.twin is not None:
            self.twin.set_state(state["twin"])
        self.evaluator.set_state(state["evaluator"])
        self.world.attack.set_state(state.get("attack", {}))
        if self.deployment:
            self.deployment.set_state(state["deployment"], self.model)
        saved = state.get("defenses", {})
        if set(saved) != {defense.kind for defense in self.defenses}:
            raise ValueError(
                f"defenses: the checkpoint holds {sorted(saved)}, the scenario has "
                f"{sorted(d.kind for d in self.defenses)}"
            )
        for defense in self.defenses:
            defense.set_state(saved[defense.kind], self.model)


def _deployment(world: World) -> Deployment | None:
    """The scenario's snapshot schedule; jitter is drawn from a defender-side stream the attacker never sees."""
    m = world.scenario.model
    if not m.snapshot_every:
        return None
    rng = np.random.default_rng(seeds_of(world.scenario).defender.spawn(2)[1])
    return Deployment(world.model, m.snapshot_every, rng, m.snapshot_jitter, m.quarantine, m.veto_flags)
