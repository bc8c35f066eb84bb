"""How long each shipped scenario takes: ``poisonsim run FILE`` wall time, whole process, on a warm environment.

Each scenario of ``scenarios/`` runs once as a user runs it (``poisonsim run
FILE --quiet --out DIR``) after one warm-up run that fills the compiled
kernels' disk cache; a row keeps its wall seconds, events, the machine (the
cores the process may use, e.g. under ``taskset -c 0``) and the date. The README's index of scenarios shows these times, and a test
holds each to its row here.

    .venv/bin/python benchmarks/scenario_times.py                 # every scenario
    .venv/bin/python benchmarks/scenario_times.py label_flip targeted
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import datafile  # noqa: E402
from benchmarks.datafile import machine, today  # noqa: E402

DATA = ROOT / "docs" / "data" / "scenario_times.csv"
COLUMNS = ("scenario", "seconds", "events", "machine", "date")
POISONSIM = [sys.executable, "-m", "poisonsim.cli"]


def timed_run(path: Path) -> dict:
    """One whole ``poisonsim run`` of ``path``: its wall seconds and the events it ran."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([*POISONSIM, "run", str(path), "--quiet", "--out", out], check=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        events = json.loads((Path(out) / "summary.json").read_text())["events_total"]
    return {"scenario": path.stem, "seconds": f"{seconds:.1f}", "events": events}


def read_rows(data: Path = DATA) -> dict[str, dict]:
    """The rows kept so far, by scenario."""
    return {row["scenario"]: row for row in datafile.read_rows(data)}


def write_rows(rows: dict[str, dict], data: Path = DATA) -> None:
    datafile.write_rows(data, rows.values(), COLUMNS, ("scenario",), sort=True)


def shown(seconds: float) -> str:
    """A time as the README's index writes it: ``1 s``, ``45 s``, ``3 min``.

    >>> [shown(s) for s in (0.9, 1.4, 44.6, 95, 812)]
    ['1 s', '1 s', '45 s', '2 min', '14 min']
    """
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    return f"{round(seconds / 60)} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="names in scenarios/ (default: all)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    paths = [ROOT / "scenarios" / f"{name}.toml" for name in args.scenarios] or sorted(
        (ROOT / "scenarios").glob("*.toml")
    )
    timed_run(ROOT / "scenarios" / "centroid_shift.toml")  # warm-up: the compiled kernels' cache
    rows = read_rows(args.data)
    when, where = today(), machine()
    for path in paths:
        row = {**timed_run(path), "machine": where, "date": when}
        rows[row["scenario"]] = row
        write_rows(rows, args.data)  # each run kept as it ends
        print(f"{row['scenario']}: {row['seconds']} s ({row['events']} events)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
