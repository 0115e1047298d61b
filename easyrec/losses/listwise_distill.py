"""EasyRec's LISTWISE_DISTILL_LOSS: listwise distillation from teacher rank positions."""

from __future__ import annotations

import math

from torch import Tensor, nn

from easyrec.losses.pairs import check_positive, zero_loss
from easyrec.losses.sessions import (
    LogitScale,
    check_shapes,
    reduce_session_losses,
    segment_log_softmax,
    segment_sum,
    session_index,
)


class ListwiseDistillLoss(nn.Module):
    """Listwise distillation: labels are the teacher's rank positions (1 = best) within each session.

    ``y = clip(labels, 1, C)``, ``y = log1p(C) − log(y)`` (> 0; rank 1 gets the largest target), ``C =
    label_clip_max_value``. ``z = logits·|w| + b`` when ``scale_logits`` (learnable scalars, ``w`` = 1, ``b`` = 0
    at init), then ``z /= T``. Per unique session ``s`` (the whole batch without sessions):

    ``ŷ_i = y_i / Σ_{j∈s} y_j``, ``ℓ_s = −Σ_{i∈s} ŷ_i·log softmax_s(z)_i``; ``L = mean_s ℓ_s``.

    Sample weights (EasyRec ignores tensor weights; here they are honoured): session weight ``W_s`` = mean of
    the session's sample weights, ``L = Σ_s W_s·ℓ_s / #{s: W_s ≠ 0}``; constant weights ``c`` give
    ``c·mean_s ℓ_s`` (EasyRec's scalar loss weight), all-ones weights give the unweighted loss.

    Vectorised with ``torch.unique`` + ``scatter_reduce``/``index_add`` (no loop over sessions). EasyRec's
    ``transform_fn`` (a python path replacing ``log1p(C) − log(y)``) is not supported. An empty batch gives 0
    (still connected to ``logits``).

    ``label_values = None``: labels are rank positions (any real; clipped to ``[1, C]``).

    Args:
        temperature: T > 0, default 1.0.
        label_clip_max_value: C >= 1, the largest rank position kept, default 512.
        scale_logits: learn ``z·|w| + b`` before the temperature, default False.
    """

    #: A list is a session: the run refuses data without a session column.
    requires_sessions = True
    label_values = None

    def __init__(self, temperature: float = 1.0, label_clip_max_value: float = 512, scale_logits: bool = False) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        if not (math.isfinite(label_clip_max_value) and label_clip_max_value >= 1):
            raise ValueError(f"label_clip_max_value={label_clip_max_value}: must be a finite number >= 1")
        self.temperature, self.label_clip_max_value = temperature, float(label_clip_max_value)
        self.scale = LogitScale() if scale_logits else None

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` rank positions, ``weights (B,)`` or None, ``sessions (B,)`` -> scalar."""
        check_shapes(logits, labels=labels, weights=weights, sessions=sessions)
        if logits.numel() == 0:
            return zero_loss(logits)
        index, num_sessions = session_index(sessions, logits.shape[0], logits.device)
        clip = self.label_clip_max_value
        y = math.log1p(clip) - labels.to(logits.dtype).clamp(1.0, clip).log()
        y = y / segment_sum(y, index, num_sessions)[index]
        z = logits if self.scale is None else self.scale(logits)
        z = z / self.temperature
        session_losses = -segment_sum(y * segment_log_softmax(z, index, num_sessions), index, num_sessions)
        return reduce_session_losses(session_losses, weights, index)
