"""What each figure of a run's summary is: its label in the printed table, its unit and its definition.

``poisonsim run --explain`` prints the definitions beside the figures; the
evaluator (:mod:`poisonsim.evaluation.metrics`) computes them. "Over the
stream" is the mean over the evaluation steps after the attack's first
poison event (the stretch before a backdoor is learned counts: the attacker
had not won it yet); "worst" is the worst of those steps; "at the end" is the
last step. The clean twin learns the same stream without the poison and
without defenses; the evaluator alone feeds it.

>>> GLOSSARY["accuracy_drop_mean"].unit
'share of held-out inputs'
>>> explain("poison_events_total")
'count: stream events that came from the attacker (ground truth, known to the evaluator alone)'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str
    definition: str


OVER = "mean over the evaluation steps after the attack's first poison event"
HELD_OUT = "share of held-out inputs"
TWIN = "the clean twin (the same model learning the same stream without the poison)"
SUCCESS = (
    "the attacker's success inputs the model classifies as the attacker wants (backdoors: held-out "
    "inputs of other classes with the trigger; targeted: its target inputs; centroid-shift: 1 when the point A "
    "is accepted)"
)

RUN = {  # summary key -> figure, in the order the table shows them
    "events_total": Figure("events", "count", "events of the merged stream the model was fed"),
    "poison_events_total": Figure(
        "poison events",
        "count",
        "stream events that came from the attacker (ground truth, known to the evaluator alone)",
    ),
    "observed_poisoning_rate": Figure("observed rho (stream)", "share of events", "poison events / stream events"),
    "learned_poisoning_rate": Figure(
        "rho of all it learned from",
        "share of events",
        "poison events the model was fed / everything it was fed, its pre-training included",
    ),
    "attack_success_rate_mean": Figure("attack success, mean over the stream", "share of inputs", f"{SUCCESS}; {OVER}"),
    "attack_success_rate_worst": Figure("attack success, worst", "share of inputs", "the highest of those steps"),
    "attack_success_rate": Figure("attack success at the end", "share of inputs", "at the last evaluation step"),
    "twin_attack_success_rate_mean": Figure(
        "clean twin: attack success, mean (base rate)",
        "share of inputs",
        f"the same inputs scored on {TWIN}: what reaches the target with no attack; {OVER}",
    ),
    "accuracy_drop_mean": Figure(
        "accuracy lost vs clean twin, mean",
        HELD_OUT,
        f"the clean twin's held-out accuracy minus the model's: what the attack (and any defense) cost; {OVER}",
    ),
    "accuracy_drop_worst": Figure("accuracy lost vs clean twin, worst", HELD_OUT, "the largest of those steps"),
    "accuracy_drop": Figure("accuracy lost vs clean twin at the end", HELD_OUT, "at the last evaluation step"),
    "disagreement_mean": Figure(
        "held-out predictions changed vs clean twin, mean",
        HELD_OUT,
        f"held-out clean inputs the model and the clean twin classify (or accept and flag) differently; {OVER}",
    ),
    "clean_accuracy_mean": Figure(
        "clean accuracy (held-out), mean",
        HELD_OUT,
        f"a classifier's accuracy on held-out clean inputs; a detector's share of them it accepts; {OVER}",
    ),
    "clean_accuracy": Figure("clean accuracy (held-out) at the end", HELD_OUT, "at the last evaluation step"),
    "twin_clean_accuracy": Figure("clean twin: clean accuracy at the end", HELD_OUT, f"the same, of {TWIN}"),
    "prequential_accuracy": Figure(
        "prequential accuracy",
        "share of stream events",
        "test-then-train over the whole stream: each event predicted before it is learned (a classifier: benign "
        "events against their labels; a detector: benign events accepted and poison events flagged)",
    ),
    "displacement_radii": Figure(
        "displacement (radii)",
        "radii",
        "how far the detector's centroid moved toward the attack point A, in radii: (c - c0).(A - c0) / "
        "(r ||A - c0||); 1 or more: A is inside",
    ),
    "twin_displacement_radii": Figure("clean twin: displacement (radii)", "radii", f"the same, of {TWIN}"),
    "centroid_displacement": Figure(
        "centroid displacement (feature units)",
        "feature units",
        "the largest distance of a class centroid (the detector's one) from where it started",
    ),
    "window_contamination": Figure(
        "window contamination", "share of window slots", "poison in the model's window(s) at the end"
    ),
    "first_success_poison_events": Figure(
        "poison events to first success",
        "count",
        "poison events so far at the first evaluation step where attack success was 1",
    ),
    "deployed_attack_success_rate_mean": Figure(
        "deployed model: attack success, mean",
        "share of inputs",
        f"attack success of the snapshot serving uses (the model learns, a vetted copy serves); {OVER}",
    ),
    "deployed_attack_success_rate": Figure(
        "deployed model: attack success at the end", "share of inputs", "at the last evaluation step"
    ),
    "deployed_clean_accuracy": Figure(
        "deployed model: clean accuracy at the end", HELD_OUT, "held-out accuracy of the snapshot serving uses"
    ),
    "snapshots_deployed": Figure("snapshots deployed", "count", "snapshots of the model that went into serving"),
    "snapshots_vetoed": Figure("snapshots vetoed", "count", "snapshots kept out of serving by the deployment's checks"),
}

DEFENSE = {  # a defense's summary key -> figure (its verdicts scored against the ground truth)
    "precision_mean": Figure("precision, mean", "share of flags", f"flagged events that were poison; {OVER}"),
    "recall_mean": Figure("recall, mean", "share of poison", f"poison events it flagged; {OVER}"),
    "recall_worst": Figure("recall, worst", "share of poison", "the lowest of those steps"),
    "stream_frr_mean": Figure(
        "clean stream events flagged, mean", "share of clean events", f"benign stream events it flagged; {OVER}"
    ),
    "far_mean": Figure(
        "FAR, mean",
        "share of triggered inputs",
        f"false acceptance rate of a judge: held-out triggered inputs it lets through; {OVER}",
    ),
    "far_worst": Figure("FAR, worst", "share of triggered inputs", "the highest of those steps"),
    "frr_mean": Figure(
        "FRR, mean",
        "share of clean inputs",
        f"false rejection rate of a judge: held-out clean inputs it flags; {OVER}",
    ),
    "frr_worst": Figure("FRR, worst", "share of clean inputs", "the highest of those steps"),
    "attack_success_behind_mean": Figure(
        "attack success behind it, mean",
        "share of triggered inputs",
        f"held-out triggered inputs that pass the judge and reach the target class; {OVER}",
    ),
    "precision": Figure("precision at the end", "share of flags", "flagged events that were poison, whole stream"),
    "recall": Figure("recall at the end", "share of poison", "poison events it flagged, whole stream"),
    "far": Figure("FAR at the end", "share of triggered inputs", "at the last evaluation step"),
    "frr": Figure("FRR at the end", "share of clean inputs", "at the last evaluation step"),
    "attack_success_behind": Figure(
        "attack success behind it at the end", "share of triggered inputs", "at the last evaluation step"
    ),
    "resets": Figure("resets", "count", "times it reset the model's window"),
}

GLOSSARY = {**RUN, **{f"defense.{key}": figure for key, figure in DEFENSE.items()}}
FOR_DETECTORS = {  # labels that say what the figure is for an anomaly detector (it accepts or flags, not classifies)
    "clean_accuracy_mean": "clean inputs accepted (held-out), mean",
    "clean_accuracy": "clean inputs accepted (held-out) at the end",
    "twin_clean_accuracy": "clean twin: clean inputs accepted at the end",
    "prequential_accuracy": "prequential accuracy (clean accepted, poison flagged)",
}


def label(key: str, detector: bool = False) -> str:
    """The printed label of a run's summary key (``detector``: the model accepts or flags inputs).

    >>> label("clean_accuracy"), label("clean_accuracy", detector=True)
    ('clean accuracy (held-out) at the end', 'clean inputs accepted (held-out) at the end')
    """
    return FOR_DETECTORS[key] if detector and key in FOR_DETECTORS else RUN[key].label


def explain(key: str) -> str:
    """``unit: definition`` of a summary key (``defense.<key>`` for a defense's figure)."""
    figure = GLOSSARY[key]
    return f"{figure.unit}: {figure.definition}"


def markdown() -> str:
    """The glossary as the documentation's tables (``python -m poisonsim.evaluation.glossary`` prints them)."""

    def row(key: str, f: Figure) -> str:
        return (
            "| " + " | ".join(cell.replace("|", "\\|") for cell in (f"`{key}`", f.label, f.unit, f.definition)) + " |"
        )

    lines = ["## A run's figures", "", "| summary key | printed as | unit | what it is |", "|---|---|---|---|"]
    lines += [row(key, f) for key, f in RUN.items()]
    lines += ["", "## Each defense's figures (`defenses.<kind>.<key>`)", ""]
    lines += ["| key | printed as | unit | what it is |", "|---|---|---|---|"]
    lines += [row(key, f) for key, f in DEFENSE.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
