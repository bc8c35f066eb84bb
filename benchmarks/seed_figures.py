"""The docs' headline figures over seeds: mean, standard deviation, min and max.

Each case is a ready scenario with overrides and the figures it is quoted
for: summary keys (``defenses.strip.far_mean`` reads
``summary["defenses"]["strip"]["far_mean"]``) and figures derived from the
run. The reproductions under ``tests/reproductions`` assert on the same cases
and seeds (:func:`figures_over_seeds`), so a figure in the docs is a test figure.
Each case's figures are kept as rows (machine, date, case, seeds, figure:
every seed's value, their mean, standard deviation, min and max) of
``docs/data/seed_figures.csv``; the docs' tables of figures over seeds are
generated from it (``--table CASE ...`` prints one), and a test holds each
page to it.

    .venv/bin/python benchmarks/seed_figures.py badnets blended --seeds 1-8 --workers 2
    .venv/bin/python benchmarks/seed_figures.py --table badnets badnets-clean
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402

DATA = ROOT / "docs" / "data" / "seed_figures.csv"
FIELDS = ("machine", "date", "case", "seeds", "figure", "runs", "mean", "sd", "min", "max", "values")
KEY = ("machine", "case", "seeds", "figure")
SEEDS = tuple(range(1, 9))
TEN_K = ["stream.n_events=10000", "evaluation.every=5000"]
SIX_K = ["stream.n_events=6000", "evaluation.every=3000"]
NO_ATTACK = 'attack={kind="none"}'
ATTACK = ["attack_success_rate", "clean_accuracy", "observed_poisoning_rate", "learned_poisoning_rate"]
STRIP = [
    f"defenses.strip.{k}"
    for k in (
        "far_mean",
        "far_worst",
        "far",
        "far_all_mean",
        "frr_mean",
        "frr_worst",
        "frr",
        "stream_frr_mean",
        "attack_success_behind_mean",
        "recall_mean",
    )
]
CHECK_FIGURES = ("calibrations", "checks", "check_recalibrations")  # STRIP with check = K: what the checks cost
ISOLATION = [
    f"defenses.isolation.{k}" for k in ("precision", "recall", "precision_mean", "recall_mean", "fp", "stream_frr")
]
RULES = [
    f"defenses.isolation/{rule}.{k}" for rule in ("fraction", "threshold", "mixture") for k in ("precision", "recall")
]
DRIFT = [
    "stream.n_events=6000",
    "evaluation.every=64",
    "attack.start=3000",
    "defense=[{kind='fine-pruning',when='drift',monitor='page-hinkley',every=1000}]",
]
NC_DRIFT = [  # MNIST: BadNets from event 4,000; Neural Cleanse reverses and unlearns on drift alarms
    "evaluation.every=250",
    "attack.start=4000",
    "defense=[{kind='neural-cleanse',when='drift',monitor='page-hinkley',every=2000}]",
]
OVER_THE_STREAM = ["attack_success_rate", "attack_success_rate_mean", "accuracy_drop_mean"]
ANALYSIS = ["stream.n_events=6000", "evaluation.every=6000", "defense=[{kind='activation-analysis'}]"]
TWIN = ("twin_", "accuracy_drop", "disagreement")  # figures that need the clean twin: without them, no twin


def _after(start: int, repairer: str = "fine-pruning") -> Callable[[object], dict]:
    """Attack success averaged over the rows after ``start``, and the repairs of defense ``repairer``, if any."""

    def derive(result) -> dict:
        rows = [
            r["attack_success_rate"]
            for r in result.timeseries
            if r["events"] > start and r["attack_success_rate"] is not None
        ]
        figures = {"attack_success_after_start_mean": float(np.mean(rows)) if rows else None}
        section = result.summary.get("defenses", {}).get(repairer)
        if section:
            asr = {row["events"]: row["attack_success_rate"] for row in result.timeseries}
            repairs = [r["event"] for r in section["repairs"]]
            figures.update(
                repairs=len(repairs),
                first_alarm_after_start=next((e - start for e in section["alarm_events"] if e > start), None),
                alarms_before_start=sum(e <= start for e in section["alarm_events"]),
                success_after_repair_max=max(  # at the first evaluation row at or after each repair
                    (asr[min(row for row in asr if row >= e)] for e in repairs if e <= max(asr)), default=None
                ),
            )
        return figures

    return derive


def _analysis(result) -> dict:
    section = result.summary["defenses"]["activation-analysis"]
    scores = {int(c): v for c, v in section["class_scores"].items()}
    target = 0  # the scenario's target class
    return {
        "suspect_class": section["suspect_class"],
        "target_score": scores[target],
        "other_score_max": max(v for c, v in scores.items() if c != target),
    }


def _supplied(result) -> dict:
    rows = result.timeseries
    return {
        "success_at_start": rows[0]["attack_success_rate"],
        "clean_at_start": rows[0]["clean_accuracy"],
        "success_min": min(r["attack_success_rate"] for r in rows),
        "rows": len(rows),
        "poison_events_total": result.summary["poison_events_total"],
    }


def _label_flip(defense: str | None) -> tuple:
    """Label flipping at rho = 0.3 from the first event against the digits classifier, 6,000 events, with
    ``defense`` (a TOML inline table) or none."""
    overrides = ["stream.n_events=6000", "attack.start=0", "evaluation.every=500"]
    keys = ["clean_accuracy", "window_contamination"]
    if defense:
        kind = defense.split("'")[1]
        overrides.append(f"defense=[{defense}]")
        keys += [f"defenses.{kind}.{k}" for k in ("precision", "recall", "stream_frr")]
    return ("label_flip.toml", overrides, keys, None)


def _mnist_strip(keys: str, figures: tuple[str, ...] = ()) -> tuple:
    """``scenarios/mnist_strip.toml`` with its STRIP's ``keys`` changed (a TOML inline table's entries), and more
    of STRIP's ``figures`` reported."""
    defense = f"defense=[{{kind='strip',overlays=32,superimpose='additive',frr=0.01,{keys}}}]"
    return ("mnist_strip.toml", [defense], [*ATTACK[:2], *STRIP, *(f"defenses.strip.{k}" for k in figures)], None)


def _digits_strip(keys: str, figures: tuple[str, ...] = ()) -> tuple:
    """``scenarios/strip_badnets.toml`` (6,000 events) with a STRIP that recalibrates every 1,000 events, its other
    ``keys`` as given, and more of STRIP's ``figures`` reported."""
    defense = f"defense=[{{kind='strip',overlays=32,superimpose='additive',frr=0.01,every=1000,{keys}}}]"
    return (
        "strip_badnets.toml",
        [*SIX_K, defense],
        ["attack_success_rate", *STRIP, *(f"defenses.strip.{k}" for k in figures)],
        None,
    )


# name -> (scenario file, overrides, summary keys, derived figures)
CASES: dict[str, tuple[str, list[str], list[str], Callable | None]] = {
    # undefended BadNets over 10,000 events: the same runs as abl_badnets.toml or fine_pruning_badnets.toml without
    # their defense (the stream and the net do not depend on the evaluation cadence)
    "badnets": ("badnets_cnn.toml", TEN_K, ATTACK, None),
    "badnets-clean": ("badnets_cnn.toml", [*TEN_K, NO_ATTACK], ["clean_accuracy"], None),
    "blended": ("blended_cnn.toml", TEN_K, ATTACK, None),
    "blended-clean": ("blended_cnn.toml", [*TEN_K, NO_ATTACK], ["clean_accuracy"], None),
    # real MNIST (28x28, LeNet-5-like), 12,000 events
    "mnist-badnets": ("mnist_badnets.toml", [], ATTACK, None),
    "mnist-badnets-clean": ("mnist_badnets.toml", [NO_ATTACK], ["clean_accuracy"], None),
    "mnist-blended": ("mnist_blended.toml", [], ATTACK, None),
    # STRIP on MNIST over the stream: the paper's (pooled, one layer), per-class scales with two
    # layers, each change alone, recalibrated four times as often, and the union of three scores with two layers
    # (benchmarks/strip_classes.py: FAR per target class on the final net), also with checks of its FRR between
    # calibrations, and robust (median entropies, shrunk class scales)
    "mnist-strip": ("mnist_strip_paper.toml", [], [*ATTACK[:2], *STRIP], None),
    "mnist-strip-per-class-2": _mnist_strip("every=1000,scale='per-class',layers=2"),
    "mnist-strip-pooled-2": _mnist_strip("every=1000,layers=2"),
    "mnist-strip-per-class": _mnist_strip("every=1000,scale='per-class'"),
    "mnist-strip-per-class-2-every-250": _mnist_strip("every=250,scale='per-class',layers=2"),
    "mnist-strip-union-2": _mnist_strip("every=1000,scale='union',layers=2"),
    "mnist-strip-union-2-every-250": _mnist_strip("every=250,scale='union',layers=2"),
    "mnist-strip-union-2-check-250": _mnist_strip("every=1000,scale='union',layers=2,check=250", CHECK_FIGURES),
    "mnist-strip-union-2-check-100": _mnist_strip("every=1000,scale='union',layers=2,check=100", CHECK_FIGURES),
    "mnist-strip-union-2-robust-check-100": _mnist_strip(
        "every=1000,scale='union',layers=2,check=100,robust=true", CHECK_FIGURES
    ),
    "strip": ("strip_badnets_paper.toml", SIX_K, ["attack_success_rate", *STRIP], None),
    "strip-stream-paper": _digits_strip("scale='pooled'"),
    "strip-stream-per-class-2": _digits_strip("scale='per-class',layers=2"),
    "strip-stream-union-2-check-100": _digits_strip("scale='union',layers=2,check=100", CHECK_FIGURES),
    "strip-class-2": (
        "strip_badnets_paper.toml",
        [*SIX_K, "attack.target_class=2"],
        ["attack_success_rate", *STRIP],
        None,
    ),
    "isolation": ("abl_badnets.toml", [], ["attack_success_rate", "clean_accuracy", *ISOLATION], None),
    "isolation-unlearn-every-1000": (
        "abl_badnets.toml",
        ["defense.isolation.unlearn_every=1000"],
        [
            "attack_success_rate_mean",
            "attack_success_rate_worst",
            "attack_success_rate",
            "accuracy_drop_mean",
            *ISOLATION,
        ],
        None,
    ),
    "isolation-rules": ("abl_badnets.toml", ["stream.n_events=6000"], RULES, None),
    "isolation-loss": (
        "abl_badnets.toml",
        ["defense=[{kind='isolation',score='loss',rule='fraction',fraction=0.05}]"],
        ["attack_success_rate", *ISOLATION],
        None,
    ),
    "isolation-clean-stream": ("abl_badnets.toml", ["attack.rate=0.0"], ["clean_accuracy", *ISOLATION], None),
    "fine-pruning": (
        "fine_pruning_badnets.toml",
        [],
        ["attack_success_rate", "clean_accuracy", "defenses.fine-pruning.units_pruned"],
        None,
    ),
    "fine-pruning-drift": ("fine_pruning_badnets.toml", DRIFT, ["attack_success_rate"], _after(3000)),
    "fine-pruning-drift-undefended": (
        "fine_pruning_badnets.toml",
        [*DRIFT, "defense=[]"],
        ["attack_success_rate"],
        _after(3000),
    ),
    "fine-pruning-drift-clean": ("fine_pruning_badnets.toml", [*DRIFT, NO_ATTACK], ["clean_accuracy"], _after(3000)),
    "neural-cleanse-drift": ("mnist_neural_cleanse.toml", NC_DRIFT, OVER_THE_STREAM, _after(4000, "neural-cleanse")),
    "neural-cleanse-drift-undefended": (
        "mnist_neural_cleanse.toml",
        [*NC_DRIFT, "defense=[]"],
        OVER_THE_STREAM,
        _after(4000, "neural-cleanse"),
    ),
    "neural-cleanse-end": ("mnist_neural_cleanse.toml", ["evaluation.every=250"], OVER_THE_STREAM, None),
    "malicious-architecture": (
        "malicious_architecture.toml",
        ["model.load_supplied=module"],
        ["attack_success_rate", "clean_accuracy"],
        _supplied,
    ),
    "malicious-architecture-weights": (
        "malicious_architecture.toml",
        ["model.load_supplied=weights"],
        ["attack_success_rate", "clean_accuracy"],
        _supplied,
    ),
    "malicious-training": (
        "malicious_training.toml",
        ["stream.n_events=6000"],
        ["attack_success_rate", "clean_accuracy"],
        _supplied,
    ),
    # one target X' per seed; the control is the same budget of base images, unperturbed
    "gradient-alignment": (
        "gradient_alignment.toml",
        [],
        ["attack_success_rate", "target_class_probability", "observed_poisoning_rate", "poison_events_total"],
        None,
    ),
    "gradient-alignment-control": (
        "gradient_alignment.toml",
        ["attack.eps=0.0"],
        ["attack_success_rate", "target_class_probability", "poison_events_total"],
        None,
    ),
    "activation-analysis": ("badnets_cnn.toml", ANALYSIS, ["attack_success_rate"], _analysis),
    "activation-analysis-clean": ("badnets_cnn.toml", [*ANALYSIS, NO_ATTACK], [], _analysis),
    # centroid models, docs/defenses.md "Window defenses and drift alarms" (seeds 0-7): label flipping at rho = 0.3 from the
    # first event against the digits classifier, 6,000 events, undefended and with a window defense; the defended
    # blobs scenario with and without its defenses (tests/defenses/test_window_defenses.py asserts on these)
    "label-flip-6k": _label_flip(None),
    "label-flip-6k-outlier-rejection": _label_flip("{kind='outlier-rejection'}"),
    "label-flip-6k-source-quota": _label_flip("{kind='source-quota',quota=0.2}"),
    "label-flip-6k-source-quota-0.05": _label_flip("{kind='source-quota',quota=0.05}"),
    "centroid-defended": (
        "centroid_defended.toml",
        [],
        [
            "displacement_radii",
            "window_contamination",
            "clean_accuracy",
            "attack_success_rate",
            "defenses.outlier-rejection.stream_frr",
            "defenses.drift-reset.alarms",
        ],
        lambda result: {  # the attack starts at event 10,000
            "displacement_after_start_mean": float(
                np.mean([r["displacement_radii"] for r in result.timeseries if r["events"] > 10_000])
            ),
            "first_alarm_after_start": next(
                (e - 10_000 for e in result.summary["defenses"]["drift-reset"]["alarm_events"] if e > 10_000), None
            ),
        },
    ),
    "centroid-defended-undefended": (
        "centroid_defended.toml",
        ["defense=[]"],
        ["displacement_radii", "window_contamination", "clean_accuracy", "attack_success_rate"],
        lambda result: {
            "displacement_after_start_mean": float(
                np.mean([r["displacement_radii"] for r in result.timeseries if r["events"] > 10_000])
            )
        },
    ),
    # docs/channels.md (seeds 1-8): front-running (20,000 digits events, a snapshot every 2,000, bursts
    # of 50) with fixed and jittered snapshots; split-view (share 0.2 from event 5,000) without and with pinning
    "front-running": (
        "front_running.toml",
        [],
        ["attack_success_rate_mean", "deployed_attack_success_rate_mean", "poison_events_total", "snapshots_deployed"],
        None,
    ),
    "front-running-jitter": (
        "front_running.toml",
        ["model.snapshot_jitter=0.5"],
        ["attack_success_rate_mean", "deployed_attack_success_rate_mean", "poison_events_total", "snapshots_deployed"],
        None,
    ),
    "split-view": (
        "split_view.toml",
        [],
        [
            "attack_success_rate",
            "clean_accuracy",
            "poison_events_total",
            "poison_passed_vetting",
            "poison_reached_model",
            "refused_content",
        ],
        None,
    ),
    "split-view-pinned": (
        "split_view.toml",
        ["model.pin_content=true"],
        [
            "attack_success_rate",
            "clean_accuracy",
            "poison_events_total",
            "poison_passed_vetting",
            "poison_reached_model",
            "refused_content",
        ],
        None,
    ),
}


def measure(case: str, seed: int) -> dict:
    """One run of ``case`` at ``seed``: its figures (the seed overrides any in the case's overrides)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from poisonsim.config import Scenario
    from poisonsim.pipeline.engine import run

    path, overrides, keys, derive = CASES[case]
    twin = any(word in key for key in keys for word in TWIN)
    result = run(
        Scenario.from_toml(
            ROOT / "scenarios" / path, [*overrides, f"seed={seed}", f"evaluation.twin={str(twin).lower()}"]
        )
    )
    figures = {key: _read(result.summary, key) for key in keys}
    if derive:
        figures.update(derive(result))
    return figures


@functools.lru_cache(maxsize=None)
def figures_over_seeds(case: str, seeds: tuple[int, ...] = SEEDS, workers: int = 2) -> dict[str, np.ndarray]:
    """Each figure of ``case`` over ``seeds``, as an array in seed order (NaN where a run has none); a case
    measured once per process."""
    with ProcessPoolExecutor(workers) as pool:
        runs = list(pool.map(measure, [case] * len(seeds), seeds))
    return {key: np.array([np.nan if r.get(key) is None else r[key] for r in runs], dtype=float) for key in runs[0]}


def _read(summary: dict, key: str):
    value = summary
    for part in key.split("."):
        value = None if value is None else value.get(part)
    return value


def rows_of(case: str, seeds: list[int], figures: dict[str, np.ndarray]) -> list[dict]:
    """The data file's rows of one case measured over ``seeds``: a row per figure, its statistics over the runs
    that have it, and every seed's value in seed order (``nan`` where a run has none)."""
    rows, where, when = [], machine(), today()
    for key, every in figures.items():
        values = every[~np.isnan(every)]
        if not len(values):
            continue
        sd = values.std(ddof=1) if len(values) > 1 else 0.0
        row = {"machine": where, "date": when, "case": case, "seeds": seeds_text(seeds), "figure": key}
        row |= {"runs": len(values), "mean": f"{values.mean():.6g}", "sd": f"{sd:.6g}"}
        row |= {"min": f"{values.min():.6g}", "max": f"{values.max():.6g}"}
        rows.append(row | {"values": " ".join(f"{v:.6g}" for v in every)})
    return rows


def table(rows: list[dict], cases: list[str] | None = None) -> str:
    """The docs' table of ``cases`` (default: every case of ``rows``), a line per row of the data file, in the
    order of the cases given.

    >>> rows = [{"machine": "Xeon", "date": "2026-12-07", "case": "badnets", "seeds": "1-8", "figure": f,
    ...          "runs": "8", "mean": m, "sd": "0.03", "min": "0.89", "max": "1", "values": ""}
    ...         for f, m in (("attack_success_rate", "0.955"), ("clean_accuracy", "0.957"))]
    >>> print(table(rows, ["badnets"]).splitlines()[-1])
    | `badnets` | clean_accuracy | 1-8 | 0.957 | 0.03 | 0.89-1 | Xeon, 2026-12-07 |
    """
    lines = [
        "| case | figure | seeds | mean | sd | min-max | measured on |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    order = cases or list(dict.fromkeys(row["case"] for row in rows))
    for case in order:
        for row in (row for row in rows if row["case"] == case):
            mean, sd, low, high = (_shown(float(row[k])) for k in ("mean", "sd", "min", "max"))
            lines.append(
                f"| `{case}` | {row['figure']} | {row['seeds']} | {mean} | {sd} | {low}-{high} "
                f"| {row['machine']}, {row['date']} |"
            )
    return "\n".join(lines)


def _shown(value: float) -> str:
    """A figure as the docs' tables show it: three significant digits, counts of thousands whole.

    >>> [_shown(v) for v in (0.95512, 3020.875, 1.0, 9.18e-09)]
    ['0.955', '3,021', '1', '9.18e-09']
    """
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def paired_table(rows: list[dict], pairs: list[tuple[str, str, str, str]]) -> str:
    """The docs' table of paired comparisons, seed by seed: for each ``(case, against, figure, how)`` the case's
    figure minus the other case's (``how = "difference"``) or log10 of their ratio (``"log10 ratio"``, each
    floored at 1e-30), over the seeds both measured (the data file keeps each seed's value).

    >>> rows = [{"machine": "Xeon", "date": "2026-12-07", "case": c, "seeds": "1-3", "figure": "clean_accuracy",
    ...          "values": v} for c, v in (("badnets", "0.95 0.96 0.94"), ("badnets-clean", "0.96 0.96 0.95"))]
    >>> print(paired_table(rows, [("badnets", "badnets-clean", "clean_accuracy", "difference")]).splitlines()[-1])
    | `badnets` | `badnets-clean` | clean_accuracy, difference | 1-3 | -0.00667 | 0.00667 | -0.01 to 0 | 0 of 3 |
    """
    lines = [
        "| case | against | figure, compared as | seeds | mean | 2 s.e. | min to max | above 0 in |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for case, against, figure, how in pairs:
        (mine,) = [row for row in rows if row["case"] == case and row["figure"] == figure]
        (theirs,) = [
            row for row in rows if row["case"] == against and row["figure"] == figure and row["seeds"] == mine["seeds"]
        ]
        a, b = (np.array(row["values"].split(), dtype=float) for row in (mine, theirs))
        both = ~np.isnan(a) & ~np.isnan(b)  # the seeds both have
        a, b = a[both], b[both]
        paired = a - b if how == "difference" else np.log10(np.maximum(a, 1e-30) / np.maximum(b, 1e-30))
        two_se = 2 * paired.std(ddof=1) / np.sqrt(len(paired)) if len(paired) > 1 else 0.0
        lines.append(
            f"| `{case}` | `{against}` | {figure}, {how} | {mine['seeds']} | {paired.mean():.3g} | {two_se:.3g} "
            f"| {paired.min():.3g} to {paired.max():.3g} | {int((paired > 0).sum())} of {len(paired)} |"
        )
    return "\n".join(lines)


def seeds_text(seeds: list[int]) -> str:
    """``1-8`` for a run of seeds, else ``1,3,5``.

    >>> seeds_text([1, 2, 3]), seeds_text([0, 4])
    ('1-3', '0,4')
    """
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def seeds_of(text: str) -> list[int]:
    """``1-8`` or ``1,3,5``."""
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to measure (default: all): {', '.join(CASES)}")
    parser.add_argument("--seeds", default="1-8", type=seeds_of)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write every seed's figures as JSON here")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table of the cases from the data file, stop")
    args = parser.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; expected some of {', '.join(CASES)}")
    if args.table:
        print(table(read_rows(args.data), args.cases or None))
        return 0
    report = {}
    for case in args.cases or CASES:
        figures = figures_over_seeds(case, tuple(args.seeds), args.workers)
        report[case] = {key: values.tolist() for key, values in figures.items()}
        print(f"{case} (seeds {args.seeds[0]}-{args.seeds[-1]}): mean  sd  min  max", flush=True)
        for key, values in figures.items():
            values = values[~np.isnan(values)]
            if len(values):
                sd = values.std(ddof=1) if len(values) > 1 else 0.0
                print(f"  {key:45s} {values.mean():.4f}  {sd:.4f}  {values.min():.4f}  {values.max():.4f}", flush=True)
        write_rows(args.data, rows_of(case, args.seeds, figures), FIELDS, KEY)  # after each case, kept
        if args.out:  # after each case: a long measurement keeps what it has
            args.out.write_text(json.dumps({"seeds": args.seeds, "cases": report}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
