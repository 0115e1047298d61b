"""Metrics of multi-class predictions."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy


def multiclass_metrics(probs: Tensor, labels: Tensor, top_k: int) -> dict[str, float]:
    """``accuracy``, ``logloss`` (cross-entropy) and ``recall@<k>`` (the label among the k most probable classes;
    EasyRec's recall_at_topk) of class probabilities ``probs (N, C)`` against class ids ``labels (N,)``."""
    num_classes = probs.shape[1]
    targets = labels.long()
    picked = probs.double().gather(1, targets[:, None]).squeeze(1)
    k = min(top_k, num_classes)
    return {
        "accuracy": float(multiclass_accuracy(probs, targets, num_classes, average="micro")),
        "logloss": float(-torch.log(picked.clamp_min(1e-7)).mean()),
        f"recall@{top_k}": float(multiclass_accuracy(probs, targets, num_classes, average="micro", top_k=k)),
    }
