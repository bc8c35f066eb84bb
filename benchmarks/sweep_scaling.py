"""Sweep scaling: the same CPU-bound grid with 1 worker and with more, side by side.

    .venv/bin/python benchmarks/sweep_scaling.py [--workers 1 2 4 8 16] [--runs 16] [--events 1000000] [--repeat 3]
    .venv/bin/python benchmarks/sweep_scaling.py --table

The grid is the greedy centroid-shift attack on a 64-feature detector, one run
per (rate, seed). numba kernels are compiled (and cached on disk) by a warm-up
run before any timing. One worker runs in this process; more run in a process
pool whose workers fork from a server that has loaded poisonsim and the
kernels once (the server, started by the first pool, is inside the first
round's timing). The worker counts alternate, ``--repeat`` rounds, and the
best time of each is kept (the machine may be shared). Every table is checked
equal to the one worker's (timing fields aside) and each count's speed-up over
one worker is printed, with the runs in flight (the runs' own seconds over the
sweep's: the workers kept busy). Each count's best is kept as a row (machine,
date, grid, workers) of ``docs/data/sweep_scaling.csv``; the sweeps page's
table is generated from it (``--table`` prints it), and a test holds the
page to it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.experiments.grid import Grid  # noqa: E402
from poisonsim.experiments.sweep import run_sweep  # noqa: E402
from poisonsim.pipeline.engine import run  # noqa: E402
from poisonsim.pipeline.results import TIMING_FIELDS  # noqa: E402

DATA = ROOT / "docs" / "data" / "sweep_scaling.csv"
FIELDS = ("machine", "date", "runs", "events", "workers", "seconds", "speedup", "runs_in_flight", "repeat")
KEY = ("machine", "runs", "events", "workers")
BASE = {
    "stream": {"n_features": 64},
    "model": {"window_size": 100, "window_policy": "average-out"},
    "attack": {"kind": "centroid-shift", "start": 1000},
    "evaluation": {"every": 100_000},
}


def grid(runs: int, events: int) -> Grid:
    rates = [0.05, 0.1, 0.15, 0.2]
    seeds = list(range(1, max(1, runs // len(rates)) + 1))
    base = {**BASE, "stream": {**BASE["stream"], "n_events": events}}
    return Grid.from_dict({"base": base, "seeds": seeds, "axes": {"attack.rate": rates}})


def table(rows: list[dict]) -> str:
    """The docs' table, a line per row of the data file.

    >>> print(table([{"machine": "Xeon, 2 of 2 cores", "date": "2026-12-07", "runs": "16", "events": "1000000",
    ...               "workers": "2", "seconds": "8.76", "speedup": "1.95", "runs_in_flight": "1.93", "repeat": "3"}]))
    | machine | date | grid | workers | seconds (best of) | speed-up over 1 worker | runs in flight |
    |---|---|---|---:|---:|---:|---:|
    | Xeon, 2 of 2 cores | 2026-12-07 | 16 runs x 1,000,000 events | 2 | 8.76 (3) | 1.95x | 1.93 |
    """
    lines = [
        "| machine | date | grid | workers | seconds (best of) | speed-up over 1 worker | runs in flight |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['machine']} | {row['date']} | {row['runs']} runs x {int(row['events']):,} events "
            f"| {row['workers']} | {row['seconds']} ({row['repeat']}) | {row['speedup']}x | {row['runs_in_flight']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16, help="runs in the grid (a multiple of 4)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="time each side this many times, keep the best")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (1 is always timed)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)))
        return
    counts = sorted({1, *args.workers})
    sweep = grid(args.runs, args.events)
    run(
        Scenario.from_dict(
            {**BASE, "stream": {"n_features": 64, "n_events": 5000}, "attack": {"kind": "centroid-shift", "rate": 0.1}}
        )
    )  # warm-up: numba compiles once and caches on disk
    print(
        f"grid: {len(sweep.runs())} runs of {args.events:,} events (centroid-shift, 64 features); {os.cpu_count()} CPUs"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    timings: dict[int, list[float]] = {workers: [] for workers in counts}
    in_flight: dict[int, list[float]] = {workers: [] for workers in counts}
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(args.repeat):  # alternate, so a busy moment hits both sides alike
            for workers in counts:
                out = Path(tmp) / f"w{workers}-{attempt}"
                started = time.perf_counter()
                run_sweep(sweep, out, workers=workers)
                timings[workers].append(time.perf_counter() - started)
                result = pd.read_parquet(out / "results.parquet")
                busy = result["elapsed_seconds"].sum() / timings[workers][-1]
                in_flight[workers].append(busy)
                tables[workers] = result.drop(columns=list(TIMING_FIELDS))
                shutil.rmtree(out)
                # runs in flight: the runs' own seconds over the sweep's; below the workers, start-up and the
                # parent's bookkeeping (or other processes on the machine) had the rest
                print(
                    f"round {attempt + 1}, workers={workers}: {timings[workers][-1]:6.2f} s, {busy:.2f} runs in flight"
                )
    for workers in counts[1:]:
        pd.testing.assert_frame_equal(tables[1], tables[workers])
    best = {workers: min(times) for workers, times in timings.items()}
    fastest = {workers: in_flight[workers][times.index(best[workers])] for workers, times in timings.items()}
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"best of {args.repeat} (tables identical, timing fields aside):")
    where, when, rows = machine(), today(), []
    for workers in counts:
        print(f"  {workers:>3} worker(s): {best[workers]:7.2f} s, speed-up {best[1] / best[workers]:5.2f}x")
        rows.append(
            {"machine": where, "date": when, "runs": len(sweep.runs()), "events": args.events, "workers": workers}
            | {"seconds": f"{best[workers]:.2f}", "speedup": f"{best[1] / best[workers]:.2f}"}
            | {"runs_in_flight": f"{fastest[workers]:.2f}", "repeat": args.repeat}
        )
    write_rows(args.data, rows, FIELDS, KEY)
    print(f"rows kept in {args.data}")


if __name__ == "__main__":
    main()
