"""``trainer.train_metrics``: metrics of the training forward's outputs over each logging window (EasyRec's
``eval_online``), with no extra forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from easyrec.errors import ConfigError
from easyrec.losses.heads import Head
from easyrec.metrics.binary import BINARY_METRICS, binary_metrics
from easyrec.metrics.evaluation import batch_labels
from easyrec.metrics.multiclass import MULTICLASS_METRICS, multiclass_metrics
from easyrec.metrics.regression import regression_metrics

#: The training metrics each task can have.
TRAIN_METRICS: dict[str, tuple[str, ...]] = {
    "binary": BINARY_METRICS,
    "multiclass": MULTICLASS_METRICS,
    "regression": ("rmse", "mae"),
    "retrieval": ("auc",),
}
#: Bins of the training AUC (:func:`~easyrec.metrics.binary.binned_auc`): no sort in the training loop's process.
AUC_BINS = 100_000
TrainMetric = Literal[tuple(dict.fromkeys(name for names in TRAIN_METRICS.values() for name in names))]


class TrainingMetrics:
    """Running training metrics: ``train/<metric>`` (``train/<task>/<metric>`` for a multi-task loss) over the rows
    trained on since the last log (``trainer.log_every_n_steps`` steps), for each head whose task has the metric
    (:data:`TRAIN_METRICS`; ``max_f1`` also gives ``max_f1_threshold``, ``recall_at_topk`` is ``recall@<top_k>``).

    The hot loop only keeps references to each micro-batch's detached outputs and labels (:meth:`add`: no copy, no
    synchronisation with the device); the metrics are computed once per window, at log time (:meth:`close`), over
    the rows of every worker. A binary (or retrieval) ``auc`` is the histogram AUC over :data:`AUC_BINS`
    probability bins (EasyRec's ``fast_auc``; it differs from the exact AUC only by pairs of scores closer than
    1e-5), which needs no sort: O(rows) per window. The outputs are those of the training forward (in training
    mode: with dropout), taken before the optimizer step, as EasyRec's ``eval_online`` computes them.

    Args:
        names: the metrics, each of :data:`TRAIN_METRICS` of some head's task.
        heads: the loss's heads (:meth:`~easyrec.losses.base.Loss.heads`).
        label_names: the data's label columns, in the order of the labels ``(B, L)``.
        top_k: the k of ``recall_at_topk``.
    """

    def __init__(self, names: Sequence[str], heads: Sequence[Head], label_names: Sequence[str], top_k: int = 5):
        names = list(dict.fromkeys(names))
        self.jobs = [(head, [n for n in names if n in TRAIN_METRICS[head.task]]) for head in heads]
        unfit = [n for n in names if not any(n in chosen for _, chosen in self.jobs)]
        if unfit:
            tasks = sorted({head.task for head in heads})
            fits = sorted({n for task in tasks for n in TRAIN_METRICS[task]})
            raise ConfigError(
                f"trainer.train_metrics: {', '.join(unfit)} judges none of the loss's tasks ({', '.join(tasks)}); "
                f"they have: {', '.join(fits)}"
            )
        self.label_names, self.top_k = list(label_names), top_k
        self._outputs: list[Tensor] = []
        self._labels: list[Tensor] = []

    def add(self, outputs: Tensor, labels: Tensor) -> None:
        """Keep one training micro-batch: the model's ``outputs`` (``(B,)``, ``(B, K)`` or ``(B, 2, D)``) and its
        ``labels`` (``(B,)`` or ``(B, L)``)."""
        self._outputs.append(outputs.detach())
        self._labels.append(labels)

    def close(self, workers: Any) -> dict[str, float]:
        """The metrics of the window's rows over all ``workers``; starts the next window."""
        outputs, labels = self._outputs, self._labels
        self._outputs, self._labels = [], []
        if workers.world_size > 1:  # a worker whose pieces ran out may have no rows
            outputs = workers.gather([torch.cat(outputs).cpu()] if outputs else [])
            labels = workers.gather([torch.cat(labels).cpu()] if labels else [])
        if not outputs:
            return {}
        outputs, labels = torch.cat(outputs).float(), torch.cat(labels)
        values: dict[str, float] = {}
        for head, names in self.jobs:
            if names:
                prefix = f"train/{head.name}/" if head.name else "train/"
                values.update({prefix + k: v for k, v in self._head_metrics(head, names, outputs, labels).items()})
        return values

    def _head_metrics(self, head: Head, names: list[str], outputs: Tensor, labels: Tensor) -> dict[str, float]:
        predictions = head.scores(head.outputs(outputs))
        target = batch_labels(labels, self.label_names, head.label)
        if head.given:  # judged on the rows where the given label is positive
            rows = batch_labels(labels, self.label_names, head.given) > 0
            predictions, target = predictions[rows], target[rows]
        if head.task == "binary":
            return binary_metrics(predictions, target, names, auc_bins=AUC_BINS)
        if head.task == "multiclass":
            return multiclass_metrics(predictions, target, self.top_k, names)
        if head.task == "regression":
            return {k: v for k, v in regression_metrics(predictions, target).items() if k in names}
        return binary_metrics(predictions.sigmoid(), (target > 0).float(), ("auc",), auc_bins=AUC_BINS)
