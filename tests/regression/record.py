"""Write the regression corpus: ``python tests/regression/record.py [CASE ...]`` (all cases by default)."""

from __future__ import annotations

import shutil
import sys

import torch

from cases import CASES, CORPUS, ROOT, TORCH_THREADS

from simulator.config import Scenario
from simulator.pipeline.engine import TIMING_FIELDS, run, write_results


def run_case(name: str):
    """The case's result with the timing fields removed (torch on ``TORCH_THREADS``, then as it was)."""
    path, overrides = CASES[name]
    scenario = Scenario.from_toml(ROOT / "scenarios" / path, overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        result = run(scenario)
    finally:
        torch.set_num_threads(threads)
    for key in TIMING_FIELDS:
        result.summary.pop(key, None)
    return scenario, result


if __name__ == "__main__":
    for name in sys.argv[1:] or CASES:
        scenario, result = run_case(name)
        shutil.rmtree(CORPUS / name, ignore_errors=True)  # a file the case no longer writes must not stay
        out = write_results(result, scenario, CORPUS / name)
        (out / "scenario.toml").unlink()
        for drawing in out.rglob("*.png"):  # drawn from the arrays kept beside them
            drawing.unlink()
        print(name, "written")
