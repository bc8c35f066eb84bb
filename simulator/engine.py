"""Run a scenario embedded: source -> attack -> transport -> model -> evaluator.

Every event is predicted before it is learned (test-then-train). Batches go
through the transport between the producer side (the merged stream) and the
consumer side (model and evaluator), exactly as they would over Kafka.

>>> from simulator.config import Scenario
>>> s = Scenario.from_dict({"seed": 1, "stream": {"n_events": 200},
...     "attack": {"kind": "centroid-shift", "rate": 1.0},
...     "model": {"window_size": 100}, "evaluation": {"every": 50}})
>>> result = run(s)
>>> [round(row["displacement_radii"], 4) for row in result.timeseries]
[0.5, 1.0, 1.5, 2.0]
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from simulator.attacks import build_attack, build_schedule
from simulator.config import Scenario
from simulator.data import make_source
from simulator.metrics import TIMESERIES_COLUMNS, Evaluator
from simulator.models import CentroidDetector, WhiteBoxResponder, build_model, warmup_size
from simulator.stream import MergedStream, attacker_knowledge
from simulator.transport import InMemoryTransport, Transport

TOPIC = "events"
MAX_BATCH = 16_384
TIMING_FIELDS = ("elapsed_seconds", "events_per_second")


@dataclass
class RunResult:
    summary: dict
    timeseries: list[dict]


def run(
    scenario: Scenario,
    on_progress: Callable[[int], None] | None = None,
    transport: Transport | None = None,
) -> RunResult:
    """Run ``scenario`` to the end and return its summary and timeseries."""
    rng_source, rng_warmup, rng_model, rng_attacker, stream_seed = np.random.SeedSequence(scenario.seed).spawn(5)
    source = make_source(scenario.stream, np.random.default_rng(rng_source))
    model = build_model(scenario.model, source.n_classes, seed=_seed_int(rng_model))
    warm_x, warm_y = source.sample(np.random.default_rng(rng_warmup), warmup_size(scenario.model, source.n_classes))
    model.learn_many(warm_x, warm_y)

    knowledge = attacker_knowledge(source)
    if isinstance(model, CentroidDetector):
        knowledge = attacker_knowledge(source, model.center, model.radius_)
    attack = build_attack(scenario.attack).fit(knowledge, np.random.default_rng(rng_attacker))
    stream = MergedStream(source, attack, build_schedule(scenario.attack), stream_seed)
    evaluator = Evaluator(model, source, attack)
    transport = transport or InMemoryTransport()

    started = time.perf_counter()
    for size, evaluate in _batches(scenario.stream.n_events, scenario.evaluation.every):
        transport.send(TOPIC, *stream.next_batch(size))
        batch, truth = transport.receive(TOPIC)
        responder = WhiteBoxResponder(truth.is_adaptive, attack.target_x_[0]) if attack.adaptive else None
        predictions, slots = model.process_many(batch.x, batch.y, responder)
        evaluator.observe(batch, truth, predictions, slots)
        if evaluate:
            evaluator.evaluate()
        if on_progress:
            on_progress(evaluator.events)
    elapsed = time.perf_counter() - started

    summary = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "model": scenario.model.kind,
        "attack": scenario.attack.kind,
        **evaluator.summary(),
        "elapsed_seconds": elapsed,
        "events_per_second": evaluator.events / elapsed if elapsed > 0 else None,
    }
    return RunResult(summary=summary, timeseries=evaluator.rows)


def write_results(result: RunResult, scenario: Scenario, out: str | Path) -> Path:
    """Write ``summary.json``, ``timeseries.csv`` and the resolved ``scenario.toml``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
    with open(out / "timeseries.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TIMESERIES_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in result.timeseries)
    (out / "scenario.toml").write_text(scenario.to_toml())
    return out


def _batches(n_events: int, every: int):
    """Batch sizes that end on every evaluation step, and whether one ends there."""
    done = 0
    while done < n_events:
        next_eval = min((done // every + 1) * every, n_events)
        size = min(next_eval - done, MAX_BATCH)
        done += size
        yield size, done == next_eval


def _seed_int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])
