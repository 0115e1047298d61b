"""Momentum with decoupled weight decay as EasyRec's MomentumWOptimizer computes it (``momentumw_optimizer``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import Decay, LearningRate
from easyrec.optim.sparse_rows import touched


class MomentumW(Optimizer):
    """SGD with momentum and TF's decoupled weight decay, which the learning rate does not scale.

    For a gradient ``g`` (taken at the weights before the decay)::

        w = w − wd·w                      (decay first; torch's AdamW decays by lr·wd·w, SGD adds wd·w to g)
        a = μ·a + g
        w = w − lr·a

    so with ``wd = 0`` this is torch's SGD with momentum (dampening 0), and a weight with no gradient signal
    shrinks by ``(1 − wd)`` per step whatever the learning rate and its schedule. A sparse gradient
    (``nn.Embedding(sparse=True)``) is coalesced, duplicate rows summed, and only its rows of ``w`` and ``a``
    change (decayed once each; TF decays a row once per occurrence in the batch), as TF's sparse apply; a dense
    gradient updates every element.

    Args:
        params: parameters or parameter groups.
        lr: learning rate, > 0.
        momentum: μ, in [0, 1).
        weight_decay: wd, >= 0; EasyRec's default 1e-6.

    State per parameter (same shape as it): ``momentum_buffer`` (a).
    """

    supports_sparse_gradients = True
    #: TF applies it to the looked-up rows of an embedding only: as the only optimizer of a model, it turns on sparse
    #: embedding gradients, so that a row not in the batch is neither decayed nor moved by its old momentum.
    prefers_sparse_gradients = True

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 0.05,
        momentum: Decay = 0.9,
        weight_decay: NonNegative = 1e-6,
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One MomentumW update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                rows, grad = touched(param.grad)
                buffer = momentum * state["momentum_buffer"][rows] + grad
                state["momentum_buffer"][rows] = buffer
                param[rows] = param[rows] * (1 - decay) - lr * buffer
        return loss
