"""Where a gradient updates its parameter: everything, or the rows a sparse gradient names."""

from __future__ import annotations

from types import EllipsisType

from torch import Tensor


def touched(grad: Tensor) -> tuple[tuple[Tensor, ...] | EllipsisType, Tensor]:
    """Where ``grad`` updates its parameter and the gradient there.

    A dense grad updates everything: ``(..., grad)``. A sparse COO grad (``nn.Embedding(sparse=True)``) is
    coalesced, which sums duplicate rows, and updates only its rows: ``(indices, values (nnz, *dense_dims))``.
    """
    if not grad.is_sparse:
        return ..., grad
    grad = grad.coalesce()
    return tuple(grad.indices()), grad.values()
