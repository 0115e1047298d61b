"""LAMB, layer-wise adaptive Adam for large batches, as tf-addons and TorchEasyRec compute it."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import Betas, LearningRate


class Lamb(Optimizer):
    """LAMB (You et al., 2019): an Adam direction rescaled per parameter tensor by a trust ratio.

    With the group's step count ``t`` (like tf-addons' ``iterations``: +1 per ``step()`` in which the group has any
    gradient) and a gradient ``g``::

        m = β1·m + (1 − β1)·g            m̂ = m / (1 − β1^t)
        v = β2·v + (1 − β2)·g²           v̂ = v / (1 − β2^t)
        r = m̂ / (√v̂ + ε) + weight_decay·w
        ratio = ‖w‖ / ‖r‖  if ‖w‖ > 0 and ‖r‖ > 0  else 1      (Frobenius norms over the whole tensor)
        w = w − lr · ratio · r

    Dense gradients only: the trust ratio needs the whole tensor, so a sparse gradient raises RuntimeError.

    Args:
        params: parameters or parameter groups.
        lr: learning rate, > 0.
        betas: (β1, β2), each in [0, 1).
        eps: ε added to √v̂, >= 0.
        weight_decay: decay added to the direction (so scaled by the trust ratio), >= 0.

    State per parameter (same shape as it): ``exp_avg`` (m) and ``exp_avg_sq`` (v); per group: ``step`` (t).
    """

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 0.01,
        betas: Betas = (0.9, 0.999),
        eps: NonNegative = 1e-6,
        weight_decay: NonNegative = 0.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "step": 0})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One LAMB update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Checked before any update so that a failing step changes nothing.
        if any(
            param.grad is not None and param.grad.is_sparse for group in self.param_groups for param in group["params"]
        ):
            raise RuntimeError("Lamb does not support sparse gradients; use LazyAdam or Ftrl for them")
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            group["step"] += 1
            (beta1, beta2), eps, t = group["betas"], group["eps"], group["step"]
            for param in params:
                grad = param.grad
                state = self.state[param]
                if not state:
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg_hat = exp_avg / (1 - beta1**t)
                exp_avg_sq_hat = exp_avg_sq / (1 - beta2**t)
                direction = exp_avg_hat / (exp_avg_sq_hat.sqrt() + eps) + group["weight_decay"] * param
                weight_norm, direction_norm = param.norm(), direction.norm()
                # Kept as tensors so the step needs no device-to-host sync.
                ratio = torch.where((weight_norm > 0) & (direction_norm > 0), weight_norm / direction_norm, 1.0)
                param.sub_(direction * (group["lr"] * ratio))
        return loss
