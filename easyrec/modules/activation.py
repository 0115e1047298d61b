"""The activations DIN uses after its hidden layers: PReLU and Dice (Zhou et al. 2018)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "prelu", "dice"]


class Dice(nn.Module):
    """Dice (DIN, Zhou et al. 2018, eq. 2): ``f(s) = p(s)·s + (1 − p(s))·α·s`` with
    ``p(s) = sigmoid((s − E[s]) / sqrt(Var[s] + eps))``, per unit: a PReLU whose rectifying point moves with the
    data.

    In training, ``E[s]`` and ``Var[s]`` are the batch's mean and (biased) variance of each unit, and running
    averages of them (``momentum``, the unbiased variance, as batch norm keeps) are kept for evaluation, which uses
    them; a training batch of fewer than 2 rows uses them too. ``α`` starts at 0 (DeepCTR's choice).

    Args:
        num_features: H, the units.
        eps: added to the variance (1e-8, as the paper).
        momentum: weight of a batch in the running averages.

    Example::

        dice = Dice(3)
        dice(torch.randn(8, 3)).shape  # torch.Size([8, 3]); any (..., H) shape
    """

    def __init__(self, num_features: int, eps: float = 1e-8, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.alpha = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., H) -> (..., H)``."""
        rows = x.reshape(-1, x.shape[-1])
        if self.training and rows.shape[0] > 1:
            mean, var = rows.mean(0), rows.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.float(), self.momentum)
                self.running_var.lerp_(rows.var(0).float(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) * torch.rsqrt(var + self.eps))
        return x * (p + (1 - p) * self.alpha)


def activation(name: Activation, width: int) -> nn.Module:
    """The activation ``name`` of a layer of ``width`` units: ``relu``, ``prelu`` (one slope per unit, 0.25 to
    start, as torch's) or ``dice`` (:class:`Dice`)."""
    if name == "prelu":
        return nn.PReLU(width)
    if name == "dice":
        return Dice(width)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"activation={name!r}: one of relu, prelu, dice")
