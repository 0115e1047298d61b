"""One fused embedding table for many categorical fields."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class FieldEmbedding(nn.Module):
    """Embeddings of F categorical fields in one table, each field owning a block of rows.

    Field f's local id i is row ``offsets[f] + i``, so one lookup serves every field (no Python loop
    over ``nn.Embedding``s).

    Args:
        cardinalities: rows per field.
        dim: embedding width D.
        sparse: produce sparse gradients (only the looked-up rows), for optimizers that take them.
        init_std: standard deviation of the normal initialisation (1e-4, as DeepCTR and FuxiCTR: on Frappe it gave
            +0.002 to +0.008 eval AUC over 1e-2 after one epoch); 0 starts every row at zero.
        l2: EasyRec's ``embedding_regularization``: each training forward (with gradients) keeps
            ``penalty = l2 · Σ e² / 2`` over the looked-up embeddings ``e`` of the batch (not the whole table), which
            :meth:`take_penalty` hands to the trainer to add to the loss. It shrinks the embeddings of the ids in
            the batch, the rare ones most relative to their data. 0: off.

    Example::

        emb = FieldEmbedding([10, 1000], dim=8)
        emb(torch.tensor([[3, 999], [0, 7]])).shape  # torch.Size([2, 2, 8])
    """

    def __init__(
        self, cardinalities: Sequence[int], dim: int, sparse: bool = False, init_std: float = 1e-4, l2: float = 0.0
    ) -> None:
        super().__init__()
        if l2 < 0:
            raise ValueError(f"l2={l2}: must be >= 0")
        self.l2 = l2
        self.penalty: Tensor | None = None
        sizes = torch.as_tensor(list(cardinalities), dtype=torch.long)
        self.register_buffer("offsets", (torch.cumsum(sizes, 0) - sizes).to(torch.int32), persistent=False)
        # rows summed in Python: under torch.device("meta") (the memory check) sizes holds no values
        self.table = nn.Embedding(sum(int(c) for c in cardinalities), dim, sparse=sparse)
        if init_std > 0:
            nn.init.normal_(self.table.weight, std=init_std)
        else:
            nn.init.zeros_(self.table.weight)

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (B, F) int`` local row per field -> ``(B, F, D)``."""
        embeddings = self.table(ids + self.offsets)
        if self.l2 and self.training and torch.is_grad_enabled():
            self.penalty = 0.5 * self.l2 * embeddings.float().square().sum()
        return embeddings

    def take_penalty(self) -> Tensor | None:
        """The scalar penalty of the last training forward since the last call (None if none), and forget it."""
        penalty, self.penalty = self.penalty, None
        return penalty
