"""DLRM's pairwise dot-product interaction (Naumov et al., 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DotInteraction(nn.Module):
    """The dot products of every pair of n D-wide vectors: the strictly upper triangle of ``Z Zᵀ``, row by row
    (``<z_0, z_1>, <z_0, z_2>, ..., <z_1, z_2>, ...``), n(n−1)/2 values; with ``self_interaction`` the diagonal too
    (``<z_0, z_0>, <z_0, z_1>, ...``, n(n+1)/2 values, DLRM's ``--arch-interaction-itself``).

    Args:
        num_vectors: n.
        self_interaction: include each vector's dot product with itself.

    Example::

        interaction = DotInteraction(num_vectors=3)
        interaction(torch.randn(4, 3, 8)).shape  # torch.Size([4, 3])
    """

    def __init__(self, num_vectors: int, self_interaction: bool = False) -> None:
        super().__init__()
        rows, columns = torch.triu_indices(num_vectors, num_vectors, offset=0 if self_interaction else 1)
        if not len(rows):
            raise ValueError(f"num_vectors={num_vectors}: no pair to interact; needs at least 2 vectors")
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("columns", columns, persistent=False)
        self.out_features = len(rows)

    def forward(self, vectors: Tensor) -> Tensor:
        """``(B, n, D) -> (B, out_features)``."""
        return (vectors @ vectors.transpose(1, 2))[:, self.rows, self.columns]
