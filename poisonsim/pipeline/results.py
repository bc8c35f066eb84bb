"""What a finished run gives: its summary, timeseries, scores and analysis arrays, and how they are written."""

from __future__ import annotations

import csv
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poisonsim.config import ConfigError, Scenario
from poisonsim.evaluation.metrics import TIMESERIES_COLUMNS
from poisonsim.pipeline.world import World, seeds_of

TIMING_FIELDS = ("elapsed_seconds", "events_per_second")


@dataclass
class RunResult:
    """A run's ``summary``, its ``timeseries`` (one row per evaluation step) and per-input ``scores``."""

    summary: dict
    timeseries: list[dict]
    scores: dict[str, list[dict]] = field(default_factory=dict)  # judge -> scores of held-out inputs
    # arrays behind the analysis figures, saved as analysis/<name>.npz: "attributions" (evaluation.explain),
    # "trigger" (the true trigger, evaluator side) and each defense kind with artifacts()
    analysis: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def to_frame(self):
        """The timeseries as a pandas DataFrame, one row per evaluation step."""
        import pandas as pd

        return pd.DataFrame(self.timeseries)


def analyse(world: World, result: RunResult) -> None:
    """After the stream: explain the final model when ``evaluation.explain`` asks (the summary's ``analysis``
    section), and keep each defense's artifacts, with the true trigger they are drawn against, in
    ``result.analysis`` (see :mod:`poisonsim.evaluation.explain`)."""
    from poisonsim.evaluation import explain

    scenario = world.scenario
    if scenario.evaluation.explain:
        rng = np.random.default_rng(seeds_of(scenario).evaluator.spawn(1)[0])  # evaluator side: what is explained
        figures, arrays = explain.analyse(
            world.model, world.source, world.attack, scenario.evaluation.explain_inputs, rng
        )
        result.summary["analysis"] = figures
        if arrays is not None:
            result.analysis[explain.ATTRIBUTIONS] = arrays
    result.analysis.update(explain.defense_artifacts(world.defenses))
    trigger = explain.true_trigger(world.source, world.attack)
    if result.analysis and trigger is not None:
        result.analysis[explain.TRIGGER] = trigger


def write_results(result: RunResult, scenario: Scenario, out: str | Path) -> Path:
    """Write ``summary.json``, ``timeseries.csv``, the resolved ``scenario.toml``, per judge
    ``<kind>_scores.csv`` (e.g. ``strip_scores.csv``) and, when the run has any, the analysis arrays and
    figures: ``analysis/attributions.{npz,png}`` (``evaluation.explain``), ``analysis/<defense kind>.npz``
    (and ``.png`` when the defense draws them), ``analysis/trigger.npz``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
    with open(out / "timeseries.csv", "w", newline="") as handle:
        extra = [k for k in (result.timeseries[0] if result.timeseries else {}) if k not in TIMESERIES_COLUMNS]
        writer = csv.DictWriter(handle, fieldnames=[*TIMESERIES_COLUMNS, *extra], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in result.timeseries)
    (out / "scenario.toml").write_text(scenario.to_toml())
    for kind, rows in result.scores.items():
        with open(out / f"{kind}_scores.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["score", "is_triggered"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    if result.analysis:
        from poisonsim.evaluation.explain import ANALYSIS_DIR, write_analysis

        write_analysis(result.analysis, out / ANALYSIS_DIR)
    return out


def check_out(out: str | Path) -> Path:
    """The results directory, made and known writable before a run starts (a ConfigError naming ``--out``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, expected a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".poisonsim-write-check-"):
            pass  # a name of its own: services that share --out check it at once
    except OSError as exc:
        raise ConfigError(f"--out: cannot write to {out} ({exc.strerror})") from None
    return out
