"""DIN's target attention: the items of a behaviour history weighted by their relevance to the target item."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.modules.activation import Activation
from easyrec.modules.mlp import MLP


class TargetAttention(nn.Module):
    """DIN's local activation unit (Zhou et al. 2018, fig. 2): ``w_i = MLP([h_i, t, h_i − t, h_i ⊙ t])`` for each
    item ``h_i`` of a history and the target ``t``, then ``Σ_i w_i · h_i`` over the history's ids (padding weighs
    0). The weights are not normalised (no softmax: the paper keeps the intensity of a user's interests), so a
    history with more relevant items gives a larger vector.

    The MLP (``Linear -> activation`` per width of ``hidden_units``, then ``Linear -> 1``) reads only the positions
    that hold an id: padding shifts no Dice statistic.

    Args:
        dim: D, the width of the items' and the target's embeddings.
        hidden_units: widths of the MLP's hidden layers.
        activation: ``relu``, ``prelu`` or ``dice``.

    Example::

        attention = TargetAttention(8, hidden_units=[16])
        mask = torch.tensor([[True, True, False], [False, False, False]])
        attention(torch.randn(2, 8), torch.randn(2, 3, 8), mask).shape  # torch.Size([2, 8]); row 1: zeros
    """

    def __init__(self, dim: int, hidden_units: Sequence[int] = (80, 40), activation: Activation = "dice") -> None:
        super().__init__()
        self.mlp = MLP(4 * dim, hidden_units, 1, activation=activation)

    def forward(self, target: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        """``target (B, D)``, ``history (B, L, D)``, ``mask (B, L) bool`` (True: an id) -> ``(B, D)``."""
        batch, length, dim = history.shape
        target = target.unsqueeze(1).expand(-1, length, -1)
        units = torch.cat([history, target, history - target, history * target], dim=2).view(-1, 4 * dim)
        held = mask.reshape(-1).nonzero().squeeze(1)  # (N,) the positions with an id
        weights = units.new_zeros(batch * length).index_put((held,), self.mlp(units[held]).squeeze(1).to(units.dtype))
        return (weights.view(batch, length, 1) * history).sum(dim=1)
