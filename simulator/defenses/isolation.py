"""Training-time isolation and anti-backdoor unlearning (Li et al. 2021, ABL) for the online net.

Backdoor samples are learned faster than clean ones: right after the net has
taken its step on an event, a triggered event's loss is already far lower.
Each event's loss after its first update is its score; where to cut is an
open question, so several rules judge the same scores:

- ``fraction``: the lowest ``fraction`` of the recent scores (a rolling quantile);
- ``threshold``: loss below ``gamma``; the net trains with flooding at gamma
  (ABL's local gradient ascent) so clean losses float at gamma while
  backdoor losses sink below it;
- ``percentile``: below the ``percentile``-th percentile of the defender's
  trusted clean samples' losses (recomputed every ``every`` events);
- ``mixture``: a two-component Gaussian mixture on the recent log-losses;
  flagged when the low component is the more likely.

The configured rule's verdicts are the defense's flags; every rule's
verdicts are scored apart by the evaluator (``isolation/<rule>``), so each
rule's precision and recall sit side by side. With ``unlearn = true``, at
event ``at`` (default: the stream's end) the net takes gradient ascent
steps on the isolated events (``-lambda * L``, capped) while fine-tuning on
the recent events not isolated.

>>> import numpy as np
>>> z = np.r_[np.full(50, -6.0), np.full(950, -1.0)] + np.random.default_rng(0).normal(0, 0.3, 1000)
>>> low = mixture_low(z)
>>> bool(low[:50].all()), int(low[50:].sum())
(True, 0)
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import nn

from simulator.config import DefenseConfig
from simulator.defenses.base import DefenderKnowledge, Defense
from simulator.events import EventBatch

RULES = ("fraction", "threshold", "percentile", "mixture")
HISTORY = 2_000  # recent scores the rolling rules cut
MIN_HISTORY = 200  # rolling rules flag nothing before this many scores
KEEP = 4_000  # isolated / kept events remembered for unlearning
UNLEARN_STEPS = 200
UNLEARN_BATCH = 64
UNLEARN_LR = 5e-4
ASCENT_CAP = 6.0  # isolated loss above this gives no more ascent gradient
EPS = 1e-6


def mixture_low(z: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Two-Gaussian EM on ``z``; True where the lower-mean component is the more likely."""
    z = np.asarray(z, dtype=np.float64)
    lo, hi = np.quantile(z, [0.05, 0.5])
    mu, var, w = np.array([lo, hi]), np.full(2, z.var() + EPS), np.array([0.1, 0.9])
    for _ in range(iterations):
        dens = w * np.exp(-0.5 * (z[:, None] - mu) ** 2 / var) / np.sqrt(var)
        resp = dens / (dens.sum(axis=1, keepdims=True) + 1e-300)
        nk = resp.sum(axis=0) + EPS
        w, mu = nk / len(z), (resp * z[:, None]).sum(axis=0) / nk
        var = (resp * (z[:, None] - mu) ** 2).sum(axis=0) / nk + 1e-4
    low = int(np.argmin(mu))
    return resp[:, low] > 0.5


class Isolation(Defense):
    """Flag events learned too fast; optionally unlearn them (ABL)."""

    extra_flag_names = RULES

    def __init__(self, rule: str = "mixture", fraction: float = 0.05, gamma: float = 0.5, percentile: float = 5.0,
                 unlearn: bool = True, unlearn_weight: float = 1.0, every: int = 500, at: int | None = None):  # fmt: skip
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}")
        self.rule = rule
        self.fraction = fraction
        self.gamma = gamma
        self.percentile = percentile
        self.unlearn = unlearn
        self.unlearn_weight = unlearn_weight
        self.every = every
        self.at = at

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> Isolation:
        if not hasattr(model, "losses_many"):
            raise ValueError("defense.kind: isolation needs a neural model (model.kind = mlp or cnn)")
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        self.at_ = self.at if self.at is not None else knowledge.n_events
        self._rng = rng
        self._history: deque[float] = deque(maxlen=HISTORY)
        self._isolated: deque[tuple[np.ndarray, int]] = deque(maxlen=KEEP)
        self._kept: deque[tuple[np.ndarray, int]] = deque(maxlen=KEEP)
        self._extra: dict[str, np.ndarray] = {}
        self._clean_cut = self._next_clean = 0
        self.unlearned_at_: int | None = None
        self.unlearn_figures_: dict = {}
        if self.rule == "threshold":
            model.flood_level = self.gamma
        return self

    def _verdicts(self, losses: np.ndarray, model, position: int) -> dict[str, np.ndarray]:
        if position >= self._next_clean:  # the clean reference moves with the net
            self._clean_cut = float(np.percentile(model.losses_many(self.clean_x_, self.clean_y_), self.percentile))
            self._next_clean = (position // self.every + 1) * self.every
        history = np.fromiter(self._history, dtype=np.float64)
        warm = len(history) >= MIN_HISTORY
        verdicts = {
            "threshold": losses < self.gamma,
            "percentile": losses < self._clean_cut,
            "fraction": losses < np.quantile(history, self.fraction) if warm else np.zeros(len(losses), bool),
        }
        if warm:
            z = np.log(np.r_[history, losses] + 1e-12)
            verdicts["mixture"] = mixture_low(z)[len(history) :]
        else:
            verdicts["mixture"] = np.zeros(len(losses), bool)
        return verdicts

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        if self.unlearned_at_ is not None or len(batch) == 0:
            self._extra = {rule: np.zeros(len(batch), bool) for rule in RULES}
            return None
        losses = model.losses_many(batch.x, batch.y)  # after the net's step(s) on these events
        self._extra = self._verdicts(losses, model, position)
        self._history.extend(losses.tolist())
        flagged = self._extra[self.rule]
        for x, y, is_flagged in zip(batch.x, batch.y, flagged):
            (self._isolated if is_flagged else self._kept).append((x, int(y)))
        if self.unlearn and self.at_ is not None and position >= self.at_:
            self._unlearn(model, position)
        return flagged

    def extra_flags(self) -> dict[str, np.ndarray]:
        """Every rule's verdicts on the last batch (scored apart by the evaluator)."""
        return self._extra

    def _unlearn(self, model, position: int) -> None:
        """ABL's unlearning: ascend the isolated events' loss, descend the kept events' (one optimiser)."""
        model.flood_level = None
        self.unlearned_at_ = position
        if not self._isolated:
            self.unlearn_figures_ = {"unlearn_steps": 0}
            return
        iso_x, iso_y = (np.array(v) for v in zip(*self._isolated))
        keep_x, keep_y = (np.array(v) for v in zip(*self._kept)) if self._kept else (self.clean_x_, self.clean_y_)
        keep_x, keep_y = np.r_[keep_x, self.clean_x_], np.r_[keep_y, self.clean_y_]  # the defender's own data too
        net, device = model.net, model.device_
        tensor = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)
        ix, iy, kx, ky = tensor(iso_x), tensor(iso_y, torch.int64), tensor(keep_x), tensor(keep_y, torch.int64)
        optimizer = torch.optim.Adam(net.parameters(), lr=UNLEARN_LR)
        net.train()
        for _ in range(UNLEARN_STEPS):
            i = torch.as_tensor(self._rng.integers(0, len(iy), UNLEARN_BATCH // 2), device=device)
            k = torch.as_tensor(self._rng.integers(0, len(ky), UNLEARN_BATCH), device=device)
            ascent = nn.functional.cross_entropy(net(ix[i]), iy[i]).clamp(max=ASCENT_CAP)
            loss = nn.functional.cross_entropy(net(kx[k]), ky[k]) - self.unlearn_weight * ascent
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self.unlearn_figures_ = {"unlearn_steps": UNLEARN_STEPS, "unlearned_events": len(iy),
                                 "fine_tuned_events": len(ky)}  # fmt: skip

    def report(self) -> dict:
        return {"rule": self.rule, "isolated_events": len(self._isolated), "unlearned_at": self.unlearned_at_,
                **self.unlearn_figures_}  # fmt: skip


def _build(config: DefenseConfig) -> Isolation:
    return Isolation(config.rule, config.fraction, config.gamma, config.percentile, config.unlearn,
                     config.unlearn_weight, config.every, config.at)  # fmt: skip


def register(registry: dict) -> None:
    registry["isolation"] = _build
