"""Every ready scenario gives the bytes recorded in ``corpus/`` (timing fields aside).

A refactoring that changes a figure fails here; a change that means to move
figures re-records the corpus with ``python tests/regression/record.py`` and
says why in its commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES, CORPUS  # noqa: E402
from record import run_case  # noqa: E402

from simulator.pipeline.engine import write_results  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_corpus(name, tmp_path):
    scenario, result = run_case(name)
    write_results(result, scenario, tmp_path)
    recorded = sorted(p.name for p in (CORPUS / name).iterdir())
    assert recorded == sorted(p.name for p in tmp_path.iterdir() if p.name != "scenario.toml")
    for file in recorded:
        assert (tmp_path / file).read_text() == (CORPUS / name / file).read_text(), f"{name}/{file} changed"
