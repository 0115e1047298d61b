"""Per-session (segment) operations for the listwise losses, vectorised: no Python loop over sessions.

Session ids are mapped to ``0..S−1`` with :func:`session_index`; the segment ops then work on that index with
``scatter_reduce`` / ``index_add`` (no ``torch_scatter``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_shapes(logits: Tensor, **tensors: Tensor | None) -> None:
    """ValueError naming the argument unless ``logits`` is ``(B,)`` and every non-None tensor has its shape."""
    if logits.dim() != 1:
        raise ValueError(f"logits: expected shape (B,), got {tuple(logits.shape)}")
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != logits.shape:
            raise ValueError(f"{name}: expected shape {tuple(logits.shape)}, got {tuple(tensor.shape)}")


def session_index(sessions: Tensor | None, n: int, device: torch.device | None = None) -> tuple[Tensor, int]:
    """``(index (n,) int64 in 0..S−1, S)``: the session of each sample (None: one session of all ``n``).

    Ids need not be contiguous or sorted; sessions are numbered in ascending id order.
    """
    if sessions is None:
        return torch.zeros(n, dtype=torch.long, device=device), 1 if n else 0
    unique, index = torch.unique(sessions, return_inverse=True)
    return index, int(unique.numel())


def segment_sum(x: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``out[s] = Σ_{i: index_i = s} x_i`` -> ``(num_segments,)``."""
    return x.new_zeros(num_segments).index_add(0, index, x)


def segment_count(index: Tensor, num_segments: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Number of samples in each segment -> ``(num_segments,)`` of ``dtype``."""
    return torch.zeros(num_segments, dtype=dtype, device=index.device).index_add(
        0, index, torch.ones(index.shape[0], dtype=dtype, device=index.device)
    )


def segment_log_softmax(x: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``log softmax`` of ``x (B,)`` within each segment -> ``(B,)``.

    Stable: the per-segment max (``scatter_reduce`` amax, detached: the result does not depend on it) is
    subtracted before ``exp``; the sums of ``exp`` use ``index_add``.
    """
    neg_inf = torch.full((num_segments,), float("-inf"), dtype=x.dtype, device=x.device)
    peak = neg_inf.scatter_reduce(0, index, x.detach(), reduce="amax", include_self=True)
    shifted = x - peak[index]
    log_norm = torch.log(segment_sum(torch.exp(shifted), index, num_segments))
    return shifted - log_norm[index]


def segment_softmax(x: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``softmax`` of ``x (B,)`` within each segment -> ``(B,)``."""
    return torch.exp(segment_log_softmax(x, index, num_segments))


def session_weights(weights: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """Per-session weight = mean of its samples' weights -> ``(num_segments,)``."""
    counts = segment_count(index, num_segments, weights.dtype)
    return segment_sum(weights, index, num_segments) / counts.clamp(min=1)


def reduce_session_losses(session_losses: Tensor, weights: Tensor | None, index: Tensor) -> Tensor:
    """Mean of ``ℓ (S,)`` over sessions; with sample ``weights (B,)``: ``Σ_s W_s·ℓ_s / #{s: W_s ≠ 0}`` where
    ``W_s`` is the mean weight of session ``s`` (constant weights ``c`` give ``c·mean_s ℓ_s``)."""
    if weights is None:
        return session_losses.mean()
    session_w = session_weights(weights.to(session_losses.dtype), index, session_losses.shape[0])
    count = torch.count_nonzero(session_w).clamp(min=1)
    return (session_losses * session_w).sum() / count


class LogitScale(torch.nn.Module):
    """EasyRec's optional learnable logit scale ``z·|w| + b`` (``w`` initialised to 1, ``b`` to 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, logits: Tensor) -> Tensor:
        return logits * self.weight.abs() + self.bias
