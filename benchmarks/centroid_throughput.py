"""Centroid-shift scenario throughput: poisonsim's engine vs the same model on river.

Both sides run the same stream with the same per-event semantics: each event
is judged (||x - c|| > r) before it is learned, the window policy is
average-out (c' = c + (x - c) / n, which is river's ``stats.EWMean`` with
fading factor 1/n, one per feature) and the white-box attacker places its
points on the boundary toward A using the centroid it sees at its turn.

poisonsim's figure is the whole embedded run (stream generation, attack,
transport, model, evaluator); river's is its model loop alone over events
generated beforehand, so the ratio flatters river. The lean loop is the
limit: one compiled per-event loop (numba) that draws each benign event from
the same blobs, places the attacker's point on the boundary at its turns,
judges and learns, and nothing else (no evaluator, no clean twin, no
transport); "of lean" is poisonsim's rate over it, side by side in this
process. Memory: peak RSS of a 1M-event run against a 10M-event run, each
in a fresh process.

    python benchmarks/centroid_throughput.py [--features 2 16 64] [--river-events 200000] [--set seed=11 ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from poisonsim.config import Scenario  # noqa: E402
from poisonsim.models import build_model  # noqa: E402
from poisonsim.pipeline.engine import run  # noqa: E402

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "scenarios", "centroid_shift.toml")


def scenario(n_features: int, n_events: int, overrides: list[str] = ()) -> Scenario:
    """The benchmark's scenario; ``overrides`` (``KEY=VALUE``, as ``--set``) after its own."""
    return Scenario.from_toml(
        SCENARIO,
        [
            f"stream.n_features={n_features}",
            f"stream.n_events={n_events}",
            "evaluation.every=100000",
            "attack.start=0",
            "attack.rate=0.2",  # the rate the docs' figures were measured at
            *overrides,
        ],
    )


def poisonsim_rate(s: Scenario, repeats: int = 3) -> float:
    run(s.replace(["stream.n_events=20000"]))  # compile and warm caches
    return max(run(s).summary["events_per_second"] for _ in range(repeats))


def river_rate(s: Scenario, n_events: int) -> float:
    """The same detector on river: an EWMean per feature, event by event."""
    from river import stats

    from poisonsim.attacks import build_attack, build_schedule
    from poisonsim.pipeline.stream import MergedStream, attacker_knowledge
    from poisonsim.sources import make_source

    seeds = np.random.SeedSequence(s.seed).spawn(5)
    source = make_source(s.stream, np.random.default_rng(seeds[0]))
    ours = build_model(s.model, 1)
    warm_x, _ = source.sample(np.random.default_rng(seeds[1]), ours.warmup_events)
    ours.learn_many(warm_x)
    attack = build_attack(s.attack).fit(attacker_knowledge(source, ours.center, ours.radius_), np.random.default_rng(2))
    batch, truth = MergedStream(source, attack, build_schedule(s.attack), 3).next_batch(n_events)
    rows = [dict(enumerate(map(float, x))) for x in batch.x]
    adaptive = truth.is_adaptive.tolist()
    target = [float(v) for v in attack.target_x_[0]]

    n, r = s.model.window_size, ours.radius_
    means = {j: stats.EWMean(fading_factor=1.0 / n) for j in range(len(target))}
    for j, m in means.items():  # start from the same warmed-up centroid
        m.update(float(ours.center[j]))
    r_attack = r * (1 - 1e-5)
    started = time.perf_counter()
    for x, is_attacker_turn in zip(rows, adaptive):
        c = {j: m.get() for j, m in means.items()}
        if is_attacker_turn:
            gap = math.sqrt(sum((target[j] - c[j]) ** 2 for j in c))
            step = 1.0 if gap <= r_attack else r_attack / gap
            x = {j: c[j] + step * (target[j] - c[j]) for j in c}
        alarm = sum((x[j] - c[j]) ** 2 for j in c) > r * r
        if not alarm:
            for j, m in means.items():
                m.update(x[j])
    return n_events / (time.perf_counter() - started)


@njit(cache=True)
def _lean_loop(means, std, center, radius, target, rate, window, n_events, seed):  # pragma: no cover - compiled
    """The detector and the attacker alone, event by event: how many events raised an alarm."""
    np.random.seed(seed)
    d = center.shape[0]
    c, x = center.copy(), np.empty(d)
    r_attack, alarms = radius * (1 - 1e-5), 0
    for _ in range(n_events):
        if np.random.random() < rate:  # the attacker's turn: the boundary point toward its target
            gap = 0.0
            for j in range(d):
                gap += (target[j] - c[j]) ** 2
            gap = np.sqrt(gap)
            step = 1.0 if gap <= r_attack else r_attack / gap
            for j in range(d):
                x[j] = c[j] + step * (target[j] - c[j])
        else:  # a benign draw from the blobs
            k = np.random.randint(means.shape[0])
            for j in range(d):
                x[j] = means[k, j] + std * np.random.standard_normal()
        distance = 0.0
        for j in range(d):
            distance += (x[j] - c[j]) ** 2
        if distance > radius * radius:
            alarms += 1
        else:  # average-out: c' = c + (x - c) / n
            for j in range(d):
                c[j] += (x[j] - c[j]) / window
    return alarms


def lean_rate(s: Scenario, n_events: int) -> float:
    """The lean loop's events per second on the scenario's blobs, warmed detector and attacker's target."""
    from poisonsim.attacks import build_attack
    from poisonsim.pipeline.stream import attacker_knowledge
    from poisonsim.sources import make_source

    seeds = np.random.SeedSequence(s.seed).spawn(5)
    source = make_source(s.stream, np.random.default_rng(seeds[0]))
    model = build_model(s.model, 1)
    model.learn_many(source.sample(np.random.default_rng(seeds[1]), model.warmup_events)[0])
    attack = build_attack(s.attack).fit(
        attacker_knowledge(source, model.center, model.radius_), np.random.default_rng(2)
    )
    means, std = source._means.astype(np.float64), float(source._std)  # the blobs the source draws from
    args = (means, std, model.center.astype(np.float64), float(model.radius_), attack.target_x_[0].astype(np.float64))
    _lean_loop(*args, s.attack.rate, float(s.model.window_size), 1000, 0)  # compile
    best = math.inf
    for repeat in range(3):
        started = time.perf_counter()
        _lean_loop(*args, s.attack.rate, float(s.model.window_size), n_events, repeat)
        best = min(best, time.perf_counter() - started)
    return n_events / best


def peak_rss_mib(n_features: int, n_events: int) -> float:
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from benchmarks.centroid_throughput import scenario; from poisonsim.pipeline.engine import run;"
        f"run(scenario({n_features}, {n_events}));"
        "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024)"
    )
    root = os.path.join(os.path.dirname(__file__), "..")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--river-events", type=int, default=100_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="scenario overrides, e.g. seed=11")
    args = parser.parse_args()

    results = []
    print(f"{'d':>4} {'poisonsim ev/s':>15} {'river ev/s':>12} {'ratio':>8} {'lean ev/s':>13} {'of lean':>8}")
    for d in args.features:
        ours = poisonsim_rate(scenario(d, args.events, args.set))
        theirs = river_rate(scenario(d, args.river_events, args.set), args.river_events)
        lean = lean_rate(scenario(d, args.events, args.set), args.events)
        results.append(
            {"features": d, "poisonsim_eps": ours, "river_eps": theirs, "ratio": ours / theirs, "lean_eps": lean}
        )
        print(f"{d:>4} {ours:>15,.0f} {theirs:>12,.0f} {ours / theirs:>7.0f}x {lean:>13,.0f} {ours / lean:>8.3f}")
    if not args.skip_memory:
        small, large = peak_rss_mib(2, 1_000_000), peak_rss_mib(2, 10_000_000)
        print(
            f"peak RSS: {small:.1f} MiB at 1M events, {large:.1f} MiB at 10M events ({100 * (large / small - 1):+.1f}%)"
        )
        results.append({"rss_mib_1m": small, "rss_mib_10m": large})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
