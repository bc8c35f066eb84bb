"""Clean-label poisoning by gradient alignment (Geiping et al., "Witches' Brew", 2021).

The attacker wants targets X' (held-out inputs of other classes) classified
as class ``c``, but may only perturb inputs, not labels. It trains a
surrogate of the victim's architecture on clean data it draws itself, picks
base samples of class ``c`` and optimises perturbations
``||delta||_inf <= eps`` so that the training gradient of the poisons,
``grad L(x_b + delta, c)``, points the same way (cosine) as the gradient of
the adversarial loss ``grad L(X', c)``: a learner that descends on the
poisons then descends on the adversarial loss too. Labels stay correct.

The stream then carries the crafted poisons, cycled, at the scenario's rate
and budget.
"""

from __future__ import annotations

import copy
from typing import Annotated

import numpy as np

from poisonsim.attacks.base import (
    Attack,
    AttackerKnowledge,
    SupplierEvents,
    TargetClass,
    TargetCount,
    check_batch,
    non_target,
)
from poisonsim.lazy import lazy
from poisonsim.registry import ATTACKS, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

SURROGATE_EPOCHS = 6
STEP_SIZE = 0.01  # signed Adam step on delta, in pixel units


@ATTACKS.register(
    "gradient-alignment",
    requires=("torch-net",),
    examples=[{"target_count": 1, "poisons": 4, "steps": 2, "restarts": 1, "supplier_events": 200}],
)
class GradientAlignment(Attack):
    """Witches' Brew (Geiping et al. 2021): clean-label poisons whose gradient aligns with the target's."""

    def __init__(
        self,
        target_class: TargetClass = 0,
        target_count: TargetCount = 10,
        poisons: Annotated[int, Key("base samples of class c perturbed (cycled in the stream)", ge=1, le=100_000)] = 40,
        eps: Annotated[float, Key("L-inf bound on each perturbation (pixels in [0, 1])", ge=0, le=1)] = 0.1,
        steps: Annotated[int, Key("optimisation steps per restart", ge=1, le=100_000)] = 100,
        restarts: Annotated[int, Key("random restarts (the best alignment is kept)", ge=1, le=1000)] = 2,
        supplier_events: SupplierEvents = 5_000,
        surrogate: Annotated[
            str,
            Key(
                "surrogate: a copy of the victim tuned on the attacker's draws, or a fresh net trained on them",
                choices=("victim", "fresh"),
            ),
        ] = "victim",
    ):
        self.surrogate = surrogate
        self.target_class = target_class
        self.target_count = target_count
        self.poisons = poisons
        self.eps = eps
        self.steps = steps
        self.restarts = restarts
        self.supplier_events = supplier_events

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> GradientAlignment:
        if knowledge.model is None or "torch-net" not in knowledge.model.offers:
            raise ValueError("gradient-alignment: needs the victim's neural architecture for its surrogate")
        others = non_target(knowledge, self.target_class)
        pick = rng.choice(len(others), size=min(self.target_count, len(others)), replace=False)
        self.target_x_ = others[pick].astype(np.float32)
        self.target_class_ = self.target_class

        x, y = knowledge.draw(rng, self.supplier_events)
        candidates = x[y == self.target_class]
        if len(candidates) == 0:
            raise ValueError(f"gradient-alignment: the attacker drew no base sample of class {self.target_class}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            if self.surrogate == "victim":
                surrogate = copy.deepcopy(knowledge.model.net)
                nets.train_offline(surrogate, x, y, rng, epochs=1)
            else:
                surrogate = knowledge.model.new_net()
                nets.train_offline(surrogate, x, y, rng, epochs=SURROGATE_EPOCHS)
            bases = _hardest(surrogate, candidates, self.target_class, self.poisons)
            deltas, alignment = self._craft(surrogate, bases)
        self.poisons_ = np.clip(bases + deltas, 0.0, 1.0).astype(np.float32)
        self.report_ = {
            "eps": self.eps,
            "poisons": len(bases),
            "targets": len(self.target_x_),
            "alignment": round(alignment, 6),
        }
        self._next = 0
        return self

    def poison(self, x, y, rng):
        """The crafted poisons, in turn, with their true label ``c``."""
        check_batch(x, y)
        rows = (self._next + np.arange(len(x))) % len(self.poisons_)
        self._next = int((self._next + len(x)) % len(self.poisons_))
        return self.poisons_[rows].copy(), np.full(len(x), self.target_class, dtype=np.int64)

    def _craft(self, net: nn.Module, bases: np.ndarray) -> tuple[np.ndarray, float]:
        """Best perturbations over the restarts, and their final cosine alignment."""
        device = next(net.parameters()).device
        params = [p for p in net.parameters() if p.requires_grad]
        net.eval()
        target_grad = _flat_grad(net, params, self.target_x_, self.target_class, device, create_graph=False).detach()
        base = torch.as_tensor(bases, device=device)
        best, best_alignment = np.zeros_like(bases), -1.0
        for _ in range(self.restarts):
            delta = ((torch.rand_like(base) * 2 - 1) * self.eps).requires_grad_(True)
            optimizer = torch.optim.Adam([delta], lr=STEP_SIZE)
            for _ in range(self.steps):
                poison_grad = _flat_grad(net, params, base + delta, self.target_class, device, create_graph=True)
                loss = 1 - nn.functional.cosine_similarity(poison_grad, target_grad, dim=0)
                optimizer.zero_grad(set_to_none=True)
                delta.grad = torch.autograd.grad(loss, delta)[0].sign()
                optimizer.step()
                with torch.no_grad():  # project: ||delta||_inf <= eps and x + delta a valid image
                    delta.clamp_(-self.eps, self.eps)
                    delta.copy_((base + delta).clamp(0, 1) - base)
            alignment = 1 - float(loss.detach())
            if alignment > best_alignment:
                best, best_alignment = delta.detach().cpu().numpy(), alignment
        return best, best_alignment


def _hardest(net: nn.Module, candidates: np.ndarray, label: int, n: int) -> np.ndarray:
    """The ``n`` base samples the surrogate finds hardest: a learner still moves on them."""
    device = next(net.parameters()).device
    net.eval()
    with torch.no_grad():
        logits = net(torch.as_tensor(candidates, device=device))
        loss = nn.functional.cross_entropy(
            logits, torch.full((len(candidates),), label, device=device), reduction="none"
        )
    order = np.argsort(-loss.cpu().numpy(), kind="stable")
    return candidates[order[:n]]


def _flat_grad(net, params, x, label: int, device, create_graph: bool) -> torch.Tensor:
    """Gradient of the mean cross-entropy of ``x`` as class ``label``, flattened."""
    x = torch.as_tensor(x, device=device)
    y = torch.full((x.shape[0],), label, device=device)
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    return torch.cat([g.reshape(-1) for g in grads])
