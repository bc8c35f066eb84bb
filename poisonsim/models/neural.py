"""An incrementally trained neural net: test-then-train on mini-batches.

Events arrive one by one. Each is predicted with the current weights, then
waits in a pending mini-batch; when ``batch_size`` events are pending the
net takes one optimiser step on them (plus ``replay_batch`` samples from a
reservoir replay buffer when ``replay > 0``). Weights change only at those
steps, so the logits of the training forward pass *are* the predictions the
pending events got: test-then-train costs no extra forward pass.

With ``retrain_every > 0`` the model also keeps a data lake of the events
it learned and is retrained from scratch on it periodically, learning online
in between (see :mod:`poisonsim.models.retrain`).

Checkpoints hold weights only (``torch.load(weights_only=True)`` into our
own architecture); a whole pickled module is never loaded unless a scenario
asks to run a supplied module as it is.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(512, 4)).astype(np.float32)
>>> Y = (X[:, 0] > 0).astype(np.int64)
>>> net = NeuralClassifier(n_classes=2, n_features=4, batch_size=16, lr=0.01, seed=1)
>>> for _ in range(5):
...     net.learn_many(X, Y)
>>> float((net.predict_many(X) == Y).mean()) > 0.95
True
"""

from __future__ import annotations

import copy
import io
from typing import Annotated

import numpy as np

from poisonsim.lazy import lazy
from poisonsim.models.base import NORMS, Model
from poisonsim.models.inputs import check_features, check_labels
from poisonsim.models.retrain import DataLake, next_retrain, retrain_rngs
from poisonsim.registry import MODELS, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")

PREDICT_CHUNK = 4096


def resolve_device(device: str) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError('model.device: "cuda" was asked for but torch sees no GPU; use "auto" or "cpu"')
    if device not in ("cpu", "cuda"):
        raise ValueError(f'model.device: expected "auto", "cpu" or "cuda", got {device!r}')
    return torch.device(device)


NEURAL_EXAMPLES = [
    {"hidden": 8, "batch_size": 16, "device": "cpu", "pretrain_events": 50},
    {
        "hidden": 8,
        "batch_size": 7,
        "replay": 50,
        "optimizer": "sgd",
        "lr": 0.05,
        "device": "cpu",
        "pretrain_events": 50,
    },
    {
        "hidden": 8,
        "batch_size": 16,
        "device": "cpu",
        "pretrain_events": 50,
        "retrain_every": 60,
        "lake_size": 80,
        "retrain_epochs": 2,
    },
    {
        "hidden": 8,
        "batch_size": 5,
        "norm": "batch",
        "optimizer": "sgd",
        "lr": 0.05,
        "device": "cpu",
        "pretrain_events": 50,
    },
]


@MODELS.register("mlp", fixed={"architecture": "mlp"}, examples=NEURAL_EXAMPLES)
@MODELS.register(
    "cnn", fixed={"architecture": "cnn"}, requires=("images",), examples=NEURAL_EXAMPLES[::2] + NEURAL_EXAMPLES[3:]
)
@MODELS.register("lenet", fixed={"architecture": "lenet"}, requires=("images",), examples=NEURAL_EXAMPLES[:1])
class NeuralClassifier(Model):
    """An online mini-batch classifier over an MLP, a small CNN or a LeNet-5 (torch; CUDA when present)."""

    offers = frozenset({"torch-net", "classes", "probabilities", "embeddings", "losses"})

    def __init__(
        self,
        n_classes: int,
        n_features: int,
        architecture: str = "mlp",
        image_side: int | None = None,
        hidden: Annotated[int, Key("width of the last hidden layer", ge=1, le=65536)] = 64,
        norm: Annotated[
            str,
            Key(
                "after each hidden layer: nothing, or batch norm (batch statistics in training "
                "steps, running ones in predictions)",
                choices=NORMS,
            ),
        ] = "none",
        batch_size: Annotated[int, Key("stream events per training step", ge=1, le=65536)] = 32,
        lr: Annotated[float, Key("learning rate", gt=0, le=10)] = 1e-3,
        optimizer: Annotated[str, Key("optimizer", choices=("adam", "sgd"))] = "adam",
        momentum: Annotated[float, Key("sgd momentum", ge=0, lt=1)] = 0.9,
        replay: Annotated[int, Key("replay buffer size (0: none)", ge=0, le=10**7)] = 0,
        replay_batch: Annotated[int, Key("replayed samples added to each training step", ge=0, le=65536)] = 32,
        device: Annotated[
            str, Key("torch device (auto takes CUDA when present)", choices=("auto", "cpu", "cuda"))
        ] = "auto",
        pretrain_events: Annotated[int, Key("clean events learned before the stream starts", ge=0, le=10**8)] = 2_000,
        load_supplied: Annotated[
            str,
            Key(
                "a supplied model: load its weights into our architecture, or run its module",
                choices=("weights", "module"),
            ),
        ] = "weights",
        retrain_every: Annotated[
            int,
            Key(
                "retrain from scratch on the data lake every this many events after "
                "pre-training, and once at its end (0: never)",
                ge=0,
                le=10**9,
            ),
        ] = 0,
        retrain_epochs: Annotated[int, Key("epochs over the data lake per retrain", ge=1, le=10_000)] = 10,
        lake_size: Annotated[
            int, Key("data lake: the last this many events learned (0: every one)", ge=0, le=10**9)
        ] = 0,
        seed: int = 0,
    ):
        self.n_classes = n_classes
        self.n_features = n_features
        self.architecture = architecture
        self.image_side = image_side
        self.hidden = hidden
        self.norm = norm
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.replay = replay
        self.replay_batch = replay_batch
        self.device = device
        self.pretrain_events = pretrain_events
        self.load_supplied = load_supplied
        self.retrain_every = retrain_every
        self.retrain_epochs = retrain_epochs
        self.lake_size = lake_size
        self.seed = seed
        self.device_ = resolve_device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = self.new_net()
        self._optimizer = self.make_optimizer()
        self._rng = np.random.default_rng(seed)
        self._pending_x = np.empty((0, n_features), dtype=np.float32)
        self._pending_y = np.empty(0, dtype=np.int64)
        self._replay_x = np.empty((replay, n_features), dtype=np.float32)
        self._replay_y = np.empty(replay, dtype=np.int64)
        self._replay_seen = 0
        self.steps_ = 0
        self.learned_ = 0  # events learned (with retraining on: the lake's clock)
        self.retrains_ = 0
        self._retrain_seed = seed  # in the state: a restored model retrains as the saved one would
        self._lake = DataLake(n_features, lake_size) if retrain_every else None
        self.flood_level: float | None = None  # flooding (|L - b| + b) on training steps, set by a defense

    @property
    def warmup_events(self) -> int:
        """Clean events learned before the stream starts."""
        return self.pretrain_events

    # -- what defenses may change -------------------------------------------------------

    def set_flooding(self, level: float | None) -> None:
        """Flooding (|L - b| + b) on the following training steps (``None``: off)."""
        self.flood_level = level

    def reset_optimizer(self) -> None:
        """Fresh optimiser moments (after a repair changed the weights)."""
        self._optimizer = self.make_optimizer()

    def to_tensor(self, X: np.ndarray) -> torch.Tensor:
        """``X`` as a float tensor on the net's device."""
        return self._tensor(X)

    # -- the architecture and its weights ------------------------------------------------

    def new_net(self) -> nets.Net:
        """A fresh network of our own architecture, on our device."""
        net = nets.build_net(
            self.architecture, self.n_features, self.n_classes, self.hidden, self.image_side, self.norm
        )
        return net.to(self.device_)

    def save_weights(self, path) -> None:
        """Write the weights only (a state dict of tensors)."""
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, path)

    def load_weights(self, source) -> None:
        """Load weights into our own architecture; never unpickles code.

        ``source`` is a path, a file object, bytes or a state dict.
        """
        if isinstance(source, bytes):
            source = io.BytesIO(source)
        state = source if isinstance(source, dict) else torch.load(source, weights_only=True, map_location="cpu")
        net = self.new_net()
        net.load_state_dict(state, strict=True)
        self.net = net
        self._optimizer = self.make_optimizer()

    def adopt_module(self, module: nn.Module) -> None:
        """Run a supplied module as it is, forward() included (the unsafe way)."""
        self.net = module.to(self.device_)
        self._optimizer = self.make_optimizer()

    def start_from(self, supplied, how: str | None = None) -> None:
        """Start from a supplied model: its ``weights`` only, or its whole ``module`` (runs its code);
        ``how`` defaults to ``load_supplied``."""
        how = how or self.load_supplied
        if how == "weights":
            self.load_weights(supplied.weights)
        elif how == "module":
            self.adopt_module(torch.load(io.BytesIO(supplied.module), weights_only=False, map_location=self.device_))
        else:
            raise ValueError(f'load_supplied: expected "weights" or "module", got {how!r}')

    def get_state(self) -> dict:
        """Mutable state as numpy arrays and plain values (copies), for a checkpoint."""
        optimizer = self._optimizer.state_dict()
        return {
            "weights": {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()},
            "optimizer": {
                str(i): {k: v.detach().cpu().numpy().copy() if torch.is_tensor(v) else v for k, v in slot.items()}
                for i, slot in optimizer["state"].items()
            },
            "pending_x": self._pending_x.copy(),
            "pending_y": self._pending_y.copy(),
            "replay_x": self._replay_x.copy(),
            "replay_y": self._replay_y.copy(),
            "replay_seen": self._replay_seen,
            "steps": self.steps_,
            "rng": self._rng.bit_generator.state,
            **self._retrain_state(),
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (into the current architecture)."""
        self.net.load_state_dict({k: torch.as_tensor(v) for k, v in state["weights"].items()}, strict=True)
        optimizer = self._optimizer.state_dict()
        optimizer["state"] = {
            int(i): {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in slot.items()}
            for i, slot in state["optimizer"].items()
        }
        self._optimizer.load_state_dict(optimizer)
        self._pending_x = np.array(state["pending_x"], dtype=np.float32).reshape(-1, self.n_features)
        self._pending_y = np.array(state["pending_y"], dtype=np.int64)
        self._replay_x = np.array(state["replay_x"], dtype=np.float32).reshape(self.replay, self.n_features)
        self._replay_y = np.array(state["replay_y"], dtype=np.int64)
        self._replay_seen = int(state["replay_seen"])
        self.steps_ = int(state["steps"])
        self._rng.bit_generator.state = state["rng"]
        self._set_retrain_state(state)

    # -- predicting and learning ----------------------------------------------------------

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        empty = np.empty((0, self.n_classes), dtype=np.float32)
        return self._forward_no_grad(self._check_x(X), lambda logits: torch.softmax(logits, dim=1), empty)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        return self._forward_no_grad(self._check_x(X), lambda logits: logits.argmax(dim=1), np.empty(0, np.int64))

    def embed_many(self, X: np.ndarray) -> np.ndarray:
        """Last hidden layer activations."""
        empty = np.empty((0, self.hidden), dtype=np.float32)
        return self._forward_no_grad(self._check_x(X), None, empty, forward=self.net.embed)

    def losses_many(self, X: np.ndarray, Y) -> np.ndarray:
        """Per-sample cross-entropy of the current weights (no gradients)."""
        X = self._check_x(X)
        Y = self._check_y(Y, len(X))
        self.net.eval()
        with torch.no_grad():
            logits = self.net(self._tensor(X))
            loss = nn.functional.cross_entropy(logits, torch.as_tensor(Y, device=self.device_), reduction="none")
        return loss.cpu().numpy().astype(np.float64)

    def learn_many(self, X: np.ndarray, Y) -> None:
        self.process_many(X, Y)

    def process_many(self, X: np.ndarray, Y, hook=None, sources=None) -> tuple[np.ndarray, None]:
        """Test-then-train each event in order; returns ``(predictions, None)``."""
        if hook is not None:
            raise ValueError("hook: the neural net offers no white-box attacker hook")
        X, Y = self._check_x(X), self._check_y(Y, len(X))
        if not self.retrain_every:
            return self._online(X, Y), None
        parts, done = [], 0
        while done < len(X):  # cut at each retrain: the events after it are predicted by the new net
            due = next_retrain(self.learned_, self.pretrain_events, self.retrain_every)
            rows = slice(done, min(len(X), done + due - self.learned_))
            parts.append(self._online(X[rows], Y[rows]))
            self._lake.add(X[rows], Y[rows])
            self.learned_ += rows.stop - rows.start
            if self.learned_ == due:
                self._retrain()
            done = rows.stop
        return (np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)), None

    def _retrain(self) -> None:
        """Train a fresh net from scratch on the data lake (fresh weights and optimiser; pending events dropped:
        they are in the lake)."""
        self.retrains_ += 1
        torch_seed, shuffle = retrain_rngs(self._retrain_seed, self.retrains_)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            net = self.new_net()
        x, y = self._lake.rows()
        nets.train_offline(
            net,
            x,
            y,
            shuffle,
            self.retrain_epochs,
            self.batch_size,
            optimizer=self.make_optimizer(net),
            keep_last=True,
        )
        self.net = net
        self._optimizer = self.make_optimizer()
        self._pending_x, self._pending_y = self._pending_x[:0], self._pending_y[:0]

    def _online(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The online learner: predict each event, take a step whenever a mini-batch is complete."""
        xt, yt = self._tensor(X), torch.as_tensor(Y, device=self.device_)
        predicted = []  # argmax tensors in event order, brought to the host once
        done = 0
        while done < len(X):
            pending = len(self._pending_y)
            rows = slice(done, min(len(X), done + self.batch_size - pending))
            if rows.stop - rows.start == self.batch_size - pending:  # this segment completes a mini-batch
                batch_x, batch_y = xt[rows], yt[rows]
                if pending:
                    batch_x = torch.cat([self._tensor(self._pending_x), batch_x])
                    batch_y = torch.cat([torch.as_tensor(self._pending_y, device=self.device_), batch_y])
                predicted.append(self._train_step(batch_x, batch_y)[pending:])
                self._remember(X[rows], Y[rows], self._pending_x, self._pending_y)
                self._pending_x, self._pending_y = self._pending_x[:0], self._pending_y[:0]
            else:
                self.net.eval()
                with torch.no_grad():
                    predicted.append(self.net(xt[rows]).argmax(dim=1))
                self._pending_x = np.concatenate([self._pending_x, X[rows]])
                self._pending_y = np.concatenate([self._pending_y, Y[rows]])
            done = rows.stop
        return torch.cat(predicted).cpu().numpy() if predicted else np.empty(0, dtype=np.int64)

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step; returns the predictions of the stream rows before it."""
        n_stream = len(y)
        if self.replay and self._replay_seen and self.replay_batch:
            pick = self._rng.integers(0, min(self._replay_seen, self.replay), size=self.replay_batch)
            x = torch.cat([x, self._tensor(self._replay_x[pick])])
            y = torch.cat([y, torch.as_tensor(self._replay_y[pick], device=self.device_)])
        self.net.train()
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        if self.flood_level is not None:  # ABL's local gradient ascent: the loss floats at b
            loss = (loss - self.flood_level).abs() + self.flood_level
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        self.steps_ += 1
        return logits[:n_stream].detach().argmax(dim=1)

    def _remember(self, x: np.ndarray, y: np.ndarray, pending_x: np.ndarray, pending_y: np.ndarray) -> None:
        """Reservoir sampling: every learned event is equally likely to be kept."""
        if not self.replay:
            return
        for xi, yi in zip(np.concatenate([pending_x, x]), np.concatenate([pending_y, y])):
            slot = (
                self._replay_seen if self._replay_seen < self.replay else self._rng.integers(0, self._replay_seen + 1)
            )
            if slot < self.replay:
                self._replay_x[slot], self._replay_y[slot] = xi, yi
            self._replay_seen += 1

    # -- helpers --------------------------------------------------------------------------

    def make_optimizer(self, net: nn.Module | None = None) -> torch.optim.Optimizer:
        """A fresh optimiser of this model's kind and learning rate over ``net``'s weights (default: the served
        net's)."""
        parameters = (self.net if net is None else net).parameters()
        if self.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=self.lr)
        return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum)

    def continued_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """An optimiser over ``net``, a copy of the served net, that goes on where the served one stands (its
        moments copied): a defense that trains the copy further (STRIP's ahead judge) trains it as the model
        would."""
        optimizer = self.make_optimizer(net)
        optimizer.load_state_dict(copy.deepcopy(self._optimizer.state_dict()))
        return optimizer

    def _retrain_state(self) -> dict:
        if not self.retrain_every:
            return {}
        return {
            "learned": self.learned_,
            "retrains": self.retrains_,
            "retrain_seed": self._retrain_seed,
            "lake": self._lake.get_state(),
        }

    def _set_retrain_state(self, state: dict) -> None:
        if not self.retrain_every:
            return
        if "lake" not in state:
            raise ValueError("retrain_every: the state holds no data lake (saved by a model without retraining)")
        self.learned_, self.retrains_ = int(state["learned"]), int(state["retrains"])
        self._retrain_seed = int(state["retrain_seed"])
        self._lake.set_state(state["lake"])

    def _forward_no_grad(self, X: np.ndarray, post, empty: np.ndarray, forward=None) -> np.ndarray:
        """Evaluate in chunks without gradients; ``post`` maps logits (or ``forward``'s output)."""
        forward = forward or self.net
        post = post or (lambda out: out)
        self.net.eval()
        with torch.no_grad():
            parts = [
                post(forward(self._tensor(X[i : i + PREDICT_CHUNK]))).cpu().numpy()
                for i in range(0, len(X), PREDICT_CHUNK)
            ]
        return np.concatenate(parts) if parts else empty

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=self.device_)

    def _check_x(self, X) -> np.ndarray:
        return check_features(X, self.n_features)

    def _check_y(self, Y, m: int) -> np.ndarray:
        return check_labels(Y, m, self.n_classes)
