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

Each measurement is kept as a row (machine, date, settings, d) of
``docs/data/centroid_throughput.csv``, the memory in ``centroid_memory.csv``
beside it; the performance page's tables are generated from them
(``--table`` prints them), and a test holds the page to them.

    python benchmarks/centroid_throughput.py [--features 2 16 64] [--river-events 200000] [--set seed=11 ...]
    python benchmarks/centroid_throughput.py --table
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.models import build_model  # noqa: E402
from poisonsim.pipeline.engine import run  # noqa: E402

SCENARIO = ROOT / "scenarios" / "centroid_shift.toml"
DATA = ROOT / "docs" / "data" / "centroid_throughput.csv"
FIELDS = ("machine", "date", "settings", "features", "events", "poisonsim_eps", "river_eps", "lean_eps")
KEY = ("machine", "settings", "features")
MEMORY = DATA.with_name("centroid_memory.csv")
MEMORY_FIELDS = ("machine", "date", "events", "peak_rss_mib")


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """The docs' table of throughput, a line per row of the data file.

    >>> print(table([{"machine": "Xeon, 1 of 2 cores", "date": "2026-12-07", "settings": "", "features": "2",
    ...               "events": "3000000", "poisonsim_eps": "6e6", "river_eps": "8e5", "lean_eps": "1.8e7"}]))
    | machine | date | `--set` | features d | events | poisonsim events/s | river events/s | ratio | lean loop events/s | of lean |
    |---|---|---|---:|---:|---:|---:|---:|---:|---:|
    | Xeon, 1 of 2 cores | 2026-12-07 | (none) | 2 | 3,000,000 | 6,000,000 | 800,000 | 8x | 18,000,000 | 0.333 |
    """
    lines = [
        "| machine | date | `--set` | features d | events | poisonsim events/s | river events/s | ratio "
        "| lean loop events/s | of lean |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, river, lean = (float(row[k]) for k in ("poisonsim_eps", "river_eps", "lean_eps"))
        settings = f"`{row['settings']}`" if row["settings"] else "(none)"
        lines.append(
            f"| {row['machine']} | {row['date']} | {settings} | {row['features']} | {int(row['events']):,} "
            f"| {ours:,.0f} | {river:,.0f} | {ours / river:.0f}x | {lean:,.0f} | {ours / lean:.3f} |"
        )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    """The docs' table of peak memory, a line per row of the memory data file.

    >>> print(memory_table([{"machine": "Xeon", "date": "2026-12-07", "events": "1000000", "peak_rss_mib": "162.8"}]))
    | machine | date | events | peak RSS (MiB) |
    |---|---|---:|---:|
    | Xeon | 2026-12-07 | 1,000,000 | 162.8 |
    """
    lines = ["| machine | date | events | peak RSS (MiB) |", "|---|---|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['machine']} | {row['date']} | {int(row['events']):,} | {float(row['peak_rss_mib']):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[2, 16, 64])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--river-events", type=int, default=100_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="scenario overrides, e.g. seed=11")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the tables from the data files and stop")
    args = parser.parse_args()
    memory = args.data.with_name(MEMORY.name)
    if args.table:
        print(table(read_rows(args.data)), memory_table(read_rows(memory)), sep="\n\n")
        return

    where, when, settings = machine(), today(), " ".join(args.set)
    print(f"{'d':>4} {'poisonsim ev/s':>15} {'river ev/s':>12} {'ratio':>8} {'lean ev/s':>13} {'of lean':>8}")
    for d in args.features:
        ours = poisonsim_rate(scenario(d, args.events, args.set))
        theirs = river_rate(scenario(d, args.river_events, args.set), args.river_events)
        lean = lean_rate(scenario(d, args.events, args.set), args.events)
        print(f"{d:>4} {ours:>15,.0f} {theirs:>12,.0f} {ours / theirs:>7.0f}x {lean:>13,.0f} {ours / lean:>8.3f}")
        row = {"machine": where, "date": when, "settings": settings, "features": d, "events": args.events}
        row |= {"poisonsim_eps": f"{ours:.0f}", "river_eps": f"{theirs:.0f}", "lean_eps": f"{lean:.0f}"}
        write_rows(args.data, [row], FIELDS, KEY)
    if not args.skip_memory:
        sizes = (1_000_000, 10_000_000)
        small, large = (peak_rss_mib(2, n) for n in sizes)
        print(
            f"peak RSS: {small:.1f} MiB at 1M events, {large:.1f} MiB at 10M events ({100 * (large / small - 1):+.1f}%)"
        )
        rows = [
            {"machine": where, "date": when, "events": n, "peak_rss_mib": f"{mib:.1f}"}
            for n, mib in zip(sizes, (small, large))
        ]
        write_rows(memory, rows, MEMORY_FIELDS, ("machine", "events"))
    print(f"rows kept in {args.data} and {memory}")


if __name__ == "__main__":
    main()
