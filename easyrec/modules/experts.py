"""Mixtures of expert MLPs for multi-task models: MMoE's (Ma et al., 2018) and PLE's extraction layer (Tang et al.,
2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.modules.mlp import MLP


class Experts(nn.ModuleList):
    """E expert MLPs over one input: ``(B, in_features) -> (B, E, H)``.

    Each expert is ``MLP(in_features, units[:-1], units[-1])`` followed by a ReLU (its last layer is a hidden
    layer of what takes the mixture).

    Args:
        in_features: input width.
        num_experts: E.
        expert_units: widths of each expert's layers; the last is the output width H.
        dropout: dropout after each hidden activation.

    Example::

        experts = Experts(in_features=10, num_experts=3, expert_units=[16, 8])
        experts(torch.randn(4, 10)).shape  # torch.Size([4, 3, 8])
    """

    def __init__(self, in_features: int, num_experts: int, expert_units: Sequence[int], dropout: float = 0.0) -> None:
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts}: must be >= 1")
        if not expert_units or min(expert_units) < 1:
            raise ValueError(f"expert_units={list(expert_units)}: must be a non-empty list of widths > 0")
        super().__init__(
            nn.Sequential(MLP(in_features, expert_units[:-1], expert_units[-1], dropout), nn.ReLU())
            for _ in range(num_experts)
        )
        self.out_features = expert_units[-1]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, E, H)``: every expert's output."""
        return torch.stack([expert(x) for expert in self], dim=1)


class MixtureOfExperts(nn.Module):
    """E expert MLPs shared by T tasks; task t's input is ``Σ_e g_t(x)_e · expert_e(x)``, ``g_t = softmax(W_t x)``.

    The experts are :class:`Experts`; the T gates are one linear layer of T·E outputs, softmaxed per task.

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
        if num_tasks < 1:
            raise ValueError(f"num_tasks={num_tasks}: must be >= 1")
        self.experts = Experts(in_features, num_experts, expert_units, dropout)
        self.gate = nn.Linear(in_features, num_tasks * num_experts)
        self.num_tasks, self.num_experts = num_tasks, num_experts
        self.out_features = self.experts.out_features

    def gate_weights(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, T, E)``: each task's weights over the experts (rows sum to 1)."""
        return self.gate(x).view(-1, self.num_tasks, self.num_experts).softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features) -> (B, T, H)``: each task's mixture of the expert outputs."""
        return self.gate_weights(x) @ self.experts(x)


class ExtractionLayer(nn.Module):
    """One level of PLE's progressive layered extraction (Tang et al., 2020): task-specific and shared experts.

    The input holds T task inputs and a shared one, ``x = [x_1, ..., x_T, x_s]``. Task t's experts read ``x_t``, the
    shared experts read ``x_s``. Task t's output mixes its own experts and the shared ones,
    ``y_t = softmax(W_t x_t) · [experts_t(x_t), experts_s(x_s)]``; with ``shared_gate`` (every level but the last)
    a shared output mixes every expert of every task and the shared ones, ``y_s = softmax(W_s x_s) · [experts_1(x_1),
    ..., experts_T(x_T), experts_s(x_s)]``, and feeds the next level's shared experts.

    Args:
        in_features: width of each input.
        num_tasks: T.
        num_task_experts: experts of each task.
        num_shared_experts: experts shared by the tasks.
        expert_units: widths of each expert's layers (see :class:`Experts`); the last is the output width H.
        shared_gate: whether to output ``y_s`` (false at the last level, whose outputs go to the towers).
        dropout: dropout after each hidden activation of the experts.

    Example::

        level = ExtractionLayer(in_features=10, num_tasks=2, num_task_experts=2, num_shared_experts=1,
                                expert_units=[16, 8])
        level(torch.randn(4, 3, 10)).shape  # torch.Size([4, 3, 8]): [y_1, y_2, y_s]
    """

    def __init__(
        self,
        in_features: int,
        num_tasks: int,
        num_task_experts: int,
        num_shared_experts: int,
        expert_units: Sequence[int],
        shared_gate: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for key, value in (
            ("num_tasks", num_tasks),
            ("num_task_experts", num_task_experts),
            ("num_shared_experts", num_shared_experts),
        ):
            if value < 1:
                raise ValueError(f"{key}={value}: must be >= 1")
        self.task_experts = nn.ModuleList(
            Experts(in_features, num_task_experts, expert_units, dropout) for _ in range(num_tasks)
        )
        self.shared_experts = Experts(in_features, num_shared_experts, expert_units, dropout)
        self.task_gates = nn.ModuleList(
            nn.Linear(in_features, num_task_experts + num_shared_experts) for _ in range(num_tasks)
        )
        num_experts = num_tasks * num_task_experts + num_shared_experts
        self.shared_gate = nn.Linear(in_features, num_experts) if shared_gate else None
        self.num_tasks = num_tasks
        self.out_features = self.shared_experts.out_features

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T + 1, in_features) -> (B, T + 1, H)`` with ``shared_gate``, else ``(B, T, H)``: ``[y_1, ..., y_T
        (, y_s)]`` from ``[x_1, ..., x_T, x_s]``."""
        shared = self.shared_experts(x[:, -1])  # (B, E_s, H)
        tasks = [experts(x[:, t]) for t, experts in enumerate(self.task_experts)]  # each (B, E_t, H)
        outputs = [mix(gate(x[:, t]), torch.cat([tasks[t], shared], dim=1)) for t, gate in enumerate(self.task_gates)]
        if self.shared_gate is not None:
            outputs.append(mix(self.shared_gate(x[:, -1]), torch.cat([*tasks, shared], dim=1)))
        return torch.stack(outputs, dim=1)


def mix(gate_logits: Tensor, experts: Tensor) -> Tensor:
    """``(B, E)`` gate logits, ``(B, E, H)`` expert outputs -> ``(B, H)``: the softmax-weighted sum of the experts."""
    return (gate_logits.softmax(dim=-1).unsqueeze(1) @ experts).squeeze(1)
