"""Write the regression corpus: ``python tests/regression/record.py [--into DIR] [CASE ...]``.

All cases by default, into ``corpus/``; ``--into`` writes elsewhere (how
``kernels.py`` records the corpus under other kernel paths to compare).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from cases import CASES, CORPUS, ROOT, TORCH_THREADS

from poisonsim.config import Scenario
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.results import TIMING_FIELDS, write_results


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


def record(name: str, into: Path) -> None:
    """Run case ``name`` and write its figures under ``into/name`` (no scenario file, no drawings)."""
    scenario, result = run_case(name)
    shutil.rmtree(into / name, ignore_errors=True)  # a file the case no longer writes must not stay
    out = write_results(result, scenario, into / name)
    (out / "scenario.toml").unlink()
    for drawing in out.rglob("*.png"):  # drawn from the arrays kept beside them
        drawing.unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--into", type=Path, default=CORPUS, help="the folder to write (default: the corpus)")
    parser.add_argument("cases", nargs="*", metavar="CASE", help="default: every case")
    args = parser.parse_args()
    if unknown := sorted(set(args.cases) - set(CASES)):
        parser.error(f"no case named {', '.join(unknown)} (cases.py names {len(CASES)})")
    for name in args.cases or CASES:
        record(name, args.into)
        print(name, "written", flush=True)
