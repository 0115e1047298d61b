"""EasyRec's SOFTMAX_CROSS_ENTROPY_WITH_NEGATIVE_MINING (DropoutNet): a support-vector-guided softmax
(Wang et al. 2018, arXiv 1812.11317) over each positive pair and negatives rolled from the item batch."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor

from easyrec.config.arguments import NonNegative, Positive, checked
from easyrec.losses.embeddings import TwoTowerLoss, check_embeddings, check_pair_outputs, l2_normalize
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights


def draw_shifts(num_negative_samples: int, batch_size: int, device: torch.device | None = None) -> Tensor:
    """``(K,)`` int64 shifts drawn uniformly from ``[1, batch_size)`` with torch's global generator on ``device``."""
    return torch.randint(1, batch_size, (num_negative_samples,), device=device)


def softmax_loss_with_negative_mining(
    user_emb: Tensor,
    item_emb: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    num_negative_samples: int = 4,
    margin: float = 0.0,
    gamma: float = 1.0,
    coefficient_of_support_vector: float = 1.0,
    shifts: Tensor | None = None,
) -> Tensor:
    """Support-vector-guided softmax of each positive row against ``K`` rolled negatives.

    ``u``, ``v`` = L2-normalised ``user_emb (B, D)``, ``item_emb (B, D)``. Negative ``k`` of row ``i`` is the item
    of row ``(i − shift_k) mod B`` (``tf.roll`` of the item batch by ``shift_k``; every row of the batch,
    positive or not, lends its item). For each row with label > 0: ``pos = <u_i, v_i> − m``,
    ``neg_k = <u_i, v_{(i − shift_k) mod B}>``; a negative scoring above the positive (``pos − neg_k < 0``, a
    "support vector") becomes ``t·neg_k + t − 1``; ``ℓ_i = −log softmax(γ·[pos, neg'_1..neg'_K])_0``.
    Reduction over the positive rows: ``Σ w_i·ℓ_i / #{w_i ≠ 0}`` (their ``weights``; plain mean without).

    Args:
        user_emb, item_emb: ``(B, D)``.
        labels: ``(B,)``; rows with label > 0 are the positive pairs.
        weights: ``(B,)`` sample weights or None.
        num_negative_samples: ``K`` >= 1, used when ``shifts`` is None.
        margin: ``m``; gamma: ``γ``; coefficient_of_support_vector: ``t``.
        shifts: ``(K,)`` integer shifts in ``[1, B)``; None draws ``K`` of them uniformly with torch's global
            generator on the embeddings' device (as EasyRec's ``tf.random_uniform``; draws may repeat).

    A batch with no positive row, or of a single row (no other item to roll in), gives 0 connected to the
    embeddings: EasyRec maps the NaN of that case to 0 (and asserts ``K < B``). Here ``K >= B`` is allowed
    (the shifts repeat), and a NaN from NaN inputs is not hidden.
    """
    if user_emb.shape != item_emb.shape or user_emb.dim() != 2:
        raise ValueError(
            f"user_emb, item_emb: expected two (B, D) tensors, got {tuple(user_emb.shape)}, {tuple(item_emb.shape)}"
        )
    check_embeddings(user_emb, labels=labels, weights=weights)
    batch_size = user_emb.shape[0]
    positive = labels > 0
    if batch_size < 2 or not bool(positive.any()):
        return zero_loss(user_emb) + zero_loss(item_emb)
    if shifts is None:
        shifts = draw_shifts(num_negative_samples, batch_size, user_emb.device)
    elif shifts.dim() != 1 or shifts.numel() == 0 or bool(((shifts < 1) | (shifts >= batch_size)).any()):
        raise ValueError(f"shifts: expected a non-empty (K,) tensor of integers in [1, {batch_size}), got {shifts}")
    u, v = l2_normalize(user_emb), l2_normalize(item_emb)
    rows = positive.nonzero(as_tuple=True)[0]
    # Row i of the item batch rolled by s holds the item of row (i − s) mod B.
    neg_rows = (rows.unsqueeze(0) - shifts.to(rows.device).long().unsqueeze(1)) % batch_size  # (K, P)
    pos_score = (u[rows] * v[rows]).sum(-1, keepdim=True) - margin  # (P, 1)
    neg_scores = torch.einsum("pd,kpd->pk", u[rows], v[neg_rows])  # (P, K)
    t = coefficient_of_support_vector
    neg_scores = torch.where(pos_score - neg_scores < 0, neg_scores * t + t - 1, neg_scores)
    logits = gamma * torch.cat([pos_score, neg_scores], dim=1)
    losses = -F.log_softmax(logits, dim=1)[:, 0]
    return mean_over_nonzero_weights(losses, None if weights is None else weights[rows].to(losses.dtype))


class SoftmaxNegativeMiningLoss(TwoTowerLoss):
    """DropoutNet's softmax loss with negative mining on a two-tower batch (see
    :func:`softmax_loss_with_negative_mining`): cosine scores, ``K`` negatives per positive row from rolling the
    item batch by shifts drawn anew at every call (torch's global generator on the outputs' device; seed it
    with ``torch.manual_seed`` for reproducible runs), support-vector reweighting, weighted softmax CE toward
    the positive. Sample weights are honoured as in EasyRec; ``sessions`` is accepted and ignored.

    Args:
        num_negative_samples: ``K`` >= 1 negatives per positive row; default 4.
        margin: ``m`` >= 0 subtracted from the positive cosine; default 0.
        gamma: logit scale ``γ`` > 0 (EasyRec's ``smooth``); default 1.
        coefficient_of_support_vector: ``t`` > 0; ``t > 1`` raises the negatives that beat the positive
            (``t·neg + t − 1``), ``t = 1`` is the plain softmax; default 1.
    """

    @checked
    def __init__(
        self,
        num_negative_samples: Annotated[int, Ge(1)] = 4,
        margin: NonNegative = 0.0,
        gamma: Positive = 1.0,
        coefficient_of_support_vector: Positive = 1.0,
    ) -> None:
        super().__init__()
        self.num_negative_samples = int(num_negative_samples)
        self.margin, self.gamma = float(margin), float(gamma)
        self.coefficient_of_support_vector = float(coefficient_of_support_vector)

    def forward(
        self,
        outputs: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``outputs (B, 2, D)``, ``labels (B,)`` 0/1, ``weights (B,)`` or None, ``sessions`` ignored -> scalar."""
        check_pair_outputs(outputs, labels=labels, weights=weights)
        return softmax_loss_with_negative_mining(
            outputs[:, 0],
            outputs[:, 1],
            labels,
            weights,
            num_negative_samples=self.num_negative_samples,
            margin=self.margin,
            gamma=self.gamma,
            coefficient_of_support_vector=self.coefficient_of_support_vector,
        )
