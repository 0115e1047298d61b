"""EasyRec's LISTWISE_RANK_LOSS: softmax cross entropy within each session."""

from __future__ import annotations

from torch import Tensor, nn

from easyrec.losses.pairs import check_positive, zero_loss
from easyrec.losses.sessions import (
    LogitScale,
    check_shapes,
    reduce_session_losses,
    segment_log_softmax,
    segment_softmax,
    segment_sum,
    session_index,
)


class ListwiseRankLoss(nn.Module):
    """Listwise softmax cross entropy over each session (the whole batch is one list without sessions).

    ``z = logits·|w| + b`` when ``scale_logits`` (learnable scalars, ``w`` = 1, ``b`` = 0 at init), then
    ``z /= T``; ``y = labels / T`` if ``label_is_logits`` else ``y = labels``. Per unique session ``s``:

    ``ℓ_s = −Σ_{i∈s} ŷ_i·log softmax_s(z)_i`` with ``ŷ = softmax_s(y)`` if ``label_is_logits``, else the
    **raw** ``y`` (not normalised, as in EasyRec: a session with two positives counts twice as much).

    Reduction: ``L = mean_s ℓ_s``. Sample weights (EasyRec ignores tensor weights and logs an error; here they
    are honoured): session weight ``W_s`` = mean of the session's sample weights, and
    ``L = Σ_s W_s·ℓ_s / #{s: W_s ≠ 0}``; constant weights ``c`` give ``c·mean_s ℓ_s`` (EasyRec's scalar
    loss weight), all-ones weights give the unweighted loss.

    Vectorised: session ids are mapped to ``0..S−1`` with ``torch.unique``; the segment log-softmax uses
    ``scatter_reduce``/``index_add`` (no loop over sessions). EasyRec's ``transform_fn`` (a python path applied
    to the labels) is not supported. An empty batch gives 0 (still connected to ``logits``).

    ``label_values = None``: labels are any real values (relevance grades, or teacher logits).

    Args:
        temperature: T > 0, default 1.0.
        label_is_logits: labels are logits: divide by T and softmax within the session, default False.
        scale_logits: learn ``z·|w| + b`` before the temperature, default False.
    """

    #: A list is a session: the run refuses data without a session column.
    requires_sessions = True
    label_values = None

    def __init__(self, temperature: float = 1.0, label_is_logits: bool = False, scale_logits: bool = False) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        self.temperature, self.label_is_logits = temperature, label_is_logits
        self.scale = LogitScale() if scale_logits else None

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
        y = labels.to(z.dtype)
        if self.label_is_logits:
            y = segment_softmax(y / self.temperature, index, num_sessions)
        session_losses = -segment_sum(y * segment_log_softmax(z, index, num_sessions), index, num_sessions)
        return reduce_session_losses(session_losses, weights, index)
