"""``poisonsim drift-bench``: every drift monitor (river's drift monitors and trivial baselines) on clean and attacked streams.

A bench is a sweep (:mod:`poisonsim.experiments.sweep`, so it runs on a
local pool or a dask cluster and resumes) of a grid whose runs carry a
``drift-watch`` defense: every drift monitor watches the same stream. Each run's
``name`` is its stream (``clean``, ``sudden``, ...). From the sweep's table,
one row per stream and monitor, over seeds:

- ``false_alarms_per_10k``: alarms before the attack began, per 10,000 of those
  clean events (the always-firing baseline: 10,000);
- ``detection_delay``: mean events from the attack's first event to the first
  alarm, over the runs that had one; ``missed``: share of runs with an attack
  and no alarm after it began; ``attack_alarms_per_10k``: alarms from the
  attack's start on, per 10,000 events;
- ``displacement_at_alarm``: how far the centroid detector's centroid had moved (radii
  toward the attack point) when that alarm came.

Written as ``drift_bench.csv``, ``drift_bench.parquet`` and ``drift_bench.png``
beside the sweep's own tables.

>>> import pandas as pd
>>> runs = pd.DataFrame({"name": ["clean", "clean"], "seed": [1, 2], "error": [None, None],
...     "defenses.drift-watch.always.false_alarms_per_10k": [10000.0, 10000.0],
...     "defenses.drift-watch.always.alarms": [5000, 5000]})
>>> bench_table(runs)[["stream", "monitor", "runs", "false_alarms_per_10k"]].to_dict("records")
[{'stream': 'clean', 'monitor': 'always', 'runs': 2, 'false_alarms_per_10k': 10000.0}]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from poisonsim.experiments.sweep import write_tables

PREFIX = "defenses.drift-watch."
FIGURES = ("false_alarms_per_10k", "detection_delay", "missed", "attack_alarms_per_10k", "displacement_at_alarm")
TABLE = "drift_bench"
DEFAULT_GRID = "sweeps/drift_bench.toml"


def bench_table(runs: Any) -> Any:
    """One row per (stream, monitor) from a sweep's table of drift-watch runs (``runs``: a DataFrame)."""
    import pandas as pd

    runs = runs[runs["error"].isna()]
    if "name" not in runs:
        raise ValueError("drift-bench: the grid must name each stream (an axis over name = [...])")
    monitors = sorted(
        {
            column[len(PREFIX) :].split(".")[0]
            for column in runs
            if column.startswith(PREFIX) and column.count(".") == PREFIX.count(".") + 1
        }
    )
    if not monitors:
        raise ValueError('drift-bench: no run has a drift-watch defense ([[defense]] kind = "drift-watch")')
    rows = []
    for stream, group in runs.groupby("name", sort=False):
        for monitor in monitors:
            row: dict[str, Any] = {"stream": stream, "monitor": monitor, "runs": len(group)}
            for figure in FIGURES:
                column = f"{PREFIX}{monitor}.{figure}"
                values = pd.to_numeric(group[column], errors="coerce") if column in group else pd.Series(dtype=float)
                values = values.dropna()
                row[figure] = float(values.mean()) if len(values) else None
                if figure == "detection_delay":
                    row["detection_delay_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
            rows.append(row)
    return pd.DataFrame(rows)


def write_bench(out: str | Path) -> Any:
    """Write the sweep's tables, then ``drift_bench.{csv,parquet,png}`` into ``out``; return the bench table."""
    out = Path(out)
    table = bench_table(write_tables(out))
    table.to_csv(out / f"{TABLE}.csv", index=False)
    table.to_parquet(out / f"{TABLE}.parquet")
    figure = bench_figure(table)
    figure.savefig(out / f"{TABLE}.png", dpi=120)
    return table


def bench_figure(table: Any):
    """False alarms per 10,000 clean events (clean streams) beside detection delay (attacked ones), per
    monitor: a monitor to prefer sits low in both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitors = list(dict.fromkeys(table["monitor"]))
    streams = list(dict.fromkeys(table["stream"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    y = np.arange(len(monitors))
    false = table.groupby("monitor", sort=False)["false_alarms_per_10k"].mean().reindex(monitors)
    left.barh(y, np.log10(1 + false.fillna(0).to_numpy()), color="#888888")
    left.set_yticks(y, monitors)
    left.set_xlabel("log10(1 + false alarms per 10,000 clean events)")
    left.set_title("false alarms (before any attack)")
    attacked = [s for s in streams if table[(table["stream"] == s)]["detection_delay"].notna().any()]
    width = 0.8 / max(len(attacked), 1)
    for i, stream in enumerate(attacked):
        delay = table[table["stream"] == stream].set_index("monitor")["detection_delay"].reindex(monitors)
        right.barh(
            y + i * width - 0.4 + width / 2, np.log10(1 + delay.fillna(0).to_numpy()), height=width, label=stream
        )
    right.set_yticks(y, monitors)
    right.set_xlabel("log10(1 + detection delay, events); no bar: never fired")
    right.set_title("detection delay after the attack began")
    if attacked:
        right.legend(fontsize=8)
    return fig
