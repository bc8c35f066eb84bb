"""Online neural learner vs a plain torch training loop over the same mini-batches.

Both sides train the same architecture from the same initial weights on the
same events in the same order, one optimiser step per mini-batch. The plain
loop only trains; the online learner also predicts every event before
learning it (test-then-train), validates its input and keeps its pending
batch, fed in chunks as the engine feeds it. The ratio is learner / plain.
Each figure is kept as a row (machine, date, device, network, batch) of
``docs/data/neural_throughput.csv``; the performance page's table is
generated from it (``--table`` prints it), and a test holds the page to it.

    python benchmarks/neural_throughput.py [--device auto|cpu|cuda] [--events 20000]
    python benchmarks/neural_throughput.py --table
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.datafile import machine, read_rows, today, write_rows  # noqa: E402
from poisonsim.models.neural import NeuralClassifier  # noqa: E402
from poisonsim.sources import Digits  # noqa: E402

CHUNK = 1_000  # events per call, as the engine's batches
DATA = ROOT / "docs" / "data" / "neural_throughput.csv"
FIELDS = ("machine", "date", "device", "threads", "events", "architecture", "batch_size", "plain", "online")
KEY = ("machine", "device", "threads", "architecture", "batch_size")


def plain_loop(net: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int, device) -> float:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    _sync(device)
    started = time.perf_counter()
    net.train()
    for start in range(0, len(x) - batch_size + 1, batch_size):
        logits = net(xt[start : start + batch_size])
        loss = torch.nn.functional.cross_entropy(logits, yt[start : start + batch_size])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return len(x) / (time.perf_counter() - started)


def online_learner(learner: NeuralClassifier, x: np.ndarray, y: np.ndarray) -> float:
    _sync(learner.device_)
    started = time.perf_counter()
    for start in range(0, len(x), CHUNK):
        learner.process_many(x[start : start + CHUNK], y[start : start + CHUNK])
    _sync(learner.device_)
    return len(x) / (time.perf_counter() - started)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(device: str = "auto", events: int = 20_000, repeats: int = 3) -> list[dict]:
    """Samples per second of both sides for each architecture and batch size, on ``device``."""
    source = Digits().load(np.random.default_rng(0))
    x, y = source.sample(np.random.default_rng(1), events)
    results = []
    for architecture in ("mlp", "cnn"):
        for batch_size in (32, 256):
            best_plain = best_online = 0.0
            for _ in range(repeats):  # the same start for both sides, best of a few runs
                learner = NeuralClassifier(10, 64, architecture, 8, batch_size=batch_size, device=device, seed=0)
                net = copy.deepcopy(learner.net)
                best_plain = max(best_plain, plain_loop(net, x, y, batch_size, learner.device_))
                best_online = max(best_online, online_learner(learner, x, y))
            results.append(
                {
                    "architecture": architecture,
                    "batch_size": batch_size,
                    "device": str(learner.device_),
                    "plain_samples_per_s": best_plain,
                    "online_samples_per_s": best_online,
                    "ratio": best_online / best_plain,
                }
            )
    return results


def device_name(device: str) -> str:
    """``cpu``, or ``cuda`` with the GPU's name."""
    if torch.device(device).type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(torch.device(device))})"
    return "cpu"


def table(rows: list[dict]) -> str:
    """The docs' table, a line per row of the data file.

    >>> print(table([{"machine": "Xeon", "date": "2026-12-07", "device": "cpu", "threads": "1", "events": "20000",
    ...               "architecture": "mlp", "batch_size": "32", "plain": "61977", "online": "52952"}]))
    | machine | date | device (torch threads) | network | batch | plain loop samples/s | online learner samples/s | ratio |
    |---|---|---|---|---:|---:|---:|---:|
    | Xeon | 2026-12-07 | cpu (1) | mlp | 32 | 61,977 | 52,952 | 0.85 |
    """
    lines = [
        "| machine | date | device (torch threads) | network | batch | plain loop samples/s "
        "| online learner samples/s | ratio |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        plain, online = float(row["plain"]), float(row["online"])
        lines.append(
            f"| {row['machine']} | {row['date']} | {row['device']} ({row['threads']}) | {row['architecture']} "
            f"| {row['batch_size']} | {plain:,.0f} | {online:,.0f} | {online / plain:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both sides)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data file (default {DATA.relative_to(ROOT)})")
    parser.add_argument("--table", action="store_true", help="print the table from the data file and stop")
    args = parser.parse_args()
    if args.table:
        print(table(read_rows(args.data)))
        return
    torch.set_num_threads(args.threads)
    results = measure(args.device, args.events, args.repeats)
    rows, where, when = [], machine(), today()
    for row in results:
        print(
            f"{row['architecture']} batch {row['batch_size']:>3} on {row['device']}: "
            f"plain {row['plain_samples_per_s']:>9,.0f}/s, online {row['online_samples_per_s']:>9,.0f}/s, "
            f"ratio {row['ratio']:.2f}"
        )
        rows.append(
            {"machine": where, "date": when, "device": device_name(row["device"]), "threads": args.threads}
            | {"events": args.events, "architecture": row["architecture"], "batch_size": row["batch_size"]}
            | {"plain": f"{row['plain_samples_per_s']:.0f}", "online": f"{row['online_samples_per_s']:.0f}"}
        )
    write_rows(args.data, rows, FIELDS, KEY)
    print(f"rows kept in {args.data}")


if __name__ == "__main__":
    main()
