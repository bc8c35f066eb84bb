"""A benchmark's data file: the rows it measured (CSV), from which the docs' tables are generated.

Each row names the machine and the date it was measured on. Writing merges:
a row replaces the file's row of the same key and leaves the others, so
measurements of other settings or on other machines add up in one file (a
run on a machine with many cores adds its rows beside this project's).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.csv"
>>> write_rows(path, [{"n": "1", "s": "0.5"}, {"n": "2", "s": "0.7"}], ("n", "s"), key=("n",))
>>> write_rows(path, [{"n": "2", "s": "0.6"}], ("n", "s"), key=("n",))
>>> read_rows(path)
[{'n': '1', 's': '0.5'}, {'n': '2', 's': '0.6'}]
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import os
import platform
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path


def machine() -> str:
    """The CPU model and the cores this process may use, as the rows name the machine."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {used} of {os.cpu_count()} cores"


def today() -> str:
    return datetime.date.today().isoformat()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The file's rows as written (text), in the file's order; none when it does not exist."""
    if not path.exists():
        return []
    with path.open() as file:
        return list(csv.DictReader(file))


def write_rows(
    path: Path,
    rows: Iterable[dict],
    fields: Sequence[str],
    key: Sequence[str] | Callable[[dict], tuple],
    sort: bool = False,
) -> None:
    """``rows`` merged into the file's (a row with the same key replaced), written whole, in the order first seen
    or, with ``sort``, in key order: a new file renamed over the old, under a lock, so that writers at once lose
    no row. ``key``: the fields that name a row (compared as text), or a function of the row."""
    key_of = key if callable(key) else lambda row: tuple(str(row[k]) for k in key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = {key_of(row): row for row in [*read_rows(path), *rows]}
        scratch = path.with_suffix(".tmp")
        with scratch.open("w", newline="") as file:
            writer = csv.DictWriter(file, fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(merged[k] for k in sorted(merged)) if sort else writer.writerows(merged.values())
        scratch.replace(path)
