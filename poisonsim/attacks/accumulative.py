"""Accumulative poisoning (after Pang et al., "Accumulative Poisoning Attacks on Real-time Data", NeurIPS 2021).

An online learner takes one optimiser step per mini-batch. The attacker
first sends ``accumulate`` events of *accumulation poisons*: its own clean
draws, correctly labelled, perturbed within ``||delta||_inf <= eps``. Then it
sends the *trigger*: ``trigger_size`` draws with flipped labels
(``y -> (y + 1) mod k``), drawn when the attack is fitted, so the poisons
can plan for that very batch. ``accumulate = 0`` sends the trigger alone:
plain label flips at once, the baseline the accumulation is measured against.

What the poisons aim at (gray-box): the attacker keeps a surrogate, a copy
of the victim as it starts, and for each batch of ``trigger_size`` poisons
it takes the direction in weight space that raises the *after-trigger loss*

    A(theta) = L_val(theta - lr * grad L_trigger(theta))

(its validation draws' loss after one SGD step on the trigger batch, at the
victim's learning rate; the gradient goes through a Hessian-vector product),
with the part that would raise the clean loss ``L_val(theta)`` projected out.
While the surrogate's clean loss is more than ``tolerance`` above where it
started, the direction is the clean loss's descent instead. The poisons are
the perturbations whose training gradient points the opposite way (cosine,
as in Witches' Brew), so a step on them moves the weights along the
direction; the surrogate then learns them, as the victim will. When the
attacker knows its share rho of the stream, the surrogate also learns
``(1 - rho) / rho`` of its own clean draws per poison in place of the
benign events it never sees.

What differs from the paper: the paper's attacker perturbs every batch of the
real-time stream during the accumulative phase, sees the model each step
(white-box), optimises a per-layer cosine between the trigger's and the
validation gradients, and may craft the trigger too. Here the attacker only
injects its own events at its channel's turns, tracks the victim through a
surrogate that never sees benign data, optimises the look-ahead loss above,
and the trigger is plain label flips, so that the baseline is the same
events without the accumulation. The look-ahead is exact for plain SGD; for
momentum or Adam it is a first-order stand-in. With batch norm
(``model.norm = "batch"``) it takes the trigger's step as the learner does,
on the trigger batch's own statistics, which also move the running ones
that the after-trigger loss is judged with.

The attack does not know stream positions, only how many events it has sent.
Send it in bursts of one mini-batch (``schedule = "bursts"``,
``burst_length = trigger_size`` = the model's ``batch_size``, with
``pretrain_events``, ``start`` and ``burst_length / rate`` multiples of it)
and ``budget = accumulate + trigger_size``: each burst is then one training
step, and the trigger lands at ``start + accumulate / rate``. Events beyond
the trigger are the attacker's clean draws, unchanged.

>>> import numpy as np
>>> from poisonsim.models.neural import NeuralClassifier
>>> from poisonsim.pipeline.stream import attacker_knowledge
>>> from poisonsim.sources import Blobs
>>> src = Blobs(n_features=4, n_classes=3).load(np.random.default_rng(0))
>>> victim = NeuralClassifier(n_classes=3, n_features=4, hidden=8, batch_size=8, optimizer="sgd", lr=0.05,
...                           device="cpu", pretrain_events=64)
>>> victim.learn_many(*src.sample(np.random.default_rng(1), 64))
>>> attack = Accumulative(accumulate=16, trigger_size=8, steps=3, validation_events=32)
>>> attack = attack.fit(attacker_knowledge(src, model=victim), np.random.default_rng(2))
>>> x, y = src.sample(np.random.default_rng(3), 26)
>>> px, py = attack.poison(x, y, np.random.default_rng(4))
>>> bool(np.abs(px[:16] - x[:16]).max() <= attack.eps + 1e-6), bool((py[:16] == y[:16]).all())  # accumulation
(True, True)
>>> bool((py[16:24] == attack.trigger_y_).all()), bool((px[24:] == x[24:]).all())  # the trigger, then clean
(True, True)
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np

from poisonsim.attacks.base import Attack, AttackerKnowledge, check_batch, require_classes
from poisonsim.lazy import lazy
from poisonsim.registry import ATTACKS, Key

torch = lazy("torch")
nn = lazy("torch.nn")

STEP_SIZE = 0.01  # Adam step on the perturbation, in feature units


def flat_grad(loss: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    """The gradient of ``loss`` with respect to ``params``, flattened into one vector."""
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def lookahead_direction(
    net: nn.Module,
    trigger: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    lr: float,
    clean_limit: float,
) -> tuple[torch.Tensor, dict]:
    """The unit direction the attacker wants the learner's weights to move along, and the figures behind it.

    ``A = L_val(theta - lr * grad L_trigger(theta))`` is raised, with the
    component that would raise ``L_val`` removed; once ``L_val`` exceeds
    ``clean_limit``, ``L_val`` is lowered instead.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    >>> u, figures = lookahead_direction(net, (x, 1 - y), (x, y), lr=0.1, clean_limit=10.0)
    >>> round(float(u.norm()), 4), figures["mode"]
    (1.0, 'sensitivity')
    >>> clean = flat_grad(nn.functional.cross_entropy(net(x), y), list(net.parameters()))
    >>> bool(u @ clean <= 1e-4 * clean.norm())  # the step along u does not raise the clean loss (to first
    ...                                          # order; float32 leaves a cosine of a few 1e-6, CPU-dependent)
    True
    >>> lookahead_direction(net, (x, 1 - y), (x, y), lr=0.1, clean_limit=0.0)[1]["mode"]
    'clean'
    """
    names, params = zip(*net.named_parameters())
    params = list(params)
    buffers = {n: b.clone() for n, b in net.named_buffers()}  # batch norms' running statistics: the step's copies
    net.train()  # the trigger's step as the learner takes it (batch norms on the trigger batch's statistics) ...
    trigger_logits = torch.func.functional_call(net, {**dict(zip(names, params)), **buffers}, (trigger[0],))
    net.eval()  # ... and every loss as predictions see it (running statistics, moved by that step for "after")
    trigger_grads = torch.autograd.grad(
        nn.functional.cross_entropy(trigger_logits, trigger[1]), params, create_graph=True
    )
    after = {**buffers, **{n: p - lr * g for n, p, g in zip(names, params, trigger_grads)}}
    after_loss = nn.functional.cross_entropy(torch.func.functional_call(net, after, (validation[0],)), validation[1])
    ascent = flat_grad(after_loss, params).detach()
    clean_loss = nn.functional.cross_entropy(net(validation[0]), validation[1])
    descent = -flat_grad(clean_loss, params).detach()
    figures = {"after_trigger_loss": float(after_loss.detach()), "clean_loss": float(clean_loss.detach())}
    if figures["clean_loss"] > clean_limit:
        return descent / descent.norm().clamp_min(1e-12), {**figures, "mode": "clean"}
    rise = -(ascent @ descent)  # > 0: the ascent would raise the clean loss
    if rise > 0:
        ascent = ascent + rise / (descent @ descent).clamp_min(1e-12) * descent
    return ascent / ascent.norm().clamp_min(1e-12), {**figures, "mode": "sensitivity"}


def craft(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    direction: torch.Tensor,
    eps: float,
    steps: int,
    bounds: tuple[float, float],
) -> tuple[np.ndarray, float]:
    """Perturb ``x`` within ``||delta||_inf <= eps`` (never pushing a feature past ``bounds``) so that the training
    gradient of ``(x + delta, y)`` points along ``-direction``: a descent step on them moves the weights along
    ``direction``. Returns the poisons and their gradient's final cosine with ``-direction``.

    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x, y = np.random.default_rng(0).uniform(size=(6, 3)).astype(np.float32), np.array([0, 1] * 3)
    >>> u = torch.randn(sum(p.numel() for p in net.parameters()))
    >>> poisons, cosine = craft(net, x, y, u / u.norm(), eps=0.1, steps=20, bounds=(0.0, 1.0))
    >>> bool(np.abs(poisons - x).max() <= 0.1 + 1e-6), bool(poisons.min() >= 0 and poisons.max() <= 1)
    (True, True)
    """
    device = next(net.parameters()).device
    params = [p for p in net.parameters() if p.requires_grad]
    base = torch.as_tensor(x, device=device)
    labels = torch.as_tensor(y, device=device)
    target = -direction.to(device)
    low, high = base.clamp(max=bounds[0]), base.clamp(min=bounds[1])  # a feature already outside stays put
    delta = torch.zeros_like(base, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=STEP_SIZE)
    net.eval()
    for _ in range(steps):
        poisons = torch.maximum(torch.minimum(base + delta.clamp(-eps, eps), high), low)
        grad = flat_grad(nn.functional.cross_entropy(net(poisons), labels), params, create_graph=True)
        cosine = nn.functional.cosine_similarity(grad, target, dim=0)
        optimizer.zero_grad(set_to_none=True)
        (-cosine).backward()
        optimizer.step()
    poisons = torch.maximum(torch.minimum(base + delta.detach().clamp(-eps, eps), high), low)
    grad = flat_grad(nn.functional.cross_entropy(net(poisons), labels), params)
    return poisons.cpu().numpy().astype(np.float32), float(nn.functional.cosine_similarity(grad, target, dim=0))


@ATTACKS.register(
    "accumulative",
    requires=("torch-net",),
    examples=[{"accumulate": 32, "trigger_size": 16, "steps": 2, "validation_events": 32}],
)
class Accumulative(Attack):
    """Accumulative poisoning (Pang et al. 2021): look-ahead clean-label poisons, then a label-flipped trigger."""

    def __init__(
        self,
        accumulate: Annotated[
            int,
            Key(
                "attacker events of the accumulation phase, before the trigger (0: the "
                "trigger alone, plain label flips)",
                ge=0,
                le=10**7,
            ),
        ] = 1_920,
        trigger_size: Annotated[
            int,
            Key(
                "events of the label-flipped trigger batch, sent last (one victim "
                "mini-batch); accumulation poisons are crafted this many at a time",
                ge=1,
                le=65_536,
            ),
        ] = 32,
        eps: Annotated[float, Key("L-inf bound on each accumulation poison's perturbation", ge=0)] = 0.2,
        steps: Annotated[int, Key("optimisation steps per batch of accumulation poisons", ge=1, le=100_000)] = 50,
        tolerance: Annotated[
            float,
            Key(
                "share by which the surrogate's clean loss may exceed its start before the poisons only lower it", ge=0
            ),
        ] = 0.1,
        validation_events: Annotated[
            int, Key("attacker's own clean draws the look-ahead loss is measured on", ge=1, le=10**6)
        ] = 256,
    ):
        self.accumulate = accumulate
        self.trigger_size = trigger_size
        self.eps = eps
        self.steps = steps
        self.tolerance = tolerance
        self.validation_events = validation_events

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> Accumulative:
        model = knowledge.model
        if model is None or "torch-net" not in model.offers:
            raise ValueError("accumulative: needs the victim's neural net (a gray-box copy) for its surrogate")
        require_classes("accumulative", knowledge.n_classes)
        x, y = knowledge.draw(rng, self.trigger_size)
        self.trigger_x_ = np.asarray(x, dtype=np.float32)
        self.trigger_y_ = ((np.asarray(y) + 1) % knowledge.n_classes).astype(np.int64)
        val_x, val_y = knowledge.draw(rng, self.validation_events)
        self.bounds_ = (float(min(x.min(), val_x.min())), float(max(x.max(), val_x.max())))
        self.surrogate_ = copy.deepcopy(model)
        self.lr_ = float(model.lr)
        rate = knowledge.rate
        self.benign_per_poison_ = (1 - rate) / rate if rate and rate < 1 else 0.0
        self._draw = knowledge.draw
        self._validation = (np.asarray(val_x, dtype=np.float32), np.asarray(val_y, dtype=np.int64))
        self.clean_limit_ = (1 + self.tolerance) * self._figures()["clean_loss"]
        self.sent_ = 0
        self._alignments: list[float] = []
        self._sensitivity_batches = 0
        self.report_ = {"accumulated": 0, "trigger_events": 0}
        return self

    def poison(self, x, y, rng):
        """Accumulation poisons, then the trigger, then the draws unchanged, by the count of events sent."""
        check_batch(x, y)
        out_x, out_y = np.array(x, dtype=np.float32), np.array(y, dtype=np.int64)
        done = 0
        while done < len(x):
            if self.sent_ < self.accumulate:
                rows = slice(done, done + min(len(x) - done, self.accumulate - self.sent_, self.trigger_size))
                out_x[rows] = self._accumulation_batch(out_x[rows], out_y[rows], rng)
            elif self.sent_ < self.accumulate + self.trigger_size:
                rows = slice(done, done + min(len(x) - done, self.accumulate + self.trigger_size - self.sent_))
                if self.sent_ == self.accumulate:
                    self._report_before_trigger(rng)
                picks = np.arange(rows.stop - rows.start) + self.sent_ - self.accumulate
                out_x[rows], out_y[rows] = self.trigger_x_[picks], self.trigger_y_[picks]
                self.report_["trigger_events"] += rows.stop - rows.start
            else:
                rows = slice(done, len(x))
            self.sent_ += rows.stop - rows.start
            done = rows.stop
        return out_x, out_y

    # -- the surrogate ---------------------------------------------------------------------------------

    def _accumulation_batch(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Craft one batch of poisons on the surrogate, which then learns them (after the benign events it
        expects came before them)."""
        if self.sent_:
            self._learn_benign(len(x), rng)
        net = self.surrogate_.net
        trigger, validation = self._tensors(self.trigger_x_, self.trigger_y_), self._tensors(*self._validation)
        direction, figures = lookahead_direction(net, trigger, validation, self.lr_, self.clean_limit_)
        poisons, cosine = craft(net, x, y, direction, self.eps, self.steps, self.bounds_)
        self.surrogate_.learn_many(poisons, y)
        self._alignments.append(cosine)
        self._sensitivity_batches += figures["mode"] == "sensitivity"
        self.report_.update(
            accumulated=self.report_["accumulated"] + len(x),
            alignment_mean=round(float(np.mean(self._alignments)), 6),
            sensitivity_batches=self._sensitivity_batches,
            batches=len(self._alignments),
        )
        return poisons

    def _learn_benign(self, n_poisons: int, rng: np.random.Generator) -> None:
        """The surrogate learns the attacker's own draws in place of the benign events between its turns."""
        n = int(round(n_poisons * self.benign_per_poison_))
        if n:
            self.surrogate_.learn_many(*self._draw(rng, n))

    def _report_before_trigger(self, rng: np.random.Generator) -> None:
        """What the surrogate expects: its validation accuracy now, and after one step on the trigger."""
        if self.sent_:
            self._learn_benign(self.trigger_size, rng)
        after = copy.deepcopy(self.surrogate_)
        after.learn_many(self.trigger_x_, self.trigger_y_)
        val_x, val_y = self._validation
        before_acc = float((self.surrogate_.predict_many(val_x) == val_y).mean())
        after_acc = float((after.predict_many(val_x) == val_y).mean())
        self.report_.update(
            surrogate_clean_accuracy=before_acc,
            surrogate_after_trigger_accuracy=after_acc,
            **{f"surrogate_{k}": round(v, 6) for k, v in self._figures().items()},
        )

    def _figures(self) -> dict:
        """The surrogate's clean and after-trigger losses on the attacker's validation draws."""
        _, figures = lookahead_direction(
            self.surrogate_.net,
            self._tensors(self.trigger_x_, self.trigger_y_),
            self._tensors(*self._validation),
            self.lr_,
            float("inf"),
        )
        return {k: v for k, v in figures.items() if k != "mode"}

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.surrogate_.to_tensor(x), torch.as_tensor(y, device=self.surrogate_.device_)
