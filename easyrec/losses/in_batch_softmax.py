"""EasyRec's SOFTMAX_CROSS_ENTROPY of the match models (DSSM): in-batch softmax; InfoNCE with cosine, T = 0.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import NonNegative, Positive, checked
from easyrec.losses.embeddings import TwoTowerLoss, l2_normalize, positive_pairs
from easyrec.losses.pairs import zero_loss


def duplicate_mask(items: Tensor) -> Tensor:
    """``M[i, j] = (items_i = items_j) ∧ (i ≠ j)`` for ``items (P, D)``: equal rows are the same item -> ``(P, P)``."""
    _, ids = torch.unique(items.detach(), dim=0, return_inverse=True)
    mask = ids.unsqueeze(0) == ids.unsqueeze(1)
    mask.fill_diagonal_(False)
    return mask


def weighted_mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    """``Σ w·ℓ / Σ w`` (EasyRec's ``mean(w·ℓ)/mean(w)``); plain mean without weights."""
    return losses.mean() if weights is None else (losses * weights).sum() / weights.sum()


class InBatchSoftmaxLoss(TwoTowerLoss):
    """In-batch softmax over the positive pairs of a two-tower batch (EasyRec's DSSM SOFTMAX_CROSS_ENTROPY).

    Over the ``P`` rows with label > 0 (users ``u``, items ``v``, L2-normalised when ``cosine``):
    ``S = u·vᵀ / T (P, P)``; row ``i``'s target is column ``i``, every other item of the batch is a negative.
    With ``mask_duplicates``, an item equal to row ``i``'s item (the same embedding vector: the same item
    twice in the batch) is left out of row ``i``'s softmax (EasyRec masks duplicate item ids with −1e32).

    * ``ce_i = −log softmax(S_i)_i``; ``symmetric`` averages it with the item->user direction
      ``−log softmax(S_{:, i})_i`` (duplicates masked the same way).
    * ``reg_i = relu(−<u_i, v_i>)`` (on the embeddings of ``S``, before ``T``): EasyRec's ``reg_pos_loss``,
      which pushes positive pairs away from negative similarity; EasyRec always adds it with weight 1.
    * ``loss = Σ w·ce / Σ w + reg_pos_weight·Σ w·reg / Σ w`` with the positive rows' sample weights ``w``
      (EasyRec's ``mean(w·ℓ)/mean(w)``; plain means without weights).

    EasyRec takes ``−log(p_ii + 1e-12)``; here the exact ``log_softmax`` is used. No positive row, or positive
    rows whose weights sum to 0, give 0 connected to ``outputs``; ``sessions`` is accepted and ignored.
    InfoNCE is this loss with ``cosine=True, temperature=0.1``.

    Args:
        temperature: ``T`` > 0; default 1 (EasyRec's inner product).
        cosine: cosine similarity (L2-normalised embeddings) instead of the inner product; default False.
        symmetric: add the item->user direction and average both; default False.
        mask_duplicates: leave items equal to the target item out of the softmax; default True.
        reg_pos_weight: weight >= 0 of ``reg_pos``; default 1 (EasyRec), 0 turns it off.

    After each call, :meth:`log_values` gives ``train/loss/in_batch_ce`` and ``train/loss/reg_pos``.
    """

    @checked
    def __init__(
        self,
        temperature: Positive = 1.0,
        cosine: bool = False,
        symmetric: bool = False,
        mask_duplicates: bool = True,
        reg_pos_weight: NonNegative = 1.0,
    ) -> None:
        super().__init__()
        self.temperature, self.reg_pos_weight = float(temperature), float(reg_pos_weight)
        self.cosine, self.symmetric, self.mask_duplicates = bool(cosine), bool(symmetric), bool(mask_duplicates)
        self._logged: dict[str, Tensor] = {}

    def forward(
        self,
        outputs: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``outputs (B, 2, D)``, ``labels (B,)`` 0/1, ``weights (B,)`` or None, ``sessions`` ignored -> scalar."""
        user, item, pair_weights = positive_pairs(outputs, labels, weights)
        if user.shape[0] == 0 or (pair_weights is not None and bool(pair_weights.sum() == 0)):
            self._logged = {}
            return zero_loss(outputs)
        u, v = (l2_normalize(user), l2_normalize(item)) if self.cosine else (user, item)
        logits = u @ v.T / self.temperature
        if self.mask_duplicates:
            logits = logits.masked_fill(duplicate_mask(item), float("-inf"))
        ce = -F.log_softmax(logits, dim=1).diagonal()
        if self.symmetric:
            ce = 0.5 * (ce - F.log_softmax(logits.T, dim=1).diagonal())
        ce = weighted_mean(ce, pair_weights)
        reg_pos = weighted_mean(F.relu(-(u * v).sum(-1)), pair_weights)
        self._logged = {"train/loss/in_batch_ce": ce.detach(), "train/loss/reg_pos": reg_pos.detach()}
        return ce + self.reg_pos_weight * reg_pos

    def part_names(self) -> list[str]:
        return ["in_batch_ce", "reg_pos"]

    def log_values(self) -> dict[str, float]:
        """``train/loss/in_batch_ce`` and ``train/loss/reg_pos`` of the last call (empty before the first)."""
        return {key: float(value) for key, value in self._logged.items()}
