"""First-order (linear) terms over categorical ids and dense features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import Tensor, nn

from easyrec.modules.embedding import FieldEmbedding

if TYPE_CHECKING:
    from easyrec.data.features import InputSpec, ListField


class LinearTerms(nn.Module):
    """``Σ_f w[id_f] + Σ_k pool_k(w[ids_k]) + w_dense·x + b``: one weight per id (zero-initialised), a list
    feature's ids' weights pooled by its combiner, plus a linear map of the dense features.

    This is DeepFM's first-order part and Wide&Deep's wide part.

    Args:
        cardinalities: rows per categorical field.
        num_dense: number of dense features (0: none).
        sparse: sparse gradients for the id weights.
        l2: penalty on the looked-up id weights of each training batch (see :class:`FieldEmbedding`).
        names: the fields' names (see :class:`FieldEmbedding`).
        lists: the multi-value and sequence features (see :class:`FieldEmbedding`; one sharing a field's table
            shares its weights).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        sparse: bool = False,
        l2: float = 0.0,
        names: Sequence[str] | None = None,
        lists: Sequence[ListField] = (),
    ) -> None:
        super().__init__()
        self.categorical = FieldEmbedding(
            cardinalities, 1, sparse=sparse, init_std=0.0, l2=l2, names=names, lists=lists
        )
        self.dense = nn.Linear(num_dense, 1) if num_dense else None

    @classmethod
    def of_fields(cls, inputs: InputSpec, sparse: bool = False, l2: float = 0.0) -> LinearTerms:
        """The terms of every input of ``inputs``: its categorical fields, list features and dense features."""
        return cls(inputs.cardinalities, inputs.num_dense, sparse, l2, inputs.categorical_names, inputs.lists)

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor:
        """``dense (B, D_dense)``, ``sparse (B, F)``, ``lists (B, ΣL)`` or None -> ``(B,)``."""
        logit = self.categorical(sparse, lists).sum(dim=(1, 2))
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit
