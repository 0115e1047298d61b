"""Binary focal loss, as EasyRec computes it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import Fraction, NonNegative, Probability, Share, checked
from easyrec.losses.base import Loss
from easyrec.losses.reduction import hardest_mean, mean_over_nonzero_weights, smooth_labels


class BinaryFocalLoss(Loss):
    """Focal loss (Lin et al., 2017) with EasyRec's conventions.

    ``p = clip(σ(z), 1e-7, 1−1e-7)``, ``p_t = y·p + (1−y)(1−p)``,
    ``W = (1 − p_t)^γ · (α·y + (1−α)(1−y)) · w`` (the α factor only when α is set; W is not detached),
    loss = ``Σ W·CE(y', z) / #{W ≠ 0}`` with the smoothed label y' only inside the CE. With
    ``ohem_ratio < 1``, only the ``round(B·ohem_ratio)`` largest positive ``W·CE`` are averaged.

    Args:
        gamma: focusing exponent, >= 0 (0 with no α is plain BCE).
        alpha: weight of positives in (0, 1), or None for none.
        ohem_ratio: share of the hardest samples kept, in (0, 1].
        label_smoothing: s in [0, 1).
    """

    label_values = (0.0, 1.0)

    @checked
    def __init__(
        self,
        gamma: NonNegative = 2.0,
        alpha: Probability | None = None,
        ohem_ratio: Share = 1.0,
        label_smoothing: Fraction = 0.0,
    ) -> None:
        super().__init__()
        self.gamma, self.alpha, self.ohem_ratio, self.label_smoothing = (
            gamma,
            alpha,
            ohem_ratio,
            label_smoothing,
        )

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` in {0, 1}, ``weights (B,)`` or None -> scalar."""
        p = torch.sigmoid(logits).clamp(1e-7, 1 - 1e-7)
        p_t = labels * p + (1 - labels) * (1 - p)
        focal_weights = (1 - p_t).pow(self.gamma)
        if self.alpha is not None:
            focal_weights = focal_weights * (self.alpha * labels + (1 - self.alpha) * (1 - labels))
        if weights is not None:
            focal_weights = focal_weights * weights
        targets = smooth_labels(labels, self.label_smoothing)
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        if self.ohem_ratio >= 1.0:
            return mean_over_nonzero_weights(losses, focal_weights)
        return hardest_mean(losses * focal_weights, self.ohem_ratio)
