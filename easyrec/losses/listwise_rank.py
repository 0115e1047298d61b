"""EasyRec's LISTWISE_RANK_LOSS: softmax cross entropy within each session."""

from __future__ import annotations

from torch import Tensor

from easyrec.config.arguments import Positive, checked
from easyrec.losses.listwise import SessionSoftmaxLoss
from easyrec.losses.sessions import segment_softmax


class ListwiseRankLoss(SessionSoftmaxLoss):
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

    @checked
    def __init__(self, temperature: Positive = 1.0, label_is_logits: bool = False, scale_logits: bool = False) -> None:
        super().__init__(temperature, scale_logits)
        self.label_is_logits = label_is_logits

    def targets(self, labels: Tensor, index: Tensor, num_sessions: int) -> Tensor:
        if self.label_is_logits:
            return segment_softmax(labels / self.temperature, index, num_sessions)
        return labels
