"""Shared pieces of the pairwise ranking losses: pair building, argument checks and the pair reduction.

Pairs are built with broadcasting from a ``(B, B)`` boolean mask (no Python loop over samples). For
``B = 4096`` the mask holds 16M booleans (16 MiB); the pair indices it yields are int64 and the per-pair
tensors have one entry per pair (at most ``B·(B−1)/2`` ≈ 8.4M for ``B = 4096``), so memory grows as ``B²``.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from easyrec.losses.reduction import hardest_mean, mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes


class Pairs(NamedTuple):
    """Ordered pairs ``(i, j)`` with ``y_i > y_j`` in the same session, in row-major order of the ``B×B`` mask.

    ``first (P,)`` and ``second (P,)`` are int64 indices of the higher- and the lower-label sample;
    ``weights (P,)`` is ``w_i`` (the weight of the higher-label sample), or None without sample weights.
    """

    first: Tensor
    second: Tensor
    weights: Tensor | None

    @property
    def count(self) -> int:
        return int(self.first.numel())


def pair_mask(labels: Tensor, sessions: Tensor | None = None) -> Tensor:
    """``M[i, j] = (y_i > y_j) ∧ (s_i = s_j)`` as a ``(B, B)`` bool tensor (no session: the batch is one list).

    The diagonal is always False (``y_i > y_i`` never holds).
    """
    mask = labels.unsqueeze(1) > labels.unsqueeze(0)
    if sessions is not None:
        mask &= sessions.unsqueeze(1) == sessions.unsqueeze(0)
    return mask


def build_pairs(
    logits: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    sessions: Tensor | None = None,
) -> Pairs:
    """Pairs ``(i, j)`` with ``y_i > y_j`` and, when ``sessions`` is given, the same session.

    Args:
        logits: ``(B,)``; only its shape is checked here.
        labels: ``(B,)`` real-valued (graded) labels.
        weights: ``(B,)`` sample weights or None; pair weight = ``w_i``.
        sessions: ``(B,)`` session ids (any dtype comparable with ``==``) or None.
    """
    check_shapes(logits, labels=labels, weights=weights, sessions=sessions)
    first, second = pair_mask(labels, sessions).nonzero(as_tuple=True)
    return Pairs(first, second, None if weights is None else weights[first])


def zero_loss(logits: Tensor) -> Tensor:
    """A scalar 0 that is still connected to ``logits`` in the autograd graph (its gradient is 0)."""
    return logits.sum() * 0.0


def reduce_pair_losses(losses: Tensor, pair_weights: Tensor | None, ohem_ratio: float, logits: Tensor) -> Tensor:
    """Reduce per-pair losses ``ℓ (P,)`` with pair weights ``w (P,)`` (None: all 1) to a scalar.

    * ``ohem_ratio = 1``: SUM_BY_NONZERO_WEIGHTS, ``Σ w·ℓ / #{w ≠ 0}`` (plain mean without weights).
    * ``ohem_ratio < 1``: keep the ``k = max(1, round(P·ohem_ratio))`` largest ``w·ℓ``, drop values <= 0,
      average the rest (0 if none is left).

    No pair (``P = 0``) gives :func:`zero_loss` of ``logits``.
    """
    if losses.numel() == 0:
        return zero_loss(logits)
    if ohem_ratio >= 1.0:
        return mean_over_nonzero_weights(losses, pair_weights)
    return hardest_mean(losses if pair_weights is None else losses * pair_weights, ohem_ratio)
