"""What a loss predicts, for evaluation: one head per task, each with its label column and output columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: The kinds of task a head can be; each has its own eval metrics (see :class:`easyrec.metrics.EvalMetrics`).
TASKS = ("binary", "multiclass", "regression", "retrieval")


def pair_scores(outputs: Tensor) -> Tensor:
    """Row-wise dot product of a two-tower output ``(B, 2, D)`` -> ``(B,)``."""
    return (outputs[:, 0] * outputs[:, 1]).sum(-1)


def _identity(outputs: Tensor) -> Tensor:
    return outputs


def _softmax(outputs: Tensor) -> Tensor:
    return torch.softmax(outputs, dim=-1)


#: Predictions of a head whose loss has no ``scores``: probability, value, class probabilities, pair score.
DEFAULT_SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "binary": torch.sigmoid,
    "regression": _identity,
    "multiclass": _softmax,
    "retrieval": pair_scores,
}


@dataclass(frozen=True)
class Head:
    """One prediction a loss trains.

    Attributes:
        name: ``""`` for a single loss (metrics ``eval/auc``), else the task's name (metrics ``eval/<name>/auc``).
        task: one of :data:`TASKS`.
        label: the label column it is judged against.
        scores: model output of this head -> predictions (``(B,)``, or ``(B, C)`` class probabilities).
        columns: ``(start, stop)`` of the model output's columns this head reads; None: the whole output.
        given: a label column: only the rows where it is positive are evaluated (e.g. CVR on the clicked rows).
    """

    name: str
    task: str
    label: str
    scores: Callable[[Tensor], Tensor]
    columns: tuple[int, int] | None = None
    given: str | None = None

    @property
    def prefix(self) -> str:
        return f"eval/{self.name}/" if self.name else "eval/"

    def outputs(self, outputs: Tensor) -> Tensor:
        """This head's part of the model output ``(B, K)``: ``(B,)`` for one column, ``(B, k)`` for several."""
        if self.columns is None or outputs.dim() == 1:
            return outputs
        start, stop = self.columns
        part = outputs[:, start:stop]
        return part.squeeze(1) if stop - start == 1 else part


def conditional_head(name: str, task: Head, given: Head) -> Head:
    """The head of ``P(task | given)`` = ``p_task / p_given``, judged on ``task``'s label over the rows where
    ``given``'s label is positive (ESMM's CVR on the clicked rows, from its CTR and CTCVR outputs)."""

    def scores(outputs: Tensor) -> Tensor:
        ratio = task.scores(task.outputs(outputs)) / given.scores(given.outputs(outputs)).clamp_min(1e-12)
        return ratio.clamp(0.0, 1.0)

    return Head(name, "binary", task.label, scores, None, given=given.label)


@dataclass(frozen=True)
class LabelRule:
    """What a loss needs of one label column, checked on the data before training.

    Attributes:
        column: the label column.
        required_by: who needs it, for the error message.
        values: the allowed label values (None: any).
        value_range: the closed interval the labels must lie in (None: any).
        every_value: each of ``values`` must occur in the training split (a class never seen cannot be learned).
    """

    column: str
    required_by: str
    values: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    every_value: bool = False
