"""The ``poisonsim`` command line.

    poisonsim run scenarios/centroid_shift.toml --out results/demo
    poisonsim run SCENARIO --set attack.rate=0.3 --set model.window_policy=random-out --seed 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulator.config import ConfigError, Scenario, describe_options

SUMMARY_ROWS = (
    ("events_total", "events"),
    ("poison_events_total", "poison events"),
    ("observed_poisoning_rate", "observed rho"),
    ("clean_accuracy", "clean accuracy (held-out)"),
    ("prequential_accuracy", "prequential accuracy"),
    ("attack_success_rate", "attack success rate"),
    ("displacement_radii", "displacement (radii)"),
    ("centroid_displacement", "centroid displacement"),
    ("window_contamination", "window contamination"),
    ("first_success_poison_events", "poison events to first success"),
    ("events_per_second", "events / s"),
)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"poisonsim: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonsim",
        description="Streaming simulator of data poisoning and backdoors in online learning.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run one scenario embedded (in-memory transport, no services)",
        description="Run one scenario embedded and print a summary; --out writes "
        "summary.json, timeseries.csv and the resolved scenario.toml.",
        epilog="scenario keys (override any with --set section.key=value):\n" + describe_options(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("scenario", type=Path, help="scenario TOML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key, e.g. attack.rate=0.3 (repeatable)")  # fmt: skip
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--out", type=Path, help="directory for summary.json, timeseries.csv, scenario.toml")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    run.set_defaults(handler=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    from simulator.engine import run, write_results

    scenario = Scenario.from_toml(args.scenario, args.overrides, args.seed)
    if args.quiet:
        result = run(scenario)
    else:
        result = _run_with_progress(scenario, run)
        _print_summary(scenario, result.summary)
    if args.out:
        out = write_results(result, scenario, args.out)
        if not args.quiet:
            print(f"results written to {out}/")
    return 0


def _run_with_progress(scenario: Scenario, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(scenario.name, total=scenario.stream.n_events)
        return run(scenario, on_progress=lambda done: progress.update(task, completed=done))


def _print_summary(scenario: Scenario, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{scenario.name}: {scenario.model.kind} under {scenario.attack.kind} (seed {scenario.seed})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, label in SUMMARY_ROWS:
        value = summary.get(key)
        if value is not None:
            table.add_row(label, f"{value:,.4g}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
