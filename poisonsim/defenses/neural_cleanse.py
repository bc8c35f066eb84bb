"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer a trigger per class, flag outliers, unlearn.

A backdoor is a shortcut: a few pixels send any input to the target class,
while reaching any other class takes far more. At repair time, for every
class ``c`` the defense looks for the smallest mask ``m_c`` (H x W in
[0, 1], a sigmoid of a free parameter) and a pattern ``p_c`` (H x W in
[0, 1], likewise) such that ``x' = (1 - m_c) * x + m_c * p_c`` sends its
trusted clean inputs (those whose label is not ``c``) to ``c``: it minimises
``cross-entropy(f(x'), c) + lambda_c * |m_c|_1`` for all classes at once, one
``n_classes x batch x pixels`` tensor through the net and one Adam optimiser
(learning rate 0.1, betas 0.5 and 0.9, as the paper's code). Each class's
``lambda_c`` follows the paper's schedule: it starts at ``init_cost``; after
``PATIENCE`` epochs (``EPOCH_STEPS`` steps each) in a row whose mean attack
success is at least ``threshold`` it is multiplied by 1.5, after as many below
it divided by 1.5 ** 1.5. The kept trigger of a class is the one of smallest
mask L1 norm among those that reached ``threshold`` on a whole epoch (else the
last one). The search stops after ``steps`` steps, or earlier once every
class has a kept trigger that has not shrunk by 1% for ``EARLY_STOP`` epochs.

Outliers: with ``l_c`` the L1 norms and ``MAD = 1.4826 * median |l - median(l)|``,
the anomaly index of a class is ``|l_c - median(l)| / MAD``; a class is a
suspect when its norm is *below* the median and its index is above
``anomaly``. The paper takes the index on the norms with ``anomaly = 2``
(``norm_scale = "linear"``). How many pixels a class needs varies between
classes by a factor (on MNIST a 1 takes about twice a 2's), so the plain
norms spread widely and a 3x3 trigger's index sits near 2 (found in 2 of 4
seeds); ``norm_scale = "log"`` (the default) takes it on log norms, a
ratio's spread, with ``anomaly = 3`` (the default): every target found and no
clean class flagged in the seeds measured (docs/mnist.md). ``report()`` gives ``mask_l1`` and ``anomaly_index`` per class,
``suspect_classes`` and every repair's figures.

Repair (``unlearn = true``, when there is a suspect): the net is fine-tuned
(``UNLEARN_EPOCHS`` epochs, Adam at ``UNLEARN_LR``) on the trusted sample, a
share (``unlearn_share``, the paper's 20%) of it stamped with the reversed
trigger of a suspect class (taken in turn) and keeping its true label, then
the online learner's optimiser restarts. Accuracy on the trusted sample
before and after is in the repair's figures. When to repair is
:class:`poisonsim.defenses.repair.ScheduledRepair`'s (``when = "once"`` at
``at``, or ``"drift"``), as fine-pruning's.

Measured on MNIST BadNets (``scenarios/mnist_neural_cleanse.toml``, seeds
11-14): the target's mask norm is 8-11 against 57-171 for the other classes
and it covers the patch (IoU 0.54-0.89), but the other classes' norms spread
so widely that the paper's index (on the plain norms) is 1.9, 1.9, 6.1, 2.3:
flagged in two of the four seeds at its cut of 2. On log norms with the
default cut of 3 it is flagged in all four, and no class of a clean run in
ten seeds (see ``tests/reproductions/test_neural_cleanse.py``).

Images only (the source's ``image_side``); the search is seeded from the
defender's rng. :meth:`NeuralCleanse.artifacts` gives the masks, patterns and
norms, :func:`reversed_trigger_figure` draws them; the evaluator alone scores
them against the true trigger (:func:`poisonsim.evaluation.metrics.mask_iou`).

>>> norms = np.array([60.0, 58.0, 61.0, 9.0, 63.0, 59.0, 62.0, 57.0, 60.0, 64.0])
>>> index = anomaly_indices(norms)
>>> round(float(index[3]), 1), suspects(norms, index, 2.0)
(17.2, [3])
>>> backdoored = np.array([5.9, 106.5, 51.5, 45.9, 91.5, 55.7, 64.4, 101.5, 68.6, 101.0])  # MNIST, target 0
>>> round(float(anomaly_indices(backdoored)[0]), 1), round(float(anomaly_indices(backdoored, log=True)[0]), 1)
(1.8, 4.7)
>>> suspects(np.array([10.0, 10.0, 10.0, 10.0]), anomaly_indices(np.array([10.0, 10.0, 10.0, 10.0])), 2.0)
[]
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np

from poisonsim.defenses.base import (
    At,
    DefenderKnowledge,
    Every,
    MonitorKind,
    Signal,
    When,
    median_mad,
    require,
)
from poisonsim.defenses.repair import ScheduledRepair
from poisonsim.lazy import lazy
from poisonsim.registry import DEFENSES, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

LR, BETAS = 0.1, (0.5, 0.9)  # the reversal's Adam, as the paper's code
EPOCH_STEPS = 10  # optimisation steps whose mean attack success decides a lambda adjustment
PATIENCE = 3  # epochs in a row above (below) the threshold before lambda goes up (down)
COST_UP, COST_DOWN = 1.5, 1.5**1.5
EARLY_STOP = 6  # epochs without a 1% smaller kept mask in any class: the search stops
MASK_INIT = -2.0  # logit of the first mask everywhere (0.12 of each pixel), plus noise
UNLEARN_EPOCHS = 5
UNLEARN_LR = 1e-3


def anomaly_indices(norms: np.ndarray, log: bool = False) -> np.ndarray:
    """``|l - median(l)| / (1.4826 * median |l - median(l)|)`` per class (0 where every norm is the median), on
    ``log(l)`` when ``log``."""
    norms = np.asarray(norms, dtype=np.float64)
    if log:
        norms = np.log(np.maximum(norms, 1e-6))
    median, mad = median_mad(norms)
    if mad == 0:
        return np.zeros_like(norms)
    return np.abs(norms - median) / mad


def suspects(norms: np.ndarray, index: np.ndarray, anomaly: float) -> list[int]:
    """Classes whose norm is below the median and whose anomaly index is above ``anomaly``."""
    below = np.asarray(norms) < np.median(norms)
    return [int(c) for c in np.flatnonzero(below & (np.asarray(index) > anomaly))]


def reverse_triggers(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    rng: np.random.Generator,
    steps: int = 600,
    batch: int = 32,
    init_cost: float = 1e-3,
    threshold: float = 0.99,
) -> dict[str, np.ndarray]:
    """Per class, the smallest mask and its pattern that send ``x`` (the inputs not of that class) to it.

    Returns ``masks`` and ``patterns`` (``n_classes x pixels``, in [0, 1]), ``mask_l1``, ``success`` (the kept
    trigger's attack success over its epoch), ``reached`` (whether it reached ``threshold``), ``cost`` (the last
    lambda) and ``steps`` (taken).
    """
    device = next(net.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63)))
    n, d = x.shape
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    # the inputs of each class's search: the others, in a padded table of indices into x
    pools = [np.flatnonzero(y != c) for c in range(n_classes)]
    if min(len(p) for p in pools) == 0:
        raise ValueError("neural-cleanse: every class needs trusted inputs of another class")
    table = torch.as_tensor(np.stack([np.resize(p, n) for p in pools]), device=device)
    sizes = torch.as_tensor([len(p) for p in pools], dtype=torch.float32, device=device)
    targets = torch.arange(n_classes, device=device).repeat_interleave(batch)

    mask_logit = (MASK_INIT + 0.1 * torch.randn(n_classes, 1, d, generator=generator)).to(device).requires_grad_()
    pattern_logit = torch.randn(n_classes, 1, d, generator=generator).to(device).requires_grad_()
    optimizer = torch.optim.Adam([mask_logit, pattern_logit], lr=LR, betas=BETAS)
    cost = torch.full((n_classes,), float(init_cost), device=device)

    best_l1 = np.full(n_classes, np.inf)
    best_mask = np.zeros((n_classes, d), dtype=np.float32)
    best_pattern = np.zeros((n_classes, d), dtype=np.float32)
    best_success = np.zeros(n_classes)
    above, below, stale = np.zeros(n_classes, int), np.zeros(n_classes, int), 0
    epoch_success = torch.zeros(n_classes, device=device)
    was_training = net.training
    frozen = [p.requires_grad for p in net.parameters()]
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    taken = 0
    try:
        for step in range(steps):
            pick = (torch.rand(n_classes, batch, generator=generator).to(device) * sizes[:, None]).long()
            inputs = xt[table.gather(1, pick)]  # n_classes x batch x pixels
            mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
            stamped = (1 - mask) * inputs + mask * pattern
            logits = net(stamped.reshape(-1, d))
            ce = nn.functional.cross_entropy(logits, targets, reduction="none").reshape(n_classes, batch).mean(dim=1)
            l1 = mask.sum(dim=(1, 2))
            loss = (ce + cost * l1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_success += (logits.argmax(dim=1) == targets).float().reshape(n_classes, batch).mean(dim=1).detach()
            taken = step + 1
            if taken % EPOCH_STEPS:
                continue
            success = (epoch_success / EPOCH_STEPS).cpu().numpy()
            epoch_success.zero_()
            with torch.no_grad():
                mask_now = torch.sigmoid(mask_logit)[:, 0].cpu().numpy()
                pattern_now = torch.sigmoid(pattern_logit)[:, 0].cpu().numpy()
            norms = mask_now.sum(axis=1)
            reached = success >= threshold
            better = reached & (norms < best_l1)
            improved = reached & (norms < 0.99 * best_l1)
            best_l1[better], best_mask[better], best_pattern[better] = (
                norms[better],
                mask_now[better],
                pattern_now[better],
            )
            best_success[better] = success[better]
            above, below = np.where(reached, above + 1, 0), np.where(reached, 0, below + 1)
            up, down = above >= PATIENCE, below >= PATIENCE
            factor = np.where(up, COST_UP, np.where(down, 1 / COST_DOWN, 1.0))
            cost *= torch.as_tensor(factor, dtype=torch.float32, device=device)
            above[up], below[down] = 0, 0
            stale = 0 if improved.any() or not np.isfinite(best_l1).all() else stale + 1
            if stale >= EARLY_STOP:
                break
        missing = ~np.isfinite(best_l1)  # never reached the threshold: the last trigger stands in
        if missing.any():
            with torch.no_grad():
                best_mask[missing] = torch.sigmoid(mask_logit)[missing, 0].cpu().numpy()
                best_pattern[missing] = torch.sigmoid(pattern_logit)[missing, 0].cpu().numpy()
            best_l1[missing] = best_mask[missing].sum(axis=1)
    finally:
        for p, flag in zip(net.parameters(), frozen):
            p.requires_grad_(flag)
        net.train(was_training)
    return {
        "masks": best_mask,
        "patterns": best_pattern,
        "mask_l1": best_l1.astype(np.float64),
        "success": best_success,
        "reached": ~missing,
        "cost": cost.cpu().numpy().astype(np.float64),
        "steps": np.int64(taken),
    }


def stamp(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """``(1 - mask) * x + mask * pattern``, row by row (float32)."""
    return ((1 - mask) * x + mask * pattern).astype(np.float32)


def reversed_trigger_figure(artifacts: dict[str, np.ndarray], true_region: np.ndarray | None, image_side: int | None):
    """Every class's reversed trigger (mask x pattern) with its L1 norm and anomaly index, suspects marked,
    next to the true trigger's pixels when known (``true_region``); a matplotlib ``Figure`` (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    masks, patterns = np.asarray(artifacts["masks"]), np.asarray(artifacts["patterns"])
    side = int(image_side or artifacts.get("image_side", 0) or round(np.sqrt(masks.shape[1])))
    n_classes = len(masks)
    suspect = set(np.asarray(artifacts.get("suspect_classes", [])).astype(int).tolist())
    norms, index = artifacts.get("mask_l1"), artifacts.get("anomaly_index")
    panels = n_classes + (true_region is not None)
    cols = min(panels, 6)
    rows = -(-panels // cols)
    fig = Figure(figsize=(1.9 * cols, 2.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for c in range(n_classes):
        ax = axes[c]
        ax.imshow((masks[c] * patterns[c]).reshape(side, side), cmap="gray", vmin=0, vmax=1)
        title = f"class {c}" + (" (suspect)" if c in suspect else "")
        if norms is not None:
            title += f"\nL1 {float(norms[c]):.1f}"
        if index is not None:
            title += f", index {float(index[c]):.1f}"
        ax.set_title(title, fontsize=8, color="tab:red" if c in suspect else "black")
    if true_region is not None:
        truth = np.zeros(side * side)
        truth[np.asarray(true_region, dtype=np.int64)] = 1.0
        axes[n_classes].imshow(truth.reshape(side, side), cmap="gray", vmin=0, vmax=1)
        axes[n_classes].set_title("true trigger", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle("Neural Cleanse: reversed triggers (mask x pattern)", fontsize=9)
    return fig


@DEFENSES.register(
    "neural-cleanse",
    requires=("torch-net", "images"),
    examples=[{"steps": 40, "batch": 8}, {"when": "drift", "every": 100, "steps": 20, "batch": 8}],
)
class NeuralCleanse(ScheduledRepair):
    """Reverse a trigger per class, flag the class whose mask is an outlier in L1 norm, unlearn its trigger."""

    kind = "neural-cleanse"
    offers = frozenset({"reverses-triggers"})
    figure = staticmethod(reversed_trigger_figure)  # DIR/analysis/neural-cleanse.png

    def __init__(
        self,
        steps: Annotated[
            int, Key("most optimisation steps of the trigger search (all classes at once)", ge=EPOCH_STEPS, le=100_000)
        ] = 600,
        batch: Annotated[int, Key("trusted inputs per class in each step", ge=1, le=1024)] = 32,
        init_cost: Annotated[float, Key("lambda, the mask norm's weight, at the start", gt=0, le=10)] = 1e-3,
        threshold: Annotated[float, Key("attack success a reversed trigger must reach", gt=0, le=1)] = 0.99,
        anomaly: Annotated[
            float,
            Key("anomaly index above which a class of small norm is a suspect (the paper: 2 on linear norms)", gt=0),
        ] = 3.0,
        norm_scale: Annotated[
            str, Key("the anomaly index on log mask norms, or on the norms (the paper's)", choices=("log", "linear"))
        ] = "log",
        unlearn: Annotated[bool, Key("fine-tune the net on trusted inputs stamped with the suspects' triggers")] = True,
        unlearn_share: Annotated[float, Key("share of the trusted inputs stamped for unlearning", gt=0, le=1)] = 0.2,
        at: At = None,
        when: When = "once",
        monitor: MonitorKind = "adwin",
        signal: Signal = "distance",
        every: Every = 500,
    ):
        self.steps = steps
        self.batch = batch
        self.init_cost = init_cost
        self.threshold = threshold
        self.anomaly = anomaly
        self.norm_scale = norm_scale
        self.unlearn = unlearn
        self.unlearn_share = unlearn_share
        super().__init__(at=at, when=when, monitor=monitor, signal=signal, every=every)

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> NeuralCleanse:
        require(model, "neural-cleanse", "torch-net")
        if not knowledge.image_side:
            raise ValueError(
                "kind: neural-cleanse reverses triggers on square images; the source has none "
                '(stream.source = "digits" or "mnist")'
            )
        self.image_side_, self.n_classes_ = int(knowledge.image_side), int(knowledge.n_classes)
        self.found_: dict[str, np.ndarray] = {}
        return super().fit(knowledge, model, rng)

    def analyse(self, model) -> dict[str, np.ndarray]:
        """Reverse every class's trigger on the net as it is now; keeps and returns the arrays."""
        found = reverse_triggers(
            model.net,
            self.clean_x_,
            self.clean_y_,
            self.n_classes_,
            self.rng_,
            self.steps,
            self.batch,
            self.init_cost,
            self.threshold,
        )
        found["anomaly_index"] = anomaly_indices(found["mask_l1"], log=self.norm_scale == "log")
        found["suspect_classes"] = np.asarray(
            suspects(found["mask_l1"], found["anomaly_index"], self.anomaly), dtype=np.int64
        )
        self.found_ = found
        return found

    def repair(self, model, position: int) -> dict:
        """Reverse the triggers; when a class is a suspect (and ``unlearn``), unlearn its trigger."""
        found = self.analyse(model)
        suspect = found["suspect_classes"].tolist()
        before = self.trusted_accuracy(model)
        figures = {"suspect_classes": suspect, "search_steps": int(found["steps"]), "trusted_accuracy_before": before}
        if suspect and self.unlearn:
            x = self.clean_x_.copy()
            rows = self.rng_.permutation(len(x))[: round(self.unlearn_share * len(x))]
            for i, c in enumerate(suspect):
                part = rows[i :: len(suspect)]
                x[part] = stamp(x[part], found["masks"][c], found["patterns"][c])
            nets.train_offline(model.net, x, self.clean_y_, self.rng_, UNLEARN_EPOCHS, lr=UNLEARN_LR)
            model.reset_optimizer()  # fresh moments for the online learner
            figures["stamped"] = len(rows)
        figures["trusted_accuracy_after"] = self.trusted_accuracy(model) if suspect and self.unlearn else before
        return figures

    def reversed_masks(self) -> np.ndarray | None:
        """The last search's mask per class (``n_classes x pixels``), or ``None`` before any."""
        return self.found_["masks"].copy() if self.found_ else None

    def artifacts(self) -> dict[str, np.ndarray]:
        """The last search's masks, patterns, norms, anomaly indices and suspects (empty before any)."""
        if not self.found_:
            return {}
        keys = ("masks", "patterns", "mask_l1", "anomaly_index", "suspect_classes", "success", "reached")
        return {k: np.array(self.found_[k]) for k in keys} | {"image_side": np.int64(self.image_side_)}

    def report(self) -> dict:
        figures = super().report()
        if self.found_:
            figures.update(
                mask_l1={str(c): float(v) for c, v in enumerate(self.found_["mask_l1"])},
                anomaly_index={str(c): float(v) for c, v in enumerate(self.found_["anomaly_index"])},
                suspect_classes=[int(c) for c in self.found_["suspect_classes"]],
                classes_reached=int(np.sum(self.found_["reached"])),
            )
        return figures

    def get_state(self) -> dict:
        return {"found": copy.deepcopy(self.found_), **super().get_state()}

    def set_state(self, state: dict, model) -> None:
        super().set_state(state, model)
        self.found_ = {k: np.array(v) for k, v in state["found"].items()}
