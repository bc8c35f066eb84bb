"""The docs' tables that come from a sweep: each run's figures kept in a data file, the table a pivot of it.

A named table runs its sweep (``poisonsim sweep``, ``--workers`` processes)
or reads a finished sweep directory (``--from DIR``), keeps every run's axes
and figures as a row (machine, date, axes, seed) of
``docs/data/sweep_NAME.csv``, and prints the table: means over the seeds of
each cell. ``--table`` prints it from the data file alone; a test holds each
page to it.

- ``badnets_defenses`` (docs/defenses.md): ``sweeps/badnets_defenses.toml``,
  attack success and clean accuracy against rho, one column per defense;
  and what STRIP dropped and let through;
- ``drift_bench`` (docs/stream-threats.md): ``sweeps/drift_bench.toml``, as
  ``poisonsim drift-bench`` scores it: each drift monitor's false alarms,
  delays and alarm rate under provoking bursts;
- ``mnist_matrix`` (docs/mnist.md): ``sweeps/mnist_matrix.toml``, attack
  success / clean accuracy (percent) per trigger, rho and defense; behind
  STRIP, what passes it (the net's own attack success in brackets); Neural
  Cleanse's cell adds in how many seeds it named the target class; and the
  seconds a run took, per defense.

    .venv/bin/python benchmarks/sweep_tables.py badnets_defenses --workers 2
    .venv/bin/python benchmarks/sweep_tables.py mnist_matrix --from results/mnist_matrix
    .venv/bin/python benchmarks/sweep_tables.py mnist_matrix --table
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402

SUCCESS, CLEAN = "attack_success_rate", "clean_accuracy"
BEHIND, FOUND = "defenses.strip.attack_success_behind", "defenses.neural-cleanse.target_found"
STRIP = tuple(f"defenses.strip.{k}" for k in ("recall", "stream_frr", "attack_success_behind_mean", "far_mean"))
MONITORS = ("adwin", "page-hinkley", "kswin", "ddm", "eddm", "hddm-a", "hddm-w", "never", "always", "periodic")


def badnets_defenses(runs: pd.DataFrame) -> str:
    """Attack success and clean accuracy (means over the seeds) against rho, a column per defense.

    >>> runs = pd.DataFrame({"attack.rate": [0.01] * 4, "defense": ["none", "none", "strip", "strip"],
    ...                      "seed": [1, 2, 1, 2], SUCCESS: [0.5, 0.6, 0.4, 0.5], CLEAN: [0.95, 0.97, 0.94, 0.96]})
    >>> print(badnets_defenses(runs).splitlines()[-1])
    | 0.01 | 0.550 / 0.450 | 0.960 / 0.950 | 2 |
    """
    defenses = list(dict.fromkeys(runs["defense"]))
    lines = [
        f"| rho | attack success: {' / '.join(defenses)} | clean accuracy: same order | seeds |",
        "|---|---|---|---:|",
    ]
    for rate, cell in runs.groupby("attack.rate", sort=True):
        means = cell.groupby("defense")[[SUCCESS, CLEAN]].mean()
        success = " / ".join(f"{means.loc[d, SUCCESS]:.3f}" for d in defenses)
        clean = " / ".join(f"{means.loc[d, CLEAN]:.3f}" for d in defenses)
        lines.append(f"| {rate:g} | {success} | {clean} | {cell['seed'].nunique()} |")
    return "\n".join(lines)


def badnets_strip(runs: pd.DataFrame) -> str:
    """STRIP dropping what it flags, per rho (means over the seeds): the poison events and the clean ones it
    dropped, and, as a runtime filter over the stream after the attack starts, the attack success behind it and
    its FAR.

    >>> runs = pd.DataFrame({"attack.rate": [0.01] * 2, "defense": ["none", "strip"], "seed": [1, 1],
    ...                      **{k: [None, v] for k, v in zip(STRIP, (0.11, 0.022, 0.18, 0.91))}})
    >>> print(badnets_strip(runs).splitlines()[-1])
    | 0.01 | 11.0% | 2.20% | 0.180 | 0.910 | 1 |
    """
    strip = runs[runs["defense"] == "strip"]
    lines = [
        "| rho | poison events dropped | clean events dropped | attack success behind STRIP, mean over the stream "
        "| FAR, mean over the stream | seeds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for rate, cell in strip.groupby("attack.rate", sort=True):
        recall, frr, behind, far = (cell[k].mean() for k in STRIP)
        lines.append(f"| {rate:g} | {recall:.1%} | {frr:.2%} | {behind:.3f} | {far:.3f} | {cell['seed'].nunique()} |")
    return "\n".join(lines)


def drift_bench(runs: pd.DataFrame) -> str:
    """Each drift monitor's false alarms on the clean stream, its delay on each attacked one (means over the runs
    that fired, ``poisonsim drift-bench``'s scoring) and its alarm rate under provoking bursts.

    >>> from poisonsim.experiments.drift_bench import PREFIX
    >>> runs = pd.DataFrame({"name": ["clean", "sudden", "gradual", "boiling-frog", "provoking-bursts"],
    ...                      "seed": [1] * 5, f"{PREFIX}adwin.false_alarms_per_10k": [0.0] + [None] * 4,
    ...                      f"{PREFIX}adwin.detection_delay": [None, 158.0, 2678.0, None, None],
    ...                      f"{PREFIX}adwin.missed": [None, 0.0, 0.0, 1.0, None],
    ...                      f"{PREFIX}adwin.attack_alarms_per_10k": [None, 1.0, 1.0, 0.0, 10.0]})
    >>> print(drift_bench(runs).splitlines()[-1])
    | adwin | 0 | 158 | 2,678 | never fired | 10 |
    """
    from poisonsim.experiments.drift_bench import bench_table

    bench = bench_table(runs.assign(error=None)).set_index(["stream", "monitor"])
    monitors = [m for m in MONITORS if m in bench.index.get_level_values("monitor")]
    lines = [
        "| monitor | false alarms per 10,000 clean events | delay, sudden | delay, gradual | delay, boiling frog "
        "| alarms per 10,000 events, provoking bursts |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for monitor in monitors:
        delays = [_delay(bench.loc[(stream, monitor)]) for stream in ("sudden", "gradual", "boiling-frog")]
        false_alarms = bench.loc[("clean", monitor), "false_alarms_per_10k"]
        bursts = bench.loc[("provoking-bursts", monitor), "attack_alarms_per_10k"]
        lines.append(f"| {monitor} | {_rate(false_alarms)} | {' | '.join(delays)} | {_rate(bursts)} |")
    return "\n".join(lines)


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"


def _delay(row: pd.Series) -> str:
    if pd.isna(row["detection_delay"]):
        return "never fired"
    missed = f" (missed {row['missed']:.0%})" if row["missed"] > 0 else ""
    return f"{row['detection_delay']:,.0f}{missed}"


def mnist_matrix(runs: pd.DataFrame) -> str:
    """Attack success / clean accuracy (percent, means over the seeds) per trigger and rho, a column per defense.

    >>> runs = pd.DataFrame({"attack.trigger": ["patch"] * 2, "attack.rate": [0.05] * 2, "seed": [1, 1],
    ...                      "defense": ["none", "strip"], SUCCESS: [0.9, 0.9], CLEAN: [0.95, 0.94],
    ...                      BEHIND: [None, 0.05], FOUND: [None, None]})
    >>> print(mnist_matrix(runs).splitlines()[-1])
    | patch | 0.05 | 90.0 / 95.0 | 5.0 (90.0) / 94.0 |
    """
    defenses = list(dict.fromkeys(runs["defense"]))
    lines = ["| trigger | rho | " + " | ".join(defenses) + " |", "|---|---|" + "---|" * len(defenses)]
    for (trigger, rate), cell in runs.groupby(["attack.trigger", "attack.rate"], sort=False):
        cells = [_matrix_cell(cell[cell["defense"] == d]) if (cell["defense"] == d).any() else "-" for d in defenses]
        lines.append(f"| {trigger} | {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds_per_run(runs: pd.DataFrame) -> str:
    """Mean wall seconds of a run, per defense (the machine is the data file's).

    >>> runs = pd.DataFrame({"defense": ["none", "none", "strip"], "elapsed_seconds": [4.0, 6.0, 290.0]})
    >>> print(seconds_per_run(runs).splitlines()[-1])
    | seconds per run | 5 | 290 |
    """
    defenses = list(dict.fromkeys(runs["defense"]))
    means = runs.groupby("defense")["elapsed_seconds"].mean()
    return "\n".join(
        [
            "| | " + " | ".join(defenses) + " |",
            "|---|" + "---:|" * len(defenses),
            "| seconds per run | " + " | ".join(f"{means[d]:.0f}" for d in defenses) + " |",
        ]
    )


def _matrix_cell(runs: pd.DataFrame) -> str:
    success, clean = 100 * runs[SUCCESS].mean(), 100 * runs[CLEAN].mean()
    defense = runs["defense"].iloc[0]
    if defense == "strip":
        return f"{100 * runs[BEHIND].mean():.1f} ({success:.1f}) / {clean:.1f}"
    text = f"{success:.1f} / {clean:.1f}"
    if defense == "neural-cleanse":
        found = runs[FOUND].astype(float) > 0
        text += f"; target named {int(found.sum())}/{len(found)}"
    return text


@dataclass(frozen=True)
class Spec:
    sweep: str
    figures: tuple[str, ...]
    renders: tuple[Callable[[pd.DataFrame], str], ...]


TABLES = {
    "badnets_defenses": Spec(
        "sweeps/badnets_defenses.toml", (SUCCESS, CLEAN, *STRIP), (badnets_defenses, badnets_strip)
    ),
    "drift_bench": Spec(
        "sweeps/drift_bench.toml",
        tuple(
            f"defenses.drift-watch.{m}.{f}"
            for m in MONITORS
            for f in ("false_alarms_per_10k", "detection_delay", "missed", "attack_alarms_per_10k")
        ),
        (drift_bench,),
    ),
    "mnist_matrix": Spec(
        "sweeps/mnist_matrix.toml",
        (SUCCESS, CLEAN, BEHIND, FOUND, "elapsed_seconds"),
        (mnist_matrix, seconds_per_run),
    ),
}


def data_path(name: str) -> Path:
    return ROOT / "docs" / "data" / f"sweep_{name}.csv"


def rows_of(name: str, out: Path) -> tuple[list[dict], tuple[str, ...]]:
    """The data file's rows of a finished sweep directory (a row per run that ended), and the sweep's axes."""
    from poisonsim.experiments.sweep import collect, read_manifest

    spec, axes = TABLES[name], tuple(read_manifest(out)["axes"])
    table, _ = collect(out)
    table = table[table["error"].isna()]
    where, when = machine(), today()
    rows = [
        {"machine": where, "date": when, **{a: run[a] for a in axes}, "seed": run["seed"]}
        | {f: (None if pd.isna(run.get(f)) else _number(run.get(f))) for f in spec.figures}
        for run in table.to_dict("records")
    ]
    return rows, axes


def _number(value):
    return int(value) if isinstance(value, bool) else value


def tables(name: str, rows: list[dict]) -> list[str]:
    """The docs' tables of ``name`` from the data file's rows (text, as read back)."""
    runs = pd.DataFrame(rows)
    for column in ("seed", "attack.rate", *TABLES[name].figures):
        if column in runs:  # a flag (Neural Cleanse's target_found) as 1 or 0
            runs[column] = pd.to_numeric(runs[column].replace({"True": "1", "False": "0"}))
    return [render(runs) for render in TABLES[name].renders]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(TABLES))
    parser.add_argument("--from", dest="source", type=Path, help="a finished sweep directory (default: run it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args(argv)
    data = data_path(args.name)
    if not args.table:
        with tempfile.TemporaryDirectory() as scratch:
            out = args.source or Path(scratch) / args.name
            if args.source is None:
                from poisonsim.experiments.grid import Grid
                from poisonsim.experiments.sweep import run_sweep

                run_sweep(Grid.from_toml(ROOT / TABLES[args.name].sweep), out, workers=args.workers)
            rows, axes = rows_of(args.name, out)
        fields = ("machine", "date", *axes, "seed", *TABLES[args.name].figures)
        write_rows(data, rows, fields, ("machine", *axes, "seed"))
        print(f"{len(rows)} runs kept in {data}")
    print(*tables(args.name, read_rows(data)), sep="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
