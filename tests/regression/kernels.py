"""The regression corpus under torch's other CPU kernel paths: measure the spread, or check it holds.

``python tests/regression/kernels.py [--jobs 2] [CASE ...]`` records the cases
once under each setting of ``KERNELS`` (a fresh process each: the switches
are read when torch loads), then prints, case by case, the largest gap of
each kind (see ``compare.py``) from the recorded corpus, and the figures
that fall outside their tolerance. The tolerances in ``cases.py`` come from
this table.

``--check`` runs ``test_corpus.py`` itself under each setting but the native
one instead (what ``make test-kernels`` and CI do) and fails if any run does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cases import CASES, CORPUS, tolerance_of
from compare import Gap, figure_files, file_gaps

KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "oneDNN SSE4.1": {"DNNL_MAX_CPU_ISA": "SSE41"},
    "oneDNN AVX": {"DNNL_MAX_CPU_ISA": "AVX"},
    "ATen default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATen AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL SSE4.2": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "OpenBLAS Sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
}
"""The switches that pick another kernel for the same arithmetic: oneDNN's instruction set (convolutions,
linear layers), ATen's vector width (elementwise ops, reductions), MKL's code path and numpy's OpenBLAS core."""

CHECKED = ("oneDNN SSE4.1", "oneDNN AVX", "ATen default", "ATen AVX2")
"""The settings ``--check`` runs the corpus under: those that move a figure (MKL's and OpenBLAS's switches
left every figure as the native run has it). ATen AVX2 is a CPU with AVX-512's view of one without it (on a
CPU without AVX-512 it is the native run again)."""

KINDS = ("float", "share", "array", "exact")


def _env(switches: dict[str, str]) -> dict[str, str]:
    """This process's environment with a kernel setting's switches (read when torch loads in the child)."""
    return {**os.environ, **switches, "OMP_WAIT_POLICY": "PASSIVE"}


def record_under(name: str, switches: dict[str, str], cases: list[str], into: Path) -> None:
    command = [sys.executable, str(Path(__file__).with_name("record.py")), "--into", str(into), *cases]
    done = subprocess.run(command, env=_env(switches), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name}: record.py failed\n{done.stderr[-2000:]}")


def case_gaps(case: str, folder: Path, reference: Path = CORPUS) -> list[tuple[str, Gap]]:
    """Every figure of ``folder/case`` that differs from ``reference/case``, with the file it is in."""
    return [
        (file, gap)
        for file in figure_files(reference / case)
        for gap in file_gaps(reference / case / file, folder / case / file, tolerance_of(case))
    ]


def largest_gaps(gaps: list[tuple[str, Gap]]) -> dict[str, float]:
    """The largest gap of each kind (inf: a text or shape changed)."""
    largest = dict.fromkeys(KINDS, 0.0)
    for _, gap in gaps:
        largest[gap.kind] = max(largest[gap.kind], gap.size)
    return largest


def check_under(name: str, switches: dict[str, str]) -> tuple[str, int, str]:
    """``test_corpus.py`` run under ``switches``: the setting, pytest's exit status and its closing line."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(Path(__file__).with_name("test_corpus.py")),
    ]
    done = subprocess.run(command, env=_env(switches), capture_output=True, text=True, cwd=Path(__file__).parents[2])
    lines = done.stdout.strip().splitlines() or [done.stderr.strip()]
    report = done.stdout if done.returncode else lines[-1]
    return name, done.returncode, report


def check(jobs: int) -> int:
    alternatives = {name: KERNELS[name] for name in CHECKED}
    failed = 0
    with ThreadPoolExecutor(jobs) as pool:
        for name, status, report in pool.map(lambda item: check_under(*item), alternatives.items()):
            switches = " ".join(f"{key}={value}" for key, value in alternatives[name].items())
            print(f"corpus under {switches}: {report}", flush=True)
            failed += status != 0
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="kernel settings run at once (default 2)")
    parser.add_argument("--check", action="store_true", help="run test_corpus.py under each alternative setting")
    parser.add_argument("cases", nargs="*", metavar="CASE", help="default: every case")
    args = parser.parse_args()
    if args.check:
        return check(args.jobs)
    if unknown := sorted(set(args.cases) - set(CASES)):
        parser.error(f"no case named {', '.join(unknown)}")
    cases = args.cases or sorted(CASES)
    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / str(i) for i, name in enumerate(KERNELS)}
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda name: record_under(name, KERNELS[name], cases, folders[name]), KERNELS))
        outside = []
        print(f"{'case':34} {'kernels':22} " + " ".join(f"{kind:>9}" for kind in KINDS))
        for case in cases:
            for name, folder in folders.items():
                gaps = case_gaps(case, folder)
                largest = largest_gaps(gaps)
                if any(largest.values()):
                    print(f"{case:34} {name:22} " + " ".join(f"{largest[kind]:9.2g}" for kind in KINDS))
                outside += [
                    f"{case} under {name}: {file} {gap}" for file, gap in gaps if not gap.within(tolerance_of(case))
                ]
    print("\n".join(["", f"{len(outside)} figures outside their tolerance", *outside]))
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main())
