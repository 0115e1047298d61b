"""Sigmoid cross-entropy with F-beta re-weighted negatives (EasyRec's F1_REWEIGHTED_LOSS)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import Fraction, Positive, checked
from easyrec.losses.base import Loss
from easyrec.losses.reduction import mean_over_nonzero_weights, smooth_labels


class F1ReweightedLoss(Loss):
    """Weighted sigmoid cross-entropy whose negatives are re-weighted from batch statistics, as EasyRec does.

    Over the batch of N samples: ``p = σ(z)``, ``P = Σ y``, ``Nn = N − P``, ``tp = Σ p`` (the sum of all
    probabilities, not only of the positives), ``tn = N − tp``, and
    ``nw = tp / (β²·P + Nn − tn + 1e-8)`` (a scalar; not detached, so gradients flow through it).
    Per-sample weight ``W_i = (1 if y_i = 1 else nw) · w_i``; loss =
    ``Σ_i W_i·(softplus(z_i) − y'_i·z_i) / #{i: W_i ≠ 0}`` with the smoothed label ``y' = y(1−s) + s/2``
    used only inside the cross-entropy (P and the weights use the raw labels).

    Args:
        f1_beta_square: β² > 0, the weight of recall relative to precision.
        label_smoothing: s in [0, 1).
    """

    label_values = (0.0, 1.0)

    @checked
    def __init__(self, f1_beta_square: Positive = 1.0, label_smoothing: Fraction = 0.0) -> None:
        super().__init__()
        self.f1_beta_square = f1_beta_square
        self.label_smoothing = label_smoothing

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` in {0, 1}, ``weights (B,)`` or None -> scalar."""
        n = float(labels.shape[0])
        num_pos = labels.sum()
        num_neg = n - num_pos
        tp = torch.sigmoid(logits).sum()
        tn = n - tp
        neg_weight = tp / (self.f1_beta_square * num_pos + num_neg - tn + 1e-8)
        final_weights = torch.where(labels == 1.0, torch.ones_like(logits), neg_weight)
        if weights is not None:
            final_weights = final_weights * weights
        targets = smooth_labels(labels, self.label_smoothing)
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return mean_over_nonzero_weights(losses, final_weights)
