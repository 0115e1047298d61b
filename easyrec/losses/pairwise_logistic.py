"""EasyRec's PAIRWISE_LOGISTIC_LOSS (RankNet) over same-session pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import NonNegative, Positive, Share, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import build_pairs, reduce_pair_losses


class PairwiseLogisticLoss(Loss):
    """RankNet loss over the pairs ``(i, j)`` with ``y_i > y_j`` (and ``s_i = s_j`` when sessions are given).

    With ``z' = z/T`` (and ``y' = y/T`` when ``use_label_margin``, else ``y' = y``):

    ``d_ij = z'_i − z'_j − m_ij`` with ``m_ij = y'_i − y'_j`` if ``use_label_margin`` else ``hinge_margin or 0``,
    ``ℓ_ij = relu(−d_ij) + log1p(exp(−|d_ij|))`` (= ``softplus(−d_ij)``, computed stably).

    Pair weight = ``w_i`` (weight of the higher-label sample). Reduction: ``Σ w_i·ℓ_ij / #{pairs: w_i ≠ 0}``
    (TF's SUM_BY_NONZERO_WEIGHTS; plain mean over pairs without weights) when ``ohem_ratio = 1``; otherwise
    OHEM: keep the ``k = max(1, round(#pairs·ohem_ratio))`` largest ``w_i·ℓ_ij``, drop values <= 0, mean.
    No pair gives 0 (still connected to ``logits``, gradient 0).

    Pairs come from a ``B×B`` bool mask built by broadcasting (16M booleans for B = 4096); memory is O(B²).

    ``label_values = None``: labels may be any real numbers (graded relevance); only their order within a
    session matters (and their differences when ``use_label_margin``).

    Args:
        temperature: T > 0, default 1.0.
        hinge_margin: constant margin m >= 0 subtracted from every pair difference, default None (0);
            ignored when ``use_label_margin`` (as in EasyRec).
        ohem_ratio: share of the hardest pairs kept, in (0, 1], default 1.0 (no OHEM).
        use_label_margin: use ``y'_i − y'_j`` as the margin, default False.
    """

    label_values = None

    @checked
    def __init__(
        self,
        temperature: Positive = 1.0,
        hinge_margin: NonNegative | None = None,
        ohem_ratio: Share = 1.0,
        use_label_margin: bool = False,
    ) -> None:
        super().__init__()
        self.temperature, self.hinge_margin, self.ohem_ratio, self.use_label_margin = (
            temperature,
            hinge_margin,
            ohem_ratio,
            use_label_margin,
        )

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` real, ``weights (B,)`` or None, ``sessions (B,)`` int or None -> scalar."""
        pairs = build_pairs(logits, labels, weights, sessions)
        z = logits / self.temperature
        d = z[pairs.first] - z[pairs.second]
        if self.use_label_margin:
            y = labels.to(z.dtype) / self.temperature
            d = d - (y[pairs.first] - y[pairs.second])
        elif self.hinge_margin is not None:
            d = d - self.hinge_margin
        losses = F.relu(-d) + torch.log1p(torch.exp(-d.abs()))
        return reduce_pair_losses(losses, pairs.weights, self.ohem_ratio, logits)
