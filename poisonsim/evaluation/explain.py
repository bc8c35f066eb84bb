"""Explanations of the final model: where it looks when the trigger fires (captum).

At the end of a run with ``[evaluation] explain = true``, the evaluator
explains the final (live) model on ``explain_inputs`` held-out inputs of the
classes other than the attack's target, drawn from an evaluator-side seed,
once as they are and once with the trigger stamped (the attack's own success
inputs, ``attack.target_x_``): the same images, so clean and triggered
compare like for like. Two attribution methods, each for the class the model
predicts:

- Integrated Gradients (Sundararajan et al. 2017), from a black baseline
  (every pixel 0) in ``IG_STEPS`` = 16 Gauss-Legendre steps: the attributions
  add up to the logit's change from the baseline to within about 1 % on the
  ready nets (0.5-0.7 % on MNIST LeNet, 0.3 % on the 8x8 digits CNN); on
  MNIST, 32 steps change the shares below by less than 0.001 and cost twice
  the time (200 + 200 inputs: 1.8 s on one core);
- saliency (Simonyan et al. 2014): |d logit / d pixel|.

It needs a torch net (``model.kind`` = "mlp", "cnn" or "lenet") on square
images (``stream.source`` = "digits" or "mnist") under an attack with a
trigger (badnets, blended, the supply-chain attacks); any other run is
skipped, with the reason in the summary (``analysis.skipped``). The summary's
``analysis`` section (``analysis.<figure>`` in a sweep's table):

- ``trigger_attribution_share``: the share of absolute IG mass inside the
  trigger's true region (:meth:`Trigger.region`), mean over the triggered
  inputs; ``trigger_attribution_share_clean``: the same on the same images
  without the trigger; ``trigger_attribution_share_ratio``: triggered / clean,
  ``None`` when the clean share is 0. It is 0 whenever the region is black on
  every clean input (MNIST's corners): IG gives a pixel equal to its baseline
  no attribution at all (completeness), so a patch on black pixels has no
  finite ratio; the saliency ratio and the share against
  ``trigger_region_pixel_share`` are the finite comparisons there;
- ``trigger_saliency_share``, ``trigger_saliency_share_clean``,
  ``trigger_saliency_share_ratio``: the same with saliency;
- ``trigger_region_pixel_share``: region pixels / all pixels, what a uniform
  map would give;
- ``explained_inputs``, ``integrated_gradients_steps``;
  ``triggered_predicted_target``: the share of the triggered inputs
  explained that the model calls the target class.

``explain`` is off by default: it costs 1.8 s after a MNIST run (0.3 s on
the 8x8 digits) on one core, and the regression corpus pins the summaries of
the ready digits scenarios; ``scenarios/mnist_badnets.toml`` turns it on.

A trigger that writes every pixel (a blend) has no region to measure: the
shares are ``None``; the maps are still drawn. ``DIR/analysis/attributions.npz``
keeps what the figure needs (a few example inputs with their maps, the mean
map per predicted class, each input's shares), so :func:`attributions_figure`
draws it again (``poisonsim report DIR``).

Defense artifacts: a defense with a method ``artifacts() -> dict[str,
np.ndarray]`` has them saved as ``DIR/analysis/<kind>.npz``; when its class
has a ``figure`` (a staticmethod ``figure(artifacts, true_region,
image_side) -> Figure | None``), ``DIR/analysis/<kind>.png`` is drawn
with it, ``true_region`` and ``image_side`` coming from the evaluator side
(``DIR/analysis/trigger.npz``; ``None`` when the attack has no trigger).

>>> import numpy as np
>>> maps = np.array([[1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
>>> region_shares(maps, np.array([2, 3])).tolist()  # an all-zero map has no mass to share
[0.5, 0.0]
>>> means, counts = class_means(np.eye(3), np.array([0, 0, 2]), n_classes=3)
>>> means.tolist(), counts.tolist()
([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [2, 0, 1])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from poisonsim.registry import MODELS, SOURCES, either

IG_STEPS = 16  # Gauss-Legendre steps of Integrated Gradients (see the module docstring)
EXAMPLES = 4  # example inputs drawn with their maps
ANALYSIS_DIR = "analysis"
ATTRIBUTIONS = "attributions"
TRIGGER = "trigger"  # the true trigger: region, image side, target class (for defense figures)
METHODS = (("ig", "Integrated Gradients"), ("saliency", "saliency"))


def why_not(model, source, attack) -> str | None:
    """Why the run cannot be explained (``None``: it can)."""
    side = source.image_side
    if "torch-net" not in model.offers:
        return f"the model is not a torch net (model.kind = {either(MODELS.offering('torch-net'))})"
    if side is None or side * side != source.n_features:
        return f"the inputs are not square images (stream.source = {either(SOURCES.offering('images'))})"
    if attack.trigger_ is None or attack.target_x_ is None or attack.target_class_ is None:
        return 'the attack has no trigger (a backdoor attack: attack.kind = "badnets", "blended", ...)'
    return None


def true_trigger(source, attack) -> dict[str, np.ndarray] | None:
    """The trigger's true region, the image side and the target class (evaluator side), or ``None``."""
    trigger = attack.trigger_
    if trigger is None or attack.target_class_ is None:
        return None
    n_features = int(source.n_features)
    return {
        "region": np.asarray(trigger.region(n_features), dtype=np.int64),
        "image_side": np.int64(source.image_side or 0),  # 0: not square images
        "n_features": np.int64(n_features),
        "target_class": np.int64(attack.target_class_),
    }


def analyse(
    model, source, attack, n_inputs: int, rng: np.random.Generator, steps: int = IG_STEPS
) -> tuple[dict, dict[str, np.ndarray] | None]:
    """Explain the final model: (the summary's ``analysis`` section, the arrays of ``attributions.npz``).

    The arrays are ``None`` when the run cannot be explained; the section then says why (``skipped``).
    """
    reason = why_not(model, source, attack)
    if reason:
        return {"skipped": reason}, None
    target = int(attack.target_class_)
    others = source.test_y != target
    clean_pool, labels_pool = source.test_x[others], source.test_y[others]
    pick = np.sort(rng.choice(len(clean_pool), size=min(n_inputs, len(clean_pool)), replace=False))
    clean, labels = np.asarray(clean_pool[pick], dtype=np.float32), labels_pool[pick]
    if len(attack.target_x_) == len(clean_pool):  # the attacker's success inputs: the same images, stamped
        triggered = np.asarray(attack.target_x_[pick], dtype=np.float32)
    else:
        triggered = np.asarray(attack.trigger_(clean), dtype=np.float32)
    region = attack.trigger_.region(source.n_features)
    net = model.net
    was_training = net.training
    net.eval()
    try:
        maps = {}
        for name, x in (("clean", clean), ("triggered", triggered)):
            maps[name] = attribute(net, model.to_tensor(x), steps)
    finally:
        net.train(was_training)
    arrays = _arrays(clean, triggered, labels, maps, region, source, target, steps)
    everywhere = len(region) >= source.n_features
    figures = {
        "explained_inputs": len(clean),
        "integrated_gradients_steps": steps,
        "trigger_region_pixel_share": len(region) / source.n_features,
        "triggered_predicted_target": float((arrays["triggered_pred"] == target).mean()),
    }
    for method, key in (("ig", "attribution"), ("saliency", "saliency")):
        on, off = (
            (None, None)
            if everywhere
            else (float(arrays[f"{side}_{method}_share"].mean()) for side in ("triggered", "clean"))
        )
        figures[f"trigger_{key}_share"] = on
        figures[f"trigger_{key}_share_clean"] = off
        figures[f"trigger_{key}_share_ratio"] = on / off if on is not None and off else None
    return figures, arrays


def attribute(net, x, steps: int = IG_STEPS) -> dict[str, np.ndarray]:
    """Predicted class, |Integrated Gradients| (black baseline) and saliency of each input of ``x`` (a tensor)."""
    import torch
    from captum.attr import IntegratedGradients, Saliency

    with torch.no_grad():
        predicted = net(x).argmax(1)
    ig = IntegratedGradients(net).attribute(
        x,
        baselines=torch.zeros_like(x),
        target=predicted,
        n_steps=steps,
        internal_batch_size=max(1, min(len(x) * steps, 8192)),
    )
    saliency = Saliency(net).attribute(x.clone().requires_grad_(True), target=predicted, abs=True)
    return {
        "pred": predicted.cpu().numpy(),
        "ig": ig.detach().abs().cpu().numpy(),
        "saliency": saliency.detach().cpu().numpy(),
    }


def region_shares(maps: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Per row of non-negative ``maps`` (inputs x pixels), the share of its mass inside ``region``."""
    total = maps.sum(axis=1)
    inside = maps[:, region].sum(axis=1)
    return np.divide(inside, total, out=np.zeros_like(total, dtype=float), where=total > 0)


def class_means(maps: np.ndarray, predicted: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean map per predicted class (zeros where no input has that class) and the count behind each."""
    counts = np.bincount(predicted, minlength=n_classes)[:n_classes]
    sums = np.zeros((n_classes, maps.shape[1]))
    np.add.at(sums, predicted, maps)
    return sums / np.maximum(counts, 1)[:, None], counts


def _arrays(clean, triggered, labels, maps, region, source, target, steps) -> dict[str, np.ndarray]:
    n_classes = int(source.n_classes)
    arrays = {
        "image_side": np.int64(source.image_side),
        "n_classes": np.int64(n_classes),
        "target_class": np.int64(target),
        "region": np.asarray(region, dtype=np.int64),
        "ig_steps": np.int64(steps),
        "labels": labels.astype(np.int64),
    }
    examples = _examples(labels, EXAMPLES)
    arrays["example_rows"], arrays["example_labels"] = examples, labels[examples].astype(np.int64)
    for side, x in (("clean", clean), ("triggered", triggered)):
        arrays[f"{side}_pred"] = maps[side]["pred"].astype(np.int64)
        arrays[f"example_{side}_x"] = x[examples].astype(np.float32)
        for method, _ in METHODS:
            values = maps[side][method]
            arrays[f"{side}_{method}_share"] = region_shares(values, region)
            means, counts = class_means(values, maps[side]["pred"], n_classes)
            arrays[f"{side}_{method}_class_mean"] = means.astype(np.float32)
            arrays[f"{side}_class_count"] = counts.astype(np.int64)
            arrays[f"example_{side}_{method}"] = values[examples].astype(np.float32)
    return arrays


def _examples(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to ``k`` inputs, of distinct true classes where there are enough."""
    first = np.unique(labels, return_index=True)[1]
    chosen = list(np.sort(first)[:k])
    chosen += [i for i in range(len(labels)) if i not in chosen][: k - len(chosen)]
    return np.array(sorted(chosen), dtype=np.int64)


# -- figures -----------------------------------------------------------------------------------------------


def attributions_figure(arrays: dict[str, np.ndarray]):
    """Example inputs (clean and triggered side by side) with their |IG| and saliency maps, then the mean |IG|
    map per predicted class of the clean and the triggered inputs; the true trigger region outlined."""
    from matplotlib.figure import Figure

    side, n_classes = int(arrays["image_side"]), int(arrays["n_classes"])
    target, region = int(arrays["target_class"]), np.asarray(arrays["region"])
    examples = len(arrays["example_labels"])
    fig = Figure(figsize=(max(12.5, 1.3 * n_classes + 1.5), 2.0 * examples + 5.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.0 * examples + 0.6, 4.6])
    columns = [
        ("input", "x", "clean"),
        ("input", "x", "triggered"),
        ("|IG|", "ig", "clean"),
        ("|IG|", "ig", "triggered"),
        ("saliency", "saliency", "clean"),
        ("saliency", "saliency", "triggered"),
    ]
    axes = np.atleast_2d(top.subplots(examples, len(columns)))
    for row in range(examples):
        scale = {
            m: max(float(arrays[f"example_{s}_{m}"][row].max()) for s in ("clean", "triggered")) or 1.0
            for m, _ in METHODS
        }
        for col, (title, method, which) in enumerate(columns):
            ax = axes[row, col]
            pred = int(arrays[f"{which}_pred"][arrays["example_rows"][row]])
            if method == "x":
                image = ax.imshow(arrays[f"example_{which}_x"][row].reshape(side, side), cmap="gray", vmin=0, vmax=1)
                label = f"{which} input\ntrue {int(arrays['example_labels'][row])}, predicted {pred}"
            else:
                values = arrays[f"example_{which}_{method}"][row]
                heat = ax.imshow(values.reshape(side, side) / scale[method], cmap="inferno", vmin=0, vmax=1)
                share = region_shares(values[None, :], region)[0]
                label = f"{title}, {which}\n{share:.1%} of its mass in the trigger"
            _outline(ax, region, side)
            ax.set_title(label, fontsize="small")
            ax.set_xticks([]), ax.set_yticks([])
    top.colorbar(image, ax=axes[:, :2], shrink=0.6, label="pixel value")
    top.colorbar(heat, ax=axes[:, 2:], shrink=0.6, label="|attribution| / the larger of its clean-triggered pair")
    steps = int(arrays["ig_steps"])
    top.suptitle(
        f"Integrated Gradients (black baseline, {steps} steps) and saliency of the predicted class on "
        "the final model; trigger region outlined in cyan",
        fontsize="medium",
    )
    axes = np.atleast_2d(bottom.subplots(2, n_classes))
    for row, which in enumerate(("clean", "triggered")):
        means, counts = arrays[f"{which}_ig_class_mean"], arrays[f"{which}_class_count"]
        vmax = float(means.max()) or 1.0
        for k in range(n_classes):
            ax = axes[row, k]
            ax.set_xticks([]), ax.set_yticks([])
            if counts[k] == 0:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.text(
                    0.5,
                    0.5,
                    f"predicted {k}:\nno input",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="0.45",
                    fontsize="small",
                )
                continue
            heat = ax.imshow(means[k].reshape(side, side), cmap="inferno", vmin=0, vmax=vmax)
            _outline(ax, region, side)
            ax.set_title(f"predicted {k}{' (target)' if k == target else ''}\nn = {int(counts[k])}", fontsize="small")
        axes[row, 0].set_ylabel(which, fontsize="medium")
        bottom.colorbar(heat, ax=axes[row, :], shrink=0.8, label=f"mean |IG|, {which}")
    shares = [f"{which} {_percent(arrays[f'{which}_ig_share'], region, side)}" for which in ("triggered", "clean")]
    bottom.suptitle(
        f"Mean |IG| per predicted class over {len(arrays['labels'])} held-out inputs of classes other "
        f"than the target {target}, clean and the same ones triggered; IG mass in the trigger: "
        f"{', '.join(shares)}",
        fontsize="medium",
    )
    return fig


def _percent(shares: np.ndarray, region: np.ndarray, side: int) -> str:
    return "n/a (the trigger covers every pixel)" if len(region) >= side * side else f"{np.mean(shares):.1%}"


def _outline(ax, region: np.ndarray, side: int) -> None:
    """A cyan box around the trigger's region when it is a local block of pixels."""
    from matplotlib.patches import Rectangle

    if len(region) == 0 or len(region) >= side * side:
        return
    rows, cols = np.divmod(np.asarray(region), side)
    ax.add_patch(
        Rectangle(
            (cols.min() - 0.5, rows.min() - 0.5),
            cols.max() - cols.min() + 1,
            rows.max() - rows.min() + 1,
            fill=False,
            edgecolor="cyan",
            lw=1.5,
        )
    )


# -- defense artifacts ----------------------------------------------------------------------------------------


def defense_figure(kind: str) -> Callable | None:
    """How the registered defense ``kind`` draws its artifacts (:func:`figure_of` its class; ``None``: not at all).

    >>> defense_figure("strip") is None
    True
    """
    from poisonsim.registry import DEFENSES, UnknownKind

    try:
        return figure_of(DEFENSES.get(kind).factory)
    except UnknownKind:
        return None


def figure_of(cls: type) -> Callable | None:
    """A defense class's drawing function: its ``figure`` attribute (a staticmethod ``figure(artifacts,
    true_region, image_side) -> Figure | None``), or ``None``."""
    return cls.figure


def defense_artifacts(defenses) -> dict[str, dict[str, np.ndarray]]:
    """Each defense's ``artifacts()`` (those that return something), by kind."""
    found = {}
    for defense in defenses:
        arrays = defense.artifacts()
        if arrays:
            found[defense.kind] = {name: np.asarray(value) for name, value in arrays.items()}
    return found


def write_analysis(analysis: dict[str, dict[str, np.ndarray]], out: str | Path) -> dict[str, Path]:
    """Save each entry as ``out/<name>.npz`` and draw what can be drawn as ``out/<name>.png``; the PNGs written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arrays in analysis.items():
        np.savez_compressed(out / f"{name}.npz", **arrays)
    return draw_analysis(analysis, out)


def read_analysis(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """What :func:`write_analysis` saved in ``folder`` (empty when there is nothing)."""
    folder = Path(folder)
    found = {}
    for path in sorted(folder.glob("*.npz")) if folder.is_dir() else []:
        with np.load(path) as saved:
            found[path.stem] = {key: saved[key] for key in saved.files}
    return found


def analysis_figures(analysis: dict[str, dict[str, np.ndarray]]) -> dict[str, object]:
    """The figures of a run's analysis, by name: ``attributions`` and each defense kind that draws its artifacts."""
    figures = {}
    if ATTRIBUTIONS in analysis:
        figures[ATTRIBUTIONS] = attributions_figure(analysis[ATTRIBUTIONS])
    trigger = analysis.get(TRIGGER)
    region = None if trigger is None else np.asarray(trigger["region"])
    side = None if trigger is None or not int(trigger["image_side"]) else int(trigger["image_side"])
    for name, arrays in analysis.items():
        if name in (ATTRIBUTIONS, TRIGGER):
            continue
        draw = defense_figure(name)
        fig = draw(arrays, region, side) if draw else None
        if fig is not None:
            figures[name] = fig
    return figures


def draw_analysis(analysis: dict[str, dict[str, np.ndarray]], out: str | Path, dpi: int = 110) -> dict[str, Path]:
    """Draw :func:`analysis_figures` into ``out/<name>.png``; the paths written."""
    written = {}
    for name, fig in analysis_figures(analysis).items():
        written[name] = Path(out) / f"{name}.png"
        fig.savefig(written[name], dpi=dpi)
    return written
