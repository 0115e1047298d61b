"""Wide & Deep (Cheng et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP, LinearTerms
from easyrec.modules.feature_vector import FeatureVector


class DeepTower(FeatureVector):
    """Field embeddings and pooled list features, concatenated with the dense features (the
    :class:`~easyrec.modules.feature_vector.FeatureVector` it is, so its tables keep their names: ``embedding``),
    through an MLP to one logit.

    Args:
        inputs: field names and cardinalities.
        embedding_dim: D (of a field that sets no ``embedding_dim``).
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
        super().__init__(inputs, embedding_dim, sparse=sparse, l2=l2)
        self.mlp = MLP(self.out_features, hidden_units, num_outputs, dropout)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense)``, ``sparse (B, F)``, ``lists (B, ΣL)`` or None -> ``(B, num_outputs)``."""
        return self.mlp(super().forward(dense, sparse, lists))


class WideAndDeep(nn.Module):
    """``logit = wide(x) + deep(x)``: a linear model over the ids and dense features, plus a deep tower.

    A multi-value or sequence feature's ids' weights are pooled by its combiner in the wide part, their embeddings
    in the deep part; the deep part takes each field's own ``embedding_dim``.

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
        self.wide = LinearTerms.of_fields(inputs, sparse_embeddings, embedding_regularization)
        self.deep = DeepTower(
            inputs, embedding_dim, hidden_units, dropout, sparse_embeddings, num_outputs, l2=embedding_regularization
        )

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None -> logits ``(B,)``, or
        ``(B, num_outputs)``."""
        logits = self.wide(dense, sparse, lists).unsqueeze(1) + self.deep(dense, sparse, lists)
        return logits.squeeze(1) if logits.shape[1] == 1 else logits
