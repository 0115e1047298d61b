"""Knowledge distillation against a teacher's soft labels, softened by a temperature (EasyRec's ``kd[]``): the base
:class:`SoftLabelLoss`, and its BINARY_CROSS_ENTROPY and CROSS_ENTROPY losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from easyrec.config.arguments import Positive, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes

#: Keras' epsilon, which EasyRec uses to turn teacher probabilities into logits and inside its log loss.
EPSILON = 1e-7


class SoftLabelLoss(Loss):
    """A loss of the student's logits against the teacher's soft labels, both divided by a temperature T.

    ``forward(logits (B,) or (B, C), labels of the same shape, weights (B,) | None)`` -> scalar: the per-sample
    losses of :meth:`per_sample`, averaged over the non-zero weights (SUM_BY_NONZERO_WEIGHTS; EasyRec multiplies the
    batch mean by its weight). An empty batch gives 0 (still connected to ``logits``).

    The teacher's logits are the labels if ``label_is_logits``; else, from probabilities, ``log(y'/(1 − y'))``
    with ``y' = clip(y, 1e-7, 1 − 1e-7)`` for a binary label ``(B,)`` (and for every column when
    :attr:`independent_columns`), ``log(y + 1e-7)`` for a ``(B, C)`` class distribution (softmax ignores the
    shift). There is no ``T²`` factor, as in EasyRec.

    Args:
        temperature: T > 0, divides both the student's and the teacher's logits.
        label_is_logits: the labels are the teacher's logits (any real) rather than its probabilities.
    """

    #: The run compares the predicted probability with the teacher's.
    task = "regression"
    label_values = None
    #: The C columns of ``(B, C)`` logits are C binary probabilities (sigmoid), not one distribution (softmax).
    independent_columns = False

    @checked
    def __init__(self, temperature: Positive = 1.0, label_is_logits: bool = False) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.label_is_logits = bool(label_is_logits)
        self.label_range = None if self.label_is_logits else (0.0, 1.0)

    def scores(self, logits: Tensor) -> Tensor:
        """The student's probability: ``σ(logits)`` for ``(B,)`` (and independent columns), else
        ``softmax(logits (B, C))`` -> ``(B, C)``."""
        return torch.sigmoid(logits) if self._binary(logits) else torch.softmax(logits, dim=-1)

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B,)`` or ``(B, C)``, ``labels`` of the same shape, ``weights (B,)`` or None -> scalar."""
        if logits.dim() not in (1, 2):
            raise ValueError(f"logits: expected shape (B,) or (B, C), got {tuple(logits.shape)}")
        if labels.shape != logits.shape:
            raise ValueError(f"labels: expected shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
        check_shapes(logits if logits.dim() == 1 else logits[:, 0], weights=weights)
        if logits.shape[0] == 0:
            return zero_loss(logits)
        student = logits / self.temperature
        teacher = self._teacher_logits(labels.to(logits.dtype)) / self.temperature
        losses = self.per_sample(student, teacher)
        return mean_over_nonzero_weights(losses, None if weights is None else weights.to(losses.dtype))

    def per_sample(self, student: Tensor, teacher: Tensor) -> Tensor:
        """The loss of each sample ``(B,)`` from the tempered logits ``student`` and ``teacher``, ``(B,)`` or
        ``(B, C)``."""
        raise NotImplementedError

    def _binary(self, logits: Tensor) -> bool:
        return logits.dim() == 1 or self.independent_columns

    def _teacher_logits(self, labels: Tensor) -> Tensor:
        if self.label_is_logits:
            return labels
        if self._binary(labels):
            return torch.logit(labels, eps=EPSILON)
        return torch.log(labels + EPSILON)

    def _probs(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z) if self._binary(z) else torch.softmax(z, dim=-1)


class SoftBinaryCrossEntropy(SoftLabelLoss):
    """EasyRec's ``kd`` with BINARY_CROSS_ENTROPY_LOSS: sigmoid cross-entropy of the tempered student logit against
    the teacher's tempered probability ``p = σ(t/T)``::

        ℓ = softplus(z/T) − p·z/T

    averaged over the C columns of ``(B, C)`` logits, each its own binary probability (Keras'
    ``binary_crossentropy``, as EasyRec calls it). Sample weights are honoured (EasyRec takes the plain batch mean).
    See :class:`SoftLabelLoss` for the teacher's logits ``t``, the temperature and the reduction.

    Example::

        loss = SoftBinaryCrossEntropy(temperature=2.0)
        loss(torch.tensor([0.0, 1.5]), torch.tensor([0.75, 0.2]))  # teacher probabilities
    """

    independent_columns = True

    def per_sample(self, student: Tensor, teacher: Tensor) -> Tensor:
        losses = F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher), reduction="none")
        return losses if losses.dim() == 1 else losses.mean(dim=-1)


class SoftCrossEntropy(SoftLabelLoss):
    """EasyRec's ``kd`` with CROSS_ENTROPY_LOSS: ``tf.losses.log_loss`` of the student's tempered probabilities
    ``q`` against the teacher's ``p``::

        ℓ = −[p·log(q + 1e-7) + (1 − p)·log(1 − q + 1e-7)]

    with ``q = σ(z/T)``, ``p = σ(t/T)`` for a binary label ``(B,)``; for ``(B, C)`` logits ``q = softmax(z/T)``,
    ``p = softmax(t/T)`` and ℓ is averaged over the C classes (EasyRec's log loss over every element, not
    ``−Σ p·log q``). See :class:`SoftLabelLoss` for the teacher's logits ``t``, the temperature and the reduction.

    Difference from EasyRec: a binary teacher probability is turned into its logit (as EasyRec's BCE and KL
    distillation do); EasyRec's CROSS_ENTROPY takes ``log(y + 1e-7)`` there, so that ``σ(log y) = y/(1 + y)`` would
    teach 1/3 for a teacher's 1/2.

    Example::

        loss = SoftCrossEntropy(temperature=2.0)
        loss(torch.tensor([0.0, 1.5]), torch.tensor([0.75, 0.2]))  # teacher probabilities
    """

    def per_sample(self, student: Tensor, teacher: Tensor) -> Tensor:
        p, q = self._probs(teacher), self._probs(student)
        losses = -(p * torch.log(q + EPSILON) + (1 - p) * torch.log(1 - q + EPSILON))
        return losses if losses.dim() == 1 else losses.mean(dim=-1)
