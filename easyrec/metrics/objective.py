"""``eval/loss``: the training objective measured on the eval split, from the eval forward's outputs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from easyrec.losses.base import Loss

PART = "train/loss/"


def loss_metric_names(loss: Loss) -> list[str]:
    """``eval/loss`` and ``eval/loss/<part>`` for each part of ``loss`` (:meth:`Loss.part_names`)."""
    return ["eval/loss"] + [f"eval/loss/{part}" for part in loss.part_names()]


class EvalLoss:
    """The training loss over the eval split: ``eval/loss`` and, for a loss made of several parts or tasks,
    ``eval/loss/<part>`` for each ``train/loss/<part>`` it logs (:meth:`Loss.part_names`).

    The loss is computed as training computes it: on batches of ``rows_per_call`` rows (the training batch size,
    ``data.batch_size``), taken in order from each eval batch, with their labels, sample weights and sessions, and
    the loss in eval mode (random loss weights fixed, nothing drawn). Each call's value is weighted by its rows,
    as training weights its micro-batches, and summed over the workers: ``eval/loss = Σ_b n_b·L_b / Σ_b n_b``. For a
    pointwise loss without sample weights that is the mean loss over all eval rows; for a loss whose value depends
    on the batch (pairs and lists within a session, in-batch negatives, JRC's per-session ranking) it is the mean
    over batches of the training size, so it is on the scale of ``train/loss``. The model's regularization penalty
    is left out (as in ``train/loss``, and EasyRec's eval loss).

    No extra forward pass: :meth:`update` takes the outputs the eval forward computed for the metrics.
    """

    def __init__(self, loss: Loss, rows_per_call: int) -> None:
        self.loss, self.rows_per_call = loss, rows_per_call
        self.takes_sessions = loss.takes_sessions
        self.parts = loss.part_names()
        self.names = loss_metric_names(loss)
        # [Σ n_b·L_b, Σ n_b] of the whole loss, then of each part (a part may be missing from a call): float64
        self._totals = torch.zeros(len(self.names), 2, dtype=torch.float64)

    def update(self, outputs: Tensor, batch: Any) -> None:
        """Add the loss of ``outputs`` (the model's float32 output for ``batch``: ``(B,)``, ``(B, K)`` or
        ``(B, 2, D)``) on ``batch``'s labels, weights and sessions."""
        was_training = self.loss.training
        self.loss.eval()
        try:
            for start in range(0, len(batch), self.rows_per_call):
                self._add(outputs, batch, slice(start, start + self.rows_per_call))
        finally:
            self.loss.train(was_training)

    def _add(self, outputs: Tensor, batch: Any, rows: slice) -> None:
        labels, weights, sessions = (
            None if t is None else t[rows] for t in (batch.labels, batch.weights, batch.sessions)
        )
        if self.takes_sessions:
            value = self.loss(outputs[rows], labels, weights, sessions=sessions)
        else:
            value = self.loss(outputs[rows], labels, weights)
        n = labels.shape[0]
        self._totals[0] += torch.tensor([float(value) * n, n])
        logged = self.loss.log_values()
        for i, part in enumerate(self.parts, 1):
            if (key := PART + part) in logged:
                self._totals[i] += torch.tensor([logged[key] * n, n])

    def gather(self, workers: Any) -> None:
        """Sum the loss sums and rows of every worker (``workers.sum``: an all-reduce)."""
        self._totals = workers.sum(self._totals)

    def compute(self) -> dict[str, float]:
        """``eval/loss`` and ``eval/loss/<part>``: NaN when no eval row (or no call that gave the part)."""
        sums, rows = self._totals.unbind(1)
        means = torch.where(rows > 0, sums / rows.clamp_min(1), torch.nan)
        return dict(zip(self.names, means.tolist(), strict=True))
