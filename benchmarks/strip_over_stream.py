"""STRIP over the stream, for every target class: attack success behind it and clean traffic it flags.

For each setting (the 8x8 digits: ``scenarios/strip_badnets_paper.toml``;
MNIST: ``scenarios/mnist_strip_paper.toml``), each STRIP configuration of
``CONFIGS`` (keys over the paper's STRIP; ``SHIPPED`` names the one each ready
scenarios ``strip_badnets.toml`` and ``mnist_strip.toml`` run), each seed
and each target class, the scenario runs once, and a row keeps the run's
figures over the stream (means over the evaluator's probes after the first
poison event, at positions STRIP does not know): attack success behind
STRIP (triggered held-out inputs that reach the target class and pass it)
and its worst probe, FAR, the held-out FRR, the share of clean stream
events STRIP flagged (``stream_frr``), attack success with no input judged
and the clean twin's (the triggered inputs a net that never saw poison
sends to the target class on its own).

Rows go to ``--data`` (one per run, keyed by setting, configuration, seed
and target; a run already there is not run again); ``--table`` prints the
documentation's table from that file alone.

    .venv/bin/python benchmarks/strip_over_stream.py digits --seeds 101-102 --configs snapshot-4-layers-64,paper
    .venv/bin/python benchmarks/strip_over_stream.py mnist --seeds 101 --targets 2 --configs snapshot-3-layers-64
    .venv/bin/python benchmarks/strip_over_stream.py --table
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import datafile  # noqa: E402
from benchmarks.seed_figures import seeds_of  # noqa: E402

DATA = ROOT / "docs" / "data" / "strip_over_stream.csv"
SETTINGS = {  # setting -> (the paper's scenario, overrides): evaluated often enough for a mean over the stream
    "digits": ("strip_badnets_paper.toml", ["evaluation.every=500"]),
    "mnist": ("mnist_strip_paper.toml", ["evaluation.every=1000"]),
}
READY = {"digits": "strip_badnets.toml", "mnist": "mnist_strip.toml"}  # the ready scenarios: their SHIPPED STRIP


def _strip(**keys) -> list[str]:
    """``--set`` overrides of STRIP's ``keys``."""
    return [f"defense.strip.{key}={value}" for key, value in keys.items()]


UNION = _strip(scale="union", layers=2, robust="true")
DEEP = _strip(scale="union", layers=3, robust="true", overlays=64, confidence=0.5, judge="snapshot", every=250)
CONFIGS = {  # name -> STRIP's keys over the paper's (pooled entropy, one layer, the served net judging)
    "paper": [],
    "live": [*UNION, *_strip(confidence=0.5)],
    "live-check-100": [*UNION, *_strip(confidence=0.5, check=100)],
    "snapshot": [*UNION, *_strip(confidence=0.5, judge="snapshot")],
    "snapshot-frr-0.02": [*UNION, *_strip(frr=0.02, judge="snapshot")],
    "snapshot-every-250": [*UNION, *_strip(confidence=0.5, judge="snapshot", every=250)],
    "snapshot-3-layers-64": DEEP,
    "snapshot-3-layers-64-frr-0.02": [*DEEP, *_strip(frr=0.02)],
    "snapshot-3-layers-64-frr-0.015": [*DEEP, *_strip(frr=0.015)],
    "snapshot-4-layers-64": [*DEEP, *_strip(layers=4)],
    "snapshot-4-layers-64-every-125": [*DEEP, *_strip(layers=4, every=125)],
    "snapshot-5-layers-64": [*DEEP, *_strip(layers=5)],
    "snapshot-8-layers-64": [*DEEP, *_strip(layers=8)],
    "snapshot-5-layers-64-frr-0.02": [*DEEP, *_strip(layers=5, frr=0.02)],
    "ahead-4-layers-64": [*DEEP, *_strip(layers=4, judge="ahead")],
}
SHIPPED = {  # the configuration each setting's ready scenario runs (a test holds them to it)
    "digits": "ahead-4-layers-64",
    "mnist": "ahead-4-layers-64",
}
STRIP_FIGURES = (
    "attack_success_behind_mean",
    "attack_success_behind_worst",
    "far_mean",
    "frr_mean",
    "stream_frr",
    "calibrations",
)
RUN_FIGURES = ("attack_success_rate_mean", "twin_attack_success_rate_mean", "accuracy_drop_mean")
KEY = ("setting", "config", "seed", "target")
FIELDS = (*KEY, *STRIP_FIGURES, *RUN_FIGURES, "seconds")


def measure(setting: str, config: str, seed: int, target: int) -> dict:
    """One run: the row of figures for ``setting`` under STRIP ``config``, BadNets to ``target`` at ``seed``."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from poisonsim.config import Scenario
    from poisonsim.pipeline.engine import run

    path, overrides = SETTINGS[setting]
    scenario = Scenario.from_toml(
        ROOT / "scenarios" / path, [*overrides, *CONFIGS[config], f"seed={seed}", f"attack.target_class={target}"]
    )
    started = time.perf_counter()
    summary = run(scenario).summary
    strip = summary["defenses"]["strip"]
    return {
        "setting": setting,
        "config": config,
        "seed": seed,
        "target": target,
        **{key: strip.get(key) for key in STRIP_FIGURES},
        **{key: summary.get(key) for key in RUN_FIGURES},
        "seconds": round(time.perf_counter() - started, 1),
    }


def read_rows(data: Path = DATA) -> list[dict]:
    """The rows kept so far (seed and target as integers, the other numbers as floats)."""
    return [{k: _cell(k, v) for k, v in row.items()} for row in datafile.read_rows(data)]


def _cell(name: str, text: str):
    if name in ("setting", "config"):
        return text
    if not text:
        return None
    return int(float(text)) if name in ("seed", "target") else float(text)


def key_of(row: dict) -> tuple:
    """A row's key: setting, configuration, seed and target (as written or as read back)."""
    return tuple(row[k] if k in ("setting", "config") else int(float(row[k])) for k in KEY)


def write_rows(rows: list[dict], data: Path = DATA) -> None:
    """``rows`` merged into the file's (a row of the same key replaced), sorted by key
    (:func:`benchmarks.datafile.write_rows`: benchmarks writing the same file at once lose no row)."""
    datafile.write_rows(data, rows, FIELDS, key_of, sort=True)


def table(rows: list[dict]) -> str:
    """A markdown line per setting and configuration: attack success behind STRIP (mean over the runs, the worst
    target class's, the worst probe's), clean stream events flagged (mean, worst run) and the clean twin's attack
    success.

    >>> rows = [{"setting": "digits", "config": "snapshot", "seed": 1, "target": t, "attack_success_behind_mean": b,
    ...          "attack_success_behind_worst": 2 * b, "stream_frr": f, "twin_attack_success_rate_mean": 0.03}
    ...         for t, b, f in ((0, 0.02, 0.004), (1, 0.08, 0.009))]
    >>> print(table(rows).splitlines()[-1])
    | digits | snapshot | 2 | 0.050 | 0.080 (1) | 0.160 | 0.65% | 0.90% | 0.030 |
    """
    lines = [
        "| setting | STRIP | runs | attack success behind STRIP, mean over the stream | worst target class "
        "(class) | worst probe | clean stream events flagged | worst run | clean twin's attack success |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["setting"], row["config"]), []).append(row)
    for (setting, config), group in sorted(groups.items()):
        behind = np.array([row["attack_success_behind_mean"] for row in group])
        targets = sorted({int(row["target"]) for row in group})
        by_target = [behind[[int(row["target"]) == t for row in group]].mean() for t in targets]
        flagged = np.array([row["stream_frr"] for row in group])
        twin = [
            row["twin_attack_success_rate_mean"] for row in group if row["twin_attack_success_rate_mean"] is not None
        ]
        lines.append(
            f"| {setting} | {config} | {len(group)} | {behind.mean():.3f} | {max(by_target):.3f} "
            f"({targets[int(np.argmax(by_target))]}) | "
            f"{max(row['attack_success_behind_worst'] for row in group):.3f} | {flagged.mean():.2%} | "
            f"{flagged.max():.2%} | {np.mean(twin) if twin else float('nan'):.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="*", help=f"of {', '.join(SETTINGS)} (default: all)")
    parser.add_argument("--seeds", default="101", type=seeds_of, help="e.g. 101-102 or 101,103 (default 101)")
    parser.add_argument("--targets", default="0-9", type=seeds_of, help="target classes (default 0-9)")
    parser.add_argument(
        "--configs", help=f"comma-separated, of: {', '.join(CONFIGS)} (default: each setting's SHIPPED one)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)))
        return 0
    configs = args.configs.split(",") if args.configs else []
    if unknown := sorted(set(configs) - set(CONFIGS)):
        parser.error(f"no configuration named {', '.join(unknown)}; expected some of {', '.join(CONFIGS)}")
    if unknown := sorted(set(args.settings) - set(SETTINGS)):
        parser.error(f"no setting named {', '.join(unknown)}; expected some of {', '.join(SETTINGS)}")
    done = {key_of(row) for row in read_rows(args.data)}
    todo = [
        (s, c, seed, t)
        for s in args.settings or list(SETTINGS)
        for c in configs or [SHIPPED[s]]
        for seed in args.seeds
        for t in args.targets
        if (s, c, seed, t) not in done
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(measure, *zip(*todo)) if todo else ():
            write_rows([row], args.data)  # every run kept as it ends: an interrupted benchmark goes on from here
            print(" ".join(f"{k}={row[k]}" for k in (*KEY, "attack_success_behind_mean", "stream_frr")), flush=True)
    print(table(read_rows(args.data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
