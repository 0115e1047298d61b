"""FTRL-proximal, as TensorFlow's FtrlOptimizer computes it (EasyRec's ``ftrl_optimizer``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import LearningRate, NonPositive
from easyrec.optim.sparse_rows import touched


class Ftrl(Optimizer):
    """FTRL-proximal (McMahan et al., 2013) with TensorFlow's exact per-element update (``ApplyFtrlV2``).

    With ``p = −lr_power`` and the state ``n`` (accumulator) and ``z`` (linear), for a gradient ``g``::

        g̃  = g + 2·l2_shrinkage·w
        n' = n + g²                          (raw g as current TF; early TF 1.x added g̃², tensorflow#18317)
        z  = z + g̃ − (n'^p − n^p)/lr · w
        w  = (sign(z)·l1 − z) / (n'^p/lr + 2·l2)  if |z| > l1  else 0
        n  = n'

    The new ``w`` depends only on ``z`` and ``n``, so the first step replaces the initial weights. A sparse
    gradient (``nn.Embedding(sparse=True)``) is coalesced, duplicate rows summed, and only its rows of
    ``w``, ``n`` and ``z`` change, as TF's ``SparseApplyFtrl``; a dense gradient updates every element.

    Args:
        params: parameters or parameter groups.
        lr: learning rate α, > 0. TF's FtrlOptimizer has no default; 0.05 is a usual FTRL α.
        lr_power: −p, <= 0; −0.5 is AdaGrad-like decay, 0 a fixed learning rate.
        initial_accumulator_value: starting ``n``, >= 0.
        l1: L1 strength, >= 0; weights with ``|z| <= l1`` are exactly 0.
        l2: L2 strength of the proximal step, >= 0.
        l2_shrinkage: L2 strength added to the loss (the gradient), >= 0.

    State per parameter (same shape as it): ``accumulator`` (n) and ``linear`` (z).
    """

    supports_sparse_gradients = True
    #: Built for row-sparse updates: as the only optimizer of a model, it turns on sparse embedding gradients.
    prefers_sparse_gradients = True

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 0.05,
        lr_power: NonPositive = -0.5,
        initial_accumulator_value: NonNegative = 0.1,
        l1: NonNegative = 0.0,
        l2: NonNegative = 0.0,
        l2_shrinkage: NonNegative = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_power": lr_power,
            "initial_accumulator_value": initial_accumulator_value,
            "l1": l1,
            "l2": l2,
            "l2_shrinkage": l2_shrinkage,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:  # the state as built: init_from gives a grown table's new rows this state
            for param in group["params"]:
                start(self.state[param], param, group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One FTRL update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, power = group["lr"], -group["lr_power"]
            l1, l2, l2_shrinkage = group["l1"], group["l2"], group["l2_shrinkage"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:  # a parameter group added after the optimizer was built (a loss's parameters)
                    start(state, param, group)
                rows, grad = touched(param.grad)
                weight, accum, linear = param[rows], state["accumulator"][rows], state["linear"][rows]
                new_accum = accum + grad * grad
                # TF computes the common lr_power = −0.5 with sqrt, not pow; match it bit for bit.
                if power == 0.5:
                    accum_pow, new_accum_pow = accum.sqrt(), new_accum.sqrt()
                else:
                    accum_pow, new_accum_pow = accum.pow(power), new_accum.pow(power)
                linear = linear + grad + 2 * l2_shrinkage * weight - (new_accum_pow - accum_pow) / lr * weight
                quadratic = new_accum_pow / lr + 2 * l2
                new_weight = torch.where(linear.abs() > l1, (l1 * linear.sign() - linear) / quadratic, 0.0)
                param[rows] = new_weight
                state["accumulator"][rows] = new_accum
                state["linear"][rows] = linear
        return loss


def start(state: dict[str, torch.Tensor], param: torch.Tensor, group: dict) -> None:
    """A parameter's initial FTRL state: ``accumulator`` at ``initial_accumulator_value``, ``linear`` at 0."""
    state["accumulator"] = torch.full_like(param, group["initial_accumulator_value"])
    state["linear"] = torch.zeros_like(param)
