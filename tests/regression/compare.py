"""How a run's figures are compared with the corpus: exact where arithmetic cannot move them, within a
measured tolerance where float32 kernels can.

torch's float32 kernels differ by CPU (oneDNN's instruction set, ATen's
vector width, MKL's code path): the same case gives figures that differ in
the 7th digit, and now and then a held-out prediction sitting on a tie flips.
So, leaf by leaf:

- text, booleans and integers: equal;
- a float: within ``relative`` of the recorded one, or ``absolute`` for a
  figure near zero;
- a share of predictions (``SHARES``: accuracy, attack success, STRIP's
  rates; a column of ``timeseries.csv`` or a key of ``summary.json`` by that
  name): within ``shares``, about two predictions of the ~400 held-out
  inputs the digits cases score;
- a float array of ``analysis/*.npz`` (attributions, reversed triggers): as a
  whole, each element within ``arrays`` of the array's largest magnitude.

The numbers, and the cases that need wider ones, are in ``cases.py``
(``TOLERANCE``, ``LOOSER``), with the spread they were measured from.

>>> tight = Tolerance()
>>> differences({"clean_accuracy": 0.5, "threshold": 1.4748393297, "n": 3},
...             {"clean_accuracy": 0.50246, "threshold": 1.4748392105, "n": 3}, tight)
[]
>>> differences({"threshold": 1.4748393297}, {"threshold": 1.4768}, tight)
['threshold: 1.4748393297 recorded, 1.4768 now (float gap 0.0013), allowed 0.001']
>>> differences({"fp": 295}, {"fp": 291}, tight)
['fp: 295 recorded, 291 now']
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARES = frozenset(
    {
        "prequential_accuracy",
        "clean_accuracy",
        "attack_success_rate",
        "attack_success_rate_mean",
        "deployed_clean_accuracy",
        "deployed_attack_success_rate",
        "deployed_attack_success_rate_mean",
        "attack_success_behind",
        "attack_success_behind_mean",
        "attack_success_behind_worst",
        "far",
        "far_mean",
        "far_worst",
        "far_all",
        "far_all_mean",
        "far_all_worst",
        "frr",
        "frr_mean",
        "frr_worst",
        "trusted_accuracy_before",
        "trusted_accuracy_after",
        "trusted_accuracy_pruned",
        "surrogate_clean_accuracy",
        "surrogate_after_trigger_accuracy",
        "success",
        "attack_success_by_class",
        "attack_success_rate_worst",
        "clean_accuracy_mean",
        "clean_accuracy_worst",
        "deployed_attack_success_rate_worst",
        "deployed_clean_accuracy_mean",
        "deployed_clean_accuracy_worst",
        "twin_clean_accuracy",
        "twin_clean_accuracy_mean",
        "twin_attack_success_rate",
        "twin_attack_success_rate_mean",
        "accuracy_drop",
        "accuracy_drop_mean",
        "accuracy_drop_worst",
        "disagreement",
        "disagreement_mean",
        "disagreement_worst",
    }
)
"""Figures that count predictions of the net on held-out or trusted inputs (one flipped prediction moves them
by 1/n); ``defense.strip.far`` and the like in ``timeseries.csv`` are matched on their last part."""


@dataclass(frozen=True)
class Tolerance:
    """How far a figure may move from the recorded one before the case fails."""

    relative: float = 1e-3
    absolute: float = 1e-6
    shares: float = 0.005
    arrays: float = 1e-3  # a float array: its largest gap relative to its largest magnitude
    shared_names: frozenset[str] = frozenset()  # more names compared as shares in this case (e.g. a rank score)
    unchecked: frozenset[str] = frozenset()  # arrays not compared at all (each element chaotic), say why
    sorted_columns: frozenset[str] = frozenset()  # CSV columns compared sorted: each row chaotic, their spread not


@dataclass(frozen=True)
class Gap:
    """How far one figure moved: ``size`` in the unit its kind is judged in (``inf``: text, shape or keys)."""

    name: str
    kind: str  # "float" (relative), "share" (absolute), "array" (relative to its scale), "exact"
    size: float
    recorded: object
    new: object

    def allowed(self, tolerance: Tolerance) -> float:
        return {"float": tolerance.relative, "share": tolerance.shares, "array": tolerance.arrays}.get(self.kind, 0.0)

    def within(self, tolerance: Tolerance) -> bool:
        if self.kind == "float" and abs(self.new - self.recorded) <= tolerance.absolute:
            return True
        return self.size <= self.allowed(tolerance)

    def __str__(self) -> str:
        if self.kind == "exact":
            return f"{self.name}: {self.recorded!r} recorded, {self.new!r} now"
        return f"{self.name}: {self.recorded!r} recorded, {self.new!r} now ({self.kind} gap {self.size:.2g})"


def differences(recorded, new, tolerance: Tolerance, name: str = "") -> list[str]:
    """Every leaf of ``new`` (nested dicts and lists) that lies outside ``tolerance`` of ``recorded``."""
    return _outside(gaps(recorded, new, tolerance, name), tolerance)


def _outside(found, tolerance: Tolerance) -> list[str]:
    """The gaps of ``found`` beyond ``tolerance``, each with what was allowed."""
    return [
        f"{gap}, allowed {gap.allowed(tolerance):g}" if gap.kind != "exact" else str(gap)
        for gap in found
        if not gap.within(tolerance)
    ]


def gaps(recorded, new, tolerance: Tolerance, name: str = ""):
    """The gap of every leaf that is not equal (``tolerance`` says only which names are shares)."""
    if isinstance(recorded, dict):
        if not isinstance(new, dict) or new.keys() != recorded.keys():
            yield Gap(name or "keys", "exact", math.inf, sorted(recorded), _keys(new))
            return
        for key, value in recorded.items():
            yield from gaps(value, new[key], tolerance, f"{name}.{key}" if name else key)
    elif isinstance(recorded, list):
        if not isinstance(new, list) or len(new) != len(recorded):
            yield Gap(name, "exact", math.inf, f"{len(recorded)} values", _length(new))
            return
        for old, now in zip(recorded, new):
            yield from gaps(old, now, tolerance, name)
    elif isinstance(recorded, float) and isinstance(new, (float, int)) and not isinstance(new, bool):
        if not (recorded == new or math.isnan(recorded) and math.isnan(new)):
            yield _float_gap(name, recorded, float(new), tolerance)
    elif not (type(new) is type(recorded) and new == recorded):
        yield Gap(name, "exact", math.inf, recorded, new)


def _float_gap(name: str, recorded: float, new: float, tolerance: Tolerance) -> Gap:
    if math.isnan(recorded) or math.isnan(new):
        return Gap(name, "exact", math.inf, recorded, new)
    if _is_share(name, tolerance):
        return Gap(name, "share", abs(new - recorded), recorded, new)
    return Gap(name, "float", abs(new - recorded) / max(abs(recorded), abs(new)), recorded, new)


def _is_share(name: str, tolerance: Tolerance) -> bool:
    """``name`` (``summary.json.defenses.strip.far``, ``timeseries.csv:defense.strip.far``,
    ``summary.json.attack_success_by_class.3``) names a share in one of its parts."""
    return any(part in SHARES or part in tolerance.shared_names for part in re.split(r"[.:]", name))


def array_gaps(recorded: np.ndarray, new: np.ndarray, tolerance: Tolerance, name: str):
    """A float array compared as a whole: its largest gap relative to the array's largest magnitude."""
    if re.split(r"[.:]", name)[-1] in tolerance.unchecked:
        return
    if recorded.shape != new.shape or recorded.dtype.kind != new.dtype.kind:
        yield Gap(name, "exact", math.inf, f"{recorded.dtype}{recorded.shape}", f"{new.dtype}{new.shape}")
    elif recorded.dtype.kind != "f" or recorded.size == 1:
        yield from gaps(recorded.tolist(), new.tolist(), tolerance, name)
    elif not np.array_equal(recorded, new, equal_nan=True):
        if not np.array_equal(np.isnan(recorded), np.isnan(new)):
            yield Gap(name, "exact", math.inf, "NaN where recorded", "elsewhere")
            return
        old, now = np.nan_to_num(recorded.astype(np.float64)), np.nan_to_num(new.astype(np.float64))
        gap = float(np.abs(now - old).max())
        if _is_share(name, tolerance):
            yield Gap(name, "share", gap, "a share array", f"{gap:.3g} away")
        else:
            scale = float(np.abs(old).max())
            yield Gap(name, "array", gap / scale if scale else math.inf, f"scale {scale:.3g}", f"{gap:.3g} away")


def file_gaps(recorded: Path, new: Path, tolerance: Tolerance):
    """The gaps between two figure files of one kind (``.json``, ``.csv`` with a header, ``.npz``)."""
    label = recorded.name
    if recorded.suffix == ".npz":
        with np.load(recorded) as old, np.load(new) as now:
            if sorted(old.files) != sorted(now.files):
                yield Gap(f"{label} arrays", "exact", math.inf, sorted(old.files), sorted(now.files))
                return
            for key in old.files:
                yield from array_gaps(old[key], now[key], tolerance, f"{label}:{key}")
    elif recorded.suffix == ".json":
        yield from gaps(json.loads(recorded.read_text()), json.loads(new.read_text()), tolerance, label)
    elif recorded.suffix == ".csv":
        old, now = _columns(recorded), _columns(new)
        if list(old) != list(now):
            yield Gap(f"{label} columns", "exact", math.inf, list(old), list(now))
            return
        for column, values in old.items():
            new_values = now[column]
            if column in tolerance.sorted_columns and len(values) == len(new_values):
                values, new_values = sorted(values), sorted(new_values)  # the values' spread, not which row has each
            yield from gaps(values, new_values, tolerance, f"{label}:{column}")
    elif recorded.read_bytes() != new.read_bytes():
        yield Gap(label, "exact", math.inf, "bytes", "other bytes")


def file_differences(recorded: Path, new: Path, tolerance: Tolerance) -> list[str]:
    """What differs beyond ``tolerance`` between two figure files."""
    return _outside(file_gaps(recorded, new, tolerance), tolerance)


def _columns(path: Path) -> dict[str, list]:
    """A CSV file as its columns, each cell as JSON reads it (a number with a fraction a float), else text."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    return {name: [_cell(row[i]) for row in body] for i, name in enumerate(header)}


def _cell(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _keys(value) -> object:
    return sorted(value) if isinstance(value, dict) else type(value).__name__


def _length(value) -> object:
    return len(value) if isinstance(value, list) else type(value).__name__


def figure_files(directory: Path) -> list[str]:
    """The files under ``directory`` that the corpus compares, as paths relative to it (no scenario file, no
    drawings: a PNG's bytes follow matplotlib's version, and its arrays are kept beside it)."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and p.name != "scenario.toml" and p.suffix != ".png"
    )
