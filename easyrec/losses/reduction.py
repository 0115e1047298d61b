"""EasyRec's default loss reduction."""

from __future__ import annotations

import torch
from torch import Tensor


def mean_over_nonzero_weights(losses: Tensor, weights: Tensor | None) -> Tensor:
    """``Σ w_i·ℓ_i / #{i: w_i ≠ 0}`` (TF's SUM_BY_NONZERO_WEIGHTS; plain mean without weights; 0 if none).

    ``losses (B,)``, ``weights (B,)`` or None -> scalar. An empty batch gives 0 (still on the graph), not NaN.
    """
    if weights is None:
        return losses.mean() if losses.numel() else losses.sum()
    count = torch.count_nonzero(weights).clamp(min=1)
    return (losses * weights).sum() / count


def smooth_labels(labels: Tensor, label_smoothing: float) -> Tensor:
    """``y·(1 − s) + s/2``, as ``tf.losses.sigmoid_cross_entropy`` smooths binary labels."""
    return labels * (1.0 - label_smoothing) + 0.5 * label_smoothing if label_smoothing else labels


def hardest_mean(losses: Tensor, ratio: float) -> Tensor:
    """Online hard example mining: the mean of the ``max(1, round(N·ratio))`` largest of ``losses (N,)``,
    dropping values <= 0 (0, still on the graph, if none is left or ``losses`` is empty)."""
    if losses.numel() == 0:
        return losses.sum()
    k = max(1, int(round(losses.shape[0] * ratio)))
    hardest = torch.topk(losses, k).values
    hardest = hardest[hardest > 0]
    return hardest.mean() if hardest.numel() else losses.sum() * 0.0
