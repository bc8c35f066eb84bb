"""Neural Cleanse: the time of one analysis over all ten classes on the trained MNIST LeNet.

The net is the one ``scenarios/mnist_badnets.toml`` trains online (12,000
events of real MNIST, 5% BadNets poison); the analysis is the defense's own
(:func:`poisonsim.defenses.neural_cleanse.reverse_triggers` on the defender's
1,000 trusted digits, all classes in one batched tensor, one Adam optimiser),
with its default keys unless given. Training the net is not timed. One torch
thread. Printed: seconds per analysis (best and every run), optimisation
steps taken, steps per second, and the figures of the last run (mask L1 norm
and anomaly index per class, suspects), as JSON.

Measured on the 2-core development machine (shared with other jobs): see the
docs/mnist.md's Neural Cleanse section.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/neural_cleanse_time.py [--seed 7] [--repeat 2] [--steps 600] \\
        [--device cpu|cuda|auto]
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
from poisonsim.defenses.neural_cleanse import anomaly_indices, reverse_triggers, suspects
from poisonsim.pipeline.engine import run
from poisonsim.pipeline.world import World

SCENARIO = os.path.join(os.path.dirname(__file__), "..", "scenarios", "mnist_neural_cleanse.toml")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="the defense's `steps` (default: its own)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--events", type=int, default=None, help="stream events the net learns (default: the scenario's)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shorter = [f"stream.n_events={args.events}"] if args.events else []
    scenario = Scenario.from_toml(
        SCENARIO,
        [
            f"seed={args.seed}",
            "evaluation.every=12000",
            f"model.device={args.device}",
            *shorter,
            "defense=[{kind='neural-cleanse'}]",
        ],
    )
    world = World.build(scenario)
    defense = world.defenses.pop()  # fitted (its trusted sample), then left out: the net learns, backdoored, unrepaired
    trained = run(scenario, world=world).summary
    steps = args.steps or defense.steps
    times, found = [], None
    for i in range(args.repeat):
        started = time.perf_counter()
        found = reverse_triggers(
            world.model.net,
            defense.clean_x_,
            defense.clean_y_,
            defense.n_classes_,
            np.random.default_rng(i),
            steps,
            defense.batch,
            defense.init_cost,
            defense.threshold,
        )
        times.append(time.perf_counter() - started)
    index = anomaly_indices(found["mask_l1"])
    figures = {
        "device": str(world.model.device_),
        "seconds_best": round(min(times), 2),
        "seconds": [round(t, 2) for t in times],
        "steps": int(found["steps"]),
        "steps_per_second": round(int(found["steps"]) / times[-1], 1),
        "classes": defense.n_classes_,
        "inputs_per_class_per_step": defense.batch,
        "attack_success_rate": trained["attack_success_rate"],
        "mask_l1": [round(float(v), 1) for v in found["mask_l1"]],
        "anomaly_index": [round(float(v), 2) for v in index],
        "suspect_classes": suspects(found["mask_l1"], index, defense.anomaly),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
