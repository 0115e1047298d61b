"""EasyRec's MULTI_SIMILARITY_LOSS (Wang et al. 2019, "Multi-Similarity Loss with General Pair Weighting")."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from easyrec.config.arguments import FINITE, NonNegative, Positive, checked
from easyrec.losses.embeddings import (
    PairAnchorLoss,
    check_embeddings,
    l2_normalize,
    positive_mask,
)
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights


def log1p_sum_exp(x: Tensor, mask: Tensor) -> Tensor:
    """``log(1 + Σ_{j: mask_ij} e^{x_ij})`` per row of ``x (N, N)`` -> ``(N,)``, as a log-sum-exp with a 0 column:
    no overflow, and finite gradients for a row with no masked entry."""
    masked = torch.where(mask, x, torch.full_like(x, float("-inf")))
    return torch.logsumexp(torch.cat([torch.zeros_like(x[:, :1]), masked], dim=1), dim=1)


def multi_similarity_loss(
    embeddings: Tensor,
    labels: Tensor,
    sessions: Tensor | None = None,
    alpha: float = 2.0,
    beta: float = 50.0,
    lamb: float = 1.0,
    eps: float = 0.1,
    ms_mining: bool = False,
    weights: Tensor | None = None,
) -> Tensor:
    """Multi-similarity loss over all anchors of a batch.

    ``S = max(cos, 0)`` of the L2-normalised ``embeddings (N, D)``; positives ``P_i`` = the other samples with
    the same label (and session, if ``sessions (N,)`` is given), negatives ``N_i`` = the rest but ``i``:
    ``ℓ_i = (1/α)·log(1 + Σ_{j∈P_i} e^{−α(S_ij − λ)}) + (1/β)·log(1 + Σ_{j∈N_i} e^{β(S_ij − λ)})``.

    ``ms_mining`` keeps only the positives with ``S_ij < max_{k∈N_i} S_ik + ε`` and the negatives with
    ``S_ij > min_{k∈P_i} S_ik − ε`` (EasyRec's masked max/min: an empty set counts as 0).

    Returns the mean of ``ℓ (N,)``, or with per-anchor ``weights (N,)`` ``Σ w_i·ℓ_i / #{i: w_i ≠ 0}``.

    This is the per-anchor loss of the paper and of EasyRec's documentation. EasyRec's ``ms_loss`` reshapes the
    labels to ``(N, 1)`` before building its mask, which broadcasts the masks to ``(N, N, N)`` (and makes
    ``ms_mining`` fail on ``tile``); its numbers are therefore not reproduced.
    """
    check_embeddings(embeddings, labels=labels, sessions=sessions, weights=weights)
    if embeddings.shape[0] == 0:
        return zero_loss(embeddings)
    normed = l2_normalize(embeddings)
    sim = (normed @ normed.T).clamp(min=0.0)
    pos = positive_mask(labels, sessions)
    neg = ~pos
    neg.fill_diagonal_(False)
    if ms_mining:
        detached = sim.detach()
        pos_sim, neg_sim = detached * pos, detached * neg
        hardest_neg = neg_sim.amax(dim=1, keepdim=True)
        top_pos = pos_sim.amax(dim=1, keepdim=True)
        hardest_pos = ((detached - top_pos) * pos).amin(dim=1, keepdim=True) + top_pos
        pos = pos & (pos_sim < hardest_neg + eps)
        neg = neg & (neg_sim > hardest_pos - eps)
    losses = log1p_sum_exp(-alpha * (sim - lamb), pos) / alpha + log1p_sum_exp(beta * (sim - lamb), neg) / beta
    return mean_over_nonzero_weights(losses, weights)


class MultiSimilarityLoss(PairAnchorLoss):
    """Multi-similarity loss on the positive pairs of a two-tower batch.

    The ``P`` rows with label > 0 give ``2P`` anchors ``[user_1..user_P, item_1..item_P]`` with class ids
    ``[0..P−1, 0..P−1]``: each user's only positive is its own item (and vice versa), every other anchor is a
    negative. Then :func:`multi_similarity_loss`. Rows with label 0 are ignored.

    Sample weights (which EasyRec ignores) weight both anchors of a pair: ``Σ w·ℓ / #{w ≠ 0}`` over the
    ``2P`` anchors; a zero-weight pair still serves as a negative for the others. ``sessions`` is accepted
    and ignored (a pair's user and item share its session). No positive row gives 0 (connected to ``outputs``).

    Args:
        alpha: positive scale ``α`` > 0; default 2.
        beta: negative scale ``β`` > 0; default 50.
        lamb: similarity threshold ``λ``; default 1.
        eps: mining margin ``ε`` >= 0 (used with ``ms_mining``); default 0.1.
        ms_mining: keep only the informative pairs (see :func:`multi_similarity_loss`); default False.
    """

    @checked
    def __init__(
        self,
        alpha: Positive = 2.0,
        beta: Positive = 50.0,
        lamb: Annotated[float, FINITE] = 1.0,
        eps: NonNegative = 0.1,
        ms_mining: bool = False,
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.lamb, self.eps = float(alpha), float(beta), float(lamb), float(eps)
        self.ms_mining = bool(ms_mining)

    def anchor_loss(self, embeddings: Tensor, ids: Tensor, weights: Tensor | None) -> Tensor:
        """:func:`multi_similarity_loss` of the ``2P`` anchors."""
        return multi_similarity_loss(
            embeddings,
            ids,
            alpha=self.alpha,
            beta=self.beta,
            lamb=self.lamb,
            eps=self.eps,
            ms_mining=self.ms_mining,
            weights=weights,
        )
