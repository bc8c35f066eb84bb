"""STRIP (Gao et al. 2019): runtime detection of triggered inputs by superimposition.

Each input is superimposed on ``overlays`` (N) random clean inputs the
defender holds; a backdoored model keeps calling a triggered input's overlays
the target class, so the mean entropy of their predictions stays low. An
input is flagged when that entropy falls below a threshold calibrated on
clean inputs for a target false rejection rate (``frr``).

Clean inputs of some classes keep their own prediction under overlays (on
MNIST, an 8 added to another digit still reads as an 8), so their entropy is
naturally low, and with one pooled threshold they set it for every class: a
trigger whose overlays stay in the target class with less confidence than
those 8s passes. ``scale = "per-class"`` judges each input against clean
inputs predicted as the same class: its log entropy standardised by their
median and MAD, then one threshold on the standardised scores, calibrated as
the pooled one. It fails the other way when the backdoor itself makes the
target class keep its overlays (see docs/mnist.md for both, over target classes
and seeds). ``scale = "union"`` judges each input on both scales and on a
third score, and flags it when any of the three is in its calibrated tail.
``layers`` stacks that many trusted inputs into each overlay's
background: a clean input's own shape drowns (even an 8's), a saturated
trigger patch where digits have little ink stays. ``robust`` estimates
robustly: each input's entropy is the median over its overlays (a handful
of unsure overlays cannot pull a triggered input's up), and each class's
spread is shrunk towards the pooled one
(:func:`class_scales`: a few dozen calibration scores of a sure class can
have a MAD near 0, which would make a hair's difference a far outlier).

On a stream the net learns between calibrations, and a threshold taken on
one net and applied to a later one goes stale: clean entropies fall as the
net grows surer, and for a while most clean inputs are flagged (or, the other
way, triggered ones pass). ``judge = "snapshot"`` judges every input with the
very net the threshold was calibrated on (:class:`Snapshot`), and a new one
takes over only once it is calibrated: the clean scores stay exchangeable
with the calibration sample, so the FRR bound holds by construction between
calibrations. ``judge = "live"`` (the paper's, where one net is both) judges
with the served net as it is; ``check`` then watches for a stale threshold.
A snapshot still lets through what comes while the backdoor is half learned:
the served net already sends some triggered inputs to the target, but their
overlays do not yet stay there. ``judge = "ahead"`` takes the snapshot and
trains it further, ``ahead_epochs`` passes over the last ``ahead_events``
stream events (what the served net learns, labels and all; never which event
is poison) with the served model's optimiser state, before it is calibrated:
the judge learns the backdoor from the same poison sooner than the served
net, so a half-learned trigger is already a sure one to it, and the FRR
bound holds as for a snapshot. The Kafka judge
role, which sees snapshots and not the stream, judges with the snapshot.

All overlays of a batch are judged together (:func:`strip_entropy`: the net
runs in cache-sized chunks, our CNN as :func:`channels_last_logits`);
:func:`strip_entropy_loop` is the per-input loop of the reference code, kept
for the benchmark and as a check.

>>> import numpy as np
>>> overlay = superimpose(np.array([[0.2, 1.0]]), np.array([[0.6, 0.5]]), "additive")
>>> overlay.tolist()
[[[0.800000011920929, 1.0]]]
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Iterator

import numpy as np

from poisonsim.defenses.base import DefenderKnowledge, Defense, Every, median_mad, require
from poisonsim.defenses.pruning import unit_mask, unprune
from poisonsim.events import EventBatch
from poisonsim.lazy import lazy
from poisonsim.registry import DEFENSES, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

CALIBRATION_DRAWS = 2  # overlay sets per trusted input at calibration: less overlay luck in the threshold
CPU_FORWARD_ROWS = 256  # overlay rows per forward pass and CPU thread: the activations stay in cache
DEVICE_FORWARD_ROWS = 65_536  # on an accelerator (memory bound)
SCALES = ("pooled", "per-class", "union")
MIN_CLASS_SCORES = 10  # calibration scores a class needs for a scale of its own (else the pooled one)
SPREAD_SHRINK = 0.25  # weight of the pooled variance in each class's when robust (class_scales)
LOG_FLOOR = 1e-3  # bits added before the log: entropies near 0 stay finite
BACKGROUND_BYTES = 32 * 2**20  # backgrounds built at once (a block of inputs): memory stays flat in the batch size
CHECK_INPUTS = 256  # trusted inputs re-scored at each check of the FRR between calibrations
CHECK_LEVEL = 0.01  # a check recalibrates when so many are flagged that an FRR of frr would do so this rarely
JUDGES = ("live", "snapshot", "ahead")


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


def binomial_cdf(n: int, p: float) -> Iterator[float]:
    """P(Binomial(n, p) <= k) for k = 0, 1, ..., n - 1, one term at a time (the pmf by its recurrence).

    >>> [round(v, 4) for v in binomial_cdf(3, 0.5)]
    [0.125, 0.5, 0.875]
    """
    log_pmf, below = n * math.log1p(-p), 0.0  # log P(Binomial(n, p) = k), P(Binomial(n, p) <= k)
    for k in range(n):
        below += math.exp(log_pmf)
        yield below
        log_pmf += math.log((n - k) / (k + 1) * p / (1 - p))


def order_statistic(n: int, frr: float, confidence: float) -> int:
    """The largest k such that the k-th smallest of n clean scores, as threshold, keeps the false rejection rate
    under ``frr`` with probability ``confidence`` (0: no k does).

    Inputs strictly below the k-th smallest of n exchangeable scores make up a
    Beta(k, n + 1 - k) share of their distribution, so P(FRR > frr) =
    P(Binomial(n, frr) < k); a plain ``frr`` quantile (k ~ n * frr) exceeds
    ``frr`` about half the time.

    >>> order_statistic(1000, 0.01, 0.9), order_statistic(1000, 0.01, 0.5), order_statistic(100, 0.01, 0.9)
    (6, 10, 0)
    """
    return next((k for k, below in enumerate(binomial_cdf(n, frr)) if below > 1 - confidence), n)


def too_many(flagged: int, m: int, frr: float, level: float = CHECK_LEVEL) -> bool:
    """Whether ``flagged`` of ``m`` clean inputs is more than an FRR of ``frr`` gives with probability ``level``:
    P(Binomial(m, frr) >= flagged) < level.

    >>> [k for k in range(12) if too_many(k, 256, 0.01)][:2]  # 2.6 expected; 8 or more: P = 0.005
    [8, 9]
    """
    below = [0.0, *binomial_cdf(m, frr)][flagged]  # P(Binomial(m, frr) < flagged)
    return 1 - below < level


def class_scales(
    entropies: np.ndarray, classes: np.ndarray, n_classes: int, shrink: float = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD (as a standard deviation) of the log entropy of each predicted class, the pooled ones for a
    class with fewer than ``MIN_CLASS_SCORES`` scores. With ``shrink`` each class's variance is that share of the
    pooled one plus the rest of its own: never near 0, and the same whatever the sample's size (the threshold is
    taken on halves of the trusted sample, new inputs are judged by the whole).

    >>> entropies, classes = np.r_[np.full(10, 0.1), np.full(10, 1.0)], np.repeat([0, 1], 10)
    >>> center, spread = class_scales(entropies, classes, n_classes=3)  # class 2 has no scores: the pooled ones
    >>> np.round(np.exp(center) - LOG_FLOOR, 3).tolist()
    [0.1, 1.0, 0.317]
    >>> spread[:2].tolist()  # no spread of their own: a hair's difference would be an outlier
    [1e-06, 1e-06]
    >>> center, spread = class_scales(entropies, classes, n_classes=3, shrink=0.25)
    >>> np.round(spread / spread[2], 2).tolist()  # shrunk: half the pooled one
    [0.5, 0.5, 1.0]
    """
    logs = np.log(np.asarray(entropies) + LOG_FLOOR)
    pooled = median_mad(logs)
    center, spread = np.full(n_classes, pooled[0]), np.full(n_classes, pooled[1])
    for c in range(n_classes):
        own = logs[classes == c]
        if len(own) >= MIN_CLASS_SCORES:
            center[c], mad = median_mad(own)
            spread[c] = np.sqrt((1 - shrink) * mad**2 + shrink * pooled[1] ** 2)
    return center, np.maximum(spread, 1e-6)


def standardised(entropies: np.ndarray, classes: np.ndarray, center: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Log entropies standardised by the scales (:func:`class_scales`) of each input's predicted class."""
    return (np.log(entropies + LOG_FLOOR) - center[classes]) / spread[classes]


def tail_share(references: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of the sorted ``references`` at or below each score: how deep in the calibration sample's low tail.

    >>> tail_share(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 2.0, 9.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    return np.searchsorted(references, scores, side="right") / len(references)


def _entropy(proba: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (bits) of each row of class probabilities."""
    return -(proba * torch.log2(proba.clamp_min(1e-12))).sum(dim=-1)


def forward_rows(device: torch.device) -> int:
    """Overlay rows per forward pass: cache-sized on the CPU (per thread), large on an accelerator."""
    return CPU_FORWARD_ROWS * torch.get_num_threads() if device.type == "cpu" else DEVICE_FORWARD_ROWS


def strip_entropy(
    model, x: np.ndarray, backgrounds: np.ndarray, how: str, own_share: bool = False, median: bool = False
) -> np.ndarray:
    """Mean (``median``: median) prediction entropy over each input's overlays, all inputs batched.

    ``backgrounds`` is ``(m, N, d)``: input i is superimposed on ``backgrounds[i]``.
    Overlays go through the net in cache-sized chunks; our CNN runs as
    :func:`channels_last_logits`. With ``own_share`` the result is ``(m, 2)``:
    the entropy, and the share of the overlays' probability that leaves the
    input's own prediction (1 - the mean probability they give that class).
    """
    m, n = len(x), backgrounds.shape[1]
    out = np.empty((m, 2) if own_share else m)
    if m == 0:
        return out
    net, device = model.net, model.device_
    net.eval()
    step = max(1, forward_rows(device) // n)  # inputs per forward pass
    x = np.asarray(x, dtype=np.float32)
    with torch.inference_mode():
        forward = channels_last_logits(net) or net
        for i in range(0, m, step):
            rows = torch.as_tensor(superimpose(x[i : i + step], backgrounds[i : i + step], how), device=device)
            proba = torch.softmax(forward(rows.reshape(-1, x.shape[1])), dim=1)
            entropies = _entropy(proba).reshape(-1, n)
            entropy = entropies.quantile(0.5, dim=1) if median else entropies.mean(dim=1)
            if not own_share:
                out[i : i + step] = entropy.cpu().numpy()
                continue
            own = forward(torch.as_tensor(x[i : i + step], device=device)).argmax(dim=1)
            kept = proba.reshape(len(own), n, -1)[torch.arange(len(own)), :, own].mean(dim=1)  # (inputs, overlays)
            out[i : i + step] = torch.stack([entropy, 1 - kept], dim=1).cpu().numpy()
    return out


def channels_last_logits(net):
    """Our CNN's logits for many small images, or ``None`` for any other net.

    The same function as ``net(x)`` (up to float rounding), laid out for
    inference: channels-last convolutions, max-pool before the ReLU (they
    commute), pooling by reshapes, and the hidden layer's weights permuted to
    the channels-last order, so no activation is copied between layers. A net
    with hooks (fine-pruning's unit masks) or its own ``forward`` gets ``None``.

    >>> from poisonsim.models.nets import build_net
    >>> net = build_net("cnn", n_features=64, n_classes=10, hidden=32, image_side=8).eval()
    >>> x = torch.rand(5, 64)
    >>> bool(torch.allclose(channels_last_logits(net)(x), net(x), atol=1e-5))
    True
    >>> handle = net.features[6].register_forward_pre_hook(lambda layer, args: (args[0] * 0,))
    >>> channels_last_logits(net) is None
    True
    """
    if (
        type(net) is not nets.CNN
        or "forward" in vars(net)
        or any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    ):
        return None  # a supplied module, or a hook: their own code runs
    layers = list(net.features)
    kinds = [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear, nn.ReLU]
    if [type(layer) for layer in layers] != kinds or net.image_side % 2:
        return None
    conv1, _, conv2, _, pool, _, hidden, _ = layers
    same_size = ((3, 3), (1, 1), (1, 1), (1, 1), 1)  # kernel, stride, padding, dilation, groups
    keep_size = all((c.kernel_size, c.stride, c.padding, c.dilation, c.groups) == same_size for c in (conv1, conv2))
    halves = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode) == (2, 2, 0, 1, False)
    if not (keep_size and halves):
        return None
    side, channels = net.image_side, conv2.out_channels
    half = side // 2
    w1, w2 = (conv.weight.contiguous(memory_format=torch.channels_last) for conv in (conv1, conv2))
    w3 = hidden.weight.reshape(-1, channels, half, half).permute(0, 2, 3, 1).reshape(hidden.out_features, -1).t()
    w3 = w3.contiguous()

    def logits(x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        image = x.contiguous().as_strided((b, 1, side, side), (side * side, 1, side, 1))  # channels last
        h = nn.functional.conv2d(image, w1, conv1.bias, padding=1).relu_()
        h = nn.functional.conv2d(h, w2, conv2.bias, padding=1).permute(0, 2, 3, 1)  # (b, side, side, channels)
        h = h.reshape(b, half, 2, half, 2 * channels)  # rows in pairs; a column pair's channels side by side
        h = torch.maximum(h[:, :, 0], h[:, :, 1])
        h = torch.maximum(h[..., :channels], h[..., channels:]).relu_()
        h = torch.addmm(hidden.bias, h.reshape(b, -1), w3).relu_()
        return net.head(h)

    return logits


class Snapshot:
    """The net as it stood when STRIP calibrated on it (``judge = "snapshot"``): it judges inputs until the next
    calibration, whatever the served net learns meanwhile.

    >>> from poisonsim.models.neural import NeuralClassifier
    >>> model = NeuralClassifier(n_classes=3, n_features=4, hidden=8, batch_size=16, lr=0.5, device="cpu")
    >>> snapshot = Snapshot(model)
    >>> x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    >>> model.learn_many(x, np.full(64, 2))  # the served net learns that everything is a 2
    >>> model.predict_many(x[:5]).tolist(), bool((snapshot.predict_many(x) == 2).all())
    ([2, 2, 2, 2, 2], False)
    """

    def __init__(self, model):
        self.net = copy.deepcopy(model.net).eval()  # unit masks (fine-pruning's plain attributes) come along
        self.device_ = model.device_
        for weight in self.net.parameters():
            weight.requires_grad_(False)

    def learn_ahead(self, model, X: np.ndarray, Y: np.ndarray, epochs: int, rng: np.random.Generator) -> None:
        """Train the snapshot further on ``(X, Y)``, ``epochs`` shuffled passes in the served model's mini-batches
        with the served model's optimiser as it stands (``judge = "ahead"``): what the stream teaches, learned
        sooner."""
        for weight in self.net.parameters():
            weight.requires_grad_(True)
        optimizer = model.continued_optimizer(self.net)
        nets.train_offline(self.net, X, Y, rng, epochs, model.batch_size, optimizer=optimizer, keep_last=True)
        self.net.eval()
        for weight in self.net.parameters():
            weight.requires_grad_(False)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Predicted classes of the snapshot's net."""
        rows = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self.device_)
        with torch.inference_mode():
            parts = [
                self.net(rows[i : i + CPU_FORWARD_ROWS]).argmax(dim=1).cpu().numpy()
                for i in range(0, len(rows), CPU_FORWARD_ROWS)
            ]
        return np.concatenate(parts) if parts else np.empty(0, np.int64)

    def get_state(self) -> dict:
        """Weights, and the unit masks of the modules that carry one then."""
        masks = {name: unit_mask(module) for name, module in self.net.named_modules()}
        return {
            "weights": {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()},
            "masks": {name: mask.cpu().numpy().copy() for name, mask in masks.items() if mask is not None},
        }

    @classmethod
    def restored(cls, model, state: dict) -> Snapshot:
        """The snapshot of ``state`` on a copy of ``model``'s net, whose unit masks (pruning only ever adds to
        them) are set back to what they were then, or taken off where there were none."""
        snapshot = cls(model)
        snapshot.net.load_state_dict({k: torch.as_tensor(v) for k, v in state["weights"].items()})
        for name, module in snapshot.net.named_modules():
            mask = unit_mask(module)
            if mask is not None and name in state["masks"]:
                mask.copy_(torch.as_tensor(state["masks"][name]))
            elif mask is not None:
                unprune(module)
        return snapshot


def strip_entropy_loop(model, x: np.ndarray, backgrounds: np.ndarray, how: str) -> np.ndarray:
    """The same figure one input at a time, overlays built one by one (the reference code's loop)."""
    out = np.empty(len(x))
    for i, xi in enumerate(np.asarray(x, dtype=np.float32)):
        overlays = np.stack([superimpose(xi[None, :], bg[None, :], how)[0, 0] for bg in backgrounds[i]])
        proba = model.predict_proba_many(overlays)
        out[i] = float(-(proba * np.log2(np.clip(proba, 1e-12, None))).sum(axis=1).mean())
    return out


@DEFENSES.register(
    "strip",
    requires=("torch-net",),
    examples=[
        {"overlays": 4, "every": 100},
        {"overlays": 4, "superimpose": "additive", "mode": "drop", "every": 100},
        {"overlays": 4, "scale": "per-class", "every": 100},
        {"overlays": 4, "layers": 2, "every": 100},
        {"overlays": 4, "scale": "union", "layers": 2, "every": 100},
        {"overlays": 4, "scale": "union", "layers": 2, "robust": True, "every": 100},
        {"overlays": 4, "every": 200, "check": 50},
        {"overlays": 4, "every": 200, "judge": "snapshot"},
        {"overlays": 4, "scale": "union", "every": 200, "judge": "ahead", "ahead_events": 300, "ahead_epochs": 1},
    ],
)
class Strip(Defense):
    """Flag (or drop, ``mode = "drop"``) inputs whose overlays' mean entropy is below the calibrated threshold.

    Overlays are drawn from the defender's whole trusted sample. Calibration
    cross-fits: each half of the sample is overlaid on the other half only (an
    input never meets itself), ``CALIBRATION_DRAWS`` overlay sets per input,
    and the threshold is the order statistic that keeps the FRR under ``frr``
    with probability ``confidence`` (:func:`order_statistic`; 0.5 is the
    paper's rule, the ``frr`` quantile, FRR near ``frr`` on average). It
    is recalibrated every ``every`` stream events, as the online model changes,
    and with ``check`` also between: every ``check`` events ``CHECK_INPUTS``
    trusted inputs are re-scored on the current net, and too many of them
    flagged for an FRR of ``frr`` (:func:`too_many`) recalibrates at once. The
    check watches the net, not the stream, so the attacker's rate cannot
    trigger it. With ``judge = "snapshot"`` inputs are judged by the net the
    threshold was calibrated on (:class:`Snapshot`), and the check asks
    whether the served net has drifted from it far enough to take a new one;
    with ``judge = "ahead"`` by that net trained further on the recent stream
    (:meth:`Snapshot.learn_ahead`).
    With ``scale = "per-class"`` each half's scores are standardised by the
    other half's class scales (:func:`class_scales`) before the threshold is
    taken; inputs met later, by the scales of the whole sample.

    ``scale = "union"`` judges each input three ways: its entropy on the
    pooled scale, its log entropy on its class's scale, and on its class's
    scale the log of the share of its overlays' probability that leaves its
    own prediction (:func:`strip_entropy` with ``own_share``). Each way fails
    where another holds: the pooled one when clean inputs of another class
    keep their overlays, the per-class ones when the target class itself
    does, or when the trigger makes overlays sure of the target without
    making them low in entropy. An input's score is its lowest
    :func:`tail_share` among the three calibration samples, and the threshold
    is the order statistic of those scores, so the three tails together keep
    the FRR bound. ``robust`` (see the module) changes the estimates, not
    the rules: the median entropy, shrunk class spreads.
    """

    offers = frozenset({"judges-inputs", "flags-events"})

    def __init__(
        self,
        overlays: Annotated[int, Key("clean inputs each input is superimposed on (N)", ge=1, le=1024)] = 16,
        superimpose: Annotated[str, Key("how inputs are superimposed", choices=("blend", "additive"))] = "blend",
        frr: Annotated[float, Key("false rejection rate the threshold is calibrated for", gt=0, lt=1)] = 0.01,
        mode: Annotated[str, Key("flag inputs only, or drop them before the model", choices=("flag", "drop"))] = "flag",
        every: Every = 500,
        scale: Annotated[
            str,
            Key(
                "the threshold's scale: the entropy of all clean inputs (pooled, the paper's), "
                "log entropy standardised per predicted class (per-class), or the lowest tail "
                "share of three scores (union; see the class)",
                choices=SCALES,
            ),
        ] = "pooled",
        layers: Annotated[
            int,
            Key(
                "clean inputs stacked into each overlay's background (1: the paper's; more "
                "drown an input's own shape, a saturated trigger patch stays)",
                ge=1,
                le=8,
            ),
        ] = 1,
        confidence: Annotated[
            float,
            Key(
                "probability that the false rejection rate stays under frr (0.5: the frr "
                "quantile of clean scores, the paper's)",
                ge=0.5,
                lt=1,
            ),
        ] = 0.9,
        check: Annotated[
            int,
            Key(
                "events between checks of the FRR on the current net, which recalibrate when "
                "too many trusted inputs are flagged (0: the schedule alone)",
                ge=0,
                le=10**9,
            ),
        ] = 0,
        robust: Annotated[
            bool,
            Key(
                "median entropy over an input's overlays, class spreads shrunk towards the "
                "pooled one (false: the mean, as in the paper, and each class's own MAD)"
            ),
        ] = False,
        judge: Annotated[
            str,
            Key(
                "the net that judges inputs: the served one as it is (live, the paper's), or the "
                "one the threshold was calibrated on until the next calibration (snapshot: the "
                "FRR bound holds between calibrations), or that one trained further on the recent stream "
                "(ahead: a backdoor the served net half knows, the judge knows)",
                choices=JUDGES,
            ),
        ] = "live",
        ahead_events: Annotated[
            int, Key("recent stream events the ahead judge learns again at each calibration", ge=1, le=10**6)
        ] = 2000,
        ahead_epochs: Annotated[int, Key("passes of the ahead judge over them", ge=1, le=100)] = 3,
    ):
        self.scale = scale
        self.layers = layers
        self.confidence = confidence
        self.overlays = overlays
        self.superimpose = superimpose
        self.frr = frr
        self.mode = mode
        self.every = every
        self.check = check
        self.robust = robust
        self.judge = judge
        self.ahead_events, self.ahead_epochs = ahead_events, ahead_epochs
        self.drops = mode == "drop"

    def fit(self, knowledge: DefenderKnowledge, model, rng: np.random.Generator) -> Strip:
        require(model, "strip", "torch-net")
        self.pool_x_ = knowledge.clean_x[rng.permutation(len(knowledge.clean_x))].astype(np.float32)
        self.n_classes_ = knowledge.n_classes
        self.rank_ = order_statistic(len(self.pool_x_), self.frr, self.confidence)
        if self.rank_ == 0:
            raise ValueError(
                f"frr: {len(self.pool_x_)} trusted clean inputs cannot bound a false rejection rate "
                f"of {self.frr} with {self.confidence:.0%} confidence; raise frr or lower "
                f"confidence"
            )
        if self.judge == "ahead":  # the recent stream events, a ring
            self.recent_x_ = np.zeros((self.ahead_events, self.pool_x_.shape[1]), dtype=np.float32)
            self.recent_y_, self.recent_seen_ = np.zeros(self.ahead_events, dtype=np.int64), 0
        stream_seed, flag_seed = rng.spawn(2)
        self._stream_rng, self._flag_seed = stream_seed, int(flag_seed.integers(2**63))
        self.calibrations_ = self.checks_ = self.check_recalibrations_ = 0
        self._next_calibration = self.every
        self._next_check = self.check
        self.calibrate(model)
        return self

    def picks(self, m: int, pool: int, rng: np.random.Generator) -> np.ndarray:
        """``(m, N * layers)`` indices into a pool of ``pool`` inputs, without replacement per row (if they fit)."""
        count = self.overlays * self.layers
        if count > pool:
            return rng.integers(0, pool, size=(m, count))
        return np.argpartition(rng.random((m, pool)), count - 1, axis=1)[:, :count]

    def backgrounds(self, picks: np.ndarray) -> np.ndarray:
        """``(m, N, d)`` backgrounds from :meth:`picks`: each the sum (``additive``; the overlay is clipped) or
        the mean (``blend``) of ``layers`` trusted inputs."""
        picks = picks.reshape(len(picks), self.overlays, self.layers)
        out = self.pool_x_[picks[:, :, 0]]
        for layer in range(1, self.layers):  # one layer at a time: no (m, N, layers, d) array
            out += self.pool_x_[picks[:, :, layer]]
        if self.superimpose == "blend":
            out /= np.float32(self.layers)
        return out

    def score(self, X: np.ndarray, model, rng: np.random.Generator | None = None) -> np.ndarray:
        """Each input's score, low: likely triggered (pooled: mean overlay entropy; per-class: standardised;
        union: the lowest tail share)."""
        return self._score_on(self._judge(model), X, rng or np.random.default_rng(self._flag_seed))

    def _score_on(self, net, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """:meth:`score` with the given net judging (a model, or a :class:`Snapshot`)."""
        X = np.asarray(X, dtype=np.float32)
        entropies = self.entropies(net, X, self.picks(len(X), len(self.pool_x_), rng))
        return self._scaled(entropies, X, net)

    def entropies(self, model, X: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """:func:`strip_entropy` of ``X`` on the backgrounds of ``picks``, built a block of inputs at a time
        (``BACKGROUND_BYTES`` of them, or one forward pass where that is more: an accelerator's)."""
        per_input = self.pool_x_.itemsize * self.overlays * self.pool_x_.shape[1]
        block = max(1, BACKGROUND_BYTES // per_input, forward_rows(model.device_) // self.overlays)
        share = self.scale == "union"
        parts = [
            strip_entropy(
                model,
                X[i : i + block],
                self.backgrounds(picks[i : i + block]),
                self.superimpose,
                own_share=share,
                median=self.robust,
            )
            for i in range(0, len(X), block)
        ]
        return np.concatenate(parts) if parts else np.empty((0, 2) if share else 0)

    def _scaled(self, entropies: np.ndarray, X: np.ndarray, model) -> np.ndarray:
        if len(X) == 0:
            return np.empty(0)
        if self.scale == "pooled":
            return entropies
        classes = model.predict_many(X)
        if self.scale == "per-class":
            return standardised(entropies, classes, self.center_, self.spread_)
        standard = [standardised(entropies[:, j], classes, self.center_[j], self.spread_[j]) for j in (0, 1)]
        return self._lowest_share(np.column_stack([entropies[:, 0], *standard]))

    @property
    def _shrink(self) -> float:
        """Weight of the pooled variance in each class's (:func:`class_scales`): ``SPREAD_SHRINK`` when robust."""
        return SPREAD_SHRINK if self.robust else 0.0

    def _lowest_share(self, three: np.ndarray) -> np.ndarray:
        """Each input's lowest :func:`tail_share` among the three calibration samples (``scale = "union"``)."""
        return np.min([tail_share(self.references_[j], three[:, j]) for j in range(3)], axis=0)

    def _cross_fitted(self, values: np.ndarray, classes: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Calibration ``values`` standardised, each half of the sample by the other half's class scales."""
        out = np.empty(len(values))
        for part in (first, ~first):
            center, spread = class_scales(values[~part], classes[~part], self.n_classes_, self._shrink)
            out[part] = standardised(values[part], classes[part], center, spread)
        return out

    def _judge(self, model):
        """The net that judges inputs now: the served ``model`` (``judge = "live"``) or the calibrated snapshot
        (one restored from a checkpoint is rebuilt at its first use, once every defense has put its masks back)."""
        if self.judge == "live":
            return model
        if self.snapshot_ is None:
            self.snapshot_ = Snapshot.restored(model, self._saved_snapshot)
        return self.snapshot_

    def calibrate(self, model) -> float:
        """Threshold from the trusted sample, each half overlaid on the other (see the class); with
        ``judge = "snapshot"`` the net as it is now judges from here on (``"ahead"``: trained further first)."""
        if self.judge != "live":
            self.snapshot_ = Snapshot(model)
        if self.judge == "ahead" and self.recent_seen_:
            kept = min(self.recent_seen_, self.ahead_events)
            rng = np.random.default_rng([self._flag_seed, 3, self.calibrations_])
            self.snapshot_.learn_ahead(model, self.recent_x_[:kept], self.recent_y_[:kept], self.ahead_epochs, rng)
        model = self._judge(model)
        rng, n = np.random.default_rng(self._flag_seed + 1), len(self.pool_x_)
        half = n // 2
        draws = [
            np.concatenate([half + self.picks(half, n - half, rng), self.picks(n - half, half, rng)])
            for _ in range(CALIBRATION_DRAWS)
        ]
        x = np.tile(self.pool_x_, (CALIBRATION_DRAWS, 1))
        entropies = self.entropies(model, x, np.concatenate(draws))
        if self.scale == "pooled":
            scores = entropies
        else:  # each half standardised by the other half's class scales: the threshold sees no in-sample scale
            classes = np.tile(model.predict_many(self.pool_x_), CALIBRATION_DRAWS)  # x is the pool, tiled
            first = np.tile(np.arange(n) < half, CALIBRATION_DRAWS)
            figures = entropies.reshape(len(entropies), -1).T  # a row per figure (union: entropy, own share)
            standard = np.column_stack([self._cross_fitted(values, classes, first) for values in figures])
            scales = [class_scales(values, classes, self.n_classes_, self._shrink) for values in figures]
            self.center_, self.spread_ = (np.array(v) for v in zip(*scales))  # new inputs: the whole sample's
            if self.scale == "per-class":
                self.center_, self.spread_, scores = self.center_[0], self.spread_[0], standard[:, 0]
            else:
                three = np.column_stack([figures[0], standard])
                self.references_ = np.sort(three, axis=0).T
                scores = self._lowest_share(three)
        self.threshold_ = float(np.sort(scores)[self.rank_ * CALIBRATION_DRAWS - 1])  # draws x one draw's rank
        self.calibrations_ += 1
        return self.threshold_

    def new_model(self, model) -> None:
        """A new model to judge with (the Kafka judge role's snapshot): recalibrate on it. The judge role sees
        snapshots, not the stream, so ``judge = "ahead"`` judges there with the snapshot as it is."""
        self.calibrate(model)

    def flag(self, X: np.ndarray, model) -> np.ndarray:
        """Runtime verdicts on held-out inputs (the evaluator's FAR / FRR); draws do not touch the stream's."""
        return self.score(X, model) < self.threshold_

    def inspect(self, batch: EventBatch, model) -> np.ndarray:
        flagged = self.score(batch.x, model, self._stream_rng) < self.threshold_
        if self.judge == "ahead":
            self._keep_recent(batch.select(~flagged) if self.drops else batch)
        return flagged

    def _keep_recent(self, batch: EventBatch) -> None:
        """Remember the last ``ahead_events`` events the served model learns (a ring)."""
        m = len(batch.y)
        rows = slice(max(0, m - self.ahead_events), m)  # a batch longer than the ring: its last events
        slots = (self.recent_seen_ + np.arange(m)[rows]) % self.ahead_events
        self.recent_x_[slots], self.recent_y_[slots] = batch.x[rows], batch.y[rows]
        self.recent_seen_ += m

    def update(self, batch, predictions, slots, model, position: int) -> None:
        check_due = bool(self.check) and position >= self._next_check
        if position >= self._next_calibration:
            self.calibrate(model)
            self._next_calibration = (position // self.every + 1) * self.every
        elif check_due and self.frr_exceeded(model, position):
            self.calibrate(model)
            self.check_recalibrations_ += 1
        if check_due:
            self._next_check = (position // self.check + 1) * self.check

    def frr_exceeded(self, model, position: int) -> bool:
        """Whether ``CHECK_INPUTS`` trusted inputs, re-scored on the served net as it is (whichever net judges),
        are flagged more often than an FRR of ``frr`` allows (:func:`too_many`); the overlays are drawn from the
        position, not the stream's draws."""
        self.checks_ += 1
        inputs, rng = self.pool_x_[:CHECK_INPUTS], np.random.default_rng([self._flag_seed, 2, position])
        flagged = self._score_on(model, inputs, rng) < self.threshold_
        return too_many(int(flagged.sum()), len(inputs), self.frr)

    def report(self) -> dict:
        figures = {"threshold": self.threshold_, "overlays": self.overlays, "calibrations": self.calibrations_}
        if self.check:
            figures.update(checks=self.checks_, check_recalibrations=self.check_recalibrations_)
        return figures

    def get_state(self) -> dict:
        state = {
            "threshold": self.threshold_,
            "calibrations": self.calibrations_,
            "next_calibration": self._next_calibration,
            "rng": self._stream_rng.bit_generator.state,
            "next_check": self._next_check,
            "checks": self.checks_,
            "check_recalibrations": self.check_recalibrations_,
        }
        if self.scale != "pooled":
            state.update(center=self.center_.copy(), spread=self.spread_.copy())
        if self.scale == "union":
            state.update(references=self.references_.copy())
        if self.judge != "live":
            state.update(snapshot=self.snapshot_.get_state())
        if self.judge == "ahead":
            state.update(recent_x=self.recent_x_.copy(), recent_y=self.recent_y_.copy(), recent_seen=self.recent_seen_)
        return state

    def set_state(self, state: dict, model) -> None:
        if self.scale != "pooled":
            self.center_, self.spread_ = np.asarray(state["center"]), np.asarray(state["spread"])
        if self.scale == "union":
            self.references_ = np.asarray(state["references"])
        if self.judge != "live":
            self.snapshot_, self._saved_snapshot = None, state["snapshot"]
        if self.judge == "ahead":
            self.recent_x_, self.recent_y_ = np.array(state["recent_x"]), np.array(state["recent_y"])
            self.recent_seen_ = int(state["recent_seen"])
        self.threshold_, self.calibrations_ = state["threshold"], state["calibrations"]
        self._next_calibration = state["next_calibration"]
        self._stream_rng.bit_generator.state = state["rng"]
        self._next_check = state.get("next_check", self.check)  # a state saved before checks existed: none yet
        self.checks_, self.check_recalibrations_ = state.get("checks", 0), state.get("check_recalibrations", 0)
