"""Wide & Deep (Cheng et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP, FieldEmbedding, LinearTerms


class DeepTower(nn.Module):
    """Field embeddings, concatenated with the dense features, through an MLP to one logit.

    Args:
        inputs: field names and cardinalities.
        embedding_dim: D.
        hidden_units: widths of the MLP's hidden layers.
        dropout: MLP dropout.
        sparse: sparse gradients for the embedding table.
        num_outputs: logits per sample.
        l2: penalty on the looked-up embeddings of each training batch (see :class:`FieldEmbedding`).
    """

    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: int,
        hidden_units: Sequence[int],
        dropout: float,
        sparse: bool,
        num_outputs: int = 1,
        l2: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = FieldEmbedding.of_fields(inputs, embedding_dim, sparse, l2)
        self.mlp = MLP(inputs.num_fields * embedding_dim + inputs.num_dense, hidden_units, num_outputs, dropout)

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """``dense (B, D_dense)``, ``sparse (B, F)`` -> ``(B, num_outputs)``."""
        deep_input = self.embedding(sparse).flatten(1)  # (B, F·D)
        if dense.shape[1]:
            deep_input = torch.cat([deep_input, dense], dim=1)
        return self.mlp(deep_input)


class WideAndDeep(nn.Module):
    """``logit = wide(x) + deep(x)``: a linear model over the ids and dense features, plus a deep tower.

    The two parts are the modules ``wide`` and ``deep``, so ``optimizer=wide_deep`` can give each its own
    optimizer (EasyRec trains the wide part with FTRL and the deep part with Adam).

    Args:
        inputs: field names and cardinalities (from the data component).
        embedding_dim: D of the deep tower's embeddings.
        hidden_units: widths of the deep tower's hidden layers.
        dropout: deep tower dropout.
        sparse_embeddings: sparse gradients for both parts' id tables.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            and id weights looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added
            to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.
        num_outputs: logits per sample (a loss such as JRC wants 2); the wide part is added to each.

    Example::

        model = WideAndDeep(InputSpec(("age",), ("city", "item"), (50, 1000)), embedding_dim=8, hidden_units=[32])
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4])
    """

    output_kind = "logits"

    @checked
    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: PositiveInt = 16,
        hidden_units: Sequence[PositiveInt] = (256, 128, 64),
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        if inputs.num_fields == 0:
            raise ValueError("WideAndDeep needs at least one categorical feature")
        self.wide = LinearTerms(
            inputs.cardinalities,
            inputs.num_dense,
            sparse=sparse_embeddings,
            l2=embedding_regularization,
            names=inputs.categorical_names,
        )
        self.deep = DeepTower(
            inputs, embedding_dim, hidden_units, dropout, sparse_embeddings, num_outputs, l2=embedding_regularization
        )

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int`` -> logits ``(B,)``, or ``(B, num_outputs)``."""
        logits = self.wide(dense, sparse).unsqueeze(1) + self.deep(dense, sparse)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
