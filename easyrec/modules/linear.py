"""First-order (linear) terms over categorical ids and dense features."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from easyrec.modules.embedding import FieldEmbedding


class LinearTerms(nn.Module):
    """``Σ_f w[id_f] + w_dense·x + b``: one weight per id (zero-initialised) plus a linear map of the dense features.

    This is DeepFM's first-order part and Wide&Deep's wide part.

    Args:
        cardinalities: rows per categorical field.
        num_dense: number of dense features (0: none).
        sparse: sparse gradients for the id weights.
        l2: penalty on the looked-up id weights of each training batch (see :class:`FieldEmbedding`).
        names: the fields' names (see :class:`FieldEmbedding`).
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        num_dense: int,
        sparse: bool = False,
        l2: float = 0.0,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.categorical = FieldEmbedding(cardinalities, 1, sparse=sparse, init_std=0.0, l2=l2, names=names)
        self.dense = nn.Linear(num_dense, 1) if num_dense else None

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """``dense (B, D_dense)``, ``sparse (B, F)`` -> ``(B,)``."""
        logit = self.categorical(sparse).sum(dim=(1, 2))
        if self.dense is not None:
            logit = logit + self.dense(dense).squeeze(1)
        return logit
