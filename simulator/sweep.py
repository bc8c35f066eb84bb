"""Parameter sweeps: a base scenario, axes over any key, seeds; one tidy table out.

A grid file names a base scenario, the seeds, how axes combine and fixed
overrides. A *point* is one combination of axis values; a *run* is a point
under one seed, and is fully determined by its scenario. Runs go to a local
process pool or to a dask.distributed cluster and the table is the same either
way (timing fields aside). Each run writes its own directory atomically, so a
sweep that is stopped and started again skips the runs that finished.

>>> grid = Grid.from_dict({"seeds": [1, 2], "axes": {"attack.kind": ["none", "label-flip"]}})
>>> [(run.id, run.values["attack.kind"]) for run in grid.runs()]
[('p0000-s1', 'none'), ('p0000-s2', 'none'), ('p0001-s1', 'label-flip'), ('p0001-s2', 'label-flip')]
>>> grid.runs()[3].scenario.attack.kind, grid.runs()[3].scenario.seed
('label-flip', 2)
>>> Grid.from_dict({"mode": "zip", "axes": {"attack.rate": [0.1, 0.2], "model.window_size": [10]}})
Traceback (most recent call last):
...
simulator.config.ConfigError: axes: mode "zip" needs axes of equal length, got attack.rate: 2, model.window_size: 1
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import signal
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from simulator import engine
from simulator.config import ConfigError, Scenario

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GRID_KEYS = ("base", "seeds", "mode", "axes", "set")
MODES = ("product", "zip")
POINTS_DIR = "points"
MANIFEST = "sweep.json"
JOURNAL = "sweep.log"
TABLE = "results"  # results.csv and results.parquet
TIMESERIES = "timeseries.parquet"


@dataclass(frozen=True)
class Run:
    """One point of the grid under one seed: a scenario, or the reason it was refused."""

    id: str
    point: int
    seed: int
    values: dict[str, Any]  # axis key -> label, as in the table
    scenario: Scenario | None
    error: str | None = None


@dataclass(frozen=True)
class Grid:
    """A base scenario (as parsed TOML), seeds, a mode, axes and fixed overrides."""

    base: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    mode: str = "product"
    axes: dict[str, list] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path) -> Grid:
        """Read a grid file; ``base`` is looked up beside it, then in its repository, then here."""
        path = Path(path)
        raw = _read_toml(path, "grid")
        base = raw.get("base")
        if base is not None:
            if not isinstance(base, str):
                raise ConfigError(f"base: expected a path to a scenario file, got {base!r}")
            raw = {**raw, "base": _read_toml(_find_base(base, path), "scenario")}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Grid:
        """Validate a parsed grid (``base`` already a parsed scenario table)."""
        for key in raw:
            if key not in GRID_KEYS:
                raise ConfigError(f"{key}: unknown grid key; allowed: {', '.join(GRID_KEYS)}")
        base = raw.get("base", {})
        if not isinstance(base, dict):
            raise ConfigError(f"base: expected a scenario table, got {base!r}")
        seeds = raw.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
                raise ConfigError(f"seeds: expected a non-empty list of integers >= 0, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise ConfigError(f"seeds: each seed once, got {seeds!r}")
            seeds = tuple(seeds)
        mode = raw.get("mode", "product")
        if mode not in MODES:
            raise ConfigError(f'mode: expected "product" or "zip", got {mode!r}')
        axes = flatten_keys(_table(raw, "axes"))
        for key, values in axes.items():
            if key == "seed":
                raise ConfigError("axes.seed: sweep seeds with seeds = [...]")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"axes.{key}: expected a non-empty list of values, got {values!r}")
        if mode == "zip" and len({len(v) for v in axes.values()}) > 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in axes.items())
            raise ConfigError(f'axes: mode "zip" needs axes of equal length, got {lengths}')
        return cls(base, seeds, mode, axes, flatten_keys(_table(raw, "set")))

    def points(self) -> list[dict[str, int]]:
        """Each point as the position of its value on every axis, in canonical order (first axis slowest)."""
        combine = zip if self.mode == "zip" else itertools.product
        return [dict(zip(self.axes, at)) for at in combine(*(range(len(v)) for v in self.axes.values()))]

    def scenario_table(self, point: dict[str, int]) -> dict[str, Any]:
        """The scenario of a point as a TOML table: the base, then ``[set]``, then the axis values."""
        raw = copy.deepcopy(self.base)
        for key, value in [*self.fixed.items(), *((k, self.axes[k][at]) for k, at in point.items())]:
            _set_key(raw, key, value)
        return raw

    def runs(self) -> list[Run]:
        """Every point under every seed, ordered by (point, seed); refused scenarios carry their error."""
        labels = {key: _labels(values) for key, values in self.axes.items()}
        runs = []
        for index, point in enumerate(self.points()):
            raw = self.scenario_table(point)
            seeds = self.seeds if self.seeds is not None else (raw.get("seed", 0),)
            shown = {key: labels[key][at] for key, at in point.items()}
            for seed in sorted(seeds):
                try:
                    scenario, error = Scenario.from_dict({**raw, "seed": seed}), None
                except ConfigError as exc:
                    scenario, error = None, str(exc)
                runs.append(Run(f"p{index:04d}-s{seed}", index, seed, shown, scenario, error))
        return runs


@dataclass
class Outcome:
    """What one run gave: its result, or the error that stopped it."""

    id: str
    result: engine.RunResult | None = None
    error: str | None = None


@dataclass
class Progress:
    """Counts after each finished run (``skipped``: finished before this start)."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0


def execute(run: Run) -> Outcome:
    """Run one point embedded (in a worker); an exception becomes the outcome's error."""
    if run.scenario is None:
        return Outcome(run.id, error=run.error)
    try:
        return Outcome(run.id, result=engine.run(run.scenario))
    except Exception:  # noqa: BLE001 - a failing point must not stop the others
        return Outcome(run.id, error=traceback.format_exc())


def run_sweep(
    grid: Grid,
    out: str | Path,
    workers: int | None = None,
    scheduler: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    """Run every unfinished run of ``grid`` into ``out`` and write the tables.

    ``workers`` local processes (default: the CPU count; 1 runs in this
    process), or the dask.distributed cluster at ``scheduler``.
    """
    out = Path(out)
    runs = grid.runs()
    if all(run.error for run in runs):
        raise ConfigError(runs[0].error)
    with _exclusive(out):
        return _sweep(out, runs, workers, scheduler, on_progress)


def _sweep(
    out: Path, runs: list[Run], workers: int | None, scheduler: str | None, on_progress: Callable | None
) -> Progress:
    _prepare(out, runs)
    finished = {run.id for run in runs if _is_finished(out, run.id)}
    todo = [run for run in runs if run.id not in finished]
    progress = Progress(total=len(runs), skipped=len(finished))
    if on_progress:
        on_progress(progress)
    by_id = {run.id: run for run in todo}
    refused = [Outcome(run.id, error=run.error) for run in todo if run.error]
    runnable = [run for run in todo if not run.error]
    if scheduler:
        outcomes = _on_dask(runnable, scheduler)
    else:
        workers = workers or _cpu_count()
        outcomes = map(execute, runnable) if workers == 1 else _on_pool(runnable, workers)
    for outcome in itertools.chain(refused, outcomes):
        _record(out, by_id[outcome.id], outcome)
        progress.done += outcome.error is None
        progress.failed += outcome.error is not None
        if on_progress:
            on_progress(progress)
    write_tables(out)
    return progress


def _on_pool(runs: list[Run], workers: int) -> Iterator[Outcome]:
    """A local process pool; workers are spawned (each loads numba's disk cache once)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_ignore_sigint)
    try:
        yield from _drain({pool.submit(execute, run): run.id for run in runs}, as_completed)
    except BaseException:  # Ctrl-C (or the sweep stopped): stop the workers now; their runs stay unfinished
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # public only from 3.14
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the sweep, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _on_dask(runs: list[Run], address: str) -> Iterator[Outcome]:
    """The dask.distributed cluster at ``address`` (a scheduler's tcp://HOST:PORT)."""
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover
        raise ConfigError("--scheduler needs dask.distributed: pip install 'poisonsim[distributed]'") from None
    try:
        client = Client(address, timeout=10)
    except OSError as exc:
        raise ConfigError(f"--scheduler {address}: no dask scheduler answered ({exc})") from None
    with client:
        futures = {client.submit(execute, run, pure=False): run.id for run in runs}
        try:
            yield from _drain(futures, as_completed)
        finally:
            client.cancel(list(futures))


def _drain(futures: dict, as_completed: Callable) -> Iterator[Outcome]:
    """Outcomes as runs end; a worker that died fails its run, not the sweep."""
    for future in as_completed(futures):
        try:
            yield future.result()
        except Exception as exc:  # noqa: BLE001
            yield Outcome(futures[future], error=f"worker failed: {exc!r}")


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One sweep at a time per results directory (the kernel drops the lock if the process dies)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out}: another sweep is writing there now") from None
        yield


def _prepare(out: Path, runs: list[Run]) -> None:
    """Write (or check) the manifest; clear half-written and failed runs; mend the journal."""
    manifest = {
        "format": 1,
        "fingerprint": _fingerprint(runs),
        "axes": list(runs[0].values),
        "runs": [{"id": r.id, "point": r.point, "seed": r.seed, "values": r.values} for r in runs],
    }
    path = out / MANIFEST
    if path.exists():
        if json.loads(path.read_text()).get("fingerprint") != manifest["fingerprint"]:
            raise ConfigError(f"{out}: holds the results of a different sweep; choose another --out")
    else:
        _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n"))
    points = out / POINTS_DIR
    points.mkdir(exist_ok=True)
    for entry in points.iterdir():
        if entry.name.startswith(".tmp-") or not (entry / "summary.json").exists():
            shutil.rmtree(entry)
    logged = {line["run"] for line in read_journal(out) if line["status"] == "done"}
    for run in runs:  # finished, but stopped before it was logged
        if _is_finished(out, run.id) and run.id not in logged:
            _log(out, {"run": run.id, "status": "done", "recovered": True})


def _record(out: Path, run: Run, outcome: Outcome) -> None:
    """Write the run's directory under a temporary name, then rename it into place."""
    points = out / POINTS_DIR
    tmp = points / f".tmp-{run.id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if outcome.result is not None:
        engine.write_results(outcome.result, run.scenario, tmp)
    else:
        tmp.mkdir(parents=True)
        (tmp / "error.txt").write_text(outcome.error)
        if run.scenario is not None:
            (tmp / "scenario.toml").write_text(run.scenario.to_toml())
    os.rename(tmp, points / run.id)
    entry = {"run": run.id, "status": "done"}
    if outcome.error is not None:
        entry = {"run": run.id, "status": "failed", "error": _last_line(outcome.error)}
    _log(out, entry)


def read_journal(out: str | Path) -> list[dict]:
    """The append-only journal: one ``{"run", "status"}`` line per run that ended."""
    path = Path(out) / JOURNAL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_manifest(out: str | Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.exists():
        raise ConfigError(f"{out}: not a sweep results directory (no {MANIFEST})")
    return json.loads(path.read_text())


def collect(out: str | Path) -> tuple[Any, Any]:
    """The tidy table (a row per run) and the timeseries of every finished run, as DataFrames."""
    import pandas as pd

    out = Path(out)
    manifest = read_manifest(out)
    rows, series = [], []
    for run in manifest["runs"]:
        key = {"run": run["id"], "point": run["point"], "seed": run["seed"], **run["values"]}
        folder = out / POINTS_DIR / run["id"]
        if (folder / "summary.json").exists():
            summary = json.loads((folder / "summary.json").read_text())
            rows.append({**key, "error": None, **flatten_keys(summary, drop="seed")})
            frame = pd.read_csv(folder / "timeseries.csv")
            for position, (column, value) in enumerate(key.items()):
                frame.insert(position, column, value)
            series.append(frame)
        elif (folder / "error.txt").exists():
            rows.append({**key, "error": _last_line((folder / "error.txt").read_text())})
    first = ["run", "point", "seed", *manifest["axes"], "error"]
    table = pd.DataFrame(rows, columns=list(dict.fromkeys([*first, *(key for row in rows for key in row)])))
    timeseries = pd.concat(series, ignore_index=True) if series else pd.DataFrame()
    return table, timeseries


def write_tables(out: str | Path) -> Any:
    """Write ``results.csv``, ``results.parquet`` and ``timeseries.parquet``; return the table."""
    out = Path(out)
    table, timeseries = collect(out)
    _write_atomic(out / f"{TABLE}.csv", lambda tmp: table.to_csv(tmp, index=False))
    _write_atomic(out / f"{TABLE}.parquet", table.to_parquet)
    _write_atomic(out / TIMESERIES, timeseries.to_parquet)
    return table


def _find_base(base: str, grid_path: Path) -> Path:
    here = grid_path.resolve().parent
    repo = next((d for d in (here, *here.parents) if (d / "pyproject.toml").exists() or (d / ".git").exists()), here)
    for folder in dict.fromkeys((here, repo, Path.cwd())):
        if (folder / base).is_file():
            return folder / base
    raise ConfigError(f"base: no scenario file {base!r} beside {grid_path}, in {repo} or in {Path.cwd()}")


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    table = raw.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table of scenario keys, got {table!r}")
    return table


def flatten_keys(table: dict[str, Any], drop: str = "", prefix: str = "") -> dict[str, Any]:
    """Nested tables to dotted keys; lists are leaves; the key ``drop`` is left out.

    >>> flatten_keys({"seed": 1, "a": {"b": 1, "c": [{"d": 2}]}}, drop="seed")
    {'a.b': 1, 'a.c': [{'d': 2}]}
    """
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, drop, f"{prefix}{key}."))
        elif prefix + key != drop:
            flat[prefix + key] = value
    return flat


def _set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key; a top-level key takes any value (a list of tables for ``[[defense]]``)."""
    *parents, leaf = key.split(".")
    table = raw
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{key}: {part} is not a table")
    table[leaf] = copy.deepcopy(value)


def _labels(values: list) -> list:
    """How an axis's values appear in the table: scalars as they are, tables by their kind.

    >>> _labels([[], [{"kind": "strip"}], [{"kind": "quota"}, {"kind": "strip"}]])
    ['none', 'strip', 'quota+strip']
    >>> _labels([0, 0.5]), _labels([[1.0, 2.0], [3.0, 4.0]])
    ([0, 0.5], ['[1.0, 2.0]', '[3.0, 4.0]'])
    """
    def label(value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("kind", value.get("name")), str):
            return value.get("kind", value.get("name"))
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return "+".join(str(label(v)) for v in value) or "none"
        return value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)

    labels = [label(v) for v in values]
    kinds = {bool if isinstance(v, bool) else (float if isinstance(v, (int, float)) else type(v)) for v in labels}
    if len(kinds) > 1:
        labels = [str(v) for v in labels]
    if len({json.dumps(v) for v in labels}) < len(labels):  # two values, one label: show them whole
        labels = [json.dumps(v, sort_keys=True) for v in values]
    return labels


def _is_finished(out: Path, run_id: str) -> bool:
    return (out / POINTS_DIR / run_id / "summary.json").exists()


def _fingerprint(runs: Iterable[Run]) -> str:
    digest = hashlib.sha256()
    for run in runs:
        digest.update(f"{run.id}\n{run.scenario.to_toml() if run.scenario else run.error}\n".encode())
    return digest.hexdigest()


def _log(out: Path, entry: dict) -> None:
    with open(out / JOURNAL, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
