"""What a kind can do, said one way: tags in its class's ``offers``.

Every kind (model, source, attack, defense, ...) states what it can do in
``offers``, a frozenset of the tags below, and what it needs from the
scenario's model or source when it is registered (``requires``). The
registry refuses a tag nobody declared; every reader (the combination
checks, the engine, the evaluator, the exporter, the Kafka roles) asks
``"tag" in obj.offers`` and never a kind's class or name. Each tag comes with
the hooks it promises, all declared with a default on the concept's base
class. A plug-in that brings a capability of its own declares it first:

>>> declare("my-capability", "what my kinds can do")
>>> check_tags(["torch-net", "my-capability"], "defense kind 'mine'")
>>> check_tags(["torch-nett"], "defense kind 'mine'")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: defense kind 'mine': unknown capability 'torch-nett' (known: alarms, centroid-state, ...)

What one instance does under its keys, rather than what its kind can do
(a STRIP in drop mode keeps what it flags from the model; a window model
with a source quota reads the events' producer ids) is an attribute
declared on the base class (``Defense.drops``, ``Model.needs_sources``).
"""

from __future__ import annotations

from collections.abc import Iterable

CAPABILITIES: dict[str, str] = {
    # models
    "alarms": "predicts alarms (True: anomalous) rather than classes",
    "centroid-state": "one centroid and radius (center, radius_) a white-box attacker reads as its events arrive",
    "classes": "predicts classes",
    "embeddings": "penultimate-layer activations (embed_many)",
    "losses": "per-event training losses (losses_many)",
    "probabilities": "class probabilities (predict_proba_many)",
    "torch-net": "a torch net (net, device_) that judges, repairs and attributions work on",
    "window": "sliding windows the window defenses steer (configure, centers, window_counts, refusals_, frozen)",
    # sources
    "images": "square images (Source.image_side)",
    # attacks
    "no-poison": "poisons nothing: the clean baseline",
    "supplies-model": "the victim starts from the attacker's model (supplied_); the stream stays clean",
    "white-box": "fills in its events as they are delivered, reading the model's state (hook)",
    # channels
    "rate": "poison mixed into the stream at a set share (rate)",
    "runs-ahead": "bursts timed to land just before each snapshot the learner publishes (model.snapshot_every)",
    "swaps-content": "content swapped after vetting; events carry the vetted content's hash (model.pin_content)",
    # defenses
    "flags-events": "returns verdicts on stream events (inspect, update), scored: precision, recall, clean flagged",
    "judges-inputs": "a judge of inputs: flag and score judge any input, FAR and FRR are measured",
    "reverses-triggers": "reconstructs a trigger per class (reversed_masks), scored against the true one",
}


def declare(tag: str, meaning: str) -> None:
    """Add a capability of one's own (a plug-in's), with what it promises."""
    if not tag or tag != tag.strip() or not meaning:
        raise ValueError(f"capability {tag!r}: expected a non-empty tag without surrounding spaces and a meaning")
    CAPABILITIES.setdefault(tag, meaning)


def check_tags(tags: Iterable[str], where: str) -> None:
    """A clear error naming ``where`` when a tag is not a declared capability."""
    for tag in tags:
        if tag not in CAPABILITIES:
            raise ValueError(f"{where}: unknown capability {tag!r} (known: {', '.join(sorted(CAPABILITIES))})")
