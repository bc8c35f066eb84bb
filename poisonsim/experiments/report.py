"""Figures and a short markdown summary of a sweep's results.

Each figure is drawn when the results carry what it needs, and skipped
(with the reason in ``report.md``) otherwise:

- ``displacement.png``: displacement in radii against attacker events, per
  window policy, under the Kloft & Laskov curves i/n, ln(1 + i/n) (and the
  exact harmonic sum) and, for a traffic share nu, nu / (1 - nu);
- ``rho.png``: attack success and clean accuracy against rho, one line per
  defense (or per value of another swept key), mean and standard error over seeds;
- ``strip.png``: STRIP entropy histograms (clean vs triggered) and detector ROC
  curves, from per-run ``strip_scores.csv`` files (columns score,is_triggered);
- ``timeline.png``: clean accuracy and attack success over time for one run;
- ``attributions.png`` and ``<defense kind>.png``: a run's analysis figures,
  drawn again from the arrays its ``analysis/*.npz`` keep (Integrated
  Gradients and saliency maps, ``evaluation.explain``; a defense's artifacts,
  see :mod:`poisonsim.evaluation.explain`), for the timeline's run, else the
  first run that has them.

``poisonsim report`` also takes the directory of one run (``poisonsim run
--out DIR``): its timeline and analysis figures go to ``DIR/figures/``.

The plotting functions take DataFrames and return matplotlib Figures (no
pyplot, no global state), so tests can inspect their axes and series.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from poisonsim.combinations import offers
from poisonsim.config import ConfigError, Scenario
from poisonsim.evaluation.explain import ANALYSIS_DIR, analysis_figures, read_analysis
from poisonsim.experiments.grid import flatten_keys
from poisonsim.experiments.sweep import MANIFEST, POINTS_DIR, collect, read_manifest

FIGURES_DIR = "figures"
STRIP_SCORES = "strip_scores.csv"
SETTINGS = (
    "model.kind",
    "model.window_policy",
    "model.window_size",
    "model.learn",
    "attack.kind",
    "attack.rate",
    "attack.start",
)
SUMMARY_FIGURES = (
    "attack_success_rate_mean",
    "accuracy_drop_mean",
    "clean_accuracy_mean",  # over the stream
    "clean_accuracy",
    "attack_success_rate",
    "accuracy_drop",
    "displacement_radii",  # at the end
    "window_contamination",
    "analysis.trigger_attribution_share",
    "analysis.trigger_attribution_share_clean",
)
OVER_THE_STREAM = (
    "`_mean`: over the evaluations after the attack's first poison event; `accuracy_drop`: held-out "
    "accuracy lost against the clean twin (the same model learning the stream without the poison); "
    "the others at the end of the stream"
)


@dataclass
class Report:
    """What :func:`write_report` wrote, and why any figure was left out."""

    markdown: Path
    analysed: str | None = None  # the run whose analysis figures were drawn
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    drawn: dict[str, Figure] = field(default_factory=dict, repr=False)


def roc_curve(scores: np.ndarray, is_positive: np.ndarray, lower_is_positive: bool = True) -> tuple:
    """False and true positive rates over every threshold, and the area under the curve.

    STRIP flags an input when its entropy is *low*, hence ``lower_is_positive``.

    >>> fpr, tpr, auc = roc_curve(np.array([0.1, 0.2, 0.8, 0.9]), np.array([True, True, False, False]))
    >>> fpr.tolist(), tpr.tolist(), auc
    ([0.0, 0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0, 1.0], 1.0)
    """
    from sklearn import metrics

    scores = np.asarray(scores, dtype=float)
    fpr, tpr, _ = metrics.roc_curve(
        np.asarray(is_positive, dtype=bool), -scores if lower_is_positive else scores, drop_intermediate=False
    )
    return fpr, tpr, float(metrics.auc(fpr, tpr))


def displacement_figure(timeseries: pd.DataFrame, settings: pd.DataFrame, others: list[str] = ()) -> Figure | None:
    """Displacement (radii) against attacker events, with the Kloft & Laskov curves; a line per window
    policy, rate, window size and value of each of the ``others`` (further swept keys, columns of
    ``settings``): only seeds are averaged."""
    if timeseries.empty or "displacement_radii" not in timeseries:
        return None
    swept = [c for c in settings if c != "run" and c in timeseries]  # the scenario's own values win
    data = timeseries.drop(columns=swept).merge(settings, on="run")
    data = data[(data["attack.kind"] == "centroid-shift") & (data["attack.rate"] > 0)]
    data = data.dropna(subset=["displacement_radii"])
    if data.empty:
        return None
    alone, shared = data[data["attack.rate"] >= 1.0], data[data["attack.rate"] < 1.0]
    panels = [
        (part, title)
        for part, title in ((alone, "attacker alone (rho = 1)"), (shared, "attacker with a traffic share nu"))
        if not part.empty
    ]
    fig = Figure(figsize=(6.4 * len(panels), 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (part, title) in zip(axes, panels):
        sizes = sorted(part["model.window_size"].unique())
        keys = ["model.window_policy", "attack.rate", "model.window_size", *others]
        varied = [k for k in keys if part[k].nunique() > 1] or keys[:1]
        for (values, group), color in zip(part.groupby(keys, sort=True), _colors()):
            label = ", ".join(f"{_short(k)} = {v}" for k, v in zip(keys, values) if k in varied)
            # seeds agree on the stream position of each evaluation, not on its attacker count
            _mean_band(ax, group, "events", "poison_events", "displacement_radii", label, color, lw=2, alpha=0.85)
            policy, nu = values[0], values[1]
            if part is shared and policy == "average-out":
                ax.axhline(nu / (1 - nu), color=color, ls="--", lw=1.2, label=f"nu/(1-nu) = {nu / (1 - nu):.3g}")
        if part is alone:
            i = np.arange(0, part["poison_events"].max() + 1)
            for n in sizes:
                suffix = f" (n = {n})" if len(sizes) > 1 else ""
                ax.plot(i, i / n, "k--", lw=1, label=f"i/n{suffix}")
                ax.plot(i, np.log1p(i / n), "k:", lw=1.5, label=f"ln(1 + i/n){suffix}")
                ax.plot(
                    i,
                    np.r_[0, np.cumsum(1.0 / (n + i[1:]))],
                    color="0.5",
                    ls="-.",
                    lw=1,
                    label=f"sum 1/(n + k){suffix}",
                )
                if "fifo" in set(part["model.window_policy"]):
                    ax.plot(
                        i,
                        fifo_expectation(n, int(i[-1])),
                        color="0.3",
                        ls=(0, (1, 3)),
                        lw=1.5,
                        label=f"fifo expectation ((1 + 1/n)^i - 1 up to i = n){suffix}",
                    )
        ax.set(title=title, xlabel="attacker events i", ylabel="displacement D (radii)")
        ax.legend(
            fontsize="small", ncol=2 if part is shared else 1, title="mean over seeds, ± 1 s.d.", title_fontsize="small"
        )
        ax.grid(alpha=0.3)
    fig.suptitle("Centroid displacement under the greedy attack (Kloft & Laskov 2012)")
    return fig


def fifo_expectation(n: int, steps: int) -> np.ndarray:
    """Expected displacement (radii) of a fifo window of ``n`` under the greedy attacker alone, i = 0..steps.

    Each attacker point moves the centroid by (D + 1 - removed) / n, where the point fifo removes is a clean
    warm-up point (0) for i <= n and the attacker's own point of n steps before after that:
    (1 + 1/n)^i - 1 for i <= n.

    >>> e = fifo_expectation(50, 100)
    >>> round(float(e[50]), 4), round((1 + 1 / 50) ** 50 - 1, 4), bool((e[1:] >= np.arange(1, 101) / 50).all())
    (1.6916, 1.6916, True)
    """
    expected = [0.0]
    for step in range(1, steps + 1):
        removed = 0.0 if step <= n else expected[step - n - 1] + 1.0
        expected.append(expected[-1] + (expected[-1] + 1.0 - removed) / n)
    return np.array(expected)


def rho_figure(table: pd.DataFrame, group_by: list[str] | None = None) -> Figure | None:
    """Attack success and clean accuracy against rho, a line per group: mean over seeds +- 1 s.e.m."""
    if "attack.rate" not in table or table["attack.rate"].nunique() < 2:
        return None
    ok = table[table["error"].isna()]
    metrics = [
        (m, t)
        for m, t in (("attack_success_rate", "attack success"), ("clean_accuracy", "clean accuracy"))
        if m in ok and ok[m].notna().any()
    ]
    if not metrics:
        return None
    group_by = list(group_by or [])
    fig = Figure(figsize=(6.0 * len(metrics), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    groups = ok.groupby(group_by, sort=True) if group_by else [((), ok)]
    for ax, (metric, title) in zip(axes, metrics):
        for k, ((values, group), color) in enumerate(zip(groups, _colors())):
            values = values if isinstance(values, tuple) else (values,)
            label = ", ".join(f"{_short(k)} = {v}" for k, v in zip(group_by, values)) or "all runs"
            style = {"marker": "osD^v<>p*h"[k % 10], "ms": 7 - k % 3, "ls": ("-", "--", "-.", ":")[k % 4]}
            _mean_band(ax, group, "attack.rate", "attack.rate", metric, label, color, "sem", (0, 1), **style)
        ax.set(title=title, xlabel="rho (attack.rate)", ylabel=title)
        if metric == "attack_success_rate":  # 0 to 1; clean accuracy spans what it spans, or its changes vanish
            ax.set_ylim(-0.03, 1.03)
        else:
            ax.margins(y=0.15)
        ax.legend(fontsize="small", title="mean over seeds, ± 1 s.e.m.", title_fontsize="small")
        ax.grid(alpha=0.3)
    return fig


def strip_figure(scores: pd.DataFrame) -> Figure | None:
    """Per group, STRIP entropy histograms (clean vs triggered); then one ROC curve per group."""
    if scores.empty:
        return None
    if "group" not in scores:
        scores = scores.assign(group="all runs")
    groups = list(scores.groupby("group", sort=True))
    fig = Figure(figsize=(4.6 * (len(groups) + 1), 4.2), layout="constrained")
    *hists, roc = fig.subplots(1, len(groups) + 1)
    bins = np.histogram_bin_edges(scores["score"], bins=40)
    for hist, (name, group) in zip(hists, groups):
        triggered = group["is_triggered"].astype(bool)
        hist.hist(group.loc[~triggered, "score"], bins=bins, alpha=0.6, label="clean", color="tab:blue")
        hist.hist(group.loc[triggered, "score"], bins=bins, alpha=0.6, label="triggered", color="tab:red")
        hist.set(title=f"STRIP entropy: {name}", xlabel="entropy of superimposed predictions", ylabel="inputs")
        hist.legend()
    for (name, group), color in zip(groups, _colors()):
        fpr, tpr, auc = roc_curve(group["score"], group["is_triggered"].astype(bool))
        roc.plot(fpr, tpr, color=color, lw=2, label=f"{name} (AUC {auc:.3f})")
    roc.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
    roc.set(
        title="detector ROC (flag low entropy)",
        xlabel="false positive rate",
        ylabel="true positive rate",
        xlim=(-0.01, 1.01),
        ylim=(-0.01, 1.02),
    )
    roc.legend(fontsize="small", loc="lower right")
    return fig


def timeline_figure(series: pd.DataFrame, title: str, attack_start: int | None = None) -> Figure:
    """Clean accuracy (the model's and its clean twin's), attack success and window contamination over the stream
    of one run."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for column, style in (
        ("clean_accuracy", "-"),
        ("attack_success_rate", "-"),
        ("twin_clean_accuracy", "-."),
        ("window_contamination", "--"),
        ("observed_poisoning_rate", ":"),
    ):
        if column in series and series[column].notna().any():
            lone = series[column].notna().sum() == 1  # one value: a line alone would draw nothing
            ax.plot(
                series["events"], series[column], style, marker="o" if lone else None, label=column.replace("_", " ")
            )
    if attack_start:
        ax.axvline(attack_start, color="0.4", lw=1, ls="-.", label="attack starts")
    ax.set(title=title, xlabel="events", ylabel="ratio", ylim=(-0.03, 1.03))
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def write_report(out: str | Path, run: str | None = None) -> Report:
    """Write ``figures/*.png`` and ``report.md`` into a sweep's results directory (or one run's)."""
    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"{out}: no such results directory")
    if not (out / MANIFEST).exists() and (out / "summary.json").exists():
        return write_run_report(out)
    if not (out / MANIFEST).exists():
        raise ConfigError(
            f"{out}: not a results directory (no {MANIFEST} from poisonsim sweep --out, "
            "no summary.json from poisonsim run --out)"
        )
    manifest = read_manifest(out)
    table, timeseries = collect(out)  # from the runs' directories: right even mid-sweep
    axes = manifest["axes"]
    others = [a for a in axes if a not in SETTINGS]  # swept keys the figures do not place on an axis
    settings = _settings(out, table).merge(table[["run", *others]], on="run")
    report = Report(out / "report.md")
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    # one line per defense (per value of the other swept keys without one), never averaged over an axis
    group_by = sorted((a for a in axes if a != "attack.rate"), key=lambda a: a != "defense")
    # STRIP's scores per swept rate too: a half-learned backdoor at a low rate looks nothing like a learned one
    strip = _strip_scores(out, table, [*group_by, *(["attack.rate"] if "attack.rate" in axes else [])])
    chosen = run or _pick_run(settings)
    drawn = {
        "displacement": (
            lambda: displacement_figure(timeseries, settings, others),
            "no centroid-shift run with displacement",
        ),
        "rho": (lambda: rho_figure(table, group_by), "attack.rate is not swept over two values or more"),
        "strip": (lambda: strip_figure(strip), f"no run wrote {STRIP_SCORES} (STRIP detector scores)"),
        "timeline": (lambda: _timeline(timeseries, settings, table, axes, chosen), "no finished run"),
    }
    _draw(report, out, drawn)
    analysed = _analysed_run(out, table, chosen)
    if analysed is None:
        report.skipped["attributions"] = f"no run kept {ANALYSIS_DIR}/*.npz (evaluation.explain, defense artifacts)"
    else:
        report.analysed = analysed
        _draw_analysis(report, out, out / POINTS_DIR / analysed)
    report.markdown.write_text(_markdown(out, manifest, table, report, chosen))
    return report


def write_run_report(out: str | Path) -> Report:
    """Write ``figures/*.png`` (timeline, analysis figures) and ``report.md`` into one run's results directory
    (``poisonsim run --out``)."""
    out = Path(out)
    scenario = Scenario.from_toml(out / "scenario.toml")  # imports its plugins: their defenses draw their figures
    summary = json.loads((out / "summary.json").read_text())
    series = pd.read_csv(out / "timeseries.csv")
    report = Report(out / "report.md")
    (out / FIGURES_DIR).mkdir(exist_ok=True)
    title = f"{scenario.name}: {scenario.model.kind} under {scenario.attack.kind} (seed {scenario.seed})"
    start = None if "no-poison" in offers(scenario.attack) else scenario.attack.start
    scores = out / STRIP_SCORES
    _draw(
        report,
        out,
        {
            "timeline": (lambda: timeline_figure(series, title, start), "no evaluation step"),
            "strip": (
                lambda: strip_figure(pd.read_csv(scores).assign(group="this run")) if scores.exists() else None,
                f"the run wrote no {STRIP_SCORES} (STRIP detector scores)",
            ),
        },
    )
    if not _draw_analysis(report, out, out):
        report.skipped["attributions"] = f"the run kept no {ANALYSIS_DIR}/*.npz (evaluation.explain, defense artifacts)"
    lines = [
        f"# Run report: {out.name}",
        "",
        f"{title}, {summary.get('events_total', 0):,} events.",
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{name}]({path.relative_to(out).as_posix()})\n" for name, path in report.figures.items()]
    lines += [f"- {name}: skipped, {reason}" for name, reason in report.skipped.items()]
    flat = flatten_keys(summary, drop="seed")
    shown = [key for key in SUMMARY_FIGURES if flat.get(key) is not None]
    shown += [key for key in flat if key.startswith("analysis.") and key not in shown]
    if shown:
        lines += [
            "",
            "## Figures over the stream, then at the end",
            "",
            OVER_THE_STREAM + ".",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| `{key}` | {_value(flat[key])} |" for key in shown]
    report.markdown.write_text("\n".join(lines) + "\n")
    return report


def _draw(report: Report, out: Path, drawn: dict) -> None:
    for name, (draw, reason) in drawn.items():
        fig = draw()
        if fig is None:
            report.skipped[name] = reason
            continue
        path = out / FIGURES_DIR / f"{name}.png"
        fig.savefig(path, dpi=110)
        report.figures[name], report.drawn[name] = path, fig


def _draw_analysis(report: Report, out: Path, run_dir: Path) -> bool:
    """The analysis figures of the run in ``run_dir``, drawn again from its saved arrays; False if it kept none."""
    analysis = read_analysis(run_dir / ANALYSIS_DIR)
    if not analysis:
        return False
    for name, fig in analysis_figures(analysis).items():
        path = out / FIGURES_DIR / f"{name}.png"
        fig.savefig(path, dpi=110)
        report.figures[name], report.drawn[name] = path, fig
    return True


def _analysed_run(out: Path, table: pd.DataFrame, chosen: str | None) -> str | None:
    """The run whose analysis figures the report draws: the timeline's, else the first one that kept arrays."""
    finished = list(table.loc[table["error"].isna(), "run"]) if not table.empty else []
    for run in ([chosen] if chosen else []) + finished:
        if any((out / POINTS_DIR / run / ANALYSIS_DIR).glob("*.npz")):
            return run
    return None


def _settings(out: Path, table: pd.DataFrame) -> pd.DataFrame:
    """The scenario keys the figures need, for every finished run (from its scenario.toml)."""
    rows = []
    for run in table.loc[table["error"].isna(), "run"]:
        flat = flatten_keys(Scenario.from_toml(out / POINTS_DIR / run / "scenario.toml").to_dict())
        rows.append({"run": run, **{key: flat.get(key) for key in SETTINGS}})
    return pd.DataFrame(rows, columns=["run", *SETTINGS])


def _strip_scores(out: Path, table: pd.DataFrame, group_by: list[str]) -> pd.DataFrame:
    frames = []
    for _, row in table.iterrows():
        path = out / POINTS_DIR / row["run"] / STRIP_SCORES
        if path.exists():
            name = ", ".join(f"{_short(k)} = {row[k]}" for k in group_by) or "all runs"
            frames.append(pd.read_csv(path).assign(group=name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _pick_run(settings: pd.DataFrame) -> str | None:
    """Default run for the timeline: the first one with the strongest attacker."""
    if settings.empty:
        return None
    return settings.loc[settings["attack.rate"] == settings["attack.rate"].max(), "run"].iloc[0]


def _timeline(timeseries: pd.DataFrame, settings: pd.DataFrame, table: pd.DataFrame, axes: list, run: str | None):
    if run is None or timeseries.empty:
        return None
    series = timeseries[timeseries["run"] == run]
    if series.empty:
        raise ConfigError(f"--run {run}: no finished run of that id in this sweep")
    setting = settings.set_index("run").loc[run]
    row = table.set_index("run").loc[run]
    shown = ", ".join(f"{_short(k)} = {row[k]}" for k in axes)
    title = f"{run}: {setting['model.kind']} under {setting['attack.kind']}" + (f" ({shown})" if shown else "")
    start = setting["attack.start"] if setting["attack.rate"] > 0 else None
    return timeline_figure(series, title, start)


def _markdown(out: Path, manifest: dict, table: pd.DataFrame, report: Report, run: str | None) -> str:
    runs, axes = manifest["runs"], manifest["axes"]
    failed = table[table["error"].notna()]
    points, seeds = len({r["point"] for r in runs}), len({r["seed"] for r in runs})
    lines = [
        f"# Sweep report: {out.name}",
        "",
        f"{len(runs)} runs ({points} points x {seeds} seeds): {len(table) - len(failed)} finished, "
        f"{len(failed)} failed, {len(runs) - len(table)} not run yet.",
        "",
    ]
    for axis in axes:
        values = list(dict.fromkeys(r["values"][axis] for r in runs))
        lines.append(f"- `{axis}`: {', '.join(str(v) for v in values)}")
    lines += ["", "## Figures", ""]
    for name, path in report.figures.items():
        shown = run if name == "timeline" else report.analysed if name not in ("displacement", "rho", "strip") else None
        note = f" (run {shown})" if shown else ""
        lines += [f"![{name}]({path.relative_to(out).as_posix()}){note}", ""]
    lines += [f"- {name}: skipped, {reason}" for name, reason in report.skipped.items()]
    ok = table[table["error"].isna()]
    figures = [f for f in SUMMARY_FIGURES if f in ok and ok[f].notna().any()]
    if not ok.empty and figures:
        lines += [
            "",
            f"## Figures over the stream, then at the end (mean ± s.d. over {seeds} seeds)",
            "",
            OVER_THE_STREAM + ".",
            "",
        ]
        lines += ["| " + " | ".join([*axes, *figures]) + " |", "|" + "---|" * (len(axes) + len(figures))]
        for values, group in ok.groupby("point", sort=True):
            cells = [str(group.iloc[0][a]) for a in axes]
            cells += [_mean_sd(group[f]) for f in figures]
            lines.append("| " + " | ".join(cells) + " |")
    if not failed.empty:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r.run}`: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def _mean_band(
    ax: Any,
    data: pd.DataFrame,
    by: str,
    x: str,
    y: str,
    label: str,
    color: str,
    spread: str = "sd",
    clip: tuple[float, float] | None = None,
    **style: Any,
) -> None:
    """Mean over seeds at each value of ``by`` (x: the mean of ``x``), with a band of +- 1 s.d. or s.e.m."""
    stats = data.groupby(by, sort=True).agg(x=(x, "mean"), mean=(y, "mean"), sd=(y, "std"), n=(y, "count"))
    ax.plot(stats["x"], stats["mean"], color=color, label=label, **style)
    half = stats["sd"].fillna(0) / (np.sqrt(stats["n"]) if spread == "sem" else 1)
    if (half > 0).any():
        lo, hi = stats["mean"] - half, stats["mean"] + half
        if clip:
            lo, hi = lo.clip(*clip), hi.clip(*clip)
        ax.fill_between(stats["x"], lo, hi, color=color, alpha=0.18, lw=0)


def _value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return ""
    sd = values.std() if len(values) > 1 else 0.0
    return f"{values.mean():.3g} ± {sd:.2g}" if not math.isnan(sd) else f"{values.mean():.3g}"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _colors() -> list[str]:
    return [f"C{i % 10}" for i in range(1000)]
