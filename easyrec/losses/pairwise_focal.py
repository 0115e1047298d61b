"""EasyRec's PAIRWISE_FOCAL_LOSS: binary focal loss with label 1 on same-session pair differences."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from easyrec.config.arguments import FINITE, NonNegative, Positive, Probability, Share, checked
from easyrec.losses.base import Loss
from easyrec.losses.focal import BinaryFocalLoss
from easyrec.losses.pairs import build_pairs, zero_loss


class PairwiseFocalLoss(Loss):
    """Focal loss on pair logits ``d_ij = (z_i − z_j)/T`` with pseudo-label 1.

    Pairs: ``y_i > y_j``, ``s_i = s_j`` when sessions are given, and ``d_ij < hinge_margin`` when
    ``hinge_margin`` is set (only pairs not yet separated by the margin are kept). Then, exactly
    :class:`~easyrec.losses.focal.BinaryFocalLoss` on ``d (P,)`` with labels 1 and pair weights ``w_i``
    (weight of the higher-label sample; None without weights): ``p = clip(σ(d), 1e-7, 1−1e-7)``,
    ``W = (1 − p)^γ · α · w_i`` (α factor only when set), loss = ``Σ W·softplus(−d) / #{W ≠ 0}``; with
    ``ohem_ratio < 1`` the ``round(#pairs·ohem_ratio)`` largest positive ``W·softplus(−d)`` are averaged.
    No pair gives 0 (still connected to ``logits``, gradient 0).

    Pairs come from a ``B×B`` bool mask built by broadcasting (16M booleans for B = 4096); memory is O(B²).

    ``label_values = None``: labels may be any real numbers (graded relevance); only their order within a
    session matters.

    Args:
        gamma: focusing exponent >= 0, default 2.0.
        alpha: factor in (0, 1) applied to every pair (all pseudo-labels are 1), default None.
        hinge_margin: keep only pairs with ``d_ij < hinge_margin``, default None (keep all). Any finite
            value is accepted: <= 0 restricts the loss to mis-ordered pairs.
        ohem_ratio: share of the hardest pairs kept, in (0, 1], default 1.0 (no OHEM).
        temperature: T > 0, default 1.0.
    """

    label_values = None

    @checked
    def __init__(
        self,
        gamma: NonNegative = 2.0,
        alpha: Probability | None = None,
        hinge_margin: Annotated[float, FINITE] | None = None,
        ohem_ratio: Share = 1.0,
        temperature: Positive = 1.0,
    ) -> None:
        super().__init__()
        self.focal = BinaryFocalLoss(gamma=gamma, alpha=alpha, ohem_ratio=ohem_ratio)
        self.gamma, self.alpha, self.hinge_margin, self.ohem_ratio, self.temperature = (
            gamma,
            alpha,
            hinge_margin,
            ohem_ratio,
            temperature,
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
        pair_weights = pairs.weights
        if self.hinge_margin is not None:
            keep = d.detach() < self.hinge_margin
            d = d[keep]
            pair_weights = None if pair_weights is None else pair_weights[keep]
        if d.numel() == 0:
            return zero_loss(logits)
        return self.focal(d, torch.ones_like(d), pair_weights)
