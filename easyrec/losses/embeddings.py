"""Shared pieces of the retrieval (two-tower) and metric-learning losses.

A two-tower model returns ``outputs (B, 2, D)``: ``outputs[:, 0]`` the user (query) embedding and
``outputs[:, 1]`` the item embedding of the same row. Rows with label > 0 are positive (user, item) pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from easyrec.losses.base import Loss
from easyrec.losses.heads import pair_scores
from easyrec.losses.pairs import zero_loss


def check_pair_outputs(outputs: Tensor, **tensors: Tensor | None) -> None:
    """ValueError unless ``outputs`` is ``(B, 2, D)`` and every non-None tensor is ``(B,)``."""
    if outputs.dim() != 3 or outputs.shape[1] != 2:
        raise ValueError(
            "outputs: expected shape (B, 2, D) (user and item embeddings of a two-tower model such as "
            f"model=dssm), got {tuple(outputs.shape)}"
        )
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != outputs.shape[:1]:
            raise ValueError(f"{name}: expected shape ({outputs.shape[0]},), got {tuple(tensor.shape)}")


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``x / sqrt(max(Σx², eps))`` along the last axis, as ``tf.nn.l2_normalize``.

    A zero vector stays zero, with a finite gradient (``1/sqrt(eps)``).
    """
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True).clamp(min=eps))


def positive_pairs(
    outputs: Tensor, labels: Tensor, weights: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(user (P, D), item (P, D), weights (P,) or None)`` of the rows with label > 0 of ``outputs (B, 2, D)``."""
    check_pair_outputs(outputs, labels=labels, weights=weights)
    positive = labels > 0
    pair_weights = None if weights is None else weights[positive].to(outputs.dtype)
    return outputs[positive, 0], outputs[positive, 1], pair_weights


def pair_anchors(user: Tensor, item: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Metric-learning batch of ``P`` positive pairs: ``embeddings = [user; item] (2P, D)``, class ids
    ``[0..P−1; 0..P−1] (2P,)`` (each user's only positive is its own item and vice versa), and the pair
    weights repeated for both anchors ``(2P,)`` (None without weights)."""
    ids = torch.arange(user.shape[0], device=user.device)
    anchor_weights = None if weights is None else torch.cat([weights, weights])
    return torch.cat([user, item]), torch.cat([ids, ids]), anchor_weights


def positive_mask(labels: Tensor, sessions: Tensor | None = None) -> Tensor:
    """``M[i, j] = (y_i = y_j) ∧ (s_i = s_j) ∧ (i ≠ j)`` as a ``(N, N)`` bool tensor (EasyRec's
    ``get_anchor_positive_triplet_mask``; no session: labels only)."""
    mask = labels.unsqueeze(0) == labels.unsqueeze(1)
    if sessions is not None:
        mask &= sessions.unsqueeze(0) == sessions.unsqueeze(1)
    mask.fill_diagonal_(False)
    return mask


def check_embeddings(embeddings: Tensor, **tensors: Tensor | None) -> None:
    """ValueError unless ``embeddings`` is ``(N, D)`` and every non-None tensor is ``(N,)``."""
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings: expected shape (N, D), got {tuple(embeddings.shape)}")
    for name, tensor in tensors.items():
        if tensor is not None and tensor.shape != embeddings.shape[:1]:
            raise ValueError(f"{name}: expected shape ({embeddings.shape[0]},), got {tuple(tensor.shape)}")


class TwoTowerLoss(Loss):
    """Base of the retrieval losses: ``forward(outputs (B, 2, D), labels (B,), weights (B,) | None,
    sessions (B,) | None) -> scalar``; evaluated with in-batch recall on the pair score."""

    task = "retrieval"
    label_values = (0.0, 1.0)
    requires_sessions = False

    @staticmethod
    def scores(outputs: Tensor) -> Tensor:
        """Pair score ``<user_i, item_i>`` of ``outputs (B, 2, D)`` -> ``(B,)``."""
        check_pair_outputs(outputs)
        return pair_scores(outputs)


class PairAnchorLoss(TwoTowerLoss):
    """Base of the metric-learning losses on a two-tower batch: the ``P`` positive rows give ``2P`` anchors
    ``[user_1..user_P, item_1..item_P]`` with class ids ``[0..P−1, 0..P−1]`` (each user's only positive is its own
    item, and vice versa) and anchor weights (a pair's weight on both of its anchors); :meth:`anchor_loss` takes
    them from there. No positive row gives 0 (connected to ``outputs``)."""

    def forward(
        self,
        outputs: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``outputs (B, 2, D)``, ``labels (B,)`` 0/1, ``weights (B,)`` or None, ``sessions`` ignored -> scalar."""
        user, item, pair_weights = positive_pairs(outputs, labels, weights)
        if user.shape[0] == 0:
            return zero_loss(outputs)
        return self.anchor_loss(*pair_anchors(user, item, pair_weights))

    def anchor_loss(self, embeddings: Tensor, ids: Tensor, weights: Tensor | None) -> Tensor:
        """``embeddings (2P, D)``, class ``ids (2P,)``, anchor ``weights (2P,)`` or None -> scalar."""
        raise NotImplementedError
