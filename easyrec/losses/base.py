"""What the run and the trainer ask of a loss, written once: :class:`Loss`, with the defaults of a binary loss."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from torch import Tensor, nn

from easyrec.losses.heads import DEFAULT_SCORES, Head, LabelRule


class Loss(nn.Module):
    """A loss: ``forward(outputs, labels (B,), weights (B,) | None[, sessions (B,) | None]) -> scalar``.

    ``outputs`` is ``(B,)`` for one output per sample, ``(B, num_outputs)`` for more, ``(B, 2, D)`` for a two-tower
    model's user and item embeddings (``task = "retrieval"``). A subclass sets the class attributes that differ
    from these defaults and overrides the methods it needs; a loss that takes ``sessions`` in its ``forward`` gets
    the batch's session ids.

    Attributes:
        task: ``binary``, ``multiclass``, ``regression`` or ``retrieval``: which eval metrics apply.
        num_outputs: model outputs per sample it reads.
        label_values: the label values it accepts (None: any); ``label_range``: the closed interval they must lie
            in (None: any); ``requires_every_label``: each of ``label_values`` must occur in the training split.
        requires_sessions: refuses data without a session column (a pairwise or listwise loss).
        multi_task: trains on several label columns, one per task (its own :meth:`heads` and :meth:`label_rules`).

    Example::

        class SquaredError(Loss):
            task = "regression"

            def forward(self, outputs, labels, weights=None):
                return ((outputs - labels) ** 2).mean()
    """

    task: str = "binary"
    num_outputs: int = 1
    label_values: tuple[float, ...] | None = None
    label_range: tuple[float, float] | None = None
    requires_every_label: bool = False
    requires_sessions: bool = False
    multi_task: bool = False

    @staticmethod
    def of(loss: Loss | Callable[..., Tensor]) -> Loss:
        """``loss`` itself, or a loss of the user's own that does not subclass :class:`Loss` (an ``nn.Module`` or
        any callable ``(outputs, labels, weights[, sessions])``) wrapped once in one."""
        return loss if isinstance(loss, Loss) else _Adapted(loss)

    @property
    def class_name(self) -> str:
        """The name of its class, in errors (``loss=BinaryFocalLoss ...``)."""
        return type(self).__name__

    @property
    def task_outputs(self) -> tuple[int, ...]:
        """The outputs of each task that has its own (a multi-task model builds one tower per entry)."""
        return (self.num_outputs,)

    @property
    def takes_sessions(self) -> bool:
        """Whether :meth:`forward` has a ``sessions`` parameter."""
        return "sessions" in inspect.signature(self.forward).parameters

    def scores(self, outputs: Tensor) -> Tensor:
        """Model output -> predictions: a probability, a value, ``(B, C)`` class probabilities, a pair score."""
        return DEFAULT_SCORES[self.task](outputs)

    def heads(self, label_names: Sequence[str] = ()) -> list[Head]:
        """What it predicts, for evaluation: one head on the first of the data's ``label_names``."""
        return [Head("", self.task, label_names[0], self.scores)]

    def label_rule(self, column: str, required_by: str) -> LabelRule | None:
        """What it needs of the label ``column`` (None: any label); ``required_by`` names it in errors."""
        if not (self.label_values or self.label_range):
            return None
        return LabelRule(column, required_by, self.label_values, self.label_range, self.requires_every_label)

    def label_rules(self, label_names: Sequence[str] = ()) -> list[LabelRule]:
        """Every rule it puts on the data's label columns, checked before training."""
        rule = self.label_rule(label_names[0], f"loss {self.class_name}")
        return [rule] if rule else []

    def describe_outputs(self) -> str:
        """Which outputs it reads, for the error of a model that gives another number."""
        return "its logits"

    def log_values(self) -> dict[str, float]:
        """``train/loss/<part>`` of the last call, for a loss made of several parts."""
        return {}

    def part_names(self) -> list[str]:
        """The ``<part>`` of each ``train/loss/<part>`` that :meth:`log_values` gives, known before any call: the
        evaluation logs ``eval/loss/<part>`` for each (none by default)."""
        return []


#: What a loss that does not subclass :class:`Loss` may still declare, as it could before the base existed.
_DECLARED = ("task", "num_outputs", "label_values", "label_range", "requires_every_label", "requires_sessions")


class _Adapted(Loss):
    """A loss of the user's own that does not subclass :class:`Loss`: its call, its declared attributes (and
    ``scores`` / ``log_values`` / ``part_names``), the defaults for the rest."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.fn = fn  # an nn.Module is registered (moved, saved and trained with the loss); a function is kept
        for name in (*_DECLARED, "scores", "log_values", "part_names"):
            if hasattr(fn, name):
                setattr(self, name, getattr(fn, name))
        forward = fn.forward if isinstance(fn, nn.Module) else fn
        self._takes_sessions = "sessions" in inspect.signature(forward).parameters

    @property
    def class_name(self) -> str:
        return type(self.fn).__name__

    @property
    def takes_sessions(self) -> bool:
        return self._takes_sessions

    def forward(
        self, outputs: Tensor, labels: Tensor, weights: Tensor | None = None, sessions: Tensor | None = None
    ) -> Tensor:
        if self._takes_sessions:
            return self.fn(outputs, labels, weights, sessions=sessions)
        return self.fn(outputs, labels, weights)
