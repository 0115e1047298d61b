"""Metrics of binary click predictions."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc


def binary_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """ROC AUC and logloss of ``probs (N,)`` against 0/1 ``labels (N,)``."""
    probs = probs.double()
    clipped = probs.clamp(1e-7, 1 - 1e-7)
    logloss = torch.nn.functional.binary_cross_entropy(clipped, labels.double())
    return {"auc": float(binary_auroc(probs, labels.long())), "logloss": float(logloss)}
