"""Encoded splits held as contiguous tensors, and the batches sliced from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    """One batch of model inputs.

    Attributes:
        dense: ``(B, D) float32`` dense features.
        sparse: ``(B, F) int32`` row of each categorical field in its own table (0 = out of vocabulary).
        labels: ``(B,) float32``.
        weights: ``(B,) float32`` sample weights, or None.
    """

    dense: Tensor
    sparse: Tensor
    labels: Tensor
    weights: Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.dense), move(self.sparse), move(self.labels), move(self.weights))


@dataclass
class EncodedSplit:
    """A whole split as tensors with a shared first dimension N; ``source`` names it in errors."""

    dense: Tensor
    sparse: Tensor
    labels: Tensor
    weights: Tensor | None
    source: str

    def __len__(self) -> int:
        return self.labels.shape[0]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, order: Tensor | None = None) -> Iterator[Batch]:
        """Yield batches of ``batch_size`` rows: contiguous slices, or ``order``'s rows when given."""
        for start in range(0, len(self), batch_size):
            if order is None:
                rows = slice(start, start + batch_size)
                yield Batch(
                    self.dense[rows],
                    self.sparse[rows],
                    self.labels[rows],
                    None if self.weights is None else self.weights[rows],
                )
            else:
                index = order[start : start + batch_size]
                yield Batch(
                    self.dense.index_select(0, index),
                    self.sparse.index_select(0, index),
                    self.labels.index_select(0, index),
                    None if self.weights is None else self.weights.index_select(0, index),
                )

    def first_row_not_in(self, allowed: tuple[float, ...]) -> int | None:
        """Index of the first label outside ``allowed``, or None."""
        ok = torch.zeros_like(self.labels, dtype=torch.bool)
        for value in allowed:
            ok |= self.labels == value
        bad = torch.nonzero(~ok)
        return int(bad[0]) if len(bad) else None
