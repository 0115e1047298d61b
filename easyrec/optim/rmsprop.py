"""RMSProp as TensorFlow's RMSPropOptimizer computes it (EasyRec's ``rms_prop_optimizer``), unlike torch's."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim.optimizer import Optimizer, ParamsT

from easyrec.config.arguments import NonNegative, checked
from easyrec.optim.hyperparameters import Decay, LearningRate
from easyrec.optim.sparse_rows import touched


class TFRMSProp(Optimizer):
    """RMSProp with TensorFlow's (v1 ``tf.train.RMSPropOptimizer``) semantics, uncentered.

    For a gradient ``g``::

        ms  = ρ·ms + (1 − ρ)·g²           (ms starts at 1, not 0)
        mom = μ·mom + lr·g / √(ms + ε)    (ε inside the sqrt, lr inside the momentum)
        w   = w − mom

    torch.optim.RMSprop differs on all three points, hence this class. A sparse gradient
    (``nn.Embedding(sparse=True)``) is coalesced, duplicate rows summed, and only its rows of ``w``, ``ms`` and
    ``mom`` change, as TF's ``SparseApplyRMSProp``; a dense gradient updates every element.

    Args:
        params: parameters or parameter groups.
        lr: learning rate, > 0.
        decay: ρ, the mean-square discount, in [0, 1).
        momentum: μ, in [0, 1).
        eps: ε, >= 0; EasyRec's default 1.0 (TF's own is 1e-10) keeps early steps small.

    State per parameter (same shape as it): ``ms`` (mean square) and ``mom`` (momentum).
    """

    supports_sparse_gradients = True

    @checked
    def __init__(
        self,
        params: ParamsT,
        lr: LearningRate = 0.01,
        decay: Decay = 0.9,
        momentum: Decay = 0.9,
        eps: NonNegative = 1.0,
    ) -> None:
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps})
        for group in self.param_groups:  # the state as built: init_from gives a grown table's new rows this state
            for param in group["params"]:
                start(self.state[param], param)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One RMSProp update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, decay, momentum, eps = group["lr"], group["decay"], group["momentum"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:  # a parameter group added after the optimizer was built (a loss's parameters)
                    start(state, param)
                rows, grad = touched(param.grad)
                ms = decay * state["ms"][rows] + (1 - decay) * grad * grad
                mom = momentum * state["mom"][rows] + lr * grad / (ms + eps).sqrt()
                param[rows] = param[rows] - mom
                state["ms"][rows] = ms
                state["mom"][rows] = mom
        return loss


def start(state: dict[str, torch.Tensor], param: torch.Tensor) -> None:
    """A parameter's initial RMSProp state: ``ms`` at 1 (EasyRec's), ``mom`` at 0."""
    state["ms"] = torch.ones_like(param)
    state["mom"] = torch.zeros_like(param)
