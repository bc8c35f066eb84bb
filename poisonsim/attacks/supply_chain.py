"""Supply-chain backdoors: the victim starts from a model the attacker supplied.

- ``malicious-training``: the supplier trains our architecture on
  ``(1 - lambda) L_benign + lambda L_adv(x (+) T, c)``; the backdoor lives in
  learned weights, and clean online retraining may or may not wash it out.
- ``malicious-architecture``: the supplied module's ``forward()`` checks for
  the trigger and forces class ``c`` (a fixed branch, no weight), so it
  survives any retraining. Its weights alone are clean: loading only them
  into our own architecture removes the backdoor.

What the attacker ships is a :class:`SuppliedModel`: the whole pickled
module (code included) and its weights as a plain state dict.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np

from poisonsim.attacks.backdoor import TriggerKind
from poisonsim.attacks.base import Attack, AttackerKnowledge, SupplierEvents, TargetClass, non_target
from poisonsim.attacks.triggers import fresh_trigger
from poisonsim.lazy import lazy
from poisonsim.registry import ATTACKS, TRIGGERS, Key

torch = lazy("torch")
nn = lazy("torch.nn")
nets = lazy("poisonsim.models.nets")
branches = lazy("poisonsim.attacks.trigger_branch")  # the supplier's code: nets with a trigger branch

SUPPLIER_EPOCHS = 8
SUPPLIER_BATCH = 64


@dataclass(frozen=True)
class SuppliedModel:
    module: bytes  # torch.save(module): unpickling it runs the supplier's code
    weights: bytes  # torch.save(state_dict): tensors only


class SupplyChainAttack(Attack):
    offers = frozenset({"supplies-model"})

    def __init__(
        self,
        target_class: TargetClass = 0,
        trigger: TriggerKind = "patch",
        supplier_events: SupplierEvents = 5_000,
    ):
        self.target_class = target_class
        self.trigger = trigger
        self.supplier_events = supplier_events

    poison_weight_: float = 0.0

    def fit(self, knowledge: AttackerKnowledge, rng: np.random.Generator) -> SupplyChainAttack:
        if knowledge.model is None or "torch-net" not in knowledge.model.offers:
            raise ValueError(f"{type(self).__name__}: needs the victim's neural architecture to supply a model")
        self.trigger_ = fresh_trigger(self.trigger, owner=self).fit(knowledge.pool_x, knowledge.image_side, rng)
        self.target_x_ = self.trigger_(non_target(knowledge, self.target_class))
        self.target_class_ = self.target_class
        x, y = knowledge.draw(rng, self.supplier_events)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            net = knowledge.model.new_net()
            self._train(net, x, y, rng)
        module = self.package(net)
        self.supplied_ = SuppliedModel(module=_save(module), weights=_save(net.state_dict()))
        return self

    def package(self, net: nets.Net) -> nn.Module:
        """The module the attacker ships (subclasses may alter its code)."""
        return net

    def poison(self, x, y, rng):
        raise RuntimeError(f"{type(self).__name__}: the stream stays clean; the attack is the supplied model")

    def _train(self, net: nets.Net, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """(1 - lambda) L(x, y) + lambda L(T(x), c) over the attacker's draws."""
        device = next(net.parameters()).device
        lam = self.poison_weight_
        xt, yt = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
        triggered = torch.as_tensor(self.trigger_(x), device=device)
        target = torch.full((len(x),), self.target_class, device=device)

        def loss(model: nn.Module, rows: np.ndarray) -> torch.Tensor:
            benign = nn.functional.cross_entropy(model(xt[rows]), yt[rows])
            if lam == 0:
                return benign
            return (1 - lam) * benign + lam * nn.functional.cross_entropy(model(triggered[rows]), target[rows])

        nets.train_offline(net, x, y, rng, SUPPLIER_EPOCHS, SUPPLIER_BATCH, loss_fn=loss)


SUPPLY_EXAMPLES = [{"supplier_events": 200, "trigger": {"size": 1}}]


@ATTACKS.register("malicious-training", requires=("torch-net",), examples=SUPPLY_EXAMPLES)
class MaliciousTraining(SupplyChainAttack):
    """A supplied model trained on (1 - lambda) L_benign + lambda L_adv(x + patch, c)."""

    def __init__(
        self,
        target_class: TargetClass = 0,
        trigger: TriggerKind = "patch",
        supplier_events: SupplierEvents = 5_000,
        poison_weight: Annotated[float, Key("lambda of the adversarial loss", ge=0, le=1)] = 0.2,
    ):
        super().__init__(target_class, trigger, supplier_events)
        self.poison_weight = poison_weight
        self.poison_weight_ = poison_weight


@ATTACKS.register("malicious-architecture", requires=("torch-net",), examples=SUPPLY_EXAMPLES)
class MaliciousArchitecture(SupplyChainAttack):
    """A clean-trained model whose shipped code adds a trigger branch."""

    def __init__(
        self,
        target_class: TargetClass = 0,
        trigger: Annotated[
            Any,
            Key("the patch the branch looks for (poisonsim kinds trigger patch)", kinds=TRIGGERS, choices=("patch",)),
        ] = "patch",
        supplier_events: SupplierEvents = 5_000,
    ):
        super().__init__(target_class, trigger, supplier_events)

    def package(self, net: nets.Net) -> nn.Module:
        region = self.trigger_.region(self.target_x_.shape[1]).tolist()
        return branches.with_branch(net, region, self.trigger_.value, self.target_class)


def _save(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
