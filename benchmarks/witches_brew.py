"""Witches' Brew against a victim retrained from scratch: crafted poisons vs the same budget of bare base images.

Runs ``scenarios/witches_brew_retrain.toml`` (digits, CNN retrained from
scratch on a data lake of 4,000 events, 40 poisons = 1%) once per seed and
per eps, plus the control (``attack.eps = 0``: the same base images, not
perturbed), and prints a table: targets X' the retrained net calls the
target class, mean and median p(target | X'), clean accuracy, and how often
crafting raised p(target | X') over the control of the same seed. One seed
is one target X'. Torch runs on one thread (``model.threads``). Every run is
kept as a row (machine, date, overrides, seed, eps) of
``docs/data/witches_brew.csv``; the reproductions page's table is generated
from it (``--table`` prints it), and a test holds the page to it.

    python benchmarks/witches_brew.py --seeds 0-19 --eps 0.0627 0.3 --out results/witches_brew
    python benchmarks/witches_brew.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.pipeline.engine import run  # noqa: E402

SCENARIO = ROOT / "scenarios" / "witches_brew_retrain.toml"
DATA = ROOT / "docs" / "data" / "witches_brew.csv"
NUMBERS = ("seed", "eps", "success", "p_target", "clean_accuracy", "poison_events", "alignment", "seconds")
FIELDS = ("machine", "date", "overrides", *NUMBERS)
KEY = ("machine", "overrides", "seed", "eps")
PAPER = "Geiping et al. 2021, CIFAR-10 / ResNet-18 from scratch, eps 16/255, budget 1%: about 90% of targets"


def seeds_arg(text: str) -> list[int]:
    """``0-19`` or ``0,3,5`` (or both: ``0-4,9``)."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def run_one(seed: int, eps: float, overrides: list[str]) -> dict:
    scenario = Scenario.from_toml(SCENARIO, [*overrides, f"attack.eps={eps}", f"seed={seed}"])
    started = time.perf_counter()
    summary = run(scenario).summary
    return {
        "seed": seed,
        "eps": eps,
        "success": summary["attack_success_rate"],
        "p_target": summary["target_class_probability"],
        "clean_accuracy": summary["clean_accuracy"],
        "poison_events": summary["poison_events_total"],
        "alignment": summary["attack_details"]["alignment"],
        "seconds": time.perf_counter() - started,
    }


def table(records: list[dict]) -> str:
    """One row per eps: hits, p(target | X'), clean accuracy, and the paired gain over the control's p."""
    control = {r["seed"]: r["p_target"] for r in records if r["eps"] == 0}
    lines = [
        "| poisons | targets hit | mean p(target given X') | median p | clean acc. | p above control | "
        "median log10 gain | alignment | s/run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for eps in sorted({r["eps"] for r in records}, key=lambda e: (e == 0, e)):
        rows = [r for r in records if r["eps"] == eps]
        hits = sum(r["success"] == 1.0 for r in rows)
        p = np.array([r["p_target"] for r in rows])
        name = "unperturbed base images (eps 0)" if eps == 0 else f"crafted, eps {eps:.4g} ({eps * 255:.0f}/255)"
        paired = [r for r in rows if r["seed"] in control]
        gain = [log10_gain(r["p_target"], control[r["seed"]]) for r in paired]
        above = f"{sum(g > 0 for g in gain)} of {len(gain)}" if eps and gain else ""
        lines.append(
            f"| {name} | {hits} of {len(rows)} | {p.mean():.3g} | {np.median(p):.2g} | "
            f"{np.mean([r['clean_accuracy'] for r in rows]):.3f} | {above} | "
            f"{f'{np.median(gain):.2f}' if eps and gain else ''} | "
            f"{np.mean([r['alignment'] for r in rows]):.3f} | "
            f"{np.mean([r['seconds'] for r in rows]):.1f} |"
        )
    return "\n".join([*lines, "", f"paper: {PAPER}"])


def records_of(rows: list[dict], overrides: str = "") -> list[dict]:
    """The data file's runs made with ``overrides`` (space-separated ``KEY=VALUE``), as :func:`run_one` gives
    them."""
    return [
        {k: int(row[k]) if k == "seed" else float(row[k]) for k in NUMBERS}
        for row in rows
        if row["overrides"] == overrides
    ]


def log10_gain(p: float, p_control: float) -> float:
    """How many orders of magnitude crafting raised p(target | X') over the control (floored at 1e-30)."""
    return float(np.log10(max(p, 1e-30) / max(p_control, 1e-30)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds_arg, default=seeds_arg("0-19"), help="targets: 0-19, or 0,3,5")
    parser.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[16 / 255, 0.3],
        help="L-inf bounds of the crafted runs (the eps-0 control always runs)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a scenario override for every run (e.g. attack.restarts=8)",
    )
    parser.add_argument("--out", type=Path, help="write records.json and table.md here")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(records_of(read_rows(args.data), " ".join(args.overrides))))
        return 0
    where, when = machine(), today()
    started = time.perf_counter()
    records = []
    for eps in [0.0, *[e for e in args.eps if e != 0]]:
        for seed in args.seeds:
            records.append(run_one(seed, eps, args.overrides))
            r = records[-1]
            row = {"machine": where, "date": when, "overrides": " ".join(args.overrides)}
            write_rows(args.data, [row | {k: f"{r[k]:.6g}" for k in NUMBERS}], FIELDS, KEY)  # each run kept
            print(
                f"eps {eps:.4f} seed {seed}: success {r['success']:.0f} p {r['p_target']:.3g} "
                f"clean {r['clean_accuracy']:.3f} ({r['seconds']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    text = table(records)
    elapsed = time.perf_counter() - started
    print(text)
    print(
        f"\n{len(records)} runs in {elapsed:.0f} s (seeds {args.seeds[0]}..{args.seeds[-1]}, "
        f"overrides {args.overrides})"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "records.json").write_text(json.dumps(records, indent=1) + "\n")
        (args.out / "table.md").write_text(text + f"\n\n{len(records)} runs in {elapsed:.0f} s\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
