"""Training-time isolation and anti-backdoor unlearning (after Li et al. 2021, ABL) for the online net.

Each event gets a suspicion score right after the net has taken its step on
it (``score``):

- ``loss`` (ABL's own signal): backdoor samples are learned faster than clean
  ones, so a low loss is suspect (suspicion = -log loss). It holds for a net
  trained from scratch on a hard task; a pre-trained net learning easy digits
  online fits clean events as fast (see docs/defenses.md, measured precision).
- ``gain``: how much better the live net fits the event than a reference net
  trained on half of the defender's own clean sample (reference loss - live
  loss; the other half calibrates the percentile rule).
  An event the stream taught the net, but clean data would not, is suspect:
  a dirty-label backdoor event carries a label its image does not support.
  A clean-label attack gives no gain; this score does not see it.

Where to cut is an open question, so several rules judge the same scores:

- ``fraction``: the top ``fraction`` of the recent scores (a rolling quantile);
- ``threshold``: loss below ``gamma``, the net training with flooding at gamma
  (ABL's local gradient ascent); with ``gain``: gain above ``gamma`` nats;
- ``percentile``: above the ``100 - percentile``-th percentile of the scores of
  trusted clean samples the reference never saw (recomputed every ``every``);
- ``mixture``: a two-component Gaussian mixture on the recent scores (gain:
  on ``log(1 + max(gain, 0))``); flagged when the high component is the more
  likely.

The configured rule's verdicts are the defense's flags; every rule's
verdicts are scored apart by the evaluator (``isolation/<rule>``), so each
rule's precision and recall sit side by side. With ``unlearn = true``, at
event ``at`` (default: the stream's end) the net takes gradient ascent
steps on the isolated events (``-lambda * L``, capped) while fine-tuning on
the recent events not isolated and the defender's clean sample. With
``unlearn_every = K`` it also does so every K events while the stream runs,
and isolation goes on: an isolated event stays in the served net at most K
events, not to the end of the stream.

>>> import numpy as np
>>> z = np.r_[np.full(50, 6.0), np.full(950, 1.0)] + np.random.default_rng(0).normal(0, 0.3, 1000)
>>> high = mixture_high(z)
>>> bool(high[:50].all()), int(high[50:].sum())
(True, 0)
"""

from __future__ import annotations

from collections import deque
from typing import Annotated

import numpy as np

from poisonsim.defenses.base import At, DefenderKnowledge, Defense, Every, event_to_act_at, require
from poisonsim.events import EventBatch
from poisonsim.lazy import lazy
from poisonsim.registry import DEFENSES, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

RULES = ("fraction", "threshold", "percentile", "mixture")
SCORES = ("loss", "gain")
HISTORY = 2_000  # recent scores the rolling rules cut
MIN_HISTORY = 200  # rolling rules flag nothing before this many scores
KEEP = 4_000  # isolated / kept events remembered for unlearning
REFERENCE_EPOCHS = 30  # the gain score's reference net, on half the trusted sample
UNLEARN_STEPS = 200
UNLEARN_BATCH = 64
UNLEARN_LR = 5e-4
ASCENT_CAP = 6.0  # isolated loss above this gives no more ascent gradient


def mixture_high(z: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Two-Gaussian mixture on ``z`` (scikit-learn's EM, started from its median and 95% quantile with weights
    0.9 / 0.1); True where the higher-mean component is the more likely.

    >>> z = np.r_[np.random.default_rng(0).normal(0, 1, 950), np.random.default_rng(1).normal(8, 1, 50)]
    >>> int(mixture_high(z).sum())
    50
    """
    from sklearn.mixture import GaussianMixture

    z = np.asarray(z, dtype=np.float64).reshape(-1, 1)
    lo, hi = np.quantile(z, [0.5, 0.95])
    mixture = GaussianMixture(
        2, means_init=[[lo], [hi]], weights_init=[0.9, 0.1], max_iter=iterations, reg_covar=1e-4, random_state=0
    ).fit(z)
    return mixture.predict_proba(z)[:, int(np.argmax(mixture.means_[:, 0]))] > 0.5


@DEFENSES.register(
    "isolation",
    requires=("torch-net", "losses"),
    examples=[
        {"every": 100, "rule": "fraction"},
        {"every": 100, "score": "loss", "rule": "percentile", "unlearn": False},
    ],
)
class Isolation(Defense):
    """Flag events the net learned suspiciously well; optionally unlearn them (ABL)."""

    offers = frozenset({"flags-events"})
    extra_flag_names = RULES

    def __init__(
        self,
        rule: Annotated[str, Key("cutoff rule", choices=RULES)] = "mixture",
        score: Annotated[
            str,
            Key(
                "loss (ABL: the net's loss after its step) or gain (a clean reference's loss minus it)", choices=SCORES
            ),
        ] = "gain",
        fraction: Annotated[float, Key("share isolated by the fraction rule", gt=0, lt=1)] = 0.05,
        gamma: Annotated[
            float, Key("threshold gamma (score loss: below it, with flooding as in ABL; gain: above)", gt=0, le=1e6)
        ] = 0.5,
        percentile: Annotated[
            float, Key("share (%) of unseen clean samples scoring above the cutoff", gt=0, lt=100)
        ] = 5.0,
        unlearn: Annotated[bool, Key("gradient ascent on isolated samples, fine-tune on the rest")] = True,
        unlearn_weight: Annotated[float, Key("lambda of the unlearning (ascent) loss", gt=0, le=1e3)] = 1.0,
        every: Every = 500,
        at: At = None,
        unlearn_every: Annotated[
            int,
            Key(
                "events between unlearnings while the stream runs, isolation going on after each (0: once, at `at`)",
                ge=0,
                le=10**9,
            ),
        ] = 0,
    ):
        self.rule = rule
        self.score = score
        self.fraction = fraction
        self.gamma = gamma
        self.percentile = percentile
        self.unlearn = unlearn
        self.unlearn_weight = unlearn_weight
        self.every = every
        self.at = at
        self.unlearn_every = unlearn_every

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> Isolation:
        require(model, "isolation", "losses")
        self.clean_x_, self.clean_y_ = knowledge.clean_x, knowledge.clean_y
        # the reference learns on one half of the trusted sample; the percentile rule calibrates on the other
        self._calibration = (knowledge.clean_x[1::2], knowledge.clean_y[1::2])
        self.at_ = event_to_act_at(self.at, knowledge)
        self._rng = rng
        self.reference_ = self._train_reference(model, knowledge.clean_x[::2], knowledge.clean_y[::2], rng)
        self._history: deque[float] = deque(maxlen=HISTORY)
        self._isolated: deque[tuple[np.ndarray, int]] = deque(maxlen=KEEP)
        self._kept: deque[tuple[np.ndarray, int]] = deque(maxlen=KEEP)
        self._extra: dict[str, np.ndarray] = {}
        self._clean_cut = self._next_clean = 0
        self.unlearned_at_: int | None = None
        self.unlearn_figures_: dict = {}
        self.unlearnings_ = 0
        self._next_unlearn = self.unlearn_every if self.unlearn and self.unlearn_every else None
        if self.rule == "threshold" and self.score == "loss":
            model.set_flooding(self.gamma)
        return self

    def _train_reference(self, model, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> nn.Module | None:
        """A net of the model's architecture trained on clean data only (the ``gain`` score's yardstick)."""
        if self.score != "gain":
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            reference = model.new_net()
        nets.train_offline(reference, x, y, rng, epochs=REFERENCE_EPOCHS)
        return reference.eval()

    def suspicion(self, model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each event's score: higher is more suspect."""
        live = model.losses_many(x, y)
        if self.score == "loss":
            return -np.log(live + 1e-12)
        with torch.no_grad():
            logits = self.reference_(torch.as_tensor(x, dtype=torch.float32, device=model.device_))
            reference = nn.functional.cross_entropy(logits, torch.as_tensor(y, device=model.device_), reduction="none")
        return reference.cpu().numpy().astype(np.float64) - live

    def _verdicts(self, scores: np.ndarray, model, position: int) -> dict[str, np.ndarray]:
        if position >= self._next_clean:  # the clean reference point moves with the net
            clean = self.suspicion(model, *self._calibration)
            self._clean_cut = float(np.percentile(clean, 100 - self.percentile))
            self._next_clean = (position // self.every + 1) * self.every
        history = np.fromiter(self._history, dtype=np.float64)
        warm = len(history) >= MIN_HISTORY
        nothing = np.zeros(len(scores), bool)
        return {
            "threshold": scores > (-np.log(self.gamma) if self.score == "loss" else self.gamma),
            "percentile": scores > self._clean_cut,
            "fraction": scores > np.quantile(history, 1 - self.fraction) if warm else nothing,
            "mixture": mixture_high(self._spread(np.r_[history, scores]))[len(history) :] if warm else nothing,
        }

    def _spread(self, scores: np.ndarray) -> np.ndarray:
        """What the mixture is fitted on: only a positive gain is evidence, on a log scale."""
        return scores if self.score == "loss" else np.log1p(np.maximum(scores, 0.0))

    def update(self, batch: EventBatch, predictions, slots, model, position: int) -> np.ndarray | None:
        if self.unlearned_at_ is not None or len(batch) == 0:
            self._extra = {rule: np.zeros(len(batch), bool) for rule in RULES}
            return None
        scores = self.suspicion(model, batch.x, batch.y)  # after the net's step(s) on these events
        self._extra = self._verdicts(scores, model, position)
        self._history.extend(scores.tolist())
        flagged = self._extra[self.rule]
        for x, y, is_flagged in zip(batch.x, batch.y, flagged):
            (self._isolated if is_flagged else self._kept).append((x, int(y)))
        if self.unlearn and self.at_ is not None and position >= self.at_:
            self._unlearn(model, position)
            self.unlearned_at_ = position  # the last one: isolation stops
            model.set_flooding(None)
        elif self._next_unlearn is not None and position >= self._next_unlearn:
            self._unlearn(model, position)
            self._next_unlearn = (position // self.unlearn_every + 1) * self.unlearn_every
        return flagged

    def extra_flags(self) -> dict[str, np.ndarray]:
        """Every rule's verdicts on the last batch (scored apart by the evaluator)."""
        return self._extra

    def _unlearn(self, model, position: int) -> None:
        """ABL's unlearning: ascend the isolated events' loss, descend the kept events' (one optimiser)."""
        if not self._isolated:
            self.unlearn_figures_ = {"unlearn_steps": 0}
            return
        self.unlearnings_ += 1
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
        self.unlearn_figures_ = {
            "unlearn_steps": UNLEARN_STEPS,
            "unlearned_events": len(iy),
            "fine_tuned_events": len(ky),
        }

    def get_state(self) -> dict:
        d = self.clean_x_.shape[1]  # an empty buffer keeps its width
        pairs = lambda events: (
            np.array([x for x, _ in events], dtype=np.float32).reshape(len(events), d),
            np.array([y for _, y in events], dtype=np.int64),
        )
        (iso_x, iso_y), (keep_x, keep_y) = pairs(self._isolated), pairs(self._kept)
        return {
            "history": np.fromiter(self._history, dtype=np.float64),
            "isolated_x": iso_x,
            "isolated_y": iso_y,
            "kept_x": keep_x,
            "kept_y": keep_y,
            "clean_cut": self._clean_cut,
            "next_clean": self._next_clean,
            "unlearned_at": self.unlearned_at_,
            "unlearn_figures": dict(self.unlearn_figures_),
            "unlearnings": self.unlearnings_,
            "next_unlearn": self._next_unlearn,
            "rng": self._rng.bit_generator.state,
        }

    def set_state(self, state: dict, model) -> None:
        self._history = deque(np.asarray(state["history"]).tolist(), maxlen=HISTORY)
        self._isolated = deque(zip(state["isolated_x"], state["isolated_y"].tolist()), maxlen=KEEP)
        self._kept = deque(zip(state["kept_x"], state["kept_y"].tolist()), maxlen=KEEP)
        self._clean_cut, self._next_clean = state["clean_cut"], state["next_clean"]
        self.unlearned_at_, self.unlearn_figures_ = state["unlearned_at"], dict(state["unlearn_figures"])
        self.unlearnings_, self._next_unlearn = state["unlearnings"], state["next_unlearn"]
        self._rng.bit_generator.state = state["rng"]
        if self.unlearned_at_ is not None:
            model.set_flooding(None)

    def report(self) -> dict:
        return {
            "rule": self.rule,
            "score": self.score,
            "isolated_events": len(self._isolated),
            "unlearned_at": self.unlearned_at_,
            "unlearnings": self.unlearnings_,
            **self.unlearn_figures_,
        }
