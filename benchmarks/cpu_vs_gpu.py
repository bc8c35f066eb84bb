"""CPU and GPU side by side: the online neural learner, STRIP and Neural Cleanse, each on both devices.

One script for a machine with a CUDA GPU, so that its figures come in one
run: for each device it runs

- ``neural_throughput``: the online learner's samples per second (MLP and
  CNN, mini-batches of 32 and 256) and its ratio to a plain torch loop;
- ``strip_throughput``: STRIP's batched path, inputs judged per second
  (16 overlays, the digits CNN);
- ``neural_cleanse_time``: one Neural Cleanse analysis over the ten classes
  of the MNIST LeNet (the net is trained first, on the same device; only
  the analysis is timed);

then a CUDA run of ``scenarios/mnist_badnets.toml`` (``model.device =
"cuda"``: ``auto`` must find the GPU and the attack must work as on the
CPU), and every case of the regression corpus with a torch net on CUDA
(each ready scenario, cut short: every neural attack, defense and analysis
on the device, its figures beside the CPU corpus's; a case that fails is a
row with its error, so one run lists every kind that does not work there),
and prints a Markdown table with the device named. The CPU side runs on one
torch thread, as every CPU figure in the docs. Without a GPU it measures
the CPU column and says that the GPU one is not measured.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cpu_vs_gpu.py [--out gpu.json] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, ROOT)

from benchmarks import neural_cleanse_time, neural_throughput, strip_throughput  # noqa: E402

# --quick: sizes that only check the script runs (a test uses them); the figures need the full ones
SIZES = {
    "full": {"events": 20_000, "repeats": 3, "inputs": 2_000, "nc_events": None, "nc_repeat": 2},
    "quick": {"events": 640, "repeats": 1, "inputs": 40, "nc_events": 600, "nc_repeat": 1},
}


def device_name(device: str) -> str:
    """What a row's device is, in words: the GPU's own name, or the CPU and its torch threads."""
    if device == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def measure(device: str, sizes: dict) -> dict:
    """Every figure on ``device`` (``"cpu"`` or ``"cuda"``), keyed by what it measures."""
    figures = {}
    for row in neural_throughput.measure(device, sizes["events"], sizes["repeats"]):
        key = f"online {row['architecture'].upper()}, batch {row['batch_size']}: samples/s"
        figures[key] = round(row["online_samples_per_s"])
        figures[key.replace("samples/s", "ratio to a plain torch loop")] = round(row["ratio"], 2)
    strip = strip_throughput.measure(device, sizes["inputs"], repeat=sizes["repeats"])
    figures["STRIP batched, 16 overlays: inputs/s"] = strip["batched_inputs_per_second"]
    nc_args = ["--device", device, "--repeat", str(sizes["nc_repeat"])]
    if sizes["nc_events"]:
        nc_args += ["--events", str(sizes["nc_events"]), "--steps", "20"]
    with contextlib.redirect_stdout(io.StringIO()):  # its own JSON: the table has what is needed
        nc = neural_cleanse_time.main(nc_args)
    figures["Neural Cleanse, 10 classes (MNIST LeNet): seconds"] = nc["seconds_best"]
    return figures


def scenario_on(device: str, quick: bool) -> dict:
    """``scenarios/mnist_badnets.toml`` on ``device``: the figures a reader compares with the docs' CPU ones."""
    import poisonsim

    overrides = [f"model.device={device}", *(["stream.n_events=1200", "evaluation.every=1200"] if quick else [])]
    started = time.perf_counter()
    summary = poisonsim.run(os.path.join(ROOT, "scenarios", "mnist_badnets.toml"), overrides=overrides).summary
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "device": device_name(device),
        "attack_success_rate": summary["attack_success_rate"],
        "clean_accuracy": summary["clean_accuracy"],
    }


def every_case_on(device: str, names: list[str] | None = None) -> list[dict]:
    """The regression corpus's cases with a torch net (or ``names``) run on ``device``, beside the corpus.

    On the CPU (one torch thread) each row's two values agree within the corpus's tolerance for the case
    (``tests/regression/cases.py``): the corpus was recorded so, on some CPU's kernels.
    """
    regression = os.path.join(ROOT, "tests", "regression")
    if regression not in sys.path:
        sys.path.insert(0, regression)
    from cases import CASES, CORPUS

    from poisonsim.config import Scenario
    from poisonsim.pipeline.engine import run
    from poisonsim.registry import MODELS

    rows = []
    for name in names or sorted(CASES):
        path, overrides = CASES[name]
        scenario = Scenario.from_toml(Path(ROOT, "scenarios", path), overrides)
        if "torch-net" not in MODELS.get(scenario.model.kind).factory.offers:
            continue
        scenario = scenario.replace([f"model.device={device}"])
        recorded = json.loads((CORPUS / name / "summary.json").read_text())
        row = {"case": name}
        try:
            summary = run(scenario).summary
        except Exception as error:  # noqa: BLE001 -- every case that fails is listed, not only the first
            row["error"] = f"{type(error).__name__}: {error}"
            summary = {}
        for key in ("attack_success_rate", "clean_accuracy"):
            row[key] = {"cpu corpus": recorded.get(key), device: summary.get(key)}
        rows.append(row)
    return rows


def table(columns: dict[str, dict]) -> str:
    """A Markdown table: one row per figure, one column per device, and GPU / CPU where both were measured."""
    names = list(columns)
    lines = [
        "| figure | " + " | ".join(names) + (" | GPU / CPU |" if len(names) == 2 else " |"),
        "|---" * (len(names) + 1 + (len(names) == 2)) + "|",
    ]
    for key in columns[names[0]]:
        values = [columns[name].get(key) for name in names]
        cells = [f"{v:,}" if isinstance(v, (int, float)) else str(v) for v in values]
        if len(names) == 2 and "ratio to" in key:
            cells.append("")  # a ratio already: no speed-up to give
        elif len(names) == 2:  # a speed-up either way: fewer seconds, or more per second
            cpu, gpu = values
            speed_up = (cpu / gpu if key.endswith("seconds") else gpu / cpu) if cpu and gpu else float("nan")
            cells.append(f"{speed_up:.1f}x")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write every figure here as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    args = parser.parse_args(argv)
    sizes = SIZES["quick" if args.quick else "full"]
    torch.set_num_threads(1)
    columns = {device_name("cpu"): measure("cpu", sizes)}
    result = {"columns": columns, "gpu": None}
    if torch.cuda.is_available():
        columns[device_name("cuda")] = measure("cuda", sizes)
        result["gpu"] = scenario_on("cuda", args.quick)
        result["gpu_cases"] = every_case_on("cuda")
    print(table(columns))
    if result["gpu"]:
        print("\nscenarios/mnist_badnets.toml on CUDA:", json.dumps(result["gpu"]))
        failed = [row for row in result["gpu_cases"] if "error" in row]
        print(f"\n{len(result['gpu_cases'])} regression cases with a torch net on CUDA, {len(failed)} failed:")
        for row in result["gpu_cases"]:
            print(json.dumps(row))
    else:
        print("\nNo CUDA device: the GPU figures are not measured.")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
