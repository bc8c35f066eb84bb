"""Online neural learner vs a plain torch training loop over the same mini-batches.

Both sides train the same architecture from the same initial weights on the
same events in the same order, one optimiser step per mini-batch. The plain
loop only trains; the online learner also predicts every event before
learning it (test-then-train), validates its input and keeps its pending
batch, fed in chunks as the engine feeds it. The ratio is learner / plain.

    python benchmarks/neural_throughput.py [--device auto|cpu|cuda] [--events 20000]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from poisonsim.models.neural import NeuralClassifier  # noqa: E402
from poisonsim.sources import Digits  # noqa: E402

CHUNK = 1_000  # events per call, as the engine's batches


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (both sides)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = measure(args.device, args.events, args.repeats)
    for row in results:
        print(
            f"{row['architecture']} batch {row['batch_size']:>3} on {row['device']}: "
            f"plain {row['plain_samples_per_s']:>9,.0f}/s, online {row['online_samples_per_s']:>9,.0f}/s, "
            f"ratio {row['ratio']:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
