"""STRIP throughput: the batched path vs the reference per-input loop.

Both sides judge the same inputs against the same overlay backgrounds with the
same model (the online CNN after pre-training on the 8x8 digits), N overlays
per input, additive superimposition. The loop builds each input's overlays one
by one and predicts them with one call per input, as the reference STRIP code
does; the batched side superimposes with array operations and runs the net in
cache-sized chunks, the CNN as channels-last convolutions (same entropies to
about 1e-6). The figures are inputs judged per second, best of ``--repeat``
runs taken in turn so that both sides see the same load; the ratio is batched
/ loop. One torch thread. Each measurement is kept as a row (machine, date,
device, N, inputs) of ``docs/data/strip_throughput.csv``; the performance
page's table is generated from it (``--table`` prints it), and a test holds
the page to it.

    python benchmarks/strip_throughput.py [--device cpu|cuda|auto] [--inputs 2000] [--overlays 16] [--repeat 3]
    python benchmarks/strip_throughput.py --table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.config import Scenario  # noqa: E402
from poisonsim.defenses.strip import strip_entropy, strip_entropy_loop  # noqa: E402
from poisonsim.pipeline.world import World  # noqa: E402

SCENARIO = ROOT / "scenarios" / "strip_badnets.toml"
DATA = ROOT / "docs" / "data" / "strip_throughput.csv"
FIELDS = ("machine", "date", "device", "overlays", "inputs", "loop", "batched", "max_abs_difference")
KEY = ("machine", "device", "overlays", "inputs")


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


def table(rows: list[dict]) -> str:
    """The docs' table, a line per row of the data file.

    >>> print(table([{"machine": "Xeon", "date": "2026-12-07", "device": "cpu", "overlays": "16", "inputs": "2000",
    ...               "loop": "1333", "batched": "7394", "max_abs_difference": "7e-07"}]).splitlines()[-1])
    | Xeon | 2026-12-07 | cpu | 16 | 2,000 | 1,333 | 7,394 | 5.5x | 7e-07 |
    """
    lines = [
        "| machine | date | device | overlays N | inputs | per-input loop inputs/s | batched inputs/s | batched / loop "
        "| entropies differ by at most |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        loop, batched = float(row["loop"]), float(row["batched"])
        lines.append(
            f"| {row['machine']} | {row['date']} | {row['device']} | {row['overlays']} | {int(row['inputs']):,} "
            f"| {loop:,.0f} | {batched:,.0f} | {batched / loop:.1f}x | {float(row['max_abs_difference']):.0e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--overlays", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)))
        return
    torch.set_num_threads(1)
    result = measure(args.device, args.inputs, args.overlays, args.repeat)
    print(json.dumps(result, indent=2))
    row = {"machine": machine(), "date": today(), "device": result["device"], "overlays": result["overlays"]}
    row |= {"inputs": result["inputs"], "loop": result["loop_inputs_per_second"]}
    row |= {"batched": result["batched_inputs_per_second"], "max_abs_difference": f"{result['max_abs_difference']:.1e}"}
    write_rows(args.data, [row], FIELDS, KEY)
    print(f"row kept in {args.data}")


if __name__ == "__main__":
    main()
