"""Sigmoid binary cross-entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import Fraction, checked
from easyrec.losses.base import Loss
from easyrec.losses.reduction import mean_over_nonzero_weights, smooth_labels


class BinaryCrossEntropy(Loss):
    """``softplus(z) − y'·z`` per sample with ``y' = y(1−s) + s/2``, averaged over non-zero weights.

    This is EasyRec's CLASSIFICATION loss for one class (sample weights honoured).

    Args:
        label_smoothing: s in [0, 1).
    """

    label_values = (0.0, 1.0)

    @checked
    def __init__(self, label_smoothing: Fraction = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` in {0, 1}, ``weights (B,)`` or None -> scalar."""
        targets = smooth_labels(labels, self.label_smoothing)
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return mean_over_nonzero_weights(losses, weights)
