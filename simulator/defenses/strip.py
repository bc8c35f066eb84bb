"""STRIP (Gao et al. 2019): runtime detection of triggered inputs by superimposition.

Each input is superimposed on ``overlays`` (N) random clean inputs the
defender holds; a backdoored model keeps calling a triggered input's overlays
the target class, so the mean entropy of their predictions stays low. An
input is flagged when that entropy falls below a threshold calibrated on
clean inputs for a target false rejection rate (``frr``).

All overlays of a batch go through the net in one forward pass
(:func:`strip_entropy`); :func:`strip_entropy_loop` is the per-input loop of
the reference code, kept for the benchmark and as a check.

>>> import numpy as np
>>> overlay = superimpose(np.array([[0.2, 1.0]]), np.array([[0.6, 0.5]]), "additive")
>>> overlay.tolist()
[[[0.800000011920929, 1.0]]]
"""

from __future__ import annotations

import numpy as np
import torch

from simulator.config import DefenseConfig
from simulator.defenses.base import DefenderKnowledge, Defense
from simulator.events import EventBatch

CALIBRATION_SHARE = 0.5  # of the trusted sample: the rest are the overlays
FORWARD_ROWS = 65_536  # overlay rows per forward pass (memory bound)


def superimpose(x: np.ndarray, backgrounds: np.ndarray, how: str) -> np.ndarray:
    """Overlays of each input on its backgrounds: ``(m, d)`` and ``(m, N, d)`` or ``(N, d)`` -> ``(m, N, d)``.

    ``blend`` averages the two images; ``additive`` adds them and clips at the
    brightest value (the reference code's ``addWeighted(bg, 1, x, 1, 0)`` on
    saturating pixels, for features in [0, 1]).
    """
    x = np.asarray(x, dtype=np.float32)[:, None, :]
    backgrounds = np.asarray(backgrounds, dtype=np.float32)
    if how == "blend":
        return 0.5 * x + 0.5 * backgrounds
    if how == "additive":
        return np.minimum(x + backgrounds, np.float32(1.0))
    raise ValueError(f'superimpose: expected "blend" or "additive", got {how!r}')


def _entropy(proba: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits) of each row of class probabilities."""
    return -(proba * torch.log2(proba.clamp_min(1e-12))).sum(dim=-1)


def strip_entropy(model, x: np.ndarray, backgrounds: np.ndarray, how: str) -> np.ndarray:
    """Mean prediction entropy over each input's overlays, all inputs batched.

    ``backgrounds`` is ``(m, N, d)``: input i is superimposed on ``backgrounds[i]``.
    """
    m, n = len(x), backgrounds.shape[1]
    if m == 0:
        return np.empty(0)
    rows = superimpose(x, backgrounds, how).reshape(m * n, -1)
    net, device = model.net, model.device_
    net.eval()
    with torch.no_grad():
        parts = [_entropy(torch.softmax(net(torch.as_tensor(rows[i : i + FORWARD_ROWS], device=device)), dim=1))
                 for i in range(0, len(rows), FORWARD_ROWS)]  # fmt: skip
    return torch.cat(parts).reshape(m, n).mean(dim=1).cpu().numpy().astype(np.float64)


def strip_entropy_loop(model, x: np.ndarray, backgrounds: np.ndarray, how: str) -> np.ndarray:
    """The same figure one input at a time, overlays built one by one (the reference code's loop)."""
    out = np.empty(len(x))
    for i, xi in enumerate(np.asarray(x, dtype=np.float32)):
        overlays = np.stack([superimpose(xi[None, :], bg[None, :], how)[0, 0] for bg in backgrounds[i]])
        proba = model.predict_proba_many(overlays)
        out[i] = float(-(proba * np.log2(np.clip(proba, 1e-12, None))).sum(axis=1).mean())
    return out


class Strip(Defense):
    """Flag (or drop, ``mode = "drop"``) inputs whose overlays' mean entropy is below the calibrated threshold.

    The threshold is recalibrated on the defender's clean calibration inputs
    every ``every`` stream events, since the online model keeps changing.
    """

    def __init__(self, overlays: int = 16, superimpose: str = "blend", frr: float = 0.01, mode: str = "flag",
                 every: int = 500):  # fmt: skip
        self.overlays = overlays
        self.superimpose = superimpose
        self.frr = frr
        self.mode = mode
        self.every = every
        if mode not in ("flag", "drop"):
            raise ValueError(f'mode: expected "flag" or "drop", got {mode!r}')
        if superimpose not in ("blend", "additive"):
            raise ValueError(f'superimpose: expected "blend" or "additive", got {superimpose!r}')
        self.drops = mode == "drop"

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> Strip:
        if not hasattr(model, "net"):
            raise ValueError("defense.kind: strip needs a neural model (model.kind = mlp or cnn)")
        order = rng.permutation(len(knowledge.clean_x))
        cut = int(len(order) * CALIBRATION_SHARE)
        self.calibration_x_ = knowledge.clean_x[order[:cut]].astype(np.float32)
        self.pool_x_ = knowledge.clean_x[order[cut:]].astype(np.float32)
        stream_seed, flag_seed = rng.spawn(2)
        self._stream_rng, self._flag_seed = stream_seed, int(flag_seed.integers(2**63))
        self.calibrations_ = 0
        self._next_calibration = self.every
        self.calibrate(model)
        return self

    def backgrounds(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """N clean overlay inputs for each of ``m`` inputs, drawn without replacement per input."""
        pool = len(self.pool_x_)
        picks = np.argsort(rng.random((m, pool)), axis=1)[:, : self.overlays] if self.overlays <= pool \
            else rng.integers(0, pool, size=(m, self.overlays))  # fmt: skip
        return self.pool_x_[picks]

    def score(self, X: np.ndarray, model, rng: np.random.Generator | None = None) -> np.ndarray:
        """Mean overlay entropy of each input (low: likely triggered)."""
        rng = rng or np.random.default_rng(self._flag_seed)
        X = np.asarray(X, dtype=np.float32)
        return strip_entropy(model, X, self.backgrounds(len(X), rng), self.superimpose)

    def calibrate(self, model) -> float:
        """Threshold = the ``frr`` quantile of the clean calibration inputs' entropies."""
        entropies = self.score(self.calibration_x_, model, np.random.default_rng(self._flag_seed + 1))
        self.threshold_ = float(np.quantile(entropies, self.frr))
        self.calibrations_ += 1
        return self.threshold_

    def flag(self, X: np.ndarray, model) -> np.ndarray:
        """Runtime verdicts on held-out inputs (the evaluator's FAR / FRR); draws do not touch the stream's."""
        return self.score(X, model) < self.threshold_

    def inspect(self, batch: EventBatch, model) -> np.ndarray:
        return self.score(batch.x, model, self._stream_rng) < self.threshold_

    def update(self, batch, predictions, slots, model, position: int) -> None:
        if position >= self._next_calibration:
            self.calibrate(model)
            self._next_calibration = (position // self.every + 1) * self.every

    def report(self) -> dict:
        return {"threshold": self.threshold_, "overlays": self.overlays, "calibrations": self.calibrations_}


def _build(config: DefenseConfig) -> Strip:
    return Strip(config.overlays, config.superimpose, config.frr, config.mode, config.every)


def register(registry: dict) -> None:
    registry["strip"] = _build
