"""Every ready scenario gives the figures recorded in ``corpus/`` (timing fields aside).

The figures are ``summary.json``, ``timeseries.csv`` and the arrays of
``analysis/*.npz`` (attributions, reversed triggers); the PNGs drawn from them
are not kept (their bytes follow matplotlib's version, not ours).

A refactoring that changes a figure fails here; a change that means to move
figures re-records the corpus with ``python tests/regression/record.py`` and
says why in its commit. Text and integers must match exactly; a number with
a fraction to within ``RELATIVE`` of the recorded one, the rounding that a
new numpy or BLAS build moves (a different summation order in the last
digits), not a figure a change of ours moves.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES, CORPUS, ROOT  # noqa: E402
from record import run_case  # noqa: E402

from simulator.pipeline.engine import write_results  # noqa: E402

RELATIVE = 1e-9


def same(new, recorded) -> bool:
    """``new`` equals ``recorded``: exactly, or as floats within ``RELATIVE`` (nested lists and dicts alike).

    >>> same({"a": [1, 0.30799913237661436]}, {"a": [1, 0.3079991323766143]}), same(0.31, 0.3079991323766143)
    (True, False)
    >>> same(2, 2.0000000001), same("x", "y")
    (False, False)
    """
    if isinstance(recorded, dict):
        return isinstance(new, dict) and new.keys() == recorded.keys() and all(same(new[k], v) for k, v in
                                                                               recorded.items())  # fmt: skip
    if isinstance(recorded, list):
        return isinstance(new, list) and len(new) == len(recorded) and all(map(same, new, recorded))
    if isinstance(recorded, float) and isinstance(new, float):
        return math.isclose(new, recorded, rel_tol=RELATIVE) or (math.isnan(new) and math.isnan(recorded))
    return type(new) is type(recorded) and new == recorded


def cell(text: str):
    """A CSV cell as JSON reads it (a number with a fraction becomes a float), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read(path: Path):
    if path.suffix == ".npz":
        with np.load(path) as arrays:
            return {key: arrays[key].tolist() for key in arrays.files}
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            return [[cell(text) for text in row] for row in csv.reader(handle)]
    return path.read_text()


def figure_files(directory: Path) -> list[str]:
    """The files under ``directory`` that the corpus compares, as paths relative to it."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != "scenario.toml" and p.suffix != ".png")  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_corpus(name, tmp_path):
    scenario, result = run_case(name)
    write_results(result, scenario, tmp_path)
    recorded = figure_files(CORPUS / name)
    assert recorded == figure_files(tmp_path)
    for file in recorded:
        assert same(read(tmp_path / file), read(CORPUS / name / file)), f"{name}/{file} changed"


def test_every_ready_scenario_has_a_case():
    """A ready scenario without a case could change its figures unseen."""
    named = {path for path, _ in CASES.values()}
    missing = sorted(p.name for p in (ROOT / "scenarios").glob("*.toml") if p.name not in named)
    assert not missing, f"no case in tests/regression/cases.py for {missing}: add one, then record.py it"
