"""The ``poisonsim`` command line.

poisonsim run scenarios/centroid_shift.toml --out results/demo
poisonsim run SCENARIO --set attack.rate=0.3 --set model.window_policy=random-out --seed 3
poisonsim sweep sweeps/rho_targeted.toml --out results/rho --workers 2
poisonsim report results/rho
poisonsim kinds attack badnets
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

# OpenMP threads that finish early sleep instead of spinning, so torch beside other work does not burn the
# cores (set before torch is first imported; an explicit OMP_WAIT_POLICY wins)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from poisonsim import __version__
from poisonsim.config import ConfigError, Scenario, describe_options
from poisonsim.evaluation.glossary import DEFENSE, RUN, explain, label


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code = args.handler(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
        return code
    except ConfigError as exc:
        print(f"poisonsim: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`poisonsim kinds | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr (``poisonsim: warning: ...``), without the source line Python adds."""
    print(f"poisonsim: warning: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonsim",
        description="Streaming simulator of data poisoning and backdoors in online learning.",
    )
    parser.add_argument("--version", action="version", version=f"poisonsim {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run one scenario embedded (in-memory transport, no services)",
        description="Run one scenario embedded and print a summary; --out writes "
        "summary.json, timeseries.csv and the resolved scenario.toml.",
        epilog="keys every section takes (override any with --set section.key=value; each kind's own keys: "
        "poisonsim kinds [CONCEPT [KIND]]):\n" + describe_options(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("scenario", type=Path, help="scenario TOML file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. attack.rate=0.3 or defense.strip.check=100 (repeatable)",
    )
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--out", type=Path, help="directory for summary.json, timeseries.csv, scenario.toml")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    run.add_argument("--explain", action="store_true", help="each figure's unit and definition beside it")
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the learner's Prometheus metrics on this port while the run runs (0: any free port; "
        "needs the kafka extra's prometheus-client)",
    )
    run.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the metrics endpoint binds (default %(default)s)",
    )
    run.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the run, keep the metrics endpoint up until Ctrl-C or SIGTERM",
    )
    run.set_defaults(handler=_run)
    from poisonsim.kinds_cli import add_parsers

    add_parsers(commands)
    for command in _plugged_commands():  # produce, consume: the Kafka processes register themselves
        command.load()(commands)
    sweep = commands.add_parser(
        "sweep",
        help="run a grid of scenarios (local process pool or dask cluster); resumable",
        description="Run every point of a grid file under every seed and write results.csv, results.parquet, "
        "timeseries.parquet and one directory per run. Started again, it skips finished runs.",
    )
    sweep.add_argument("grid", type=Path, help="grid TOML file (base, seeds, mode, [axes], [set]; see sweeps/)")
    sweep.add_argument("--out", type=Path, required=True, help="results directory")
    sweep.add_argument("--workers", type=int, help="local worker processes (default: CPU count; 1: in-process)")
    sweep.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on this dask.distributed scheduler")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=_sweep)
    bench = commands.add_parser(
        "drift-bench",
        help="every drift monitor (river's detectors, trivial baselines) on clean and attacked streams (a sweep)"
        "; delay, false alarms",
        description="Run a drift-bench grid (runs with a drift-watch defense, each stream named by `name`) like "
        "`poisonsim sweep`, then write drift_bench.csv, drift_bench.parquet and drift_bench.png: per stream and "
        "drift monitor, false alarms per 10,000 clean events, detection delay, missed attacks.",
    )
    bench.add_argument(
        "grid",
        type=Path,
        nargs="?",
        default=Path("sweeps/drift_bench.toml"),
        help="grid TOML file (default: %(default)s)",
    )
    bench.add_argument("--out", type=Path, required=True, help="results directory")
    bench.add_argument("--workers", type=int, help="local worker processes (default: CPU count; 1: in-process)")
    bench.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on this dask.distributed scheduler")
    bench.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    bench.set_defaults(handler=_drift_bench)
    report = commands.add_parser(
        "report",
        help="figures (PNG) and report.md from a sweep's results (or a run's)",
        description="Write figures/*.png and report.md into a sweep's results directory, or into the directory of "
        "one run (`poisonsim run --out DIR`): its timeline and its analysis figures, drawn again from "
        "DIR/analysis/*.npz.",
    )
    report.add_argument("results", type=Path, help="results directory of `poisonsim sweep` or of `poisonsim run --out`")
    report.add_argument("--run", help="run id for the over-time figure, e.g. p0003-s1 (default: strongest attacker)")
    report.set_defaults(handler=_report)
    keygen = commands.add_parser(
        "keygen",
        help="make a signing key for the Kafka processes (printed, or written to a file)",
        description="Print a fresh random signing key (hex), or write it to FILE (owner-only) unless FILE exists; "
        "the processes of a deployment pass it with --signing-key-file FILE or POISONSIM_SIGNING_KEY. "
        "Without either they share the key made on first use in POISONSIM_KEY_DIR (default "
        "~/.config/poisonsim).",
    )
    keygen.add_argument("--out", type=Path, metavar="FILE", help="write the key here instead of printing it")
    keygen.set_defaults(handler=_keygen)
    return parser


def _keygen(args: argparse.Namespace) -> int:
    from poisonsim.transport.signing import ensure_key_file, new_key

    if args.out is None:
        print(new_key())
        return 0
    try:
        made = ensure_key_file(args.out)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {args.out} ({exc.strerror})") from None
    print(f"{'wrote a new key to' if made else 'kept the key already in'} {args.out}")
    return 0


def _plugged_commands() -> list:
    """Subcommands other packages add (entry points ``poisonsim.commands``: a function of the subparsers).

    ``poisonsim.producers`` and ``poisonsim.consumers`` plug ``produce`` and ``consume`` in this way, so the
    library under them never imports the Kafka roles.
    """
    from importlib.metadata import entry_points

    return sorted(entry_points(group="poisonsim.commands"), key=lambda entry: entry.name, reverse=True)


def _run(args: argparse.Namespace) -> int:
    from functools import partial

    from poisonsim.pipeline.engine import run
    from poisonsim.pipeline.results import check_out, write_results
    from poisonsim.pipeline.world import World

    scenario = Scenario.from_toml(args.scenario, args.overrides, args.seed)
    if args.quiet and not args.out and args.metrics_port is None:
        raise ConfigError("--quiet: with neither --out nor --metrics-port the run would show and keep nothing")
    if args.out:
        check_out(args.out)
    metrics = _embedded_metrics(args, scenario) if args.metrics_port is not None else None
    observe = metrics.observe if metrics else None
    try:
        if args.quiet:
            result = run(scenario, observe=observe)
        else:
            world = World.build(scenario)  # a scenario the model, attack or defenses refuse fails before the bar
            result = _run_with_progress(scenario, partial(run, world=world, observe=observe))
            _print_summary(scenario, result.summary, args.explain)
        if args.out:
            out = write_results(result, scenario, args.out)
            if not args.quiet:
                print(f"results written to {out}/")
        if metrics and args.keep_serving:
            print("run complete; serving metrics until Ctrl-C or SIGTERM", flush=True)
            metrics.serve_until_stopped()
    finally:
        if metrics:
            metrics.close()
    return 0


def _embedded_metrics(args: argparse.Namespace, scenario: Scenario):
    """The live metrics endpoint of ``--metrics-port`` (a ConfigError naming the flag when it cannot start)."""
    from poisonsim.services.runtime import check_metrics

    check_metrics(args)
    try:
        from poisonsim.services.exporter import EmbeddedMetrics
    except ImportError as exc:
        raise ConfigError(
            f"--metrics-port: needs prometheus-client ({exc.name} is missing): pip install 'poisonsim[kafka]'"
        ) from None
    try:
        metrics = EmbeddedMetrics(scenario, args.metrics_port, args.metrics_address)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port: cannot serve on {args.metrics_address}:{args.metrics_port} ({exc.strerror})"
        ) from None
    print(f"metrics at http://{metrics.server.address}:{metrics.server.port}/metrics", flush=True)
    return metrics


def _run_with_progress(scenario: Scenario, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(scenario.name, total=scenario.stream.n_events)
        return run(scenario, on_progress=lambda done: progress.update(task, completed=done))


def _sweep(args: argparse.Namespace) -> int:
    from poisonsim.experiments.grid import Grid
    from poisonsim.experiments.sweep import run_sweep

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers: expected an integer >= 1, got {args.workers}")
    grid = Grid.from_toml(args.grid)
    try:
        done = _sweep_with_progress(grid, args, run_sweep)
    except KeyboardInterrupt:
        print(
            f"poisonsim: interrupted; finished runs are kept in {args.out}/, the same command resumes", file=sys.stderr
        )
        return 130
    if not args.quiet:
        print(
            f"{done.done} runs done, {done.failed} failed, {done.skipped} already finished; "
            f"tables written to {args.out}/"
        )
    return 1 if done.failed else 0


def _sweep_with_progress(grid, args: argparse.Namespace, run_sweep):
    if args.quiet:
        return run_sweep(grid, args.out, args.workers, args.scheduler)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        tasks = []

        def show(p):  # runs finished before this start count as done, not as speed
            if not tasks:
                tasks.append(progress.add_task(args.grid.stem, total=p.total, completed=p.skipped, failed=0))
            progress.update(tasks[0], completed=p.skipped + p.done + p.failed, failed=p.failed)

        return run_sweep(grid, args.out, args.workers, args.scheduler, on_progress=show)


def _drift_bench(args: argparse.Namespace) -> int:
    from poisonsim.experiments.drift_bench import TABLE, write_bench

    code = _sweep(args)
    if code == 130:
        return code
    try:
        table = write_bench(args.out)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not args.quiet:
        shown = table[["stream", "monitor", "runs", "false_alarms_per_10k", "detection_delay", "missed"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"bench written to {args.out}/{TABLE}.csv, .parquet, .png")
    return code


def _report(args: argparse.Namespace) -> int:
    from poisonsim.experiments.report import write_report

    report = write_report(args.results, args.run)
    for name, path in report.figures.items():
        print(f"{name}: {path}")
    for name, reason in report.skipped.items():
        print(f"{name}: skipped, {reason}")
    print(f"summary: {report.markdown}")
    return 0


def _print_summary(scenario: Scenario, summary: dict, definitions: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scenario.name}: {scenario.model.kind} under {scenario.attack.kind} (seed {scenario.seed})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    if definitions:
        table.add_column("unit: what it is")
    for name, value, meaning in summary_rows(summary):
        table.add_row(name, value, *([meaning] if definitions else []))
    Console().print(table)
    if not definitions:
        print(
            "over the stream: mean over the evaluation steps after the attack's first poison event; --explain "
            "defines every row"
        )
    print(verdict(summary))
    if summary.get("events_per_second"):
        print(
            f"(this machine: {summary['events_total']:,} events in {summary['elapsed_seconds']:.2f} s, "
            f"{summary['events_per_second']:,.0f} events/s)"
        )


def summary_rows(summary: dict) -> list[tuple[str, str, str]]:
    """The printed table's rows (label, value, unit and definition): the run's figures, then each defense's
    (its verdicts scored against ground truth); the machine's speed is no result and is left out.

    >>> summary_rows({"events_total": 1000, "defenses": {"strip": {"precision": 0.5, "tp": 3}}})[1]
    ('strip: precision at the end', '0.5', 'share of flags: flagged events that were poison, whole stream')
    """
    detector = summary.get("radius") is not None  # an anomaly detector's summary carries its radius
    rows = [(label(key, detector), _shown(summary[key]), explain(key)) for key in RUN if summary.get(key) is not None]
    for kind, figures in (summary.get("defenses") or {}).items():
        rows += [
            (f"{kind}: {f.label}", _shown(figures[key]), explain(f"defense.{key}"))
            for key, f in DEFENSE.items()
            if figures.get(key) is not None
        ]
    return rows


def verdict(summary: dict) -> str:
    """One line on what the attacker achieved.

    >>> verdict({"attack": "label-flip", "poison_events_total": 0, "attack_success_rate": 0.0})
    'label-flip: no poison reached the learner (the attack starts after the stream ends, or its rate is 0)'
    >>> verdict({"attack": "label-flip", "poison_events_total": 4509, "accuracy_drop_mean": 0.065,
    ...          "accuracy_drop_worst": 0.114})
    'label-flip: with 4,509 poison events; it cost 0.065 of held-out accuracy against the clean twin, mean over \
the stream (worst 0.114)'
    """
    attack, success, poison = (
        summary.get("attack"),
        summary.get("attack_success_rate"),
        summary.get("poison_events_total"),
    )
    from poisonsim.registry import ATTACKS, UnknownKind

    try:
        does = ATTACKS.get(attack).factory.offers
    except UnknownKind:
        does = frozenset()
    if "no-poison" in does:
        return "clean baseline: no attacker"
    supplies_model = "supplies-model" in does
    if poison == 0 and not supplies_model:
        return f"{attack}: no poison reached the learner (the attack starts after the stream ends, or its rate is 0)"
    how = "through the supplied model" if supplies_model else f"with {poison:,} poison events"
    drop = summary.get("accuracy_drop_mean")
    cost = (
        ""
        if drop is None
        else (
            f"; it cost {drop:.3g} of held-out accuracy against the clean twin, mean over "
            f"the stream (worst {summary['accuracy_drop_worst']:.3g})"
        )
    )
    if success is None:
        if drop is None:
            return f"{attack}: {poison:,} poison events; this attack has no success measure on this model"
        return f"{attack}: {how}{cost}"
    whose, mean = "", summary.get("attack_success_rate_mean")
    if summary.get("deployed_attack_success_rate") is not None:  # snapshots serve: the served model is the target
        whose, success = "deployed model's ", summary["deployed_attack_success_rate"]
        mean = summary.get("deployed_attack_success_rate_mean")
    outcome = "succeeded" if success >= 0.5 else "partly succeeded" if success > 0 else "failed"
    behind = [
        f"{kind} {f['attack_success_behind']:.3g}"
        for kind, f in (summary.get("defenses") or {}).items()
        if f.get("attack_success_behind") is not None
    ]
    shown = f"; behind {', '.join(behind)}" if behind else ""
    over = "" if mean is None else f"; mean over the stream {mean:.3g}"
    why = _why_short(summary) if success < 0.5 else ""
    return (
        f"{attack}: {outcome} at the end of the stream ({whose}attack success {success:.3g}{shown}{over}) "
        f"{how}{why}{cost}"
    )


def _why_short(summary: dict) -> str:
    """Why an attack on a centroid detector fell short: how far the centroid went of the way to A.

    >>> _why_short({"displacement_radii": 0.38, "attack_details": {"target_distance_radii": 3.0}})
    '; the centroid moved 0.38 radii toward A, which is accepted once within 1 radius (it started 3 radii away)'
    """
    moved, details = summary.get("displacement_radii"), summary.get("attack_details") or {}
    distance = details.get("target_distance_radii")
    if moved is None or distance is None:
        return ""
    return (
        f"; the centroid moved {moved:.2g} radii toward A, which is accepted once within 1 radius "
        f"(it started {distance:.2g} radii away)"
    )


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return f"{value:,}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
