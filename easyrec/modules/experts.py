"""Mixtures of expert MLPs for multi-task models: MMoE's (Ma et al., 2018) and PLE's extraction layer (Tang et al.,
2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Experts(nn.Module):
    """E expert MLPs, each over its own input or one shared input: ``(B, in_features)`` or ``(E, B, in_features)``
    -> ``(B, E, H)``; every layer of every expert is one batched matrix product (no Python loop over the experts).

    Expert e is ``Linear -> ReLU (-> Dropout)`` per width of ``expert_units`` but the last, then ``Linear -> ReLU``
    to H = ``expert_units[-1]`` (its last layer is a hidden layer of what takes the mixture); Glorot-normal kernels and
    zero biases, as :class:`~easyrec.modules.MLP`. Parameter layout: layer k's kernels are ``weights[k]`` of shape
    ``(E, in_k, out_k)`` and its biases ``biases[k]`` of shape ``(E, 1, out_k)``; expert e's layer k is
    ``h @ weights[k][e] + biases[k][e]`` (``weights[k][e]`` is ``nn.Linear.weight`` transposed).

    Args:
        in_features: input width.
        num_experts: E.
        expert_units: widths of each expert's layers; the last is the output width H.
        dropout: dropout after each hidden activation (not after the output's ReLU).

    Example::

        experts = Experts(in_features=10, num_experts=3, expert_units=[16, 8])
        experts(torch.randn(4, 10)).shape  # torch.Size([4, 3, 8])
        experts(torch.randn(3, 4, 10)).shape  # torch.Size([4, 3, 8]): expert e reads row block e
    """

    def __init__(self, in_features: int, num_experts: int, expert_units: Sequence[int], dropout: float = 0.0) -> None:
        if num_experts < 1:
            raise ValueError(f"num_experts={num_experts}: must be >= 1")
        if not expert_units or min(expert_units) < 1:
            raise ValueError(f"expert_units={list(expert_units)}: must be a non-empty list of widths > 0")
        super().__init__()
        widths = [in_features, *expert_units]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_experts, width, units))
            for width, units in zip(widths[:-1], expert_units, strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(num_experts, 1, units)) for units in expert_units)
        for weight in self.weights:  # Glorot normal per expert, as nn.init.xavier_normal_ on each nn.Linear
            nn.init.normal_(weight, std=(2.0 / (weight.shape[1] + weight.shape[2])) ** 0.5)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_experts, self.out_features = num_experts, expert_units[-1]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_features)`` read by every expert, or ``(E, B, in_features)`` (expert e reads ``x[e]``) ->
        ``(B, E, H)``: every expert's output."""
        h = x.unsqueeze(0) if x.dim() == 2 else x  # (1 or E, B, in)
        last = len(self.weights) - 1
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h.expand(self.num_experts, -1, -1), weight).relu()  # (E, B, out_k)
            if k < last:
                h = self.dropout(h)
        return h.transpose(0, 1)


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

    Every expert of the level is one :class:`Experts` (``self.experts``: one batched matrix product per layer over
    all of them): experts ``t·E_t .. (t+1)·E_t - 1`` are task t's, the last ``E_s`` the shared ones.

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
        level(torch.randn(4, 10)).shape  # the same, x_1 = x_2 = x_s
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
        # every expert of the level in one Experts: task 0's, ..., task T-1's, then the shared ones
        self.experts = Experts(in_features, num_tasks * num_task_experts + num_shared_experts, expert_units, dropout)
        self.task_gates = nn.ModuleList(
            nn.Linear(in_features, num_task_experts + num_shared_experts) for _ in range(num_tasks)
        )
        self.shared_gate = nn.Linear(in_features, self.experts.num_experts) if shared_gate else None
        owner = torch.arange(num_tasks + 1).repeat_interleave(
            torch.tensor([num_task_experts] * num_tasks + [num_shared_experts])
        )
        shared = torch.arange(num_tasks * num_task_experts, self.experts.num_experts)
        mixed = [
            torch.cat([torch.arange(t * num_task_experts, (t + 1) * num_task_experts), shared])
            for t in range(num_tasks)
        ]
        self.register_buffer("owner", owner, persistent=False)  # (E,): the input each expert reads
        self.register_buffer("mixed", torch.stack(mixed), persistent=False)  # (T, E_t + E_s): what task t mixes
        self.num_tasks = num_tasks
        self.out_features = self.experts.out_features

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T + 1, in_features)`` -> ``(B, T + 1, H)`` with ``shared_gate``, else ``(B, T, H)``: ``[y_1, ...,
        y_T (, y_s)]`` from ``[x_1, ..., x_T, x_s]``; ``(B, in_features)``: one input for all (the first level)."""
        if x.dim() == 2:
            experts = self.experts(x)  # (B, E, H)
            inputs = [x] * (self.num_tasks + 1)
        else:
            experts = self.experts(x.transpose(0, 1)[self.owner])  # (B, E, H), expert e reading x[:, owner[e]]
            inputs = x.unbind(1)
        gates = torch.stack([gate(inputs[t]) for t, gate in enumerate(self.task_gates)], dim=1)  # (B, T, E_t+E_s)
        outputs = (gates.softmax(dim=-1).unsqueeze(2) @ experts[:, self.mixed]).squeeze(2)  # (B, T, H)
        if self.shared_gate is None:
            return outputs
        return torch.cat([outputs, mix(self.shared_gate(inputs[-1]), experts).unsqueeze(1)], dim=1)


def mix(gate_logits: Tensor, experts: Tensor) -> Tensor:
    """``(B, E)`` gate logits, ``(B, E, H)`` expert outputs -> ``(B, H)``: the softmax-weighted sum of the experts."""
    return (gate_logits.softmax(dim=-1).unsqueeze(1) @ experts).squeeze(1)
