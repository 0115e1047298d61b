"""Weighted mean squared error on the raw output (EasyRec's L2_LOSS)."""

from __future__ import annotations

from torch import Tensor

from easyrec.losses.base import Loss
from easyrec.losses.reduction import mean_over_nonzero_weights


class L2Loss(Loss):
    """``Σ_i w_i·(z_i − y_i)² / #{i: w_i ≠ 0}`` (plain mean of ``(z − y)²`` without weights).

    This is EasyRec's L2_LOSS (``tf.losses.mean_squared_error`` on the raw output, SUM_BY_NONZERO_WEIGHTS):
    the prediction ŷ is the logit itself, with no activation. A regression loss, so any real label is allowed,
    evaluated with RMSE and MAE of the raw output. Takes no arguments.
    """

    label_values = None
    task = "regression"

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)`` (the prediction), ``labels (B,)`` any real, ``weights (B,)`` or None -> scalar."""
        return mean_over_nonzero_weights((logits - labels).square(), weights)
