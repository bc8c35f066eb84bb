"""Every ready scenario gives the figures recorded in ``corpus/`` (timing fields aside), on any CPU.

The figures are ``summary.json``, ``timeseries.csv`` and the arrays of
``analysis/*.npz`` (attributions, reversed triggers); the PNGs drawn from them
are not kept (their bytes follow matplotlib's version, not ours).

A refactoring that changes a figure fails here; a change that means to move
figures re-records the corpus with ``python tests/regression/record.py`` and
says why in its commit. Text and integers must match exactly; floats computed
in float32 within a tolerance measured across CPU kernel paths
(``python tests/regression/kernels.py``: oneDNN SSE4.1 / AVX / AVX2, ATen's
default vector width, MKL SSE4.2, OpenBLAS Sandybridge, and the machine the
corpus was recorded on): relative 1e-3 against a largest measured gap of
9.8e-5, shares of predictions within 0.005 against one flipped prediction
(0.0025). ``cases.py`` keeps the numbers (``TOLERANCE``, ``LOOSER``) and
``compare.py`` the rules; CI runs this file again under the forced kernels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES, CORPUS, ROOT, tolerance_of  # noqa: E402
from compare import figure_files, file_differences  # noqa: E402
from record import run_case  # noqa: E402

from poisonsim.pipeline.results import write_results  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_matches_corpus(name, tmp_path):
    scenario, result = run_case(name)
    write_results(result, scenario, tmp_path)
    recorded = figure_files(CORPUS / name)
    assert recorded == figure_files(tmp_path)
    changed = [
        f"{file} {d}"
        for file in recorded
        for d in file_differences(CORPUS / name / file, tmp_path / file, tolerance_of(name))
    ]
    assert not changed, f"{name}: {len(changed)} figures moved beyond {tolerance_of(name)}:\n" + "\n".join(changed[:20])


def test_every_ready_scenario_has_a_case():
    """A ready scenario without a case could change its figures unseen."""
    named = {path for path, _ in CASES.values()}
    missing = sorted(p.name for p in (ROOT / "scenarios").glob("*.toml") if p.name not in named)
    assert not missing, f"no case in tests/regression/cases.py for {missing}: add one, then record.py it"
