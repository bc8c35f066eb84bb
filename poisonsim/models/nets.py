"""Our own network architectures: what weights-only loading trusts.

Each network splits into ``features`` (ending in the last hidden layer, whose
activations the defenses analyse and prune) and a linear ``head``. With
``norm = "batch"`` a batch norm follows each convolution and hidden dense
layer (before its ReLU): training steps normalise by their mini-batch's
statistics, predictions by the running ones.

>>> import torch
>>> net = build_net("cnn", n_features=64, n_classes=10, hidden=32, image_side=8)
>>> net(torch.zeros(5, 64)).shape, net.embed(torch.zeros(5, 64)).shape
(torch.Size([5, 10]), torch.Size([5, 32]))
>>> build_net("lenet", n_features=784, n_classes=10, hidden=84, image_side=28)(torch.zeros(2, 784)).shape
torch.Size([2, 10])
>>> [type(m).__name__ for m in build_net("mlp", 4, 3, hidden=8, image_side=None, norm="batch").features]
['Linear', 'OnlineBatchNorm1d', 'ReLU', 'Linear', 'OnlineBatchNorm1d', 'ReLU']
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from poisonsim.models.base import NORMS


class OnlineBatchNorm1d(nn.BatchNorm1d):
    """Batch norm that also takes a training step on a single event: with nothing to normalise over, that row is
    normalised by the running statistics (which it leaves as they are)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and len(x) == 1:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
            )
        return super().forward(x)


def normalised(layers: list[nn.Module], norm: str) -> list[nn.Module]:
    """``layers`` with a batch norm after each convolution and dense layer (``norm = "batch"``), else as they are."""
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(NORMS)}; got {norm!r}")
    if norm == "none":
        return layers
    out = []
    for layer in layers:
        out.append(layer)
        if isinstance(layer, nn.Conv2d):
            out.append(nn.BatchNorm2d(layer.out_channels))
        elif isinstance(layer, nn.Linear):
            out.append(OnlineBatchNorm1d(layer.out_features))
    return out


class Net(nn.Module):
    """Base: ``forward(x) = head(embed(x))``."""

    features: nn.Module
    head: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Activations of the last hidden layer."""
        return self.features(self._shape(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLP(Net):
    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, norm: str = "none"):
        super().__init__()
        self.features = nn.Sequential(
            *normalised([nn.Linear(n_features, 128), nn.ReLU(), nn.Linear(128, hidden), nn.ReLU()], norm)
        )
        self.head = nn.Linear(hidden, n_classes)


class CNN(Net):
    """Two 3x3 convolutions and a max-pool, then a hidden layer, for square images."""

    def __init__(self, image_side: int, n_classes: int, hidden: int = 64, norm: str = "none"):
        super().__init__()
        self.image_side = image_side
        pooled = image_side // 2
        self.features = nn.Sequential(
            *normalised(
                [
                    nn.Conv2d(1, 16, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(16, 32, 3, padding=1),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                    nn.Flatten(),
                    nn.Linear(32 * pooled * pooled, hidden),
                    nn.ReLU(),
                ],
                norm,
            )
        )
        self.head = nn.Linear(hidden, n_classes)

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, self.image_side, self.image_side)


class LeNet(Net):
    """LeNet-5-like, as the BadNets and STRIP papers use on MNIST: two 5x5 convolutions (6 and 16 channels), each
    followed by a 2x2 max-pool, then dense layers of 120 and ``hidden`` units. On 28x28 the second convolution is
    unpadded (16 x 5 x 5 features, as LeNet-5); on images too small for that it is padded."""

    def __init__(self, image_side: int, n_classes: int, hidden: int = 84, norm: str = "none"):
        super().__init__()
        self.image_side = image_side
        half = image_side // 2
        pad = 0 if half >= 8 else 2  # the second convolution: valid where it leaves room, else same-size
        side = (half - 4 + 2 * pad) // 2
        self.features = nn.Sequential(
            *normalised(
                [
                    nn.Conv2d(1, 6, 5, padding=2),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                    nn.Conv2d(6, 16, 5, padding=pad),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                    nn.Flatten(),
                    nn.Linear(16 * side * side, 120),
                    nn.ReLU(),
                    nn.Linear(120, hidden),
                    nn.ReLU(),
                ],
                norm,
            )
        )
        self.head = nn.Linear(hidden, n_classes)

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, self.image_side, self.image_side)


ARCHITECTURES = ("mlp", "cnn", "lenet")


def build_net(
    architecture: str, n_features: int, n_classes: int, hidden: int, image_side: int | None, norm: str = "none"
) -> Net:
    """A freshly initialised network (draws from torch's current RNG)."""
    if architecture == "mlp":
        return MLP(n_features, n_classes, hidden, norm)
    if architecture in ("cnn", "lenet"):
        if image_side is None or image_side * image_side != n_features:
            raise ValueError(f"architecture: {architecture} needs square images, got {n_features} features")
        return (CNN if architecture == "cnn" else LeNet)(image_side, n_classes, hidden, norm)
    raise ValueError(f"architecture: expected one of {', '.join(ARCHITECTURES)}; got {architecture!r}")


def train_offline(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    loss_fn: Callable[[nn.Module, np.ndarray], torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    keep_last: bool = False,
) -> None:
    """Plain shuffled mini-batch training, with Adam at ``lr`` unless an ``optimizer`` is given.

    ``loss_fn(net, rows)`` gives a batch's loss from the row indices of ``x``;
    the default is the cross-entropy of ``net(x[rows])`` against ``y[rows]``.
    An epoch's last, smaller batch is dropped unless ``keep_last``.
    """
    device = next(net.parameters()).device
    xt, yt = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    loss_fn = loss_fn or (lambda model, rows: nn.functional.cross_entropy(model(xt[rows]), yt[rows]))
    optimizer = optimizer or torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    stop = len(x) if keep_last else len(x) - batch_size + 1
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, stop, batch_size):
            loss = loss_fn(net, order[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
