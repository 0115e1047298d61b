"""Metrics of binary click predictions."""

from __future__ import annotations

import torch
from torch import Tensor

from easyrec.metrics.grouped_auc import grouped_auc


def binary_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """ROC AUC and logloss of ``probs (N,)`` against 0/1 ``labels (N,)``.

    The AUC is exact, tied scores counting 1/2 (the AUC of one group, see :func:`grouped_auc`); NaN when the
    labels hold one class only. Both are NaN when a probability is NaN (a diverged model): nothing to rank."""
    if not bool(probs.isfinite().all()):
        return {"auc": float("nan"), "logloss": float("nan")}
    probs = probs.double()
    clipped = probs.clamp(1e-7, 1 - 1e-7)
    logloss = torch.nn.functional.binary_cross_entropy(clipped, labels.double())
    auc = grouped_auc(probs, labels, torch.zeros(labels.shape, dtype=torch.long, device=labels.device))["gauc"]
    return {"auc": float(auc), "logloss": float(logloss)}
