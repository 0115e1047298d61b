"""What the listwise losses share: a softmax over each session's scores against per-session targets."""

from __future__ import annotations

from torch import Tensor

from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.sessions import (
    LogitScale,
    check_shapes,
    reduce_session_losses,
    segment_log_softmax,
    segment_sum,
    session_index,
)


class SessionSoftmaxLoss(Loss):
    """``ℓ_s = −Σ_{i∈s} ŷ_i·log softmax_s(z/T)_i`` per session, ``z = logits`` (or ``logits·|w| + b``), reduced
    by :func:`~easyrec.losses.sessions.reduce_session_losses`; subclasses give the targets ``ŷ``.

    Args:
        temperature: T > 0.
        scale_logits: learn ``z·|w| + b`` (``w`` = 1, ``b`` = 0 at init) before the temperature.
    """

    #: A list is a session: the run refuses data without a session column.
    requires_sessions = True
    label_values = None

    def __init__(self, temperature: float, scale_logits: bool) -> None:
        super().__init__()
        self.temperature = temperature
        self.scale = LogitScale() if scale_logits else None

    def targets(self, labels: Tensor, index: Tensor, num_sessions: int) -> Tensor:
        """The target weights ``ŷ (B,)`` from ``labels (B,)`` and each sample's session ``index (B,)``."""
        raise NotImplementedError

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``logits (B,)``, ``labels (B,)`` real, ``weights (B,)`` or None, ``sessions (B,)`` int or None -> scalar."""
        check_shapes(logits, labels=labels, weights=weights, sessions=sessions)
        if logits.numel() == 0:
            return zero_loss(logits)
        index, num_sessions = session_index(sessions, logits.shape[0], logits.device)
        z = logits if self.scale is None else self.scale(logits)
        z = z / self.temperature
        y = self.targets(labels.to(z.dtype), index, num_sessions)
        session_losses = -segment_sum(y * segment_log_softmax(z, index, num_sessions), index, num_sessions)
        return reduce_session_losses(session_losses, weights, index)
