"""EasyRec's PAIRWISE_HINGE_LOSS over same-session pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import NonNegative, Positive, Share, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import build_pairs, reduce_pair_losses

EXP_CLIP = 88.0


class PairwiseHingeLoss(Loss):
    """Hinge loss over the pairs ``(i, j)`` with ``y_i > y_j`` (and ``s_i = s_j`` when sessions are given).

    With ``z' = z/T`` and ``y' = y/T`` if ``label_is_logits`` else ``y' = y``:

    ``diff_ij = (y'_i − y'_j) − (z'_i − z'_j)`` if ``use_label_margin`` else ``margin − (z'_i − z'_j)``,
    ``ℓ_ij = relu(exp(clip(diff_ij, −88, 88)) − 1)`` if ``use_exponent`` else ``relu(diff_ij)``.

    Pair weight = ``w_i`` (weight of the higher-label sample). Reduction: ``Σ w_i·ℓ_ij / #{pairs: w_i ≠ 0}``
    (TF's SUM_BY_NONZERO_WEIGHTS; plain mean over pairs without weights) when ``ohem_ratio = 1``; otherwise
    OHEM: keep the ``k = max(1, round(#pairs·ohem_ratio))`` largest ``w_i·ℓ_ij``, drop values <= 0, mean.
    No pair gives 0 (still connected to ``logits``, gradient 0). Pairs are selected on the raw labels
    (``y_i > y_j``, the same as ``y'_i − y'_j > 0`` for T > 0).

    With ``use_exponent`` the pair losses are reduced in float64 and the result cast back to the logits' dtype:
    one clipped term is up to ``e^88 ≈ 1.7e38``, half of float32's largest number, so a float32 sum of three
    would be ``inf``. The loss is then finite unless the weighted mean itself exceeds float32's range.

    Pairs come from a ``B×B`` bool mask built by broadcasting (16M booleans for B = 4096); memory is O(B²).

    Deliberate difference from EasyRec: with ``use_exponent`` EasyRec overwrites the logits with
    ``sigmoid(labels)`` (a bug that makes the loss independent of the model); this class always uses the
    model's logits.

    ``label_values = None``: labels may be any real numbers (graded relevance, or teacher logits when
    ``label_is_logits``); their order within a session selects the pairs.

    Args:
        temperature: T > 0, default 1.0.
        margin: constant margin >= 0 used when ``use_label_margin`` is False, default 1.0.
        ohem_ratio: share of the hardest pairs kept, in (0, 1], default 1.0 (no OHEM).
        label_is_logits: divide the labels by T too, default True.
        use_label_margin: use the label difference as the margin, default True.
        use_exponent: exponential hinge ``relu(exp(diff) − 1)``, default False.
    """

    label_values = None

    @checked
    def __init__(
        self,
        temperature: Positive = 1.0,
        margin: NonNegative = 1.0,
        ohem_ratio: Share = 1.0,
        label_is_logits: bool = True,
        use_label_margin: bool = True,
        use_exponent: bool = False,
    ) -> None:
        super().__init__()
        self.temperature, self.margin, self.ohem_ratio = temperature, margin, ohem_ratio
        self.label_is_logits, self.use_label_margin, self.use_exponent = label_is_logits, use_label_margin, use_exponent

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
        logit_diff = z[pairs.first] - z[pairs.second]
        if self.use_label_margin:
            y = labels.to(z.dtype)
            if self.label_is_logits:
                y = y / self.temperature
            diff = (y[pairs.first] - y[pairs.second]) - logit_diff
        else:
            diff = self.margin - logit_diff
        if self.use_exponent:
            losses = F.relu(torch.exp(diff.double().clamp(-EXP_CLIP, EXP_CLIP)) - 1.0)
            return reduce_pair_losses(losses, pairs.weights, self.ohem_ratio, logits).to(logits.dtype)
        return reduce_pair_losses(F.relu(diff), pairs.weights, self.ohem_ratio, logits)
