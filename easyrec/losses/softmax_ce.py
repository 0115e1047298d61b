"""Softmax cross-entropy over C classes (EasyRec's CLASSIFICATION with num_class > 1)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor

from easyrec.config.arguments import Fraction, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes


class SoftmaxCrossEntropy(Loss):
    """``ℓ = −Σ_c y'_c·log softmax(z)_c`` per sample, averaged over non-zero weights (SUM_BY_NONZERO_WEIGHTS).

    Labels are class ids ``0..C−1`` stored as floats; ``y' = (1 − s)·onehot(y) + s/C`` (``s = 0``: EasyRec's
    ``tf.losses.sparse_softmax_cross_entropy``; EasyRec has no smoothing here, ``s > 0`` is ours, as in
    ``tf.losses.softmax_cross_entropy``). An empty batch gives 0 (still connected to ``logits``).

    Args:
        num_classes: C >= 2, the number of logits per sample.
        label_smoothing: s in [0, 1).

    The run checks that the labels are class ids and that every class occurs in the training data
    (``requires_every_label``): a click label under ``num_classes=3`` is refused before training.
    """

    task = "multiclass"
    requires_every_label = True

    @checked
    def __init__(self, num_classes: Annotated[int, Ge(2)], label_smoothing: Fraction = 0.0) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        #: The model emits one logit per class.
        self.num_outputs = self.num_classes
        self.label_values = tuple(float(c) for c in range(self.num_classes))

    @staticmethod
    def scores(logits: Tensor) -> Tensor:
        """Class probabilities ``softmax(logits (B, C))`` -> ``(B, C)``."""
        return torch.softmax(logits, dim=-1)

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B, C)``, ``labels (B,)`` class ids as floats, ``weights (B,)`` or None -> scalar."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits: expected shape (B, {self.num_classes}), got {tuple(logits.shape)}")
        check_shapes(logits[:, 0], labels=labels, weights=weights)
        if logits.shape[0] == 0:
            return zero_loss(logits)
        losses = F.cross_entropy(logits, labels.long(), reduction="none", label_smoothing=self.label_smoothing)
        return mean_over_nonzero_weights(losses, None if weights is None else weights.to(losses.dtype))
