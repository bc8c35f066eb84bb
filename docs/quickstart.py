"""A starting point for research with poisonsim as a library: one attack, a range of poisoning rates, seeds.

It runs label flipping against the nearest-centroid classifier on the 8x8
digits at several rates rho, over several seeds, collects each run's
timeseries into one pandas DataFrame, prints clean accuracy at the end of
the stream (mean and spread over seeds) and plots it against rho.

    .venv/bin/python docs/quickstart.py                     # writes results/quickstart.png
    .venv/bin/python docs/quickstart.py --events 4000 --seeds 2 --out /tmp/q.png

Change the scenario dict to study another attack, model or defense:
``poisonsim.kinds()`` lists what can go in it, ``poisonsim kinds attack
label-flip`` (the command) each kind's keys.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import poisonsim  # noqa: E402


def scenario(rho: float, seed: int, events: int) -> dict:
    """The scenario as a plain dict: the same tables a TOML file holds."""
    return {
        "seed": seed,
        "stream": {"source": "digits", "n_events": events},
        "model": {"kind": "centroid-classifier", "window_size": 50, "window_policy": "fifo"},
        "attack": {"kind": "label-flip", "rate": rho, "flip": "farthest"},
        "evaluation": {"every": max(1, events // 4)},
    }


def sweep(rates: list[float], seeds: int, events: int) -> pd.DataFrame:
    """Every run's timeseries in one frame, with its rho and seed."""
    frames = []
    for rho in rates:
        for seed in range(seeds):
            frame = poisonsim.run(scenario(rho, seed, events)).to_frame()
            frames.append(frame.assign(rho=rho, seed=seed))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=8000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--out", type=Path, default=Path("results/quickstart.png"))
    args = parser.parse_args(argv)
    if args.events < 1 or args.seeds < 1:
        parser.error(f"--events and --seeds: expected integers >= 1, got {args.events} and {args.seeds}")
    try:
        runs = sweep(args.rates, args.seeds, args.events)
    except poisonsim.ConfigError as exc:  # e.g. a rate outside [0, 1]
        parser.error(str(exc))
    final = runs[runs["events"] == args.events]
    table = final.groupby("rho")["clean_accuracy"].agg(["mean", "std", "count"])
    print(f"poisonsim {poisonsim.__version__}: label flipping, clean accuracy at the end of the stream")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(table.index, table["mean"], yerr=table["std"].fillna(0), marker="o", capsize=3)
    ax.set_xlabel("poisoning rate rho")
    ax.set_ylabel("clean accuracy (held-out)")
    ax.set_title(f"label flipping, {args.seeds} seeds")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"figure written to {args.out}")
    return runs


if __name__ == "__main__":
    main()
