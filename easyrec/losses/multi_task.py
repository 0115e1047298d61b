"""Losses of a multi-task model: one per task, each on its own output columns and label column."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from easyrec.config.arguments import NonNegative, checked
from easyrec.losses.base import Loss
from easyrec.losses.heads import Head, LabelRule, conditional_head
from easyrec.losses.l2 import L2Loss
from easyrec.losses.order_calibrate import OrderCalibrateLoss
from easyrec.losses.sigmoid_l2 import SigmoidL2Loss
from easyrec.losses.weighting import LossWeighting, Strategy


@checked
@dataclasses.dataclass
class Task:
    """One task of a :class:`MultiTaskLoss`: its loss, label column, weight, the output it shares, if any, and
    which rows it learns from (EasyRec's ``use_sample_weight`` and task-space indicator)."""

    loss: Any
    label: str | None = None
    weight: NonNegative = 1.0
    learn_weight: bool = False
    output: str | None = None
    use_sample_weight: bool = True
    task_space_indicator: str | None = None
    in_task_space_weight: NonNegative = 1.0
    out_task_space_weight: NonNegative = 1.0

    def __post_init__(self) -> None:
        if self.task_space_indicator is None:
            for key in ("in_task_space_weight", "out_task_space_weight"):
                if getattr(self, key) != 1.0:
                    raise ValueError(f"{key}={getattr(self, key)}: has no effect without a task_space_indicator")


@dataclasses.dataclass
class ConditionalHead:
    """An eval-only head: P(task | given) on the rows where given's label is positive."""

    task: str
    given: str


class MultiTaskLoss(Loss):
    """``Σ_t c_t·L_t(outputs_t, labels[label_t])`` (EasyRec's multi-task towers with ``loss_weight_strategy``), plus
    an optional order calibration between the tasks' probabilities.

    Tasks read consecutive columns of the model output, in order, ``num_outputs`` of their loss each (1 by default;
    a ZILN task takes 3). A task with ``output: <other task>`` reads that task's columns instead and adds none:
    a distillation term on the CTR logit, or a second loss on the same tower. Each task's loss gets, when it takes
    them, the session ids, and per-row weights (EasyRec's task towers)::

        w_i = (sample weight_i if use_sample_weight else 1) · (in if indicator_i > 0 else out)

    where ``indicator`` is the task's ``task_space_indicator`` label column, ``in`` its ``in_task_space_weight``
    and ``out`` its ``out_task_space_weight`` (both 1 by default, as EasyRec's). A CVR task with
    ``task_space_indicator: click`` and ``out_task_space_weight: 0`` learns from the clicked rows only: the losses
    average over the rows of non-zero weight. A task without sample weights and indicator gets ``weights=None``.

    Args:
        tasks: ``{name: {"loss": module, "label": column, "weight": 1.0, "learn_weight": False, "output": None,
            "use_sample_weight": True, "task_space_indicator": None, "in_task_space_weight": 1.0,
            "out_task_space_weight": 1.0}}``.
        label_columns: the data's label columns, in the order of ``labels (B, L)``.
        strategy: ``fixed``, ``uncertainty`` (tasks with ``learn_weight`` get a learned weight) or ``random``;
            see :class:`~easyrec.losses.weighting.LossWeighting`.
        order_calibrate: ``{task: [upper tasks]}``: EasyRec's ORDER_CALIBRATE_LOSS, adding
            ``order_calibrate_weight · Σ_r mean(relu(p_task − p_r))`` so that e.g. p(ctcvr) stays below p(ctr).
        order_calibrate_weight: its weight.
        eval_conditional: ``{name: {"task": t, "given": g}}``: also evaluate ``P(t | g) = p_t / p_g`` on the rows
            where g's label is positive, as ``eval/<name>/...`` (ESMM's CVR on the clicked rows:
            ``{cvr: {task: ctcvr, given: ctr}}``). Evaluation only; it adds no loss.

    ``forward(outputs (B, K) or (B,), labels (B, L) or (B,), weights (B,) | None, sessions (B,) | None)`` -> scalar.
    After each call, :meth:`log_values` gives ``train/loss/<task>`` for each task, ``train/loss_weight/<task>`` when
    learned or random, and ``train/loss/order_calibrate``.

    Example::

        loss = MultiTaskLoss({"ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
                              "cvr": {"loss": BinaryCrossEntropy(), "label": "buy", "weight": 0.5}},
                             label_columns=["click", "buy"])
        loss(torch.randn(8, 2), torch.randint(0, 2, (8, 2)).float())
    """

    multi_task = True

    @checked
    def __init__(
        self,
        tasks: Mapping[str, Task | Mapping[str, Any]],
        label_columns: str | Sequence[str],
        strategy: Strategy = "fixed",
        order_calibrate: Mapping[str, Sequence[str]] | None = None,
        order_calibrate_weight: NonNegative = 1.0,
        eval_conditional: Mapping[str, ConditionalHead | Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__()
        tasks = {name: spec if isinstance(spec, Task) else Task(**spec) for name, spec in tasks.items()}
        self.label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
        self.losses = nn.ModuleDict({name: Loss.of(spec.loss) for name, spec in tasks.items()})
        self.labels = {name: spec.label or self.label_columns[0] for name, spec in tasks.items()}
        for name, spec in tasks.items():
            for key, column in (("label", self.labels[name]), ("task_space_indicator", spec.task_space_indicator)):
                if column is not None and column not in self.label_columns:
                    raise ValueError(
                        f"tasks.{name}.{key}={column}: not a label column of the data; they are: "
                        f"{', '.join(self.label_columns)} (set data.features.label)"
                    )
        self._tasks = dict(tasks)
        self.columns = self._assign_columns(tasks)
        self.num_outputs = max(stop for _, stop in self.columns.values())
        self._task_outputs = tuple(self.losses[name].num_outputs for name, spec in tasks.items() if not spec.output)
        self.weighting = LossWeighting(
            {name: float(spec.weight) for name, spec in tasks.items()},
            learned=[name for name, spec in tasks.items() if spec.learn_weight],
            halved=[name for name, loss in self.losses.items() if isinstance(loss, L2Loss | SigmoidL2Loss)],
            strategy=strategy,
            key="tasks",
        )
        self.order_calibrate = {task: list(uppers) for task, uppers in (order_calibrate or {}).items()}
        for task, uppers in self.order_calibrate.items():
            for name in [task, *uppers]:
                if name not in self.losses:
                    raise ValueError(f"order_calibrate: {name!r} is not a task; the tasks are: {', '.join(tasks)}")
        self.order_calibrate_weight = float(order_calibrate_weight)
        self.eval_conditional = {
            name: dataclasses.asdict(spec) if isinstance(spec, ConditionalHead) else dict(spec)
            for name, spec in (eval_conditional or {}).items()
        }
        for name, spec in self.eval_conditional.items():
            if name in self.losses:
                raise ValueError(f"eval_conditional.{name}: a task has that name already")
            for key in ("task", "given"):
                if spec.get(key) not in self.losses:
                    raise ValueError(
                        f"eval_conditional.{name}.{key}={spec.get(key)}: no such task; "
                        f"the tasks are: {', '.join(tasks)}"
                    )
        self.order_loss = OrderCalibrateLoss()
        self.requires_sessions = any(loss.requires_sessions for loss in self.losses.values())
        self._takes_sessions = {name: loss.takes_sessions for name, loss in self.losses.items()}
        self._logged: dict[str, Tensor] = {}
        self._heads_by_task = {head.name: head for head in self._task_heads()}

    def _assign_columns(self, tasks: Mapping[str, Task]) -> dict[str, tuple[int, int]]:
        columns: dict[str, tuple[int, int]] = {}
        start = 0
        for name, spec in tasks.items():
            if not spec.output:
                width = self.losses[name].num_outputs
                columns[name] = (start, start + width)
                start += width
        for name, spec in tasks.items():
            shared = spec.output
            if shared:
                if shared not in columns:
                    raise ValueError(
                        f"tasks.{name}.output={shared}: no such task with its own output; "
                        f"those are: {', '.join(columns)}"
                    )
                columns[name] = columns[shared]
        if not columns:
            raise ValueError("tasks: give at least one")
        return columns

    @property
    def task_outputs(self) -> tuple[int, ...]:
        """The columns of each task that has its own, for multi-task models (one tower per entry)."""
        return self._task_outputs

    def describe_outputs(self) -> str:
        return ", ".join(f"{task}: {stop - start}" for task, (start, stop) in self.columns.items())

    def heads(self, label_names: Sequence[str] = ()) -> list[Head]:
        """One evaluated head per task (``eval/<task>/...``), then the conditional ones; each task names its own
        label column, so ``label_names`` is not needed."""
        heads = self._task_heads()
        by_name = {head.name: head for head in heads}
        for name, spec in self.eval_conditional.items():
            heads.append(conditional_head(name, by_name[spec["task"]], by_name[spec["given"]]))
        return heads

    def _task_heads(self) -> list[Head]:
        return [
            Head(name, loss.task, self.labels[name], loss.scores, self.columns[name])
            for name, loss in self.losses.items()
        ]

    def label_rules(self, label_names: Sequence[str] = ()) -> list[LabelRule]:
        """What each task's loss needs of its label column."""
        rules = (
            loss.label_rule(self.labels[name], f"task {name}: {loss.class_name}") for name, loss in self.losses.items()
        )
        return [rule for rule in rules if rule]

    def forward(
        self, outputs: Tensor, labels: Tensor, weights: Tensor | None = None, sessions: Tensor | None = None
    ) -> Tensor:
        """``outputs (B, K)`` (``(B,)`` when K = 1), ``labels (B, L)`` (``(B,)`` when L = 1) -> scalar."""
        heads = self._heads_by_task
        values: dict[str, Tensor] = {}
        for name, loss in self.losses.items():
            task_outputs = heads[name].outputs(outputs)
            task_labels = self._column(labels, self.labels[name])
            task_weights = self._row_weights(self._tasks[name], labels, weights)
            if self._takes_sessions[name]:
                values[name] = loss(task_outputs, task_labels, task_weights, sessions=sessions)
            else:
                values[name] = loss(task_outputs, task_labels, task_weights)
        total = self.weighting(values)
        self._logged = {f"train/loss/{name}": value.detach() for name, value in values.items()}
        if self.order_calibrate:
            calibration = self._order_calibration(outputs, heads)
            total = total + self.order_calibrate_weight * calibration
            self._logged["train/loss/order_calibrate"] = calibration.detach()
        for name, weight in self.weighting.logged_weights().items():
            self._logged[f"train/loss_weight/{name}"] = torch.as_tensor(weight).detach()
        return total

    def _column(self, labels: Tensor, column: str) -> Tensor:
        """``labels (B, L)`` or ``(B,)`` -> the named column ``(B,)``."""
        return labels if labels.dim() == 1 else labels[:, self.label_columns.index(column)]

    def _row_weights(self, task: Task, labels: Tensor, weights: Tensor | None) -> Tensor | None:
        """A task's weights ``(B,)``: the sample weights if it uses them, times its task-space weights; None if
        neither applies."""
        rows = weights if task.use_sample_weight else None
        if task.task_space_indicator is None:
            return rows
        inside = self._column(labels, task.task_space_indicator) > 0
        space = torch.where(inside, task.in_task_space_weight, task.out_task_space_weight).to(labels.dtype)
        return space if rows is None else rows * space

    def _order_calibration(self, outputs: Tensor, heads: Mapping[str, Head]) -> Tensor:
        total = outputs.new_zeros(())
        for task, uppers in self.order_calibrate.items():
            probs = heads[task].scores(heads[task].outputs(outputs))
            bounds = torch.stack([heads[r].scores(heads[r].outputs(outputs)) for r in uppers], dim=1)
            total = total + self.order_loss(probs, bounds)
        return total

    def part_names(self) -> list[str]:
        return [*self.losses, *(["order_calibrate"] if self.order_calibrate else [])]

    def log_values(self) -> dict[str, float]:
        """Each task's loss (and learned or random weight) of the last call."""
        return {key: float(value) for key, value in self._logged.items()}
