"""Defense figures over the stream after the attack starts, not at one moment.

A defense that recalibrates on a schedule looks best just after it did; an
end-of-stream figure, or rows taken on the defense's own schedule, hide what
it let through in between. Two figures are kept per defense:

- from its verdicts on the stream (cumulative tp/fp/tn/fn in the rows): per
  evaluation interval after the attack starts, ``precision``, ``recall`` and
  ``stream_frr`` (the share of clean stream events it flagged), then their
  mean over intervals and the worst interval;
- for a judge of inputs, on held-out inputs: probes taken at random
  positions the defense does not know (one per evaluation interval), then
  the mean and the worst of ``frr``, ``far`` and ``attack_success_behind``.

>>> rows = [{"events": e, "defense.d.tp": tp, "defense.d.fp": fp, "defense.d.tn": tn, "defense.d.fn": fn}
...         for e, tp, fp, tn, fn in ((0, 0, 0, 0, 0), (100, 0, 1, 99, 0), (200, 8, 2, 188, 2), (300, 9, 12, 268, 11))]
>>> figures = interval_figures(rows, "d", attack_start=150)
>>> figures["recall_mean"], figures["recall_worst"], round(figures["stream_frr_worst"], 3)
(0.45, 0.1, 0.111)
>>> probe_figures([{"events": 50, "defense.d.far": 0.0}, {"events": 250, "defense.d.far": 0.3}], "d", 150)
{'far_mean': 0.3, 'far_worst': 0.3}
"""

from __future__ import annotations

import numpy as np

COUNTS = ("tp", "fp", "tn", "fn")
WORST = {
    "precision": min,
    "recall": min,
    "stream_frr": max,
    "frr": max,
    "far": max,
    "attack_success_behind": max,
    "clean_accuracy": min,
    "deployed_clean_accuracy": min,
}


def interval_figures(rows: list[dict], kind: str, attack_start: int) -> dict:
    """Mean and worst per-interval ``precision``, ``recall`` and ``stream_frr`` of defense ``kind``, over the
    evaluation intervals that end after ``attack_start`` (a stream position)."""
    prefix = f"defense.{kind}."
    values: dict[str, list[float]] = {"precision": [], "recall": [], "stream_frr": []}
    for before, after in zip(rows, rows[1:]):
        if after["events"] <= attack_start or prefix + "tp" not in before:
            continue
        tp, fp, tn, fn = (after[prefix + k] - before[prefix + k] for k in COUNTS)
        for name, num, den in (("precision", tp, tp + fp), ("recall", tp, tp + fn), ("stream_frr", fp, fp + tn)):
            if den:
                values[name].append(num / den)
    return _mean_and_worst(values)


def probe_figures(probes: list[dict], kind: str, attack_start: int) -> dict:
    """Mean and worst of a judge's held-out rates over the probes taken after ``attack_start``."""
    prefix = f"defense.{kind}."
    values: dict[str, list[float]] = {}
    for probe in probes:
        if probe["events"] <= attack_start:
            continue
        for key, value in probe.items():
            if key.startswith(prefix) and value is not None:
                values.setdefault(key[len(prefix) :], []).append(value)
    return _mean_and_worst(values)


OVER_THE_STREAM = (
    "attack_success_rate",
    "clean_accuracy",
    "accuracy_drop",
    "disagreement",
    "deployed_attack_success_rate",
    "deployed_clean_accuracy",
)  # evaluator row keys: mean and worst
TWIN_BASE = ("twin_clean_accuracy", "twin_attack_success_rate")  # the twin's own figures: the mean alone


def stream_figures(rows: list[dict], attack_start: int) -> dict:
    """The evaluator's figures over the stream: ``<key>_mean`` over the evaluation rows after ``attack_start`` (a
    stream position; 0 for a run without poison: every row after the first) and ``<key>_worst``, the worst row.

    >>> rows = [{"events": e, "attack_success_rate": a, "clean_accuracy": c}
    ...         for e, a, c in ((0, 0.0, 0.9), (100, 0.1, 0.9), (200, 0.6, 0.8), (300, 0.9, 0.85))]
    >>> stream_figures(rows, attack_start=150)
    {'attack_success_rate_mean': 0.75, 'attack_success_rate_worst': 0.9, 'clean_accuracy_mean': 0.825, \
'clean_accuracy_worst': 0.8}
    """
    values: dict[str, list[float]] = {}
    for row in rows:
        if row["events"] <= attack_start:
            continue
        for key in (*OVER_THE_STREAM, *TWIN_BASE):
            if row.get(key) is not None:
                values.setdefault(key, []).append(row[key])
    return _mean_and_worst(values, mean_only=TWIN_BASE)


def probe_position(seed: int, interval: int, every: int, unit: int, n_events: int) -> int:
    """Where the probe of evaluation interval ``interval`` (events ``(k every, (k+1) every]``) is taken: a
    multiple of ``unit`` in it drawn from ``seed`` (its end when it holds none).

    >>> [probe_position(3, k, every=500, unit=64, n_events=1200) for k in range(3)]
    [384, 960, 1152]
    """
    lo, hi = interval * every, min((interval + 1) * every, n_events)
    first = (lo // unit + 1) * unit
    if first > hi:
        return hi
    choices = (hi - first) // unit + 1
    return first + unit * int(np.random.default_rng([seed, interval]).integers(choices))


def _mean_and_worst(values: dict[str, list[float]], mean_only: tuple[str, ...] = ()) -> dict:
    figures = {}
    for name, series in values.items():
        if series:
            figures[f"{name}_mean"] = float(np.mean(series))
            if name not in mean_only:
                figures[f"{name}_worst"] = float(WORST.get(name, max)(series))
    return figures
