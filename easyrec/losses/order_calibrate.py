"""EasyRec's ORDER_CALIBRATE_LOSS: keeps one task's probability below those of the tasks it depends on."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from easyrec.losses.pairs import zero_loss


class OrderCalibrateLoss(nn.Module):
    """``Σ_r mean_i relu(p_i − u_ir)``: penalises a probability above its upper bounds (e.g. p(ctcvr) <= p(ctr)).

    Not a label loss: a multi-task loss calls it on the probabilities of its towers. As in EasyRec, it is a
    plain mean over the batch (no sample weights), and the gradient reaches both ``probs`` and ``upper``
    (only where the order is violated). An empty batch gives 0 (still connected to both inputs).
    """

    def forward(self, probs: Tensor, upper: Tensor) -> Tensor:
        """``probs (B,)``, ``upper (B, R)`` (or ``(B,)`` for R = 1): the R bounds of each sample -> scalar."""
        if probs.dim() != 1:
            raise ValueError(f"probs: expected shape (B,), got {tuple(probs.shape)}")
        if upper.dim() == 1:
            upper = upper.unsqueeze(1)
        if upper.dim() != 2 or upper.shape[0] != probs.shape[0]:
            raise ValueError(
                f"upper: expected shape ({probs.shape[0]}, R) or ({probs.shape[0]},), got {tuple(upper.shape)}"
            )
        if probs.shape[0] == 0:
            return zero_loss(probs) + zero_loss(upper)
        return F.relu(probs.unsqueeze(1) - upper).sum() / probs.shape[0]
