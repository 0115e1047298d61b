"""Metrics of binary click predictions: ``auc``, ``logloss``, ``ne`` (normalized entropy) and ``max_f1``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from easyrec.metrics.grouped_auc import grouped_auc

#: What :func:`binary_metrics` can compute, by name (``metrics.binary``, ``trainer.train_metrics``).
BINARY_METRICS = ("auc", "logloss", "ne", "max_f1")


def auc(probs: Tensor, labels: Tensor) -> float:
    """Exact ROC AUC of ``probs (N,)`` against 0/1 ``labels (N,)``, tied scores counting 1/2; NaN for one class."""
    return float(grouped_auc(probs, labels, torch.zeros(labels.shape, dtype=torch.long, device=labels.device))["gauc"])


def binned_auc(probs: Tensor, labels: Tensor, bins: int = 100_000) -> float:
    """ROC AUC of ``probs (N,)`` in [0, 1] against 0/1 ``labels (N,)`` from two histograms over ``bins`` equal-width
    bins (EasyRec's ``fast_auc``): scores in the same bin count as tied (1/2), so it differs from :func:`auc` only
    by pairs closer than ``1/bins``. No sort: O(N + bins) on the tensors' device. NaN for one class."""
    index = (probs.double() * bins).long().clamp_(0, bins - 1)
    y = labels.double()
    positives = torch.bincount(index, weights=y, minlength=bins)
    negatives = torch.bincount(index, weights=1.0 - y, minlength=bins)
    pairs = positives.sum() * negatives.sum()
    below = torch.cumsum(negatives, 0) - negatives  # negatives in lower bins: ranked below each bin's positives
    return float((positives * (below + 0.5 * negatives)).sum() / pairs) if pairs > 0 else math.nan


def logloss(probs: Tensor, labels: Tensor) -> float:
    """Mean binary cross-entropy of ``probs (N,)`` (clipped to [1e-7, 1 − 1e-7]) against 0/1 ``labels (N,)``."""
    clipped = probs.double().clamp(1e-7, 1 - 1e-7)
    return float(torch.nn.functional.binary_cross_entropy(clipped, labels.double()))


def normalized_entropy(probs: Tensor, labels: Tensor) -> float:
    """``ne``: :func:`logloss` divided by the entropy of the base rate ``p = mean(labels)``,
    ``−p·log p − (1 − p)·log(1 − p)`` (He et al. 2014): 1 for a model that predicts the base rate everywhere, lower
    is better. NaN when the labels hold one class only (an entropy of 0)."""
    rate = float(labels.double().mean()) if labels.numel() else math.nan
    if not 0.0 < rate < 1.0:
        return math.nan
    entropy = -rate * math.log(rate) - (1.0 - rate) * math.log(1.0 - rate)
    return logloss(probs, labels) / entropy


def max_f1(probs: Tensor, labels: Tensor) -> tuple[float, float]:
    """``(max_f1, max_f1_threshold)``: the best F1 of the rule "positive when ``prob >= threshold``" over every
    threshold, and that threshold (the highest one when several give the best F1).

    Exact: every distinct score of ``probs (N,)`` is a threshold (EasyRec's ``max_f1`` tries 200 fixed ones, and on
    the rank model's logits). ``F1 = 2·P·R / (P + R)``, 0 where nothing predicted is positive. NaN for both when
    ``labels (N,)`` hold no positive (F1 is undefined).
    """
    y = labels.double()
    positives = float(y.sum())
    if positives == 0:
        return math.nan, math.nan
    scores, order = torch.sort(probs.double(), descending=True)
    y = y[order]
    # the thresholds: the last row of each block of tied scores (a tie is predicted positive or negative together)
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    true_positives = torch.cumsum(y, 0)[last]
    predicted = (torch.nonzero(last).squeeze(1) + 1).double()
    f1 = 2 * true_positives / (predicted + positives)  # = 2PR/(P+R) with P = tp/predicted, R = tp/positives
    best = int(torch.argmax(f1))  # the first maximum: the highest threshold
    return float(f1[best]), float(scores[last][best])


def _max_f1(probs: Tensor, labels: Tensor) -> dict[str, float]:
    value, threshold = max_f1(probs, labels)
    return {"max_f1": value, "max_f1_threshold": threshold}


_COMPUTE: dict[str, Callable[[Tensor, Tensor], dict[str, float]]] = {
    "auc": lambda probs, labels: {"auc": auc(probs, labels)},
    "logloss": lambda probs, labels: {"logloss": logloss(probs, labels)},
    "ne": lambda probs, labels: {"ne": normalized_entropy(probs, labels)},
    "max_f1": _max_f1,
}


def binary_keys(names: Sequence[str]) -> list[str]:
    """The keys :func:`binary_metrics` returns for ``names`` (``max_f1`` gives ``max_f1_threshold`` too)."""
    return [key for name in names for key in ((name, "max_f1_threshold") if name == "max_f1" else (name,))]


def binary_metrics(
    probs: Tensor, labels: Tensor, names: Sequence[str] = ("auc", "logloss"), auc_bins: int | None = None
) -> dict[str, float]:
    """The metrics ``names`` (of :data:`BINARY_METRICS`) of ``probs (N,)`` against 0/1 ``labels (N,)``.

    The AUC is exact, tied scores counting 1/2 (the AUC of one group, see :func:`grouped_auc`), or with
    ``auc_bins`` the :func:`binned_auc` over that many bins; NaN when the labels hold one class only. All are NaN
    when a probability is NaN (a diverged model): nothing to rank."""
    if not bool(probs.isfinite().all()):
        return dict.fromkeys(binary_keys(names), math.nan)
    values: dict[str, float] = {}
    for name in names:
        if name == "auc" and auc_bins is not None:
            values["auc"] = binned_auc(probs, labels, auc_bins)
        else:
            values.update(_COMPUTE[name](probs, labels))
    return values
