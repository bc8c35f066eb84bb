"""The defender's side: what it knows, and the two hooks every defense has.

A defense sees each batch twice, in stream order:

- :meth:`Defense.inspect`, *before* the model: it returns the events it
  flags (``None``: none). A gating defense (``drops = True``) keeps its
  flagged events from the model altogether: they are neither predicted nor
  learned, and the evaluator counts them as dropped.
- :meth:`Defense.update`, *after* the model has processed what was let
  through: it sees the predictions and, for centroid models, the slots
  written (``NOT_LEARNED`` where the model refused a point), may flag events
  then (returning a mask over the batch it was given), and may change the
  model (reset a window, unlearn, prune).

A checkpoint holds what a defense learned from the stream (:meth:`Defense.get_state`);
what it fitted before the stream is fitted again, identically, from the seed.

A defense whose hooks return verdicts on stream events offers
``flags-events``: the evaluator scores those (precision, recall, clean
stream events flagged) and no other defense's. A repair that flags nothing
(fine-pruning, Neural Cleanse) then shows no recall of 0 in the summary.

A judge of inputs offers ``judges-inputs``: :meth:`Defense.flag` and
:meth:`Defense.score` judge any input, and :meth:`Defense.new_model` hears of
each new model it will judge with (the Kafka judge role runs any such
defense on snapshots of the learner's model).

For the analysis figures a defense may also return ``artifacts() -> dict[str,
np.ndarray]`` (e.g. a reconstructed trigger's mask and pattern), saved by
``poisonsim run --out DIR`` as ``DIR/analysis/<kind>.npz``, and set the class
attribute ``figure = staticmethod(draw)`` with ``draw(artifacts, true_region,
image_side) -> matplotlib Figure | None``, drawn as ``DIR/analysis/<kind>.png``
and again by ``poisonsim report``. ``true_region`` (the pixels the attack's
trigger writes) and ``image_side`` come from the evaluator; either may be
``None``. No defense reads them otherwise.

A defense never reads ground truth: the evaluator alone holds the flags
against it (tp/fp/tn/fn). What a defense knows is a :class:`DefenderKnowledge`:
a trusted clean sample it owns, drawn from the benign distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from poisonsim.base import Estimator
from poisonsim.events import EventBatch
from poisonsim.registry import MODELS, Key, either

# keys several defense kinds share
Every = Annotated[int, Key("events between the defense's checks", ge=1, le=10**9)]
At = Annotated[int | None, Key("event index to act at (default: the end of the stream)", ge=0)]
When = Annotated[str, Key("repair once (at `at`), or on drift alarms", choices=("once", "drift"))]
MonitorKind = Annotated[
    str, Key("drift monitor (one of river's drift detectors)", choices=("adwin", "page-hinkley", "kswin"))
]
Signal = Annotated[
    str, Key("signal the monitor watches, read before the model learns each event", choices=("distance", "confidence"))
]

FLAGGERS = frozenset({"flags-events", "judges-inputs"})  # a defense offering one of these has verdicts to score
DEFENSE_UNIT = 64  # events a defense judges at a time (the learner cuts batches into units of this size)
TRUSTED_EVENTS = 1_000  # the trusted sample drawn from a distribution (a finite set gives its trusted pool)


@dataclass(frozen=True)
class DefenderKnowledge:
    """What the defender owns before the stream starts."""

    clean_x: np.ndarray  # a trusted clean sample (float32, (m, d)), disjoint from the stream and held-out pools
    clean_y: np.ndarray
    n_classes: int
    image_side: int | None = None
    n_events: int | None = None  # the stream's length, when known (defenses that act at its end)


MAD_TO_SD = 1.4826  # a normal sample's median absolute deviation, times this, is its standard deviation


def median_mad(values: np.ndarray) -> tuple[float, float]:
    """Median and median absolute deviation (scaled by ``MAD_TO_SD``: a standard deviation for normal data).

    >>> median_mad(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    (3.0, 1.4826)
    """
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    return median, MAD_TO_SD * float(np.median(np.abs(values - median)))


def event_to_act_at(at: int | None, knowledge: DefenderKnowledge) -> int | None:
    """``at``, or the stream's end when it is unset; an ``at`` past the end is refused (it would never come).

    >>> knowledge = DefenderKnowledge(np.zeros((1, 1)), np.zeros(1), 2, n_events=1500)
    >>> event_to_act_at(None, knowledge), event_to_act_at(1500, knowledge)
    (1500, 1500)
    >>> event_to_act_at(10000, knowledge)
    Traceback (most recent call last):
    ...
    ValueError: at: 10,000 is after the stream's end (1,500 events), so it would never come; leave `at` unset to act at the end
    """
    if at is None:
        return knowledge.n_events
    if knowledge.n_events is not None and at > knowledge.n_events:
        raise ValueError(
            f"at: {at:,} is after the stream's end ({knowledge.n_events:,} events), "
            "so it would never come; leave `at` unset to act at the end"
        )
    return at


def require(model, defense: str, capability: str) -> None:
    """A clear error when ``model`` does not offer what defense ``defense`` needs.

    >>> from poisonsim.models.base import Model
    >>> require(Model(), "strip", "torch-net")
    Traceback (most recent call last):
    ...
    ValueError: kind: strip needs a model that offers torch-net (model.kind = "cnn", "lenet" or "mlp")
    """
    if capability not in model.offers:
        raise ValueError(
            f"kind: {defense} needs a model that offers {capability} "
            f"(model.kind = {either(MODELS.offering(capability))})"
        )


class Defense(Estimator):
    """Base: flags nothing, changes nothing. Every hook the learner calls is declared here with its default."""

    kind: str = ""
    drops: bool = False  # True: events flagged by inspect() never reach the model (a gate, under its keys)
    figure = None  # staticmethod(draw): how its artifacts are drawn (see the module's docstring)
    extra_flag_names: tuple[str, ...] = ()  # alternative verdicts (:meth:`extra_flags`), scored apart
    saved_at_: int | None = None  # window defenses: the model state was saved at this event (this unit)
    restored_from_: int | None = None  # ... or restored from the state saved at this event

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> Defense:
        """Prepare from what the defender owns (may configure the model); returns ``self``."""
        return self

    def inspect(self, batch: EventBatch, model) -> np.ndarray | None:
        """Events flagged before the model sees the batch (only a defense that offers ``flags-events``)."""
        return None

    def update(
        self, batch: EventBatch, predictions: np.ndarray, slots: np.ndarray | None, model, position: int
    ) -> np.ndarray | None:
        """After the model processed ``batch``; ``position`` = events processed so far in the stream. A defense
        that offers ``flags-events`` may return verdicts on the events of ``batch``."""
        return None

    def flag(self, X: np.ndarray, model) -> np.ndarray:
        """A judge's verdict on inputs ``X`` (True: rejected)."""
        raise NotImplementedError(f"{type(self).__name__} judges no inputs")

    def score(self, X: np.ndarray, model) -> np.ndarray:
        """A judge's score of each input (written to ``<kind>_scores.csv`` at the end of a run)."""
        raise NotImplementedError(f"{type(self).__name__} judges no inputs")

    def new_model(self, model) -> None:
        """A judge: ``model`` is the one it judges with from now on (the Kafka judge role's
        latest snapshot of the learner's model); recalibrate what depends on it."""

    def reversed_masks(self) -> np.ndarray | None:
        """A trigger-reversing defense (``reverses-triggers``): the trigger mask it found per class
        (``n_classes x features``), ``None`` before any search."""
        return None

    def artifacts(self) -> dict[str, np.ndarray]:
        """Arrays worth keeping for the analysis (``DIR/analysis/<kind>.npz``); none by default."""
        return {}

    def extra_flags(self) -> dict[str, np.ndarray]:
        """Verdicts of the alternative rules on the last update's batch, by name."""
        return {}

    def alarms(self) -> dict[str, list[int]]:
        """Where its drift monitors fired (events into the stream), by monitor name ("" for its one
        monitor): the evaluator reads them against the attack's start. None fired: ``{}``."""
        return {}

    def report(self) -> dict:
        """Extra figures of this defense for the summary (plain values)."""
        return {}

    def get_state(self) -> dict:
        """What changed since :meth:`fit` (numpy arrays and plain values, copies), for a checkpoint."""
        return {}

    def set_state(self, state: dict, model) -> None:
        """Resume from :meth:`get_state` of the same defense, fitted on the same scenario."""
