"""In-batch recall of two-tower retrieval models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def in_batch_recall_hits(outputs: Tensor, labels: Tensor, ks: Sequence[int], chunk: int = 2048) -> tuple[Tensor, int]:
    """Hits of every query among the items of the same batch (EasyRec's ``recall_in_batch@k``).

    The positive rows (``labels > 0``) of ``outputs (B, 2, D)`` (user, item) are the queries and their items the
    candidates; query i hits at k when fewer than k candidates score strictly higher than its own item (so a
    duplicate of its item, scoring the same, does not push it down). Scores are dot products, computed ``chunk``
    queries at a time.

    Returns:
        ``(hits (len(ks),) int64, number of queries)``.
    """
    positive = outputs[labels > 0]
    users, items = positive[:, 0], positive[:, 1]
    own = (users * items).sum(-1)
    kth = torch.as_tensor(list(ks), device=outputs.device)
    hits = torch.zeros(len(ks), dtype=torch.long, device=outputs.device)
    for start in range(0, len(users), chunk):
        scores = users[start : start + chunk] @ items.T  # (chunk, P)
        higher = (scores > own[start : start + chunk, None]).sum(1)
        hits += (higher[:, None] < kth[None, :]).sum(0)
    return hits.cpu(), len(users)
