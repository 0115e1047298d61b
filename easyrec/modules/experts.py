"""Multi-gate mixture of experts (Ma et al., 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.modules.mlp import MLP


class MixtureOfExperts(nn.Module):
    """E expert MLPs shared by T tasks; task t's input is ``Σ_e g_t(x)_e · expert_e(x)``, ``g_t = softmax(W_t x)``.

    Each expert is ``MLP(in_features, units[:-1], units[-1])`` followed by a ReLU (its last layer is a hidden
    layer of the towers above it). The T gates are one linear layer of T·E outputs, softmaxed per task.

    Args:
        in_features: input width.
        num_experts: E.
        expert_units: widths of each expert's layers; the last is the output width H.
        num_tasks: T.
        dropout: dropout after each hidden activation of the experts.

    Example::

        moe = MixtureOfExperts(in_features=10, num_experts=3, expert_units=[16, 8], num_tasks=2)
        moe(torch.randn(4, 10)).shape  # torch.Size([4, 2, 8])
    """

    def __init__(
        self, in_features: int, num_experts: int, expert_units: Sequence[int], num_tasks: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts}: must be >= 1")
        if not expert_units or min(expert_units) < 1:
            raise ValueError(f"expert_units={list(expert_units)}: must be a non-empty list of widths > 0")
        if num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks}: must be >= 1")
        self.experts = nn.ModuleList(
            nn.Sequential(MLP(in_features, expert_units[:-1], expert_units[-1], dropout), nn.ReLU())
            for _ in range(num_experts)
        )
        self.gate = nn.Linear(in_features, num_tasks * num_experts)
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.out_features = expert_units[-1]

    def gate_weights(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, T, E)``: each task's weights over the experts (rows sum to 1)."""
        return self.gate(x).view(-1, self.num_tasks, self.num_experts).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, T, H)``: each task's mixture of the expert outputs."""
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # (B, E, H)
        return self.gate_weights(x) @ experts
