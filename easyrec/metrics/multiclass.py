"""Metrics of multi-class predictions."""

from __future__ import annotations

import torch
from torch import Tensor


def multiclass_metrics(probs: Tensor, labels: Tensor, top_k: int) -> dict[str, float]:
    """``accuracy``, ``logloss`` (cross-entropy) and ``recall@<k>`` (the label among the k most probable classes;
    EasyRec's recall_at_topk) of class probabilities ``probs (N, C)`` against class ids ``labels (N,)``."""
    targets = labels.long()
    picked = probs.double().gather(1, targets[:, None]).squeeze(1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=1).indices  # (N, k)
    return {
        "accuracy": float((top[:, 0] == targets).double().mean()),
        "logloss": float(-torch.log(picked.clamp_min(1e-7)).mean()),
        f"recall@{top_k}": float((top == targets[:, None]).any(1).double().mean()),
    }
