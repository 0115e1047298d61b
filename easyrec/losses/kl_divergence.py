"""EasyRec's knowledge-distillation KL_DIVERGENCE loss: KL(teacher ‖ student) per sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import Positive, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes

#: Keras' epsilon, which EasyRec uses to turn teacher probabilities into logits.
EPSILON = 1e-7


class KLDivergenceLoss(Loss):
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

    #: The run compares the predicted probability with the teacher's.
    task = "regression"
    label_values = None

    @checked
    def __init__(self, temperature: Positive = 1.0, label_is_logits: bool = False) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.label_is_logits = bool(label_is_logits)
        self.label_range = None if self.label_is_logits else (0.0, 1.0)

    @staticmethod
    def scores(logits: Tensor) -> Tensor:
        """The student's probability: ``σ(logits (B,))`` -> ``(B,)``, or ``softmax(logits (B, C))`` -> ``(B, C)``."""
        return torch.sigmoid(logits) if logits.dim() == 1 else torch.softmax(logits, dim=-1)

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)`` or ``(B, C)``, ``labels`` of the same shape, ``weights (B,)`` or None -> scalar."""
        if logits.dim() not in (1, 2):
            raise ValueError(f"logits: expected shape (B,) or (B, C), got {tuple(logits.shape)}")
        if labels.shape != logits.shape:
            raise ValueError(f"labels: expected shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        check_shapes(logits if logits.dim() == 1 else logits[:, 0], weights=weights)
        if logits.shape[0] == 0:
            return zero_loss(logits)
        log_q = self._log_probs(logits / self.temperature)
        log_p = self._log_probs(self._teacher_logits(labels.to(logits.dtype)) / self.temperature)
        losses = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        return mean_over_nonzero_weights(losses, None if weights is None else weights.to(losses.dtype))

    def _teacher_logits(self, labels: Tensor) -> Tensor:
        if self.label_is_logits:
            return labels
        if labels.dim() == 1:
            return torch.logit(labels, eps=EPSILON)
        return torch.log(labels + EPSILON)

    @staticmethod
    def _log_probs(z: Tensor) -> Tensor:
        """Log of the class distribution: ``[log σ(−z), log σ(z)]`` ``(B, 2)`` for ``z (B,)``, else log-softmax."""
        if z.dim() == 1:
            return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], dim=-1)
        return F.log_softmax(z, dim=-1)
