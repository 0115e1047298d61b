"""DIN: deep interest network (Zhou et al., 2018, "Deep Interest Network for Click-Through Rate Prediction")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP
from easyrec.modules.attention import TargetAttention
from easyrec.modules.feature_vector import FeatureVector


class DIN(nn.Module):
    """Each behaviour history attended with its target item, next to the other features, through an MLP.

    A sequence feature that shares a categorical field's table (``data.features.sequence.N.embedding_name: item``:
    the history's items are ids of the target ``item``) is pooled by a
    :class:`~easyrec.modules.attention.TargetAttention` unit with that field's embedding as the query:
    ``a = Σ_i w_i · e(h_i)``, ``w_i = unit([e(h_i), e(t), e(h_i) − e(t), e(h_i) ⊙ e(t)])`` (no softmax, as the
    paper). ``logits = MLP([e_1, ..., e_F, p_1, ..., p_K, x, a_1, ..., a_S])``: the fields' embeddings, the other
    list features pooled by their combiner, the dense features and the S attended histories
    (:class:`~easyrec.modules.feature_vector.FeatureVector`); the MLP's and the units' hidden layers use
    ``activation``. Each field may have its own ``embedding_dim``.

    Args:
        inputs: field names, cardinalities and list features (from the data component); at least one sequence
            feature must share a categorical field's table.
        embedding_dim: D of a field that sets no ``embedding_dim``.
        attention_units: widths of each attention unit's hidden layers.
        hidden_units: widths of the MLP's hidden layers.
        activation: ``dice`` (the paper's, :class:`~easyrec.modules.activation.Dice`) or ``prelu``.
        dropout: dropout after each hidden activation of the MLP.
        sparse_embeddings: sparse gradients for the embedding tables.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers, the attention units' included (not biases nor embeddings; see
            :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added to the training objective once per step.
        num_outputs: logits per sample (a loss such as JRC wants 2).

    Example::

        history = ListField("history", "sequence", max_length=3, combiner="mean", start=0, cardinality=1000,
                            table="item")
        model = DIN(InputSpec((), ("user", "item"), (50, 1000), lists=(history,)), embedding_dim=8)
        lists = torch.tensor([[5, 9, -1], [-1, -1, -1]])
        model(torch.zeros(2, 0), torch.tensor([[1, 9], [2, 3]]), lists).shape  # torch.Size([2])
    """

    output_kind = "logits"

    @checked
    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: PositiveInt = 16,
        attention_units: Sequence[PositiveInt] = (80, 40),
        hidden_units: Sequence[PositiveInt] = (200, 80),
        activation: Literal["dice", "prelu"] = "dice",
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        self.attended = tuple(f for f in inputs.lists if f.kind == "sequence" and f.table is not None)
        if not self.attended:
            sequences = [f.name for f in inputs.lists if f.kind == "sequence"]
            raise ValueError(
                "DIN attends a behaviour history to its target item: it needs a sequence feature that shares a "
                "categorical feature's table (data.features.sequence.N.embedding_name: one of "
                f"{_shown(inputs.categorical_names) or 'no categorical feature'}); the sequence features: "
                f"{_shown(sequences) or 'none'}"
            )
        others = tuple(f for f in inputs.lists if f not in self.attended)
        self.features = FeatureVector(
            replace(inputs, lists=others), embedding_dim, sparse=sparse_embeddings, l2=embedding_regularization
        )
        self.targets = [inputs.categorical_names.index(f.table) for f in self.attended]
        _, list_dims = inputs.field_dims(embedding_dim)
        widths = [width for f, width in zip(inputs.lists, list_dims, strict=True) if f in self.attended]
        self.attention = nn.ModuleList(TargetAttention(width, attention_units, activation) for width in widths)
        self.mlp = MLP(self.features.out_features + sum(widths), hidden_units, num_outputs, dropout, activation)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` -> logits ``(B,)``, or
        ``(B, num_outputs)``."""
        parts = [self.features(dense, sparse, lists)]
        for feature, target, attention in zip(self.attended, self.targets, self.attention, strict=True):
            table = self.features.table_of(feature.table)
            history, mask = table.lookup(lists[:, feature.columns], feature.table)  # (B, L, D), (B, L)
            # the target's embedding, penalised once already by self.features
            item, _ = table.lookup(sparse[:, target : target + 1], feature.table, penalised=False)  # (B, 1, D)
            parts.append(attention(item.squeeze(1), history, mask))
        logits = self.mlp(torch.cat(parts, dim=1))
        return logits.squeeze(1) if logits.shape[1] == 1 else logits


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) < 5 else f"{names[0]}, {names[1]}, ..., {names[-1]}"
