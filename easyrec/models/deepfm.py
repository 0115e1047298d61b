"""DeepFM (Guo et al., 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP, FactorizationMachine, FieldEmbedding, LinearTerms


class DeepFM(nn.Module):
    """First-order weights + factorization machine + MLP, sharing one set of field embeddings.

    ``logit = Σ_f w[id_f] + w_dense·x + FM(e_1..e_F) + MLP([e_1, ..., e_F, x])``, where x are the dense
    features and e_f the D-wide embedding of field f's id; a multi-value or sequence feature is one more field,
    its ids' embeddings (and first-order weights) pooled by its combiner. The FM dots the fields' embeddings, so
    every field has the model's ``embedding_dim`` (a feature's own ``embedding_dim`` is refused).

    Args:
        inputs: field names and cardinalities (from the data component).
        embedding_dim: D.
        hidden_units: widths of the MLP's hidden layers.
        dropout: MLP dropout.
        sparse_embeddings: sparse gradients for the two embedding tables.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            and first-order weights looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`),
            added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.
        num_outputs: logits per sample (a loss such as JRC wants 2); the first-order and FM terms are added
            to each.

    Example::

        model = DeepFM(InputSpec(("age",), ("city", "item"), (50, 1000)), embedding_dim=8, hidden_units=[32])
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4])
    """

    output_kind = "logits"

    @checked
    def __init__(
        self,
        inputs: InputSpec,
        embedding_dim: PositiveInt = 16,
        hidden_units: Sequence[PositiveInt] = (400, 400, 400),
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        if inputs.num_fields == 0:
            raise ValueError("DeepFM needs at least one categorical feature")
        self.embedding = FieldEmbedding.of_fields(
            inputs, embedding_dim, sparse_embeddings, embedding_regularization, model="DeepFM"
        )
        self.linear = LinearTerms.of_fields(inputs, sparse_embeddings, embedding_regularization)
        self.fm = FactorizationMachine()
        fields = inputs.num_fields + len(inputs.lists)
        self.mlp = MLP(fields * embedding_dim + inputs.num_dense, hidden_units, num_outputs, dropout)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None -> logits ``(B,)``, or
        ``(B, num_outputs)``."""
        embeddings = self.embedding(sparse, lists)  # (B, F + K, D)
        deep_input = torch.cat([embeddings.flatten(1), dense], dim=1) if dense.shape[1] else embeddings.flatten(1)
        logits = (self.linear(dense, sparse, lists) + self.fm(embeddings)).unsqueeze(1) + self.mlp(deep_input)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
