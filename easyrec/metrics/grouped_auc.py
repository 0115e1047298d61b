"""Grouped AUC (EasyRec's ``gauc`` / ``session_auc``), vectorised over groups.

The ROC AUC is computed separately inside every group (a user id for ``gauc``, a session id for
``session_auc``); groups holding only positives or only negatives have no AUC and are skipped, and the
per-group AUCs are then reduced to one number.

Reductions (EasyRec name in brackets):

- ``"mean"`` (``mean``): plain mean over the groups that count.
- ``"sample"`` (``mean_by_sample_num``): weighted by the number of rows in each group.
- ``"positive"`` (``mean_by_positive_num``): weighted by the number of positives in each group.

The EasyRec names are accepted as aliases. Unlike EasyRec, which returns 0.0 when no group counts,
``grouped_auc`` returns NaN then, so that "undefined" cannot be mistaken for a real score.
"""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sample", "positive")
_ALIASES = {
    "mean": "mean",
    "sample": "sample",
    "positive": "positive",
    "mean_by_sample_num": "sample",
    "mean_by_positive_num": "positive",
}


def grouped_auc(probs: Tensor, labels: Tensor, groups: Tensor, reduction: str = "mean") -> dict[str, float | int]:
    """AUC per group of ``probs (N,)`` against 0/1 ``labels (N,)``, grouped by integer ``groups (N,)``, reduced.

    Tied scores inside a group count 1/2 (average ranks), as in sklearn's ``roc_auc_score``. Groups
    with only one class are skipped. ``reduction`` is ``"mean"``, ``"sample"`` (weighted by group
    size) or ``"positive"`` (weighted by number of positives); see the module docstring.

    Returns ``{"gauc": value, "gauc_groups": number of groups that counted}``; ``value`` is NaN when
    no group has both classes. Runs in O(N log N) with no Python loop over groups.
    """
    if reduction not in _ALIASES:
        raise ValueError(f"reduction must be one of {REDUCTIONS} (or an EasyRec alias), got {reduction!r}")
    reduction = _ALIASES[reduction]
    if probs.dim() != 1:
        raise ValueError(f"probs must be 1-D (N,), got shape {tuple(probs.shape)}")
    if labels.shape != probs.shape:
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match probs shape {tuple(probs.shape)}")
    if groups.shape != probs.shape:
        raise ValueError(f"groups shape {tuple(groups.shape)} does not match probs shape {tuple(probs.shape)}")
    if groups.is_floating_point() or groups.is_complex():
        raise ValueError(f"groups must hold integer ids, got dtype {groups.dtype}")
    n_rows = probs.numel()
    if n_rows == 0:
        return {"gauc": float("nan"), "gauc_groups": 0}

    scores = probs.detach().double()
    y = labels.detach().double()
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels must be 0/1")
    device = scores.device

    # Sort by (group, score): by score first, then stably by group. The first sort need not be stable:
    # the order inside a block of tied scores does not matter, as ties get their average rank.
    s, order = torch.sort(scores)
    g, perm = torch.sort(groups.detach()[order], stable=True)
    s = s[perm]
    y = y[order[perm]]

    # Segment boundaries: new group, and new tie block (same group and same score).
    new_group = torch.ones(n_rows, dtype=torch.bool, device=device)
    new_group[1:] = g[1:] != g[:-1]
    new_tie = new_group.clone()
    new_tie[1:] |= s[1:] != s[:-1]
    gid = torch.cumsum(new_group, 0) - 1
    tid = torch.cumsum(new_tie, 0) - 1

    # 1-based rank within the group; ties share the average rank of their block.
    pos = torch.arange(n_rows, device=device, dtype=torch.float64)
    group_start = pos[new_group]
    tie_first_rank = pos[new_tie] - group_start[gid[new_tie]] + 1
    tie_count = torch.bincount(tid).double()
    avg_rank = tie_first_rank + (tie_count - 1) / 2  # per tie block
    rank = avg_rank[tid]

    n_groups = int(gid[-1]) + 1
    size = torch.bincount(gid, minlength=n_groups).double()
    n_pos = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, gid, y)
    rank_pos = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, gid, y * rank)
    n_neg = size - n_pos
    valid = (n_pos > 0) & (n_neg > 0)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return {"gauc": float("nan"), "gauc_groups": 0}

    p, nn = n_pos[valid], n_neg[valid]
    auc = (rank_pos[valid] - p * (p + 1) / 2) / (p * nn)
    if reduction == "mean":
        value = auc.mean()
    elif reduction == "sample":
        w = size[valid]
        value = (auc * w).sum() / w.sum()
    else:
        value = (auc * p).sum() / p.sum()
    return {"gauc": float(value), "gauc_groups": n_valid}
