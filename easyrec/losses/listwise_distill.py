"""EasyRec's LISTWISE_DISTILL_LOSS: listwise distillation from teacher rank positions."""

from __future__ import annotations

import math
from typing import Annotated

from annotated_types import Ge
from torch import Tensor

from easyrec.config.arguments import FINITE, Positive, checked
from easyrec.losses.listwise import SessionSoftmaxLoss
from easyrec.losses.sessions import segment_sum


class ListwiseDistillLoss(SessionSoftmaxLoss):
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

    @checked
    def __init__(
        self,
        temperature: Positive = 1.0,
        label_clip_max_value: Annotated[float, Ge(1), FINITE] = 512.0,
        scale_logits: bool = False,
    ) -> None:
        super().__init__(temperature, scale_logits)
        self.label_clip_max_value = float(label_clip_max_value)

    def targets(self, labels: Tensor, index: Tensor, num_sessions: int) -> Tensor:
        """Rank positions -> ``log1p(C) − log(clip(y, 1, C))``, normalised to sum to 1 per session."""
        clip = self.label_clip_max_value
        y = math.log1p(clip) - labels.clamp(1.0, clip).log()
        return y / segment_sum(y, index, num_sessions)[index]
