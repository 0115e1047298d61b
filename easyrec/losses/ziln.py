"""EasyRec's ZILN_LOSS: zero-inflated lognormal loss for lifetime-value regression (Wang et al., 2019)."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Gt
from torch import Tensor

from easyrec.config.arguments import FINITE, NonNegative, checked
from easyrec.losses.base import Loss
from easyrec.losses.pairs import zero_loss
from easyrec.losses.reduction import mean_over_nonzero_weights
from easyrec.losses.sessions import check_shapes

#: Lower clip of σ: √(Keras' epsilon), as EasyRec.
MIN_SIGMA = math.sqrt(1e-7)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class ZILNLoss(Loss):
    """Zero-inflated lognormal: a classifier of ``y > 0`` and a lognormal fitted to the positive labels.

    ``logits (B, 3) = [z_p, μ, s]``, ``pos = 1[y > 0]``, ``σ = clip(softplus(s), √1e-7, max_sigma)``,
    ``nll = −log LogNormal(μ, σ).pdf(y)`` (``y`` replaced by 1 where not positive, so it stays finite):

    * ``cls = Σ w·BCE(z_p, pos) / #{w ≠ 0}`` (plain mean without weights);
    * ``reg = Σ w·pos·nll / (Σ w·pos + 1e-8)``;
    * ``L = classification_weight·cls + regression_weight·reg + mu_regularization·mean(μ²)
      + sigma_regularization·mean(s²)`` (the penalties are plain means over the batch, on the raw ``s``).

    Without weights this is EasyRec's loss exactly; EasyRec ignores tensor sample weights, here they are
    honoured as above. An empty batch gives 0 (still connected to ``logits``). The prediction
    (:meth:`scores`) is the expected value ``exp(clip(log σ(z_p) + μ + σ²/2, −100, max_log_clip_value))``, or with
    ``return_log_pred_value`` its log ``clip(log σ(z_p) + μ + σ²/2, −100, max_log_clip_value)``, as EasyRec's.

    Args:
        mu_regularization: >= 0, weight of ``mean(μ²)``.
        sigma_regularization: >= 0, weight of ``mean(s²)``.
        max_sigma: upper clip of σ, > √1e-7.
        max_log_clip_value: upper clip of the log of the prediction, > −100.
        classification_weight: >= 0, weight of ``cls``.
        regression_weight: >= 0, weight of ``reg``.
        return_log_pred_value: the prediction (evaluated, predicted, exported) is the log of the expected value
            (EasyRec's option of that name, for a serving side that ranks or sums in log space); the regression
            metrics then compare it with the raw labels, as EasyRec's do.

    After each call, :meth:`log_values` gives ``train/loss/ziln_classification`` and ``train/loss/ziln_regression``.
    """

    #: The model emits three outputs per sample: ``[z_p, μ, s]``.
    num_outputs = 3
    task = "regression"
    label_values = None
    label_range = (0.0, math.inf)

    @checked
    def __init__(
        self,
        mu_regularization: NonNegative = 0.01,
        sigma_regularization: NonNegative = 0.01,
        max_sigma: Annotated[float, Gt(MIN_SIGMA), FINITE] = 5.0,
        max_log_clip_value: Annotated[float, Gt(-100), FINITE] = 20.0,
        classification_weight: NonNegative = 1.0,
        regression_weight: NonNegative = 1.0,
        return_log_pred_value: bool = False,
    ) -> None:
        super().__init__()
        self.mu_regularization, self.sigma_regularization = float(mu_regularization), float(sigma_regularization)
        self.max_sigma, self.max_log_clip_value = float(max_sigma), float(max_log_clip_value)
        self.classification_weight, self.regression_weight = float(classification_weight), float(regression_weight)
        self.return_log_pred_value = return_log_pred_value
        self._logged: dict[str, Tensor] = {}

    def scores(self, logits: Tensor) -> Tensor:
        """Expected value ``exp(clip(log σ(z_p) + μ + σ²/2, −100, max_log_clip_value))`` (with
        ``return_log_pred_value``: the clipped log itself): ``logits (B, 3)`` -> ``(B,)``.

        σ is clipped as in the loss.
        """
        mu, sigma = logits[..., 1], self._sigma(logits[..., 2])
        log_mean = (F.logsigmoid(logits[..., 0]) + mu + 0.5 * sigma.square()).clamp(-100.0, self.max_log_clip_value)
        return log_mean if self.return_log_pred_value else torch.exp(log_mean)

    def forward(self, logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        """``logits (B, 3)``, ``labels (B,)`` >= 0, ``weights (B,)`` or None -> scalar."""
        if logits.dim() != 2 or logits.shape[1] != 3:
            raise ValueError(f"logits: expected shape (B, 3), got {tuple(logits.shape)}")
        check_shapes(logits[:, 0], labels=labels, weights=weights)
        if logits.shape[0] == 0:
            return zero_loss(logits)
        labels = labels.to(logits.dtype)
        weights = None if weights is None else weights.to(logits.dtype)
        z, mu, s = logits.unbind(dim=1)
        positive = (labels > 0).to(logits.dtype)

        classification = mean_over_nonzero_weights(
            F.binary_cross_entropy_with_logits(z, positive, reduction="none"), weights
        )

        sigma = self._sigma(s)
        log_y = torch.log(torch.where(labels > 0, labels, torch.ones_like(labels)))
        nll = log_y + torch.log(sigma) + HALF_LOG_2PI + 0.5 * ((log_y - mu) / sigma).square()
        mask = positive if weights is None else positive * weights
        regression = (mask * nll).sum() / (mask.sum() + 1e-8)

        self._logged = {
            "train/loss/ziln_classification": classification.detach(),
            "train/loss/ziln_regression": regression.detach(),
        }
        penalties = self.mu_regularization * mu.square().mean() + self.sigma_regularization * s.square().mean()
        return self.classification_weight * classification + self.regression_weight * regression + penalties

    def part_names(self) -> list[str]:
        return ["ziln_classification", "ziln_regression"]

    def log_values(self) -> dict[str, float]:
        """``train/loss/ziln_classification`` and ``train/loss/ziln_regression`` of the last call (empty before)."""
        return {key: float(value) for key, value in self._logged.items()}

    def _sigma(self, s: Tensor) -> Tensor:
        return F.softplus(s).clamp(MIN_SIGMA, self.max_sigma)
