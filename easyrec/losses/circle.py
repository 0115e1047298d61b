"""EasyRec's CIRCLE_LOSS (Sun et al. 2020, "Circle Loss", arXiv 2002.10857)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import NonNegative, Positive, checked
from easyrec.losses.embeddings import (
    PairAnchorLoss,
    check_embeddings,
    l2_normalize,
    positive_mask,
)
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights

#: EasyRec's stand-in for −inf in the masked logits (a finite value keeps the gradient finite).
MASKED = 1e12


def circle_loss(
    embeddings: Tensor,
    labels: Tensor,
    sessions: Tensor | None = None,
    margin: float = 0.25,
    gamma: float = 32.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Circle loss over all anchors of a batch, as EasyRec's ``circle_loss``.

    ``S`` is the cosine matrix of the L2-normalised ``embeddings (N, D)``; ``P[i, j] = 1`` when ``i ≠ j`` share
    the label (and the session, if ``sessions (N,)`` is given), ``Nm = 1 − P − I``. With ``sg`` = stop-gradient:
    ``a_p = relu(1 + m − sg(S·P))``, ``a_n = relu(sg(S·Nm) + m)``,
    ``logit_p = −a_p·(S − (1 − m))·γ·P − (1 − P)·1e12``, ``logit_n = a_n·(S − m)·γ·Nm − (1 − Nm)·1e12``,
    ``ℓ_i = softplus(LSE_j logit_n[i, j] + LSE_j logit_p[i, j])``. An anchor without a positive or without a
    negative gets ``ℓ_i = softplus(≈ −1e12) = 0``.

    Returns the mean of ``ℓ (N,)`` (EasyRec), or with per-anchor ``weights (N,)``
    ``Σ w_i·ℓ_i / #{i: w_i ≠ 0}``. An empty batch gives 0 (still connected to ``embeddings``).
    """
    check_embeddings(embeddings, labels=labels, sessions=sessions, weights=weights)
    if embeddings.shape[0] == 0:
        return zero_loss(embeddings)
    normed = l2_normalize(embeddings)
    cosine = normed @ normed.T
    pos = positive_mask(labels, sessions)
    neg = ~pos
    neg.fill_diagonal_(False)
    # torch.where gives EasyRec's products with the 0/1 masks exactly (−a·(…)·0 − 1e12 = −1e12), in fewer ops.
    fixed = cosine.detach()
    masked = torch.full_like(cosine, -MASKED)
    logit_p = torch.where(pos, -F.relu(1.0 + margin - fixed) * (cosine - (1.0 - margin)) * gamma, masked)
    logit_n = torch.where(neg, F.relu(fixed + margin) * (cosine - margin) * gamma, masked)
    losses = F.softplus(torch.logsumexp(logit_n, dim=-1) + torch.logsumexp(logit_p, dim=-1))
    return mean_over_nonzero_weights(losses, weights)


class CircleLoss(PairAnchorLoss):
    """Circle loss on the positive pairs of a two-tower batch.

    The ``P`` rows with label > 0 give ``2P`` anchors ``[user_1..user_P, item_1..item_P]``; class ids
    ``[0..P−1, 0..P−1]`` make each user's only positive its own item (and vice versa); every other anchor of
    the batch, user or item, is a negative. Then :func:`circle_loss`. Rows with label 0 are ignored.

    Sample weights (which EasyRec ignores) weight both anchors of a pair: ``Σ w·ℓ / #{w ≠ 0}`` over the
    ``2P`` anchors; a zero-weight pair still serves as a negative for the others. ``sessions`` is accepted
    and ignored: a pair's user and item always share its session. No positive row gives 0 (connected to
    ``outputs``); one positive row has no negative and gives 0 as well.

    Args:
        margin: relaxation ``m`` (optima ``1 − m`` and ``m``, decision margin ``m``), >= 0; default 0.25.
        gamma: scale ``γ`` > 0; default 32.
    """

    @checked
    def __init__(self, margin: NonNegative = 0.25, gamma: Positive = 32.0) -> None:
        super().__init__()
        self.margin, self.gamma = float(margin), float(gamma)

    def anchor_loss(self, embeddings: Tensor, ids: Tensor, weights: Tensor | None) -> Tensor:
        """:func:`circle_loss` of the ``2P`` anchors."""
        return circle_loss(embeddings, ids, margin=self.margin, gamma=self.gamma, weights=weights)
