"""Metrics of multi-class predictions: ``accuracy``, ``logloss``, ``recall_at_topk``, ``auc`` (one-vs-rest)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from easyrec.metrics.grouped_auc import grouped_auc

#: What :func:`multiclass_metrics` can compute, by name (``metrics.multiclass``, ``trainer.train_metrics``).
MULTICLASS_METRICS = ("accuracy", "logloss", "recall_at_topk", "auc")
DEFAULT_MULTICLASS = ("accuracy", "logloss", "recall_at_topk")


def multiclass_keys(names: Sequence[str], top_k: int) -> list[str]:
    """The keys :func:`multiclass_metrics` returns: ``recall_at_topk`` is ``recall@<top_k>``."""
    return [f"recall@{top_k}" if name == "recall_at_topk" else name for name in names]


def multiclass_auc(probs: Tensor, labels: Tensor) -> float:
    """One-vs-rest ROC AUC, macro-averaged: the mean over classes c of the AUC of ``probs[:, c]`` against
    ``labels == c`` (``probs (N, C)``, class ids ``labels (N,)``), as sklearn's ``roc_auc_score(multi_class="ovr",
    average="macro")``. A class absent from the labels (or the only one) has no AUC and is left out; NaN if none
    has one."""
    n, classes = probs.shape
    targets = labels.long()
    # class c's column is group c: one grouped AUC over the stacked columns gives every class's AUC at once
    is_class = (targets[None, :] == torch.arange(classes, device=targets.device)[:, None]).double()
    groups = torch.arange(classes, device=targets.device).repeat_interleave(n)
    return float(grouped_auc(probs.T.reshape(-1), is_class.reshape(-1), groups, "mean")["gauc"])


def multiclass_metrics(
    probs: Tensor, labels: Tensor, top_k: int, names: Sequence[str] = DEFAULT_MULTICLASS
) -> dict[str, float]:
    """The metrics ``names`` (of :data:`MULTICLASS_METRICS`) of class probabilities ``probs (N, C)`` against class
    ids ``labels (N,)``: ``accuracy``, ``logloss`` (cross-entropy), ``recall@<k>`` (the label among the k most
    probable classes; EasyRec's recall_at_topk), ``auc`` (:func:`multiclass_auc`)."""
    targets = labels.long()
    top = probs.topk(min(top_k, probs.shape[1]), dim=1).indices  # (N, k)
    values: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            values["accuracy"] = float((top[:, 0] == targets).double().mean())
        elif name == "logloss":
            picked = probs.double().gather(1, targets[:, None]).squeeze(1)
            values["logloss"] = float(-torch.log(picked.clamp_min(1e-7)).mean())
        elif name == "recall_at_topk":
            values[f"recall@{top_k}"] = float((top == targets[:, None]).any(1).double().mean())
        else:
            values["auc"] = multiclass_auc(probs, labels)
    return values
