"""Lazy Adam as EasyRec's AdamOptimizerS computes it (``lazy_adam_optimizer``): embedding rows update only when used."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import Betas, LearningRate
from easyrec.optim.sparse_rows import touched


class LazyAdam(Optimizer):
    """Adam in TF's "epsilon hat" form that, for sparse gradients, updates only the rows in the batch.

    With the group's step count ``t`` (TF's global β-powers: +1 per ``step()`` in which the group has any gradient)
    and a gradient ``g``::

        lr_t = lr · √(1 − β2^t) / (1 − β1^t)
        m    = β1·m + (1 − β1)·g
        v    = β2·v + (1 − β2)·g²
        w    = w − lr_t · m / (√v + ε)

    A dense gradient updates every element (TF's AdamOptimizer). A sparse gradient (``nn.Embedding(sparse=True)``)
    is coalesced, duplicate rows summed, and only its rows of ``w``, ``m`` and ``v`` change; rows not in the batch
    keep their weights and moments, and ``t`` advances for them too. One optimizer thus serves the dense layers and
    the embedding tables.

    Args:
        params: parameters or parameter groups.
        lr: learning rate, > 0.
        betas: (β1, β2), each in [0, 1).
        eps: ε added to √v (not to the bias-corrected √v̂, unlike torch.optim.Adam), >= 0.

    State per parameter (same shape as it): ``exp_avg`` (m) and ``exp_avg_sq`` (v); per group: ``step`` (t).
    """

    supports_sparse_gradients = True
    #: Built for row-sparse updates: as the only optimizer of a model, it turns on sparse embedding gradients.
    prefers_sparse_gradients = True

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 1e-3,
        betas: Betas = (0.9, 0.999),
        eps: NonNegative = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "step": 0})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adam update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            group["step"] += 1
            (beta1, beta2), eps, t = group["betas"], group["eps"], group["step"]
            lr_t = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            for param in params:
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                rows, grad = touched(param.grad)
                if rows is ...:
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr_t)
                    continue
                # the coalesced rows are distinct: gather them, update, scatter them back (no Python per row)
                (index,) = rows
                exp_avg = state["exp_avg"].index_select(0, index).mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq = (
                    state["exp_avg_sq"].index_select(0, index).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                )
                weights = param.index_select(0, index).addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-lr_t)
                param.index_copy_(0, index, weights)  # index_copy_ is several times faster than index_add_ here
                state["exp_avg"].index_copy_(0, index, exp_avg)
                state["exp_avg_sq"].index_copy_(0, index, exp_avg_sq)
        return loss
