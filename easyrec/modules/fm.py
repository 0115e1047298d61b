"""Second-order factorization machine interaction."""

from __future__ import annotations

from torch import Tensor, nn


class FactorizationMachine(nn.Module):
    """Sum over field pairs i<j of <e_i, e_j>, computed as ½·(‖Σe‖² − Σ‖e‖²) in O(F·D)."""

    def forward(self, embeddings: Tensor) -> Tensor:
        """``(B, F, D) -> (B,)``."""
        total = embeddings.sum(dim=1)
        return 0.5 * (total.pow(2) - embeddings.pow(2).sum(dim=1)).sum(dim=1)
