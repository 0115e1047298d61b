"""DSSM two-tower retrieval model (Huang et al., 2013)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import MinLen
from torch import Tensor, nn

from easyrec.config.arguments import Fraction, NonNegative, PositiveInt, checked
from easyrec.data.features import InputSpec
from easyrec.modules import MLP
from easyrec.modules.feature_vector import FeatureVector, feature_columns


def _towers_apart(user_features: Sequence[str], item_features: Sequence[str], **_: object) -> str | None:
    both = [name for name in user_features if name in item_features]
    return f"item_features: {both[0]!r} is also in user_features" if both else None


class DSSM(nn.Module):
    """A user tower and an item tower, each over its own features, embedding a row's user and item in one space.

    Each tower is ``MLP([e_f for its categorical fields f], [its dense features]) -> output_dim``, with its own
    embedding table; with ``normalize`` both outputs are L2-normalised, so their dot product is a cosine.
    The retrieval loss scores the pairs (and owns any temperature).

    Args:
        inputs: field names and cardinalities (from the data component).
        user_features: dense, categorical, multi-value and sequence feature names the user (query) tower sees.
        item_features: feature names the item tower sees; none may be in ``user_features``.
        embedding_dim: D of the field embeddings.
        hidden_units: widths of each tower's hidden layers.
        output_dim: width of the user and item embeddings.
        normalize: L2-normalise the two embeddings.
        dropout: dropout after each hidden activation.
        sparse_embeddings: sparse gradients for the embedding tables.
        embedding_regularization: EasyRec's ``embedding_regularization``: ``scale · Σ e² / 2`` over the embeddings
            looked up for each training batch (see :class:`~easyrec.modules.FieldEmbedding`), added to the loss.
        l2_regularization: EasyRec's ``l2_regularization``: ``scale · ΣW² / 2`` over the kernels W of the dense
            layers (not biases nor embeddings; see :class:`~easyrec.modules.kernel_penalty.KernelPenalty`), added
            to the training objective once per step.

    Example::

        inputs = InputSpec(("age",), ("city", "item"), (50, 1000))
        model = DSSM(inputs, user_features=["age", "city"], item_features=["item"], hidden_units=[32], output_dim=8)
        model(torch.randn(4, 1), torch.randint(0, 50, (4, 2))).shape  # torch.Size([4, 2, 8]): [user, item]
    """

    output_kind = "pair_embeddings"

    @checked(across=_towers_apart)
    def __init__(
        self,
        inputs: InputSpec,
        user_features: Annotated[Sequence[str], MinLen(1)],
        item_features: Annotated[Sequence[str], MinLen(1)],
        embedding_dim: PositiveInt = 16,
        hidden_units: Sequence[PositiveInt] = (256, 128),
        output_dim: PositiveInt = 32,
        normalize: bool = True,
        dropout: Fraction = 0.0,
        sparse_embeddings: bool = False,
        embedding_regularization: NonNegative = 0.0,
        l2_regularization: NonNegative = 0.0,
    ) -> None:
        super().__init__()
        self.l2_regularization = float(l2_regularization)  # read by the trainer (models.base.l2_regularization)
        for argument, names in (("user_features", user_features), ("item_features", item_features)):
            try:
                feature_columns(inputs, names)
            except ValueError as error:
                raise ValueError(f"{argument}: {error}") from None
        self.user_features = FeatureVector(
            inputs, embedding_dim, user_features, sparse=sparse_embeddings, l2=embedding_regularization
        )
        self.item_features = FeatureVector(
            inputs, embedding_dim, item_features, sparse=sparse_embeddings, l2=embedding_regularization
        )
        self.user_tower = MLP(self.user_features.out_features, hidden_units, output_dim, dropout)
        self.item_tower = MLP(self.item_features.out_features, hidden_units, output_dim, dropout)
        self.normalize = normalize

    def user_embeddings(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None -> ``(B, output_dim)``;
        reads only the user features."""
        return self._output(self.user_tower(self.user_features(dense, sparse, lists)))

    def item_embeddings(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None -> ``(B, output_dim)``;
        reads only the item features."""
        return self._output(self.item_tower(self.item_features(dense, sparse, lists)))

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense) float``, ``sparse (B, F) int``, ``lists (B, ΣL) int`` or None ->
        ``(B, 2, output_dim)``: [user, item]."""
        inputs = (dense, sparse, lists)
        return torch.stack([self.user_embeddings(*inputs), self.item_embeddings(*inputs)], dim=1)

    def _output(self, embeddings: Tensor) -> Tensor:
        return F.normalize(embeddings, dim=1) if self.normalize else embeddings
