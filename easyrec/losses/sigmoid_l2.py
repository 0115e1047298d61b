"""Weighted mean squared error on the sigmoid of the output (EasyRec's SIGMOID_L2_LOSS)."""

from __future__ import annotations

import torch
from torch import Tensor

from easyrec.losses.base import Loss
from easyrec.losses.reduction import mean_over_nonzero_weights


class SigmoidL2Loss(Loss):
    """``Σ_i w_i·(σ(z_i) − y_i)² / #{i: w_i ≠ 0}`` (plain mean of ``(σ(z) − y)²`` without weights).

    This is EasyRec's SIGMOID_L2_LOSS (``tf.losses.mean_squared_error(y, σ(z))``, SUM_BY_NONZERO_WEIGHTS).
    Labels are meant to lie in [0, 1] and may be soft (e.g. a rate), so ``label_values`` is None: no label set
    is enforced, and a label outside [0, 1] (which σ(z) can never reach) is the caller's business.
    Evaluated as a regression of σ(z) (RMSE, MAE; AUC too with 0/1 labels). Takes no arguments.
    """

    label_values = None
    task = "regression"
    scores = staticmethod(torch.sigmoid)

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` in [0, 1] (soft allowed), ``weights (B,)`` or None -> scalar."""
        return mean_over_nonzero_weights((torch.sigmoid(logits) - labels).square(), weights)
