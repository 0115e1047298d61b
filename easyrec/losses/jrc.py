"""EasyRec's JRC_LOSS: Joint Ranking & Calibration (Sheng et al. 2022, arXiv 2208.06164)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Interval
from torch import Tensor, nn

from easyrec.config.arguments import checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes, segment_count, segment_log_softmax, segment_sum, session_index

Strategy = Literal["fixed", "random_uniform", "random_normal", "random_bernoulli", "uncertainty"]


def segment_logsumexp(x: Tensor, mask: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``log Σ_{i: index_i = s, mask_i} e^{x_i}`` -> ``(num_segments,)``; ``−inf`` for a segment with no masked sample.

    Stable: the per-segment max of the masked ``x`` (detached) is subtracted before ``exp``; samples outside
    ``mask`` enter as ``exp(−inf) = 0``, so they get no gradient (and no NaN).
    """
    neg_inf = torch.full((num_segments,), float("-inf"), dtype=x.dtype, device=x.device)
    masked = torch.where(mask, x, torch.full_like(x, float("-inf")))
    peak = neg_inf.scatter_reduce(0, index, masked.detach(), reduce="amax", include_self=True)
    present = torch.isfinite(peak)
    peak = torch.where(present, peak, torch.zeros_like(peak))
    total = segment_sum(torch.exp(masked - peak[index]), index, num_segments)
    log_total = torch.log(torch.where(present, total, torch.ones_like(total)))
    return torch.where(present, peak + log_total, neg_inf)


class JRCLoss(Loss):
    """Joint Ranking & Calibration: a 2-class softmax cross entropy (calibration) plus a per-session softmax
    over the samples' logits of each class (ranking).

    ``logits (B, 2)``, ``z⁻ = logits[:, 0]``, ``z⁺ = logits[:, 1]``, labels ``y ∈ {0, 1}``, ``S_j`` the samples
    in the session of ``j`` (the whole batch without sessions), sample weights ``w`` (all 1 without).

    * ``ce = Σ_j w_j·CE(softmax(logits_j), y_j) / #{j: w_j ≠ 0}`` (SUM_BY_NONZERO_WEIGHTS; plain mean unweighted).
    * ``same_label_loss=True``: with ``L_s = −Σ_{i∈s, y_i=1} log softmax_s(z⁺)_i − Σ_{i∈s, y_i=0} log
      softmax_s(z⁻)_i``, ``ge = (1/B)·Σ_j (w_j/|S_j|)·L_{S_j}`` (unweighted: ``(1/B)·Σ_s L_s``).
    * ``same_label_loss=False`` (the other samples of the same label are left out of each softmax):
      ``ge = (1/B)·Σ_j w_j·[y_j·log(1 + Σ_{k∈S_j, y_k=0} e^{z⁺_k − z⁺_j})
      + (1 − y_j)·log(1 + Σ_{k∈S_j, y_k=1} e^{z⁻_k − z⁻_j})]``; a sample alone with its label in its session
      contributes 0. Computed with a per-session log-sum-exp over the other label's samples.

    Note that ``ge`` divides by ``B`` (as the spec's ``mean_j``), not by the number of non-zero weights.

    Combination (``strategy``, EasyRec's ``loss_weight_strategy``):

    * ``fixed``: ``α·ce + (1 − α)·ge``;
    * ``random_uniform``: ``u·ce + (1 − u)·ge``, ``u ~ U(0, 1)``;
    * ``random_normal``: ``a·ce + b·ge``, ``[a, b] = softmax(N(0, I₂))``;
    * ``random_bernoulli``: ``[a, b]`` = two Bernoulli(0.5) draws if they sum to 1, else ``[0.5, 0.5]``;
    * ``uncertainty``: ``e^{−u₁}·ce + ½u₁ + e^{−u₂}·ge + ½u₂`` with trainable ``uncertainty = [u₁, u₂]`` (init 0).

    The random strategies draw anew at every call in training mode (torch's global generator on the logits'
    device); in eval mode they use the fixed ``α``. EasyRec's scalar sample weight is a tensor weight here.
    An empty batch gives 0 (still connected to ``logits``).

    Args:
        alpha: weight of ``ce`` for ``fixed`` (and the random strategies in eval), in [0, 1]; default 0.5.
        same_label_loss: keep the other same-label samples in the ranking softmax; default True.
        strategy: one of ``fixed``, ``random_uniform``, ``random_normal``, ``random_bernoulli``, ``uncertainty``.

    After each call, :meth:`log_values` gives ``train/loss/jrc_ce`` and ``train/loss/jrc_ge``.
    """

    label_values = (0.0, 1.0)
    #: The ranking part is per session: the run refuses data without a session column.
    requires_sessions = True
    #: The model emits two logits per sample (not-click, click).
    num_outputs = 2

    @checked
    def __init__(
        self,
        alpha: Annotated[float, Interval(ge=0, le=1)] = 0.5,
        same_label_loss: bool = True,
        strategy: Strategy = "fixed",
    ) -> None:
        super().__init__()
        self.alpha, self.same_label_loss, self.strategy = float(alpha), bool(same_label_loss), strategy
        self.uncertainty = nn.Parameter(torch.zeros(2)) if strategy == "uncertainty" else None
        self._logged: dict[str, Tensor] = {}

    @staticmethod
    def scores(logits: Tensor) -> Tensor:
        """Click probability ``softmax(logits)[:, 1]`` of ``logits (B, 2)`` -> ``(B,)``."""
        return torch.softmax(logits, dim=-1)[..., 1]

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        sessions: Tensor | None = None,
    ) -> Tensor:
        """``logits (B, 2)``, ``labels (B,)`` 0/1, ``weights (B,)`` or None, ``sessions (B,)`` or None -> scalar."""
        if logits.dim() != 2 or logits.shape[1] != 2:
            raise ValueError(f"logits: expected shape (B, 2), got {tuple(logits.shape)}")
        check_shapes(logits[:, 0], labels=labels, weights=weights, sessions=sessions)
        if logits.shape[0] == 0:
            return zero_loss(logits)
        ce = self._ce(logits, labels, weights)
        ge = self._ge(logits, labels, weights, sessions)
        self._logged = {"train/loss/jrc_ce": ce.detach(), "train/loss/jrc_ge": ge.detach()}
        if self.uncertainty is not None:
            u = self.uncertainty
            return torch.exp(-u[0]) * ce + 0.5 * u[0] + torch.exp(-u[1]) * ge + 0.5 * u[1]
        a, b = self._coefficients(logits)
        return a * ce + b * ge

    def part_names(self) -> list[str]:
        return ["jrc_ce", "jrc_ge"]

    def log_values(self) -> dict[str, float]:
        """``train/loss/jrc_ce`` and ``train/loss/jrc_ge`` of the last call (empty before the first)."""
        return {key: float(value) for key, value in self._logged.items()}

    @staticmethod
    def _ce(logits: Tensor, labels: Tensor, weights: Tensor | None) -> Tensor:
        losses = F.cross_entropy(logits, labels.long(), reduction="none")
        return mean_over_nonzero_weights(losses, None if weights is None else weights.to(losses.dtype))

    def _ge(self, logits: Tensor, labels: Tensor, weights: Tensor | None, sessions: Tensor | None) -> Tensor:
        n = logits.shape[0]
        index, num_sessions = session_index(sessions, n, logits.device)
        z_neg, z_pos = logits[:, 0], logits[:, 1]
        positive = labels > 0.5
        if self.same_label_loss:
            # −log softmax of the sample's own-class logit over its whole session, summed per session (L_s)
            log_p = torch.where(
                positive,
                segment_log_softmax(z_pos, index, num_sessions),
                segment_log_softmax(z_neg, index, num_sessions),
            )
            session_losses = -segment_sum(log_p, index, num_sessions)
            counts = segment_count(index, num_sessions, logits.dtype)
            per_sample = (session_losses / counts)[index]
        else:
            # softmax over the sample itself and the session's samples of the other label
            lse_neg = segment_logsumexp(z_pos, ~positive, index, num_sessions)  # over y = 0, of z⁺
            lse_pos = segment_logsumexp(z_neg, positive, index, num_sessions)  # over y = 1, of z⁻
            own = torch.where(positive, z_pos, z_neg)
            others = torch.where(positive, lse_neg[index], lse_pos[index])
            per_sample = torch.logaddexp(own, others) - own
        if weights is not None:
            per_sample = per_sample * weights.to(per_sample.dtype)
        return per_sample.sum() / n

    def _coefficients(self, logits: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """``(a, b)``: weights of ``ce`` and ``ge`` (fixed ``α`` outside training for the random strategies)."""
        if self.strategy == "fixed" or not self.training:
            return self.alpha, 1.0 - self.alpha
        device, dtype = logits.device, logits.dtype
        if self.strategy == "random_uniform":
            u = torch.rand((), device=device, dtype=dtype)
            return u, 1.0 - u
        if self.strategy == "random_normal":
            drawn = torch.softmax(torch.randn(2, device=device, dtype=dtype), dim=0)
        else:  # random_bernoulli
            draws = torch.bernoulli(torch.full((2,), 0.5, device=device, dtype=dtype))
            drawn = torch.where(draws.sum() == 1, draws, torch.full_like(draws, 0.5))
        return drawn[0], drawn[1]
