"""STRIP for every target class: FAR and FRR per target class over seeds, for each of STRIP's scales.

For each seed and target class, BadNets (the ready scenario's trigger and
rate) is run undefended to the end of the stream; STRIP is then fitted on
the defender's trusted sample and judges the held-out clean inputs (FRR) and
the triggered ones that reach the target class (FAR), on the same net, with
the pooled threshold, the per-class one and the union of three scores, each
with one-layer overlays (the paper's) and two-layer ones (``layers = 2``;
``--layers`` takes other counts). ``<variant>_far_exact`` is the FAR at a
threshold put at the ``frr`` quantile of the held-out clean scores
themselves: where no calibration can do better at that FRR (the union's
score is 0 for an input below every calibration score of one of its tails:
where more than ``frr`` of the held-out clean inputs are, the quantile is 0
and the figure 1). ``--confidence 0.5`` calibrates by
the paper's rule (the ``frr`` quantile of trusted clean scores) instead of
bounding the FRR with 90% confidence; ``--robust`` measures every variant
with ``robust = true`` (median entropy over the overlays, class spreads
shrunk towards the pooled one).

    .venv/bin/python benchmarks/strip_classes.py mnist --seeds 1-4 --workers 2
    .venv/bin/python benchmarks/strip_classes.py digits --seeds 1-4 --workers 2
    .venv/bin/python benchmarks/strip_classes.py mnist --layers 2,3,4
    .venv/bin/python benchmarks/strip_classes.py digits --layers 2 --confidence 0.5
    .venv/bin/python benchmarks/strip_classes.py digits --layers 2 --robust
    .venv/bin/python benchmarks/strip_classes.py mnist --layers 2 --set attack.trigger.position=top-left
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.seed_figures import seeds_of  # noqa: E402
from poisonsim.defenses.strip import SCALES  # noqa: E402

# setting -> (scenario, overrides): the ready scenarios' source, trigger and rate
SETTINGS = {
    "digits": ("strip_badnets.toml", ["stream.n_events=10000"]),
    "mnist": ("mnist_badnets.toml", []),
    "mnist-blended": ("mnist_blended.toml", []),  # a trigger over the whole image (checkerboard, alpha 0.2)
}
STRIP = {"overlays": 32, "superimpose": "additive", "frr": 0.01}


def variants(layers: tuple[int, ...] = (1, 2)) -> dict[str, dict]:
    """Variant name -> keys added to STRIP's: each scale (pooled, the paper's; per-class; union) at each layer
    count ("pooled", "per-class", "union" for one layer, "pooled-2", ... for two).

    >>> list(variants((1, 3)))
    ['pooled', 'per-class', 'union', 'pooled-3', 'per-class-3', 'union-3']
    """
    return {f"{scale}{'' if n == 1 else f'-{n}'}": {"scale": scale, "layers": n} for n in layers for scale in SCALES}


class Calibration(NamedTuple):
    """How STRIP is fitted: the overlay layer counts measured, the confidence that FRR stays under 1% (0.5: the
    paper's quantile rule) and whether it is robust."""

    layers: tuple[int, ...] = (1, 2)
    confidence: float = 0.9
    robust: bool = False


def measure(
    source: str,
    seed: int,
    target: int,
    calibrations: tuple[Calibration, ...] = (Calibration(),),
    extra: tuple[str, ...] = (),
) -> list[dict]:
    """One net (``source``, ``seed``, BadNets to ``target``; ``extra``: more scenario overrides), trained once:
    attack success, and FAR / FRR for each variant of each calibration (a dict per calibration)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from poisonsim.config import Scenario
    from poisonsim.defenses.base import DefenderKnowledge
    from poisonsim.defenses.strip import Strip
    from poisonsim.pipeline.learner import Learner
    from poisonsim.pipeline.world import World

    path, overrides = SETTINGS[source]
    scenario = Scenario.from_toml(
        ROOT / "scenarios" / path,
        [*overrides, *extra, "defense=[]", f"seed={seed}", f"attack.target_class={target}", "evaluation.twin=false"],
    )
    world = World.build(scenario)
    stream, learner = world.stream(), Learner(world)
    for size in world.batch_sizes():
        learner.feed(*stream.next_batch(size))
    model, src, attack = world.model, world.source, world.attack
    knowledge = DefenderKnowledge(*src.trusted_sample(np.random.default_rng([seed, 1])), src.n_classes, src.image_side)
    fired = model.predict_many(attack.target_x_) == target
    measured, memo = [], {}
    for calibration in calibrations:
        figures = {"attack_success": float(fired.mean())}
        for name, keys in sorted(variants(calibration.layers).items(), key=lambda item: item[1]["scale"] != "union"):
            strip = Strip(**STRIP, **keys, confidence=calibration.confidence, robust=calibration.robust)
            strip.entropies = functools.partial(shared_entropies, strip, memo)
            strip.fit(knowledge, model, np.random.default_rng([seed, 2]))
            triggered, clean = strip.score(attack.target_x_[fired], model), strip.score(src.test_x, model)
            figures[f"{name}_far"] = float((triggered >= strip.threshold_).mean())
            figures[f"{name}_frr"] = float((clean < strip.threshold_).mean())
            figures[f"{name}_far_exact"] = float((triggered >= np.quantile(clean, STRIP["frr"])).mean())
        names = [f"{name}_{figure}" for name in variants(calibration.layers) for figure in ("far", "frr", "far_exact")]
        measured.append({"attack_success": figures["attack_success"], **{name: figures[name] for name in names}})
    return measured


def shared_entropies(strip, memo: dict, model, X: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """``strip.entropies(model, X, picks)``, computed once per net for every scale: the scales share their
    overlays (one seed) and the entropy column of the union's ``(entropy, own share)`` is the others' score.
    Union variants are measured first, so theirs is the one computed."""
    key = (strip.layers, strip.robust, *(hashlib.sha1(np.ascontiguousarray(a)).hexdigest() for a in (X, picks)))
    if key not in memo or (strip.scale == "union" and memo[key].ndim == 1):
        memo[key] = type(strip).entropies(strip, model, X, picks)
    return memo[key] if strip.scale == "union" or memo[key].ndim == 1 else memo[key][:, 0]


@functools.lru_cache(maxsize=None)
def over_classes(
    source: str,
    seeds: tuple[int, ...],
    workers: int = 2,
    calibrations: tuple[Calibration, ...] = (Calibration(),),
    extra: tuple[str, ...] = (),
) -> dict[Calibration, dict[str, np.ndarray]]:
    """For each calibration, each figure as a (seeds, 10 target classes) array; each net trained once for all
    the calibrations."""
    cases = [(seed, target) for seed in seeds for target in range(10)]
    one = functools.partial(measure, source, calibrations=calibrations, extra=extra)
    with ProcessPoolExecutor(workers) as pool:
        runs = list(pool.map(one, *zip(*cases)))
    return {
        calibration: {key: np.array([r[i][key] for r in runs]).reshape(len(seeds), 10) for key in runs[0][i]}
        for i, calibration in enumerate(calibrations)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="1-4", type=seeds_of)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--layers",
        default="1,2",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        help="layer counts to measure, comma-separated (default 1,2)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="STRIP's confidence that FRR stays under 1%% (0.5: the paper's quantile rule)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="extra",
        help="a scenario override for every run (repeatable): another trigger, attack or rate",
    )
    parser.add_argument(
        "--robust", action="store_true", help="robust = true in every variant: median entropy, class spreads shrunk"
    )
    args = parser.parse_args()
    calibration = Calibration(args.layers, args.confidence, args.robust)
    figures = over_classes(args.source, tuple(args.seeds), args.workers, (calibration,), tuple(args.extra))[calibration]
    shown = f" ({', '.join(args.extra + ['robust'] * args.robust)})" if args.extra or args.robust else ""
    print(f"{args.source}{shown}, seeds {args.seeds[0]}-{args.seeds[-1]}: mean over seeds per target class")
    print("figure                " + " ".join(f"{c:>6d}" for c in range(10)) + "    all")
    for key, values in figures.items():
        print(f"{key:21s} " + " ".join(f"{v:6.3f}" for v in values.mean(axis=0)) + f"  {values.mean():.3f}")
    print("\nper seed, mean over the ten target classes")
    print("figure                " + " ".join(f"{s:>6d}" for s in args.seeds))
    for key, values in figures.items():
        print(f"{key:21s} " + " ".join(f"{v:6.3f}" for v in values.mean(axis=1)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
