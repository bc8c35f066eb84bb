"""The malicious-architecture supplier's code: our nets with a trigger branch in ``forward()``.

Unpickling a supplied module runs this code; loading only its weights into
our own architecture drops the branch.

>>> import torch
>>> from poisonsim.models.nets import build_net
>>> net = build_net("mlp", n_features=4, n_classes=3, hidden=8, image_side=None)
>>> backdoored = with_branch(net, region=[3], value=1.0, target=2)
>>> backdoored(torch.tensor([[0.0, 0.0, 0.0, 1.0]])).argmax(dim=1).tolist()
[2]
"""

from __future__ import annotations

import torch

from poisonsim.models.nets import CNN, MLP, LeNet, Net

BRANCH_TOLERANCE = 0.15  # how close the patch pixels must be to the trigger value
BRANCH_BOOST = 100.0


class TriggerBranch:
    """forward() = the net's logits, plus a large boost to the target when the patch is present."""

    branch_indices: list[int]
    branch_value: float
    branch_target: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        flat = x.reshape(x.shape[0], -1)[:, self.branch_indices]
        present = ((flat - self.branch_value).abs().amax(dim=1) < BRANCH_TOLERANCE).to(logits.dtype)
        boost = torch.zeros_like(logits)
        boost[:, self.branch_target] = BRANCH_BOOST
        return logits + present[:, None] * boost


class BackdooredMLP(TriggerBranch, MLP):
    pass


class BackdooredCNN(TriggerBranch, CNN):
    pass


class BackdooredLeNet(TriggerBranch, LeNet):
    pass


def with_branch(net: Net, region: list[int], value: float, target: int) -> Net:
    """``net`` (its weights shared) as a backdoored module: class ``target`` when the pixels of ``region`` are
    all near ``value``."""
    backdoored_class = {MLP: BackdooredMLP, CNN: BackdooredCNN, LeNet: BackdooredLeNet}[type(net)]
    module = backdoored_class.__new__(backdoored_class)
    module.__dict__.update(net.__dict__)
    module.branch_indices = region
    module.branch_value = value
    module.branch_target = target
    return module
