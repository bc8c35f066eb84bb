"""Checks of the defense interface, each example run through the real learner in its host scenario.

What the learner relies on: :meth:`~poisonsim.Defense.inspect` and
:meth:`~poisonsim.Defense.update` return ``None`` or one boolean per event of
the batch and leave the batch as it was, verdicts only from a defense that offers ``flags-events`` (the
evaluator scores no other's); :meth:`~poisonsim.Defense.report`
holds plain values (it goes into summary.json). What a capability promises:
a defense that offers ``judges-inputs`` judges any input, one verdict and one
finite score per row, the same twice, without touching its input; one that
offers ``reverses-triggers`` gives a mask per class in [0, 1] (or none yet).
"""

from __future__ import annotations

import json

import numpy as np

from poisonsim.checks import _host
from poisonsim.defenses.base import FLAGGERS
from poisonsim.registry import Kind


class _Watched:
    """A defense's hooks watched as the learner calls them: what each returned, and whether it changed its batch."""

    def __init__(self, defense):
        self.defense, self.faults = defense, []
        for hook in ("inspect", "update"):
            setattr(defense, hook, self._watch(hook, getattr(defense, hook)))

    def _watch(self, hook: str, call):
        def watched(batch, *args, **kwargs):
            x, y = batch.x.copy(), batch.y.copy()
            flags = call(batch, *args, **kwargs)
            if flags is not None and not self.defense.offers & FLAGGERS:
                self.faults.append(
                    f"{hook} returned verdicts, but the defense offers neither flags-events nor judges-inputs, "
                    "so they would not be scored (add offers = frozenset({'flags-events'}))"
                )
            if flags is not None and (np.shape(flags) != (len(batch),) or np.asarray(flags).dtype != np.bool_):
                self.faults.append(
                    f"{hook} returned {np.asarray(flags).dtype} of shape {np.shape(flags)} for a "
                    f"batch of {len(batch)} (expected None or {len(batch)} booleans)"
                )
            if not (np.array_equal(batch.x, x) and np.array_equal(batch.y, y)):
                self.faults.append(f"{hook} changed the batch it was given")
            return flags

        return watched


def _run_host(kind: Kind, example: dict):
    """The host scenario of ``example`` run through the learner, its defense watched; the finished world."""
    from poisonsim.config import Scenario
    from poisonsim.pipeline.learner import Learner
    from poisonsim.pipeline.world import World

    world = World.build(Scenario.from_dict(_host(kind, example)))
    watched = _Watched(world.defenses[0])
    learner, stream = Learner(world), world.stream()
    for size in world.batch_sizes():
        learner.feed(*stream.next_batch(size))
    assert not watched.faults, f"{kind.name} {example}: {'; '.join(dict.fromkeys(watched.faults))}"
    return world


def check_defense_interface(kind: Kind) -> None:
    """Each example through the learner in its host scenario: ``inspect`` and ``update`` give ``None`` or a
    boolean per event and leave the batch alone (checked as the learner calls them), ``report`` is plain values
    (summary.json stores it), and each capability keeps its promise (:func:`judges_any_input`,
    :func:`reversed_masks_in_range`)."""
    for example in kind.examples:
        world = _run_host(kind, example)
        try:
            json.dumps(world.defenses[0].report(), allow_nan=True)
        except TypeError as exc:
            raise AssertionError(f"{kind.name}: report() holds a value summary.json cannot store: {exc}") from exc
        if "judges-inputs" in kind.factory.offers:
            judges_any_input(kind, world)
        if "reverses-triggers" in kind.factory.offers:
            reversed_masks_in_range(kind, world)


def judges_any_input(kind: Kind, world) -> None:
    """``judges-inputs``: ``flag`` gives a boolean and ``score`` a finite number per row, the same twice, with
    the input untouched, and nothing for no rows."""
    defense, model = world.defenses[0], world.model
    x = world.source.test_x[:40].copy()
    before = x.copy()
    flags, again = defense.flag(x, model), defense.flag(x, model)
    scores = defense.score(x, model)
    assert np.shape(flags) == (len(x),) and np.asarray(flags).dtype == np.bool_, (
        f"{kind.name}: flag gave {np.asarray(flags).dtype} of shape {np.shape(flags)} for {len(x)} rows"
    )
    assert np.array_equal(flags, again), f"{kind.name}: flag judged the same inputs differently"
    assert np.shape(scores) == (len(x),) and np.isfinite(scores).all(), f"{kind.name}: score is not finite per row"
    assert np.array_equal(x, before), f"{kind.name}: flag or score changed its input"
    assert len(defense.flag(x[:0], model)) == 0, f"{kind.name}: flag of no rows is not empty"


def reversed_masks_in_range(kind: Kind, world) -> None:
    """``reverses-triggers``: ``reversed_masks`` is ``None`` (no search yet) or a mask per class in [0, 1]."""
    masks = world.defenses[0].reversed_masks()
    if masks is None:
        return
    shape = (world.source.n_classes, world.source.n_features)
    assert np.shape(masks) == shape, f"{kind.name}: reversed_masks has shape {np.shape(masks)}, expected {shape}"
    assert np.all((masks >= 0) & (masks <= 1)), f"{kind.name}: a reversed mask leaves [0, 1]"


DEFENSE_CHECKS = (check_defense_interface,)
