"""Parameter sweeps: run every run of a grid, resumably; one tidy table out.

Runs (see :mod:`poisonsim.experiments.grid`) go to a local process pool or to a
dask.distributed cluster and the table is the same either way (timing fields
aside). Each run writes its own directory atomically, so a sweep that is
stopped and started again skips the runs that finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from poisonsim.config import ConfigError
from poisonsim.experiments.grid import Grid, Run, flatten_keys
from poisonsim.pipeline import engine
from poisonsim.pipeline.results import RunResult, write_results

POINTS_DIR = "points"
MANIFEST = "sweep.json"
JOURNAL = "sweep.log"
TABLE = "results"  # results.csv and results.parquet
TIMESERIES = "timeseries.parquet"


@dataclass
class Outcome:
    """What one run gave: its result, or the error that stopped it."""

    id: str
    result: RunResult | None = None
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
    """A local process pool, its workers forked from a server that has imported poisonsim and loaded the
    compiled loops once (:mod:`~poisonsim.experiments.preload`; Linux), or spawned, each importing anew."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = _worker_context()
    sweep_gone, sweep_alive = context.Pipe(duplex=False)  # only this process holds the write end
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(sweep_gone,))
    try:
        yield from _drain({pool.submit(execute, run): run.id for run in runs}, as_completed)
    except BaseException:  # Ctrl-C (or the sweep stopped): stop the workers now; their runs stay unfinished
        for process in list((pool._processes or {}).values()):  # the executor's own workers (no public handle)
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        sweep_alive.close()


def _worker_context():
    """multiprocessing's fork server on Linux, preloading :mod:`~poisonsim.experiments.preload` (one server
    per process, kept between sweeps); ``spawn`` elsewhere (no fork server on Windows; on macOS numpy's
    Accelerate is not safe to use across a fork)."""
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["poisonsim.experiments.preload"])
    return context


def _start_worker(sweep_gone) -> None:
    """Workers leave Ctrl-C to the sweep, which stops them, end when the sweep is gone (even killed with
    ``kill -9``, which it cannot answer: ``sweep_gone``, the read end of a pipe only the sweep writes to,
    then reads end-of-file), and their torch threads sleep while they wait. The workers' parent is the
    fork server, not the sweep, and it lives as long as they do.

    Each worker's torch keeps its default thread count (a net's results depend on it, so a sweep's run
    equals ``poisonsim run`` of its scenario on the same machine); with several workers those threads
    outnumber the cores, and OpenMP's default of spinning while waiting makes them fight for them.
    Torch reads ``OMP_WAIT_POLICY`` when a run first imports it; a value already set is kept.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threading.Thread(target=_end_with_sweep, args=(sweep_gone,), daemon=True).start()


def _end_with_sweep(sweep_gone) -> None:
    """Exit once the sweep is gone: nothing is ever sent, so the read returns only at end-of-file."""
    try:
        sweep_gone.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


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
        write_results(outcome.result, run.scenario, tmp)
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
    """CPUs this process may run on: its affinity where the platform keeps one (Linux), else every CPU."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1
