"""STRIP throughput: the batched path vs the reference per-input loop.

Both sides judge the same inputs against the same overlay backgrounds with the
same model (the online CNN after pre-training on the 8x8 digits), N overlays
per input, additive superimposition. The loop builds each input's overlays one
by one and predicts them with one call per input, as the reference STRIP code
does; the batched side superimposes with array operations and runs the net in
cache-sized chunks, the CNN as channels-last convolutions (same entropies to
about 1e-6). The figures are inputs judged per second, best of ``--repeat``
runs taken in turn so that both sides see the same load; the ratio is batched
/ loop. One torch thread.

Measured on the 2-core development machine (shared with other jobs), three
runs: loop 1,276-1,319 inputs/s, batched 7,273-7,346, 5.6-5.7x (1.4x before
the chunks and the layout). 10x is out of reach on one CPU core: the second
convolution alone (0.3 M multiply-adds per overlay) runs at about 140 GFLOP/s,
near the core's peak, and is two thirds of the batched time, which bounds the
batched side at about 15,000 inputs/s (11x) even if all else were free.

    python benchmarks/strip_throughput.py [--device cpu|cuda|auto] [--inputs 2000] [--overlays 16] [--repeat 3]
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

from poisonsim.config import Scenario
from poisonsim.defenses.strip import strip_entropy, strip_entropy_loop
from poisonsim.pipeline.world import World

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "scenarios", "strip_badnets.toml")


def _rates(fns, model, x, backgrounds, how, repeat: int) -> list[tuple[float, np.ndarray]]:
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):  # in turn: a shared machine's load falls on both sides alike
            started = time.perf_counter()
            outs[i] = fn(model, x, backgrounds, how)
            best[i] = min(best[i], time.perf_counter() - started)
    return [(len(x) / b, out) for b, out in zip(best, outs)]


def measure(device: str = "auto", inputs: int = 2000, overlays: int = 16, repeat: int = 3) -> dict:
    """Inputs judged per second by the loop and the batched path, on ``device``."""
    world = World.build(Scenario.from_toml(SCENARIO, ["defense=[]", f"model.device={device}"]))
    model, strip_how = world.model, "additive"
    rng = np.random.default_rng(0)
    x = world.source.sample(rng, inputs)[0]
    pool = world.source.sample(rng, 500)[0]
    backgrounds = pool[rng.integers(0, len(pool), size=(len(x), overlays))]
    (loop_rate, loop_out), (batched_rate, batched_out) = _rates(
        (strip_entropy_loop, strip_entropy), model, x, backgrounds, strip_how, repeat
    )
    return {
        "device": str(model.device_),
        "inputs": len(x),
        "overlays": overlays,
        "torch_threads": torch.get_num_threads(),
        "loop_inputs_per_second": round(loop_rate),
        "batched_inputs_per_second": round(batched_rate),
        "speedup": round(batched_rate / loop_rate, 1),
        "max_abs_difference": float(np.abs(loop_out - batched_out).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--overlays", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(measure(args.device, args.inputs, args.overlays, args.repeat), indent=2))


if __name__ == "__main__":
    main()
