"""STRIP throughput: all overlays of a batch in one forward pass vs the reference per-input loop.

Both sides judge the same inputs against the same overlay backgrounds with the
same model (the online CNN after pre-training on the 8x8 digits), N overlays
per input. The loop builds each input's overlays one by one and predicts them
with one call per input, as the reference STRIP code does; the batched side
superimposes with array operations and runs one forward pass. The figures are
inputs judged per second; the ratio is batched / loop. One torch thread.

    python benchmarks/strip_throughput.py [--inputs 2000] [--overlays 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from simulator.config import Scenario
from simulator.defenses.strip import strip_entropy, strip_entropy_loop
from simulator.engine import World

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "scenarios", "strip_badnets.toml")


def _rate(fn, model, x, backgrounds, how, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn(model, x, backgrounds, how)
        best = min(best, time.perf_counter() - started)
    return len(x) / best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--overlays", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = World.build(Scenario.from_toml(SCENARIO, ["defense=[]"]))
    model, strip_how = world.model, "additive"
    rng = np.random.default_rng(0)
    x = world.source.sample(rng, args.inputs)[0]
    pool = world.source.sample(rng, 500)[0]
    backgrounds = pool[rng.integers(0, len(pool), size=(len(x), args.overlays))]
    loop_rate, loop_out = _rate(strip_entropy_loop, model, x, backgrounds, strip_how, args.repeat)
    batched_rate, batched_out = _rate(strip_entropy, model, x, backgrounds, strip_how, args.repeat)
    print(json.dumps({
        "inputs": len(x), "overlays": args.overlays, "torch_threads": torch.get_num_threads(),
        "loop_inputs_per_second": round(loop_rate), "batched_inputs_per_second": round(batched_rate),
        "speedup": round(batched_rate / loop_rate, 1),
        "max_abs_difference": float(np.abs(loop_out - batched_out).max()),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
