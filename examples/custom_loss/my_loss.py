"""A loss of your own: binary cross-entropy that counts each positive row ``pos_weight`` times."""

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.losses import Loss
from easyrec.losses.reduction import mean_over_nonzero_weights


class PositiveWeightedBCE(Loss):
    """``Σ w_i·BCE(z_i, y_i) / #{w_i ≠ 0}`` with the positives' terms times ``pos_weight`` (rare clicks count more).

    Args:
        pos_weight: the weight of a positive row's term, > 0.
    """

    label_values = (0.0, 1.0)  # the run checks the labels before training; the rest are Loss's defaults

    def __init__(self, pos_weight: float = 2.0) -> None:
        super().__init__()
        if pos_weight <= 0:
            raise ValueError(f"pos_weight={pos_weight}: must be > 0")
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))  # saved in checkpoints

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)``, ``labels (B,)``, ``weights (B,) | None`` -> scalar."""
        terms = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=self.pos_weight, reduction="none")
        return mean_over_nonzero_weights(terms, weights)  # as easyrec's losses weigh the rows
