"""EasyRec's knowledge-distillation KL_DIVERGENCE loss: KL(teacher ‖ student) per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.losses.soft_labels import SoftLabelLoss


class KLDivergenceLoss(SoftLabelLoss):
    """``KL(p ‖ q) = Σ_c p_c·(log p_c − log q_c)`` per sample, averaged over non-zero weights.

    * Binary (``logits (B,)``, ``labels (B,)``): the student is ``q = [1 − σ(z/T), σ(z/T)]``; the teacher is
      ``p = [1 − σ(t/T), σ(t/T)]`` with ``t = label`` if ``label_is_logits``, else
      ``t = log(y'/(1 − y'))``, ``y' = clip(label, 1e-7, 1 − 1e-7)``.
    * Multiclass (``logits (B, C)``, ``labels (B, C)``): ``q = softmax(z/T)``, ``p = softmax(t/T)`` with
      ``t = label`` if ``label_is_logits``, else ``t = log(label + 1e-7)``.

    Differences from EasyRec, which computes ``mean(KLD(p, q))·w`` with Keras' KLD: the KL is computed from
    log-probabilities (Keras clips both distributions to ``[1e-7, 1]``, so a student probability below 1e-7 gets
    no gradient there; elsewhere the two agree to ~1e-7), and sample weights are honoured with
    SUM_BY_NONZERO_WEIGHTS (EasyRec multiplies the batch mean by its weight). There is no ``T²`` factor, as in
    EasyRec. An empty batch gives 0 (still connected to ``logits``).

    Args:
        temperature: T > 0, divides both the student's and the teacher's logits.
        label_is_logits: the labels are the teacher's logits (any real) rather than its probabilities.
    """

    def per_sample(self, student: Tensor, teacher: Tensor) -> Tensor:
        log_q, log_p = self._log_probs(student), self._log_probs(teacher)
        return (log_p.exp() * (log_p - log_q)).sum(dim=-1)

    @staticmethod
    def _log_probs(z: Tensor) -> Tensor:
        """Log of the class distribution: ``[log σ(−z), log σ(z)]`` ``(B, 2)`` for ``z (B,)``, else log-softmax."""
        if z.dim() == 1:
            return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
        return F.log_softmax(z, dim=-1)
