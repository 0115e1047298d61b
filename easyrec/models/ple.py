"""PLE: progressive layered extraction for multi-task learning (Tang et al., 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import Ge, MinLen
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP
from easyrec.modules.experts import ExtractionLayer
from easyrec.modules.feature_vector import FeatureVector


class PLE(nn.Module):
    """Stacked extraction layers of task-specific and shared experts, then one tower per task.

    ``v = [e_1, ..., e_F, x]`` (field embeddings and dense features) is every input of the first
    :class:`~easyrec.modules.experts.ExtractionLayer`; each level's task outputs feed the next level's experts of
    that task, its shared output the next level's shared experts. Task t's output is ``tower_t(y_t)`` of the last
    level. One level is PLE's CGC (customized gate control).

    Args:
        inputs: field names and cardinalities (from the data component).
        task_outputs: outputs of each task's tower, e.g. (1, 1) for CTR + CVR logits, (1, 3) for a CTR logit and
            a ZILN head; the run sets it from the loss.
        embedding_dim: D.
        num_levels: extraction layers stacked.
        num_task_experts: experts of each task at each level.
        num_shared_experts: experts shared by the tasks at each level.
        expert_units: widths of each expert's layers; the last is the width the next level and the towers take.
        tower_units: widths of each tower's hidden layers (empty: a linear head).
        dropout: dropout after each hidden activation of the experts and towers.
        sparse_embeddings: sparse gradients for the embedding table.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW²/2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.

    Example::

        model = PLE(InputSpec(("age",), ("city", "item"), (50, 1000)), task_outputs=(1, 1), embedding_dim=8)
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4, 2]): [task 0, task 1]
    """

    output_kind = "logits"

    @checked
    def __init__(
        self,
        inputs: InputSpec,
        task_outputs: Annotated[Sequence[PositiveInt], MinLen(1)] = (1, 1),
        embedding_dim: PositiveInt = 16,
        num_levels: Annotated[int, Ge(1)] = 2,
        num_task_experts: Annotated[int, Ge(1)] = 2,
        num_shared_experts: Annotated[int, Ge(1)] = 2,
        expert_units: Annotated[Sequence[PositiveInt], MinLen(1)] = (256, 128),
        tower_units: Sequence[PositiveInt] = (64,),
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        task_outputs = tuple(task_outputs)
        self.features = FeatureVector(inputs, embedding_dim, sparse=sparse_embeddings, l2=embedding_regularization)
        widths = [self.features.out_features] + [expert_units[-1]] * (num_levels - 1)
        self.levels = nn.ModuleList(
            ExtractionLayer(
                width,
                len(task_outputs),
                num_task_experts,
                num_shared_experts,
                expert_units,
                shared_gate=level < num_levels - 1,
                dropout=dropout,
            )
            for level, width in enumerate(widths)
        )
        self.towers = nn.ModuleList(MLP(expert_units[-1], tower_units, outputs, dropout) for outputs in task_outputs)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        ``(B, Σ task_outputs)`` (``(B,)`` if the Σ is 1)."""
        x = self.features(dense, sparse, lists)  # (B, V): the first level's input of every task and the shared
        for level in self.levels:
            x = level(x)  # (B, T + 1, H), (B, T, H) after the last level
        outputs = torch.cat([tower(x[:, t]) for t, tower in enumerate(self.towers)], dim=1)
        return outputs.squeeze(1) if outputs.shape[1] == 1 else outputs
